"""Exactness of the model's and samplers' speed paths (RL throughput): each optimisation gives
the values of the computation it replaces (bit for bit where the math is identical)."""

from __future__ import annotations

import pytest
import torch

from d1.core.models.forward import native_llada
from d1.core.models.modeling_llada import (
    RopeTable,
    apply_rope,
    apply_rope_signed,
    rope_cos_sin,
    signed_sin,
)
from d1.core.sampling import SamplerConfig, generate, sample
from d1.core.sampling.steps import block_logits, propose


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("head_dim,theta", [(16, 10000.0), (32, 500000.0), (128, 500000.0)])
def test_rope_table_equals_recomputed(head_dim: int, theta: float) -> None:
    table = RopeTable(head_dim, theta)
    cpu = torch.device("cpu")
    # A contiguous run at any offset: a slice of the table, grown on demand.
    for offset, length in [(0, 7), (5, 40), (250, 300), (0, 1), (1000, 3)]:
        cos, ssin = table.lookup(None, offset, length, cpu)
        ref_cos, ref_sin = rope_cos_sin(torch.arange(offset, offset + length), head_dim, theta)
        assert torch.equal(cos, ref_cos)
        assert torch.equal(ssin, signed_sin(ref_sin))
    # Per-row positions (left padding: cumsum(mask) - 1 clamped), [B, L] and [L].
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    for p in (pos, torch.arange(3, 9), torch.tensor([[4000, 2, 7]])):
        cos, ssin = table.lookup(p, 0, p.shape[-1], cpu)
        ref_cos, ref_sin = rope_cos_sin(p, head_dim, theta)
        assert torch.equal(cos, ref_cos)
        assert torch.equal(ssin, signed_sin(ref_sin))
    # Positions a table cannot index are computed directly.
    for p in (torch.tensor([[-3, 0, 2]]), torch.tensor([0.5, 1.5])):
        cos, ssin = table.lookup(p, 0, p.shape[-1], cpu)
        ref_cos, ref_sin = rope_cos_sin(p, head_dim, theta)
        assert torch.equal(cos, ref_cos) and torch.equal(ssin, signed_sin(ref_sin))


def test_mask_derived_positions_need_no_host_sync(tiny_model_factory, monkeypatch) -> None:
    """Positions derived from the attention mask have a known range, so neither a full forward
    nor a cached chunk reads them back (`aminmax` + `tolist`: a GPU sync per forward); the
    logits equal those of the same positions passed explicitly (which are read)."""
    from d1.core.models import modeling_llada

    model = tiny_model_factory("tiny-xs", 0)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(7, model.config.vocab_size, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :1] = 0
    pos = modeling_llada.positions_from_mask(mask)
    with torch.no_grad():
        explicit = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        full = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        chunk_explicit = model(
            input_ids=ids[:, 5:9], cache=full.cache, cache_position=5, position_ids=pos[:, 5:9]
        ).logits
    reads: list[int] = []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: reads.append(1) or real(*a, **k))
    with torch.no_grad():
        derived = model(input_ids=ids, attention_mask=mask, use_cache=True)
        chunk = model(input_ids=ids[:, 5:9], cache=derived.cache, cache_position=5).logits
    assert reads == []
    assert torch.equal(derived.logits, explicit)
    assert torch.equal(chunk, chunk_explicit)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=pos)
    assert reads == [1]  # user-given positions are still checked (they may be negative)


def test_signed_rotation_equals_rotate_half() -> None:
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x = torch.randn(2, 3, 9, 16, generator=g).to(dtype)
        cos, sin = rope_cos_sin(torch.arange(9), 16, 10000.0)
        assert torch.equal(apply_rope_signed(x, cos, signed_sin(sin)), apply_rope(x, cos, sin))


def test_model_rope_is_cached_outside_state_dict(tiny_model_factory) -> None:
    model = tiny_model_factory("tiny-xs", 0)
    ids = torch.randint(
        7, model.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1)
    )
    # First built under inference_mode, the table must still serve a training backward.
    with torch.inference_mode():
        model(input_ids=ids)
    assert not any("rope" in k.lower() for k in model.state_dict())
    cached = model._rope._tables[torch.device("cpu")]
    model.train()
    model(input_ids=ids).logits.sum().backward()
    assert model._rope._tables[torch.device("cpu")][0] is cached[0]  # reused, not rebuilt
    model.zero_grad(set_to_none=True)
    model.eval()


def _tiny_llada(tiny_model_factory, dtype: torch.dtype) -> torch.nn.Module:
    return tiny_model_factory("tiny-xs", 3).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_block_logits_equal_sliced_full_logits(tiny_model_factory, dtype) -> None:
    model = _tiny_llada(tiny_model_factory, dtype)
    g = torch.Generator().manual_seed(0)
    for batch, length, (start, end) in [(6, 91, (27, 59)), (3, 40, (8, 40)), (2, 64, (0, 32))]:
        ids = torch.randint(7, model.config.vocab_size, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        mask[0, :3] = 0  # left padding on one row
        for attn in (None, mask):
            with torch.no_grad():
                full = model(input_ids=ids, attention_mask=attn).logits[:, start:end]
                kept = block_logits(model, ids, attn, start, end, logit_shift=False)
            assert kept.shape == full.shape
            if dtype == torch.float64:
                assert torch.equal(kept, full)
            else:  # the head's GEMM may block differently for fewer rows
                torch.testing.assert_close(kept, full, rtol=0, atol=1e-6)


def test_block_logits_without_native_llada_slices_full_logits() -> None:
    class Plain(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return type("Out", (), {"logits": input_ids[..., None].double().expand(-1, -1, 5)})

    ids = torch.arange(12).view(2, 6)
    assert native_llada(Plain()) is None
    assert torch.equal(
        block_logits(Plain(), ids, None, 2, 4, logit_shift=False),
        ids[:, 2:4, None].double().expand(-1, -1, 5),
    )


def test_reference_sampler_asks_only_for_block_logits(tiny_model_factory, monkeypatch) -> None:
    model = _tiny_llada(tiny_model_factory, torch.float64)
    seen: list[object] = []
    forward = type(model).forward

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("logits_to_keep"))
        return forward(self, *args, **kwargs)

    prompt = torch.randint(7, model.config.vocab_size, (2, 5), generator=torch.Generator())
    monkeypatch.setattr(type(model), "forward", spy)
    generate(
        model, prompt, gen_length=8, block_length=4, steps=4, mask_id=model.config.mask_token_id
    )
    assert seen == [slice(5, 9)] * 2 + [slice(9, 13)] * 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_estimators_ask_only_for_completion_logits(tiny_model_factory, monkeypatch, dtype) -> None:
    """The one-step and masked-draw estimators request the completion's logits only
    (`logits_to_keep`), and give what the sliced full logits give: a non-native wrapper of
    the same model (which computes all logits) is the independent reference."""
    from d1.core.likelihood import estimate_logps, masked_draws_logps

    model = _tiny_llada(tiny_model_factory, dtype)

    class Wrapper(torch.nn.Module):  # not recognised as native: full logits, then a slice
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kwargs):
            assert "logits_to_keep" not in kwargs
            return self.inner(**kwargs)

    g = torch.Generator().manual_seed(4)
    vocab, mask_id = model.config.vocab_size, model.config.mask_token_id
    prompt = torch.randint(7, vocab - 1, (3, 9), generator=g)
    pmask = torch.ones_like(prompt)
    pmask[1, :3] = 0  # left padding
    completion = torch.randint(7, vocab - 1, (3, 6), generator=g)
    noise = (torch.rand(prompt.shape, generator=g) < 0.3) & pmask.bool()
    draws = torch.rand(3, 2, 6, generator=g) < 0.5
    coef = torch.rand(3, 2, 6, generator=g)
    seen: list[object] = []
    forward = type(model).forward

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("logits_to_keep"))
        return forward(self, *args, **kwargs)

    common = {"mask_id": mask_id, "prompt_noise": noise}
    with torch.no_grad():
        ref_one = estimate_logps(Wrapper(model), prompt, pmask, completion, **common)
        ref_draws = masked_draws_logps(
            Wrapper(model), prompt, pmask, completion, completion_noise=draws, coef=coef, **common
        )
        monkeypatch.setattr(type(model), "forward", spy)
        one = estimate_logps(model, prompt, pmask, completion, **common)
        many = masked_draws_logps(
            model, prompt, pmask, completion, completion_noise=draws, coef=coef, **common
        )
    assert seen == [slice(9, None)] * 2  # one forward each (the two draws share theirs)
    if dtype == torch.float64:
        assert torch.equal(one, ref_one) and torch.equal(many, ref_draws)
    else:  # the head's GEMM may block differently for fewer rows
        torch.testing.assert_close(one, ref_one, rtol=0, atol=1e-5)
        torch.testing.assert_close(many, ref_draws, rtol=0, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.3, 0.9, 2.0])
def test_in_place_gumbel_equals_formula(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, 50, generator=g, dtype=torch.float64) * 4
    x0, _ = propose(logits, temperature, "low_confidence", torch.Generator().manual_seed(5))
    u = torch.rand(logits.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = (logits - temperature * torch.log(-torch.log(u))).argmax(dim=-1)
    assert torch.equal(x0, expected)
    noisy = u.clone().log_().neg_().log_().mul_(temperature).neg_().add_(logits)
    assert torch.equal(noisy, logits - temperature * torch.log(-torch.log(u)))


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_fast_sampler_unchanged_by_fast_paths(tiny_model_factory, cache) -> None:
    """The fast sampler with cache none is the reference sampler token for token (both now
    read block-only logits); the cached modes still run (their exactness vs the cache-free
    computation is in test_sampling_fast)."""
    model = _tiny_llada(tiny_model_factory, torch.float64)
    prompt = torch.randint(7, model.config.vocab_size, (3, 6), generator=torch.Generator())
    kw = {"gen_length": 16, "block_length": 8, "steps": 8, "temperature": 0.9}
    ref = sample(
        model,
        prompt,
        config=SamplerConfig(**kw),
        mask_id=model.config.mask_token_id,
        generator=torch.Generator().manual_seed(1),
    )
    fast = sample(
        model,
        prompt,
        config=SamplerConfig(**kw, name="fast", cache=cache),
        mask_id=model.config.mask_token_id,
        generator=torch.Generator().manual_seed(1),
    )
    if cache == "none":
        assert torch.equal(ref, fast)
    assert fast.shape == ref.shape
