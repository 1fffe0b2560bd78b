"""Tests for the inner-iteration schedule and policy updates of diffu-GRPO (docs/method.md §4, docs/method.md §8)."""

from __future__ import annotations

import copy

import pytest
import torch

from d1.recipes.grpo.loss import completion_mask
from d1.recipes.grpo.schedule import iteration_prompt_mask, mask_seed
from d1.recipes.grpo.update import (
    ComputeCounter,
    Reference,
    UpdateSettings,
    policy_step,
    prepare_policy_batch,
)
from toy_models import VOCAB, Recorder

MASK = 7
EOS = 1
P, C, G = 8, 5, 3


def _rollout(n_prompts: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(8, VOCAB, (n_prompts, P), generator=g).repeat_interleave(G, 0)
    attn = torch.ones_like(prompt)
    attn[:G, :2] = 0  # the first prompt is left-padded
    prompt[:G, :2] = 0
    comp = torch.randint(0, VOCAB, (n_prompts * G, C), generator=g)
    comp[comp == MASK] = 9
    cmask = completion_mask(comp, EOS)
    adv = torch.randn(n_prompts * G, generator=g)
    return prompt, attn, comp, cmask, adv


def _settings(**kw) -> UpdateSettings:
    base = {
        "num_iterations": 3,
        "micro_batch_size": 2,
        "num_generations": G,
        "mask_id": MASK,
        "seed": 11,
        "p_mask": 0.4,
        "epsilon": 0.5,
        "beta": 0.0,
    }
    base.update(kw)
    return UpdateSettings(**base)


def _bw(loss: torch.Tensor) -> None:
    loss.backward()


def _prepare(model, settings, gb=0, n_prompts=2):
    prompt, attn, comp, cmask, adv = _rollout(n_prompts)
    return prepare_policy_batch(
        model,
        prompt_ids=prompt,
        prompt_mask=attn,
        completion_ids=comp,
        completion_mask=cmask,
        advantages=adv,
        settings=settings,
        generation_batch=gb,
    )


# ----------------------------------------------------------------- schedule


def test_mask_seed_stable_and_distinct() -> None:
    assert mask_seed(1, 2, 3) == mask_seed(1, 2, 3)
    seeds = {mask_seed(s, g, k) for s in range(3) for g in range(5) for k in range(12)}
    assert len(seeds) == 3 * 5 * 12
    assert all(0 <= s < 2**63 for s in seeds)


def test_iteration_masks_differ_across_k_and_batches_reproducible() -> None:
    prompt, attn, *_ = _rollout(4)
    kw = {"mask_id": MASK, "run_seed": 5, "p_mask": 0.5}
    m = [
        iteration_prompt_mask(prompt, attn, generation_batch=0, iteration=k, **kw) for k in range(4)
    ]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.equal(m[a], m[b])
    again = iteration_prompt_mask(prompt, attn, generation_batch=0, iteration=2, **kw)
    assert torch.equal(again, m[2])
    other = iteration_prompt_mask(prompt, attn, generation_batch=1, iteration=2, **kw)
    assert not torch.equal(other, m[2])
    fixed = [
        iteration_prompt_mask(
            prompt, attn, generation_batch=0, iteration=k, random_masking=False, **kw
        )
        for k in range(3)
    ]
    assert torch.equal(fixed[0], fixed[1]) and torch.equal(fixed[1], fixed[2])
    assert not (m[0] & ~attn.bool()).any()  # padding never masked
    # The global RNG is untouched.
    state = torch.get_rng_state()
    iteration_prompt_mask(prompt, attn, generation_batch=3, iteration=1, **kw)
    assert torch.equal(state, torch.get_rng_state())


# ----------------------------------------------------------------- inner iterations


def _prompt_part(x: torch.Tensor) -> torch.Tensor:
    return x[:, :P]


def test_same_mask_for_current_old_ref_within_k_every_mask_once_per_row() -> None:
    torch.manual_seed(0)
    model = Recorder()
    ref_model = copy.deepcopy(model)
    ref_model.tag = "ref"
    settings = _settings(beta=0.04, micro_batch_size=2)
    batch = _prepare(model, settings)
    n = len(batch)
    # Old log-probs: one no-grad, eval-mode pass per k >= 1, in micro-batch chunks.
    old_calls = model.calls[:]
    assert all(not grad and not train for _, grad, train in old_calls)
    assert max(c[0].shape[0] for c in old_calls) <= settings.micro_batch_size
    expected = [torch.where(m, MASK, batch.prompt_ids) for m in batch.prompt_masks]
    seen_old = torch.cat([_prompt_part(c[0]) for c in old_calls])
    assert torch.equal(seen_old, torch.cat(expected[1:]))
    assert batch.old_logps[0] is None

    model.calls.clear()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reference = Reference(model, frozen=ref_model)
    for k in range(settings.num_iterations):
        model.calls.clear()
        ref_model.calls.clear()
        opt.zero_grad()
        policy_step(
            model,
            batch,
            k,
            settings=settings,
            backward=lambda loss: loss.backward(),
            reference=reference,
        )
        opt.step()
        cur = [c for c in model.calls if c[1]]
        assert len(cur) == len(model.calls)  # the policy only runs with grad here
        seen = torch.cat([_prompt_part(c[0]) for c in cur])
        # Every row used mask k exactly once, through its micro-batch.
        assert seen.shape[0] == n and torch.equal(seen, expected[k])
        seen_ref = torch.cat([_prompt_part(c[0]) for c in ref_model.calls])
        assert torch.equal(seen_ref, expected[k])
        assert all(not grad for _, grad, _ in ref_model.calls)
    # Different k really did use different masks.
    assert not torch.equal(expected[0], expected[1])


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_mu_one_ratio_exactly_one(beta: float) -> None:
    model = Recorder()
    settings = _settings(num_iterations=1, beta=beta)
    batch = _prepare(model, settings)
    assert model.calls == []  # mu = 1: no old log-prob pass at all
    reference = Reference(model, frozen=copy.deepcopy(model)) if beta else None
    counter = ComputeCounter()
    stats = policy_step(
        model,
        batch,
        0,
        settings=settings,
        backward=_bw,
        reference=reference,
        counter=counter,
    )
    s = stats.summary()
    assert s["ratio/min"] == 1.0 and s["ratio/max"] == 1.0
    assert s["clip_ratio/region"] == 0.0
    assert counter.old_forward_passes == 0
    assert counter.ref_forward_passes == (len(batch) if beta else 0)
    assert counter.backward_passes == len(batch)


def test_micro_batch_split_gives_full_batch_gradient() -> None:
    grads = []
    for mbs in (1, 4, 6):
        model = Recorder(seed=3)
        settings = _settings(micro_batch_size=mbs, beta=0.04)
        batch = _prepare(model, settings)
        reference = Reference(model, frozen=copy.deepcopy(model))
        model.zero_grad()
        policy_step(
            model,
            batch,
            1,
            settings=settings,
            backward=_bw,
            reference=reference,
        )
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[2], atol=1e-6, rtol=1e-5)


def test_old_logps_are_pre_update_policy() -> None:
    model = Recorder(seed=4)
    settings = _settings(num_iterations=2, micro_batch_size=6)
    batch = _prepare(model, settings)
    before = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.zero_grad()
    policy_step(model, batch, 0, settings=settings, backward=_bw)
    opt.step()
    # Old log-probs of k = 1 equal the pre-update model on mask 1.
    from d1.core.likelihood import estimate_logps

    with torch.no_grad():
        ref_old = estimate_logps(
            before,
            batch.prompt_ids,
            batch.prompt_mask,
            batch.completion_ids,
            mask_id=MASK,
            prompt_noise=batch.prompt_masks[1],
        )
    torch.testing.assert_close(batch.old_logps[1], ref_old)
    opt.zero_grad()
    stats = policy_step(model, batch, 1, settings=settings, backward=_bw)
    s = stats.summary()
    assert s["ratio/min"] < 1.0 < s["ratio/max"]  # the policy moved


def test_policy_step_errors() -> None:
    model = Recorder()
    settings = _settings(beta=0.04)
    batch = _prepare(model, settings)
    with pytest.raises(ValueError, match="reference"):
        policy_step(model, batch, 0, settings=settings, backward=_bw)
    with pytest.raises(ValueError, match="iteration"):
        policy_step(model, batch, 3, settings=_settings(), backward=_bw)
    with pytest.raises(ValueError, match="LoRA"):
        Reference(model)
