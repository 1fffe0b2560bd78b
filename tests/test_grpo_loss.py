"""Tests for diffu-GRPO's advantages and loss (docs/method.md §4) against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from d1.recipes.grpo.advantages import compute_advantages
from d1.recipes.grpo.loss import LossStats, completion_mask, grpo_loss, k3_kl, token_weights

# ---------------------------------------------------------------- advantages


def test_advantages_d1_no_std() -> None:
    r = torch.tensor([1.0, 0.0, 0.0, 3.0, 2.0, 2.0, 2.0, 2.0])
    out = compute_advantages(r, num_generations=4)
    # Group 1 mean 1.0, group 2 mean 2.0.
    torch.testing.assert_close(out.advantages, torch.tensor([0.0, -1, -1, 2, 0, 0, 0, 0]))
    assert out.zero_std_count == 1 and out.zero_std_fraction == 0.5
    assert out.nonzero_fraction == 3 / 8
    torch.testing.assert_close(out.group_mean, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(out.group_std, torch.tensor([math.sqrt(2.0), 0.0]))


def test_advantages_group_and_batch_scaling() -> None:
    r = torch.tensor([1.0, 0.0, 0.0, 3.0, 2.0, 2.0, 2.0, 2.0])
    g = compute_advantages(r, 4, "group", eps=1e-4)
    s = math.sqrt(2.0) + 1e-4
    torch.testing.assert_close(g.advantages, torch.tensor([0.0, -1 / s, -1 / s, 2 / s, 0, 0, 0, 0]))
    b = compute_advantages(r, 4, "batch", eps=1e-4)
    bs = float(r.std()) + 1e-4
    torch.testing.assert_close(b.advantages, torch.tensor([0.0, -1, -1, 2, 0, 0, 0, 0]) / bs)


def test_advantages_errors() -> None:
    with pytest.raises(ValueError, match="scale_rewards"):
        compute_advantages(torch.zeros(4), 2, "std")
    with pytest.raises(ValueError, match="num_generations"):
        compute_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="groups"):
        compute_advantages(torch.zeros(5), 2)


# ---------------------------------------------------------------- completion mask


def test_completion_mask_up_to_first_eos() -> None:
    eos = 9
    ids = torch.tensor([[1, 2, 9, 9, 9], [1, 2, 3, 4, 5], [9, 1, 9, 2, 3], [1, 9, 2, 3, 4]])
    expected = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool
    )
    assert torch.equal(completion_mask(ids, eos), expected)
    assert completion_mask(ids, None).all()


# ---------------------------------------------------------------- loss


def test_loss_hand_computed() -> None:
    # Two completions of 3 tokens; the second has one invalid token.
    logp = torch.tensor([[0.0, math.log(2.0), math.log(0.25)], [math.log(1.2), 0.0, 5.0]])
    old = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    eps = 0.5
    out = grpo_loss(logp, old, adv, mask, epsilon=eps)
    # rho = [1, 2, 0.25 | 1.2, 1]; clip to [0.5, 1.5]: [1, 1.5, 0.5 | 1.2, 1].
    # A=+1: min(rho, clip) = [1, 1.5, 0.25]; A=-2: min(-2.4, -2.4), min(-2, -2).
    per_tok = [-1.0, -1.5, -0.25, 2.4, 2.0]
    assert out.loss.item() == pytest.approx(sum(per_tok) / 5)
    # Token 3 of row 0 (rho 0.25 < 0.5) is not clipped: A > 0 takes the unclipped min.
    # Token 2 of row 0 (rho 2 > 1.5, A > 0) is clipped high.
    assert out.sums["clip_high"] == 1 and out.sums["clip_low"] == 0
    assert out.sums["tokens"] == 5
    assert out.sums["ratio_max"] == pytest.approx(2.0)
    assert out.sums["ratio_min"] == pytest.approx(0.25)


def test_loss_with_kl_hand_computed() -> None:
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.2)]])
    adv = torch.tensor([0.0])
    mask = torch.ones(1, 2, dtype=torch.bool)
    beta = 0.04
    out = grpo_loss(logp, logp.detach(), adv, mask, beta=beta, ref_logps=ref)
    # KL_1 = exp(log 0.5) - log 0.5 - 1 = 0.5 + log 2 - 1;  KL_2 = 0.
    kl1 = 0.5 + math.log(2.0) - 1.0
    assert out.loss.item() == pytest.approx(beta * kl1 / 2)
    assert out.sums["kl"] == pytest.approx(kl1)
    torch.testing.assert_close(k3_kl(logp, ref), torch.tensor([[kl1, 0.0]]))
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logp, logp, adv, mask, beta=beta)


def test_ratio_one_gradient_equals_policy_gradient() -> None:
    """old = current (first inner step): ratio exactly 1, gradient = plain PG gradient."""
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(4, 6, generator=g, requires_grad=True)
    logp = torch.log_softmax(theta, dim=-1)
    adv = torch.tensor([0.5, -1.0, 2.0, 0.0])
    mask = torch.rand(4, 6, generator=g) < 0.7
    out = grpo_loss(logp, logp.detach(), adv, mask, epsilon=0.2)
    assert out.sums["ratio_min"] == 1.0 and out.sums["ratio_max"] == 1.0
    assert out.sums["clip_region"] == 0
    (grad,) = torch.autograd.grad(out.loss, theta)
    theta2 = theta.detach().clone().requires_grad_(True)
    logp2 = torch.log_softmax(theta2, dim=-1)
    pg = -(adv[:, None] * logp2 * mask).sum() / mask.sum()
    (grad_pg,) = torch.autograd.grad(pg, theta2)
    torch.testing.assert_close(grad, grad_pg)


def test_token_weights_aggregations() -> None:
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    loss = torch.tensor([[1.0, 1, 1, 1], [5, 0, 0, 0], [2, 2, 0, 0], [3, 3, 3, 0]])
    total = lambda w: float((w * loss).sum())  # noqa: E731
    for agg in ("token_mean", "sequence_mean", "group_token_mean"):
        w = token_weights(mask, aggregation=agg, num_generations=2)
        assert float(w.sum()) == pytest.approx(1.0)
        assert (w[~mask] == 0).all()
    # token mean: (4 + 5 + 4 + 9) / 10
    assert total(token_weights(mask, aggregation="token_mean")) == pytest.approx(22 / 10)
    # sequence mean: (1 + 5 + 2 + 3) / 4
    assert total(token_weights(mask, aggregation="sequence_mean")) == pytest.approx(11 / 4)
    # group token mean (groups of 2): ((4 + 5) / 5 + (4 + 9) / 5) / 2
    w = token_weights(mask, aggregation="group_token_mean", num_generations=2)
    assert total(w) == pytest.approx((9 / 5 + 13 / 5) / 2)
    with pytest.raises(ValueError, match="aggregation"):
        token_weights(mask, aggregation="mean")
    with pytest.raises(ValueError, match="num_generations"):
        token_weights(mask, aggregation="group_token_mean", num_generations=3)


def test_microbatch_split_sums_to_full_batch_loss() -> None:
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(6, 5, generator=g)
    old = logp + 0.3 * torch.randn(6, 5, generator=g)
    ref = logp + 0.3 * torch.randn(6, 5, generator=g)
    adv = torch.randn(6, generator=g)
    mask = completion_mask(torch.randint(0, 4, (6, 5), generator=g), eos_id=0)
    w = token_weights(mask, aggregation="group_token_mean", num_generations=3)
    kw = {"epsilon": 0.2, "beta": 0.04}
    full = grpo_loss(logp, old, adv, mask, ref_logps=ref, weights=w, **kw)
    stats = LossStats()
    parts = 0.0
    for sl in (slice(0, 2), slice(2, 3), slice(3, 6)):
        o = grpo_loss(logp[sl], old[sl], adv[sl], mask[sl], ref_logps=ref[sl], weights=w[sl], **kw)
        parts += o.loss.item()
        stats.update(o.sums)
    assert parts == pytest.approx(full.loss.item(), rel=1e-6)
    whole = LossStats()
    whole.update(full.sums)
    for key, value in whole.summary().items():
        assert stats.summary()[key] == pytest.approx(value, rel=1e-6)


def test_loss_default_is_token_mean_of_batch() -> None:
    logp = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    adv = torch.tensor([1.0, 2.0])
    mask = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    out = grpo_loss(logp, logp, adv, mask)
    # ratio 1: per-token loss -A; mean over 3 valid tokens.
    assert out.loss.item() == pytest.approx(-(1 + 2 + 2) / 3)
