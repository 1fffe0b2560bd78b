"""Tests for the forward (masking) process, docs/method.md §1."""

from __future__ import annotations

import math

import pytest
import torch

from d1.core.masking import blockwise_forward_process, forward_process, mask_tokens

MASK = 99


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 50, (batch, length), generator=_gen(seed))


@pytest.mark.parametrize("prob", [0.05, 0.15, 0.5, 0.9])
def test_mask_rate_matches_prob(prob: float) -> None:
    ids = _ids(64, 256)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, :56] = False  # a "prompt" that must stay clean
    noisy, is_masked = mask_tokens(ids, maskable, prob, mask_id=MASK, generator=_gen(1))
    n = int(maskable.sum())
    rate = is_masked.sum().item() / n
    # Binomial(n, p): allow 5 standard deviations.
    assert abs(rate - prob) < 5 * math.sqrt(prob * (1 - prob) / n)
    assert not is_masked[:, :56].any()
    assert torch.equal(noisy[:, :56], ids[:, :56])
    assert torch.equal(noisy[is_masked], torch.full_like(noisy[is_masked], MASK))
    assert torch.equal(noisy[~is_masked], ids[~is_masked])


def test_mask_tokens_extremes() -> None:
    ids = _ids(4, 32)
    maskable = torch.rand(ids.shape, generator=_gen(3)) < 0.5
    noisy, is_masked = mask_tokens(ids, maskable, 1.0, mask_id=MASK, generator=_gen(0))
    assert torch.equal(is_masked, maskable)
    assert torch.equal(noisy, torch.where(maskable, MASK, ids))
    noisy, is_masked = mask_tokens(ids, maskable, 0.0, mask_id=MASK, generator=_gen(0))
    assert not is_masked.any()
    assert torch.equal(noisy, ids)


def test_mask_tokens_deterministic_given_generator() -> None:
    ids = _ids(8, 64)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    a = mask_tokens(ids, maskable, 0.3, mask_id=MASK, generator=_gen(5))
    b = mask_tokens(ids, maskable, 0.3, mask_id=MASK, generator=_gen(5))
    c = mask_tokens(ids, maskable, 0.3, mask_id=MASK, generator=_gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # The draw is exactly `U < p` with one [B, L] uniform draw from the generator.
    u = torch.rand(ids.shape, generator=_gen(5))
    assert torch.equal(a[1], u < 0.3)


def test_mask_tokens_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ids = _ids(2, 16)
    mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), 0.5, mask_id=MASK, generator=_gen(0))
    assert torch.equal(torch.rand(3), expected)


def test_per_sequence_prob() -> None:
    ids = _ids(4, 4000)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    probs = torch.tensor([0.0, 0.1, 0.6, 1.0])
    _, is_masked = mask_tokens(ids, maskable, probs, mask_id=MASK, generator=_gen(2))
    rates = is_masked.float().mean(dim=1)
    assert rates[0] == 0.0 and rates[3] == 1.0
    for r, p in zip(rates[1:3].tolist(), probs[1:3].tolist(), strict=True):
        assert abs(r - p) < 5 * math.sqrt(p * (1 - p) / 4000)
    # Per-token probabilities are accepted too.
    per_token = torch.zeros(ids.shape)
    per_token[:, ::2] = 1.0
    _, is_masked = mask_tokens(ids, maskable, per_token, mask_id=MASK, generator=_gen(2))
    assert torch.equal(is_masked, per_token.bool())


@pytest.mark.parametrize("bad", [-0.1, 1.5, torch.tensor([0.5, 2.0]), torch.ones(3)])
def test_mask_tokens_rejects_bad_prob(bad) -> None:
    ids = _ids(2, 8)
    with pytest.raises(ValueError, match="prob"):
        mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), bad, mask_id=MASK, generator=None)


def test_mask_tokens_rejects_bad_shapes() -> None:
    ids = _ids(2, 8)
    with pytest.raises(ValueError, match="maskable"):
        mask_tokens(ids, torch.ones(2, 7, dtype=torch.bool), 0.5, mask_id=MASK, generator=None)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        mask_tokens(ids[0], ids[0] > 0, 0.5, mask_id=MASK, generator=None)


def test_forward_process_eps_clamp_and_draw_order() -> None:
    ids = _ids(16, 32)
    response = torch.zeros_like(ids, dtype=torch.bool)
    response[:, 10:] = True
    eps = 1e-3
    sample = forward_process(ids, response, mask_id=MASK, generator=_gen(7), eps=eps)
    # Independent replay: t first ([B]), then one [B, L] uniform draw.
    g = _gen(7)
    t = torch.rand(16, generator=g)
    u = torch.rand(ids.shape, generator=g)
    p = (1 - eps) * t + eps
    assert torch.allclose(sample.p_mask, p)
    assert torch.equal(sample.is_masked, response & (u < p[:, None]))
    assert not sample.is_masked[:, :10].any()
    assert torch.equal(sample.noisy_ids[:, :10], ids[:, :10])
    assert torch.equal(sample.noisy_ids, torch.where(sample.is_masked, MASK, ids))


def test_forward_process_fixed_t() -> None:
    ids = _ids(3, 16)
    response = torch.ones_like(ids, dtype=torch.bool)
    s = forward_process(ids, response, mask_id=MASK, generator=_gen(0), t=0.0)
    assert torch.allclose(s.p_mask, torch.full((3,), 1e-3))
    s = forward_process(ids, response, mask_id=MASK, generator=_gen(0), t=1.0)
    assert torch.equal(s.p_mask, torch.ones(3))
    assert s.is_masked.all()
    s = forward_process(
        ids, response, mask_id=MASK, generator=_gen(0), t=torch.tensor([0.0, 0.5, 1.0]), eps=0.1
    )
    assert torch.allclose(s.p_mask, torch.tensor([0.1, 0.55, 1.0]))
    with pytest.raises(ValueError, match="t must"):
        forward_process(ids, response, mask_id=MASK, generator=None, t=1.5)
    with pytest.raises(ValueError, match="eps"):
        forward_process(ids, response, mask_id=MASK, generator=None, eps=1.0)


def test_forward_process_statistics() -> None:
    # Averaged over many sequences, the masked fraction of the response is E[p] = (1 + eps) / 2,
    # and within a sequence the fraction tracks its own p_mask.
    ids = _ids(2000, 64)
    response = torch.zeros_like(ids, dtype=torch.bool)
    response[:, 16:] = True
    s = forward_process(ids, response, mask_id=MASK, generator=_gen(11), eps=1e-3)
    assert s.p_mask.min() >= 1e-3 and s.p_mask.max() <= 1.0
    frac = s.is_masked[:, 16:].float().mean(dim=1)
    assert abs(frac.mean().item() - (1 + 1e-3) / 2) < 0.02
    # Per-sequence fraction ~ Binomial(48, p)/48: residuals have variance p(1-p)/48.
    resid = (frac - s.p_mask) / torch.sqrt(s.p_mask * (1 - s.p_mask) / 48 + 1e-9)
    assert abs(resid.mean().item()) < 0.1
    assert 0.8 < resid.std().item() < 1.2
    # t itself is uniform: its mean and variance match U(0, 1).
    t = (s.p_mask - 1e-3) / (1 - 1e-3)
    assert abs(t.mean().item() - 0.5) < 0.03
    assert abs(t.var().item() - 1 / 12) < 0.01


def _two_rows() -> tuple[torch.Tensor, torch.Tensor]:
    """Row 0: prompt 2 + response 10 (blocks of 4: 2-5, 6-9, 10-11); row 1: prompt 5 +
    response 7 (blocks 5-8, 9-11)."""
    ids = _ids(2, 12)
    response = torch.zeros(2, 12, dtype=torch.bool)
    response[0, 2:] = True
    response[1, 5:] = True
    return ids, response


def test_blockwise_forward_process_hand_case() -> None:
    ids, response = _two_rows()
    s = blockwise_forward_process(
        ids,
        response,
        mask_id=MASK,
        block_length=4,
        generator=_gen(0),
        t=1.0,
        block=torch.tensor([1, 0]),
    )
    hidden = s.noisy_ids == MASK
    # Row 0, block 1 (6-9): scored and hidden; 10-11 hidden, not scored; prompt and 2-5 clean.
    assert s.is_masked[0].nonzero().flatten().tolist() == [6, 7, 8, 9]
    assert hidden[0].nonzero().flatten().tolist() == [6, 7, 8, 9, 10, 11]
    # Row 1, block 0 (5-8), blocks counted from its own response start.
    assert s.is_masked[1].nonzero().flatten().tolist() == [5, 6, 7, 8]
    assert hidden[1].nonzero().flatten().tolist() == list(range(5, 12))
    assert torch.equal(s.noisy_ids[~hidden], ids[~hidden])
    # Scored with probability p / n_blocks: 1/3 (three blocks) and 1/2 (two); 0 off-response.
    assert torch.allclose(s.p_mask[0, 2:], torch.full((10,), 1 / 3))
    assert torch.allclose(s.p_mask[1, 5:], torch.full((7,), 1 / 2))
    assert float(s.p_mask[0, :2].abs().sum() + s.p_mask[1, :5].abs().sum()) == 0.0
    # t = 0: p = eps, so the drawn block is (almost surely) clean but later blocks stay hidden.
    s0 = blockwise_forward_process(
        ids,
        response,
        mask_id=MASK,
        block_length=4,
        generator=_gen(0),
        t=0.0,
        block=torch.tensor([0, 0]),
    )
    assert not s0.is_masked.any()
    assert (s0.noisy_ids[0, 6:] == MASK).all() and (s0.noisy_ids[0, :6] != MASK).all()
    assert torch.allclose(s0.p_mask[0, 2:], torch.full((10,), 1e-3 / 3))


def test_blockwise_loss_weights_are_unbiased_for_the_sum_over_blocks() -> None:
    """E[sum over scored i of c_i / p_i] = sum_i c_i for any fixed per-token values c (each
    token's scoring probability is exactly p / n). Monte Carlo over 20,000 draws of t, the
    block and the masks; dropping the 1/n factor would give a third of the sum."""
    n = 20_000
    length, block_length = 12, 4  # prompt 2, response 10: three blocks, the last one short
    response = torch.zeros(n, length, dtype=torch.bool)
    response[:, 2:] = True
    ids = torch.zeros(n, length, dtype=torch.long)
    c = torch.rand(length, generator=_gen(3)) * response[0]
    s = blockwise_forward_process(
        ids, response, mask_id=MASK, block_length=block_length, generator=_gen(5), eps=0.2
    )
    estimate = (s.is_masked * c / s.p_mask.clamp(min=1e-12)).sum(dim=1)
    assert abs(float(estimate.mean()) - float(c.sum())) < 0.05 * float(c.sum())
    # The block is uniform over the three blocks: at t = 1 the whole drawn block is hidden, so
    # the first hidden position is the block's start.
    s1 = blockwise_forward_process(
        ids, response, mask_id=MASK, block_length=block_length, generator=_gen(6), t=1.0
    )
    starts = (s1.noisy_ids == MASK).float().argmax(dim=1)
    shares = torch.bincount((starts - 2) // block_length, minlength=3).float() / n
    assert torch.allclose(shares, torch.full((3,), 1 / 3), atol=0.02)


def test_blockwise_forward_process_deterministic_and_checked() -> None:
    ids, response = _two_rows()
    a = blockwise_forward_process(ids, response, mask_id=MASK, block_length=4, generator=_gen(9))
    b = blockwise_forward_process(ids, response, mask_id=MASK, block_length=4, generator=_gen(9))
    assert torch.equal(a.noisy_ids, b.noisy_ids) and torch.equal(a.p_mask, b.p_mask)
    with pytest.raises(ValueError, match="block must lie"):
        blockwise_forward_process(
            ids, response, mask_id=MASK, block_length=4, generator=None, block=torch.tensor([3, 0])
        )
    with pytest.raises(ValueError, match="block_length"):
        blockwise_forward_process(ids, response, mask_id=MASK, block_length=0, generator=None)
    with pytest.raises(ValueError, match="at least one response"):
        blockwise_forward_process(
            ids, torch.zeros_like(response), mask_id=MASK, block_length=4, generator=None
        )
