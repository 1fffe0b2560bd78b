"""Tests for the one-step per-token log-prob estimator (docs/method.md §4), `d1.core.likelihood`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from d1.core.likelihood import (
    draw_prompt_mask,
    estimate_logps,
    list_estimators,
    register_estimator,
    token_logprobs,
)

MASK = 7
VOCAB = 23


class MixModel(torch.nn.Module):
    """A tiny bidirectional model: every position sees a masked mean of all token embeddings.

    Logits depend on the whole input and on the attention mask (padding keys are excluded from
    the mean), so the estimator's masking and padding handling are visible in its output.
    """

    def __init__(self, seed: int = 0, shift: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(VOCAB, 16, generator=g))
        self.pos = torch.nn.Parameter(torch.randn(64, 16, generator=g) * 0.5)
        self.out = torch.nn.Parameter(torch.randn(16, VOCAB, generator=g))
        self.shift = shift  # True: behave like a Dream model (position i predicts token i+1)
        self.calls: list[torch.Tensor] = []
        self.masks: list[torch.Tensor | None] = []

    def forward(self, input_ids, attention_mask=None):
        self.calls.append(input_ids.clone())
        self.masks.append(None if attention_mask is None else attention_mask.clone())
        x = self.emb[input_ids] + self.pos[: input_ids.shape[1]]
        keep = (
            torch.ones_like(input_ids, dtype=x.dtype)
            if attention_mask is None
            else attention_mask.to(x.dtype)
        )
        ctx = (x * keep[..., None]).sum(1, keepdim=True) / keep.sum(1, keepdim=True)[..., None]
        logits = torch.tanh(x + ctx) @ self.out
        if self.shift:
            # Raw output at i-1 is the prediction for i: shift everything left by one.
            logits = torch.cat([logits[:, 1:], logits[:, -1:]], dim=1)
        return logits


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 4, p: int = 9, c: int = 6, seed: int = 0):
    g = _gen(seed)
    prompt = torch.randint(8, VOCAB, (b, p), generator=g)
    comp = torch.randint(8, VOCAB, (b, c), generator=g)
    attn = torch.ones(b, p, dtype=torch.long)
    # Left padding of different lengths (pad id 0).
    for i in range(b):
        attn[i, : i % 3] = 0
        prompt[i, : i % 3] = 0
    return prompt, attn, comp


def _slow_reference(model, prompt, attn, comp, noise):
    """Per-sequence loop, explicit mask, full log_softmax: the estimator written plainly."""
    rows = []
    for i in range(prompt.shape[0]):
        q = prompt[i].clone()
        q[noise[i]] = MASK
        x = torch.cat([q, torch.full_like(comp[i], MASK)])[None]
        mask = torch.cat([attn[i], torch.ones_like(comp[i])])[None]
        logits = model(x, attention_mask=mask)
        logp = F.log_softmax(logits[0, prompt.shape[1] :].double(), dim=-1)
        rows.append(logp[torch.arange(comp.shape[1]), comp[i]].float())
    return torch.stack(rows)


def test_one_step_matches_slow_reference() -> None:
    model = MixModel()
    prompt, attn, comp = _batch()
    noise = draw_prompt_mask(prompt, attn, 0.3, mask_id=MASK, generator=_gen(5))
    fast = estimate_logps(model, prompt, attn, comp, mask_id=MASK, generator=_gen(5), p_mask=0.3)
    slow = _slow_reference(model, prompt, attn, comp, noise)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    # A seeded generator reproduces the same estimate; a different seed (another q') does not.
    again = estimate_logps(model, prompt, attn, comp, mask_id=MASK, generator=_gen(5), p_mask=0.3)
    assert torch.equal(fast, again)
    other = estimate_logps(model, prompt, attn, comp, mask_id=MASK, generator=_gen(6), p_mask=0.3)
    assert not torch.allclose(fast, other)


def test_forward_input_is_masked_prompt_and_fully_masked_completion() -> None:
    model = MixModel()
    prompt, attn, comp = _batch()
    noise = draw_prompt_mask(prompt, attn, 0.5, mask_id=MASK, generator=_gen(1))
    assert noise.any()
    estimate_logps(model, prompt, attn, comp, mask_id=MASK, prompt_noise=noise)
    assert len(model.calls) == 1  # ONE forward pass for the whole batch
    x = model.calls[0]
    p = prompt.shape[1]
    assert torch.equal(x[:, p:], torch.full_like(comp, MASK))
    assert torch.equal(x[:, :p], torch.where(noise, MASK, prompt))
    assert torch.equal(model.masks[0][:, :p], attn)
    assert bool(model.masks[0][:, p:].all())


def test_padding_never_masked_never_counted() -> None:
    prompt, attn, _ = _batch(b=64, p=12)
    noise = draw_prompt_mask(prompt, attn, 1.0, mask_id=MASK, generator=_gen(0))
    assert torch.equal(noise, attn.bool())  # p=1 masks exactly the real tokens
    noise = draw_prompt_mask(prompt, attn, 0.5, mask_id=MASK, generator=_gen(0))
    assert not (noise & ~attn.bool()).any()
    # The rate is p_mask over real tokens only.
    rate = noise.sum().item() / attn.sum().item()
    assert abs(rate - 0.5) < 0.05
    # Padding content cannot change the estimate: the model never attends to it.
    model = MixModel()
    prompt, attn, comp = _batch()
    noise = draw_prompt_mask(prompt, attn, 0.3, mask_id=MASK, generator=_gen(2))
    a = estimate_logps(model, prompt, attn, comp, mask_id=MASK, prompt_noise=noise)
    junk = torch.where(attn.bool(), prompt, torch.full_like(prompt, 19))
    b = estimate_logps(model, junk, attn, comp, mask_id=MASK, prompt_noise=noise)
    torch.testing.assert_close(a, b)
    # A caller-provided mask that touches padding is refused.
    with pytest.raises(ValueError, match="padding"):
        estimate_logps(model, prompt, attn, comp, mask_id=MASK, prompt_noise=torch.ones_like(noise))


def test_chunked_equals_unchunked() -> None:
    model = MixModel()
    prompt, attn, comp = _batch(b=5)
    noise = draw_prompt_mask(prompt, attn, 0.15, mask_id=MASK, generator=_gen(3))
    full = estimate_logps(model, prompt, attn, comp, mask_id=MASK, prompt_noise=noise)
    for chunk in (1, 2, 3, 5, 8):
        model.calls.clear()
        part = estimate_logps(
            model, prompt, attn, comp, mask_id=MASK, prompt_noise=noise, chunk_size=chunk
        )
        torch.testing.assert_close(part, full, atol=1e-6, rtol=1e-6)
        assert max(c.shape[0] for c in model.calls) <= chunk


def test_dream_shift_handled() -> None:
    """A Dream-style model (prediction for i at i-1) gives the same estimate with logit_shift."""
    plain = MixModel(seed=3)
    dream = MixModel(seed=3, shift=True)
    prompt, attn, comp = _batch()
    noise = draw_prompt_mask(prompt, attn, 0.2, mask_id=MASK, generator=_gen(4))
    ref = estimate_logps(plain, prompt, attn, comp, mask_id=MASK, prompt_noise=noise)
    shifted = estimate_logps(
        dream, prompt, attn, comp, mask_id=MASK, prompt_noise=noise, logit_shift=True
    )
    torch.testing.assert_close(shifted, ref)
    unshifted = estimate_logps(dream, prompt, attn, comp, mask_id=MASK, prompt_noise=noise)
    assert not torch.allclose(unshifted, ref)


def test_token_logprobs_bf16_rows_and_float32() -> None:
    g = _gen(0)
    logits = torch.randn(3, 5, 11, generator=g) * 4
    targets = torch.randint(0, 11, (3, 5), generator=g)
    ref = F.log_softmax(logits.double(), -1).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(token_logprobs(logits, targets).double(), ref, atol=1e-6, rtol=0)
    low = token_logprobs(logits.bfloat16(), targets)
    assert low.dtype == torch.float32
    ref_low = F.log_softmax(logits.bfloat16().double(), -1).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(low.double(), ref_low, atol=1e-5, rtol=0)


def test_gradient_flows_and_p_mask_zero_keeps_prompt() -> None:
    model = MixModel()
    prompt, attn, comp = _batch()
    out = estimate_logps(model, prompt, attn, comp, mask_id=MASK, p_mask=0.0, generator=_gen(0))
    assert torch.equal(model.calls[0][:, : prompt.shape[1]], prompt)
    out.sum().backward()
    assert model.emb.grad is not None and model.emb.grad.abs().sum() > 0
    assert (out <= 0).all()


def test_registry_and_errors() -> None:
    assert "d1_one_step" in list_estimators()
    model = MixModel()
    prompt, attn, comp = _batch()
    with pytest.raises(ValueError, match="Unknown log-prob estimator"):
        estimate_logps(model, prompt, attn, comp, mask_id=MASK, estimator="nope")
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("d1_one_step")(lambda *a, **k: None)
    with pytest.raises(ValueError, match="p_mask"):
        draw_prompt_mask(prompt, attn, 1.5, mask_id=MASK, generator=None)


def test_on_builtin_tiny_llada(tiny_model) -> None:
    """The real model class: fast path equals the slow per-sequence reference."""
    g = _gen(0)
    mask_id = tiny_model.config.mask_token_id
    vocab = tiny_model.config.vocab_size
    prompt = torch.randint(5, min(vocab, 60), (3, 7), generator=g)
    comp = torch.randint(5, min(vocab, 60), (3, 5), generator=g)
    attn = torch.ones_like(prompt)
    attn[1, :2] = 0
    noise = draw_prompt_mask(prompt, attn, 0.3, mask_id=mask_id, generator=_gen(1))
    with torch.no_grad():
        fast = estimate_logps(tiny_model, prompt, attn, comp, mask_id=mask_id, prompt_noise=noise)
        rows = []
        for i in range(3):
            q = torch.where(noise[i], mask_id, prompt[i])
            x = torch.cat([q, torch.full_like(comp[i], mask_id)])[None]
            am = torch.cat([attn[i], torch.ones_like(comp[i])])[None]
            logits = tiny_model(input_ids=x, attention_mask=am).logits
            lp = F.log_softmax(logits[0, 7:].double(), -1)
            rows.append(lp[torch.arange(5), comp[i]].float())
    torch.testing.assert_close(fast, torch.stack(rows), atol=1e-5, rtol=1e-5)
