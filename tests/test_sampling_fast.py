"""Tests for the fast sampler (docs/method.md §2 "Faster samplers", Fast-dLLM) and the model's block KV
cache: exact equivalences with the reference sampler, the cache's refresh/chunk mechanics,
approximation of cached steps, threshold decoding invariants, batch padding invariance in every
mode, configuration and errors."""

from __future__ import annotations

import pytest
import torch

from d1.core.models import LLaDAConfig, LLaDAModelLM
from d1.core.models.modeling_llada import LLaDAKVCache
from d1.core.models.tiny import init_weights_
from d1.core.sampling import (
    SamplerConfig,
    SamplingStats,
    cache_model,
    generate,
    generate_fast,
    left_pad,
    sample,
    sampler_names,
    select_above_threshold,
)

MASK, PAD, VOCAB = 39, 1, 40
CACHES = ["none", "prefix", "dual"]


def _llada(
    seed: int,
    *,
    n_layers: int = 2,
    n_kv_heads: int = 2,
    std: float = 0.2,
    head_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> LLaDAModelLM:
    """A random small LLaDA (GQA by default). std 0.2 gives far-from-uniform attention (a sharp,
    chaotic model: caching visibly changes its outputs); std 0.02 is the usual smooth init;
    `head_scale` sharpens the output distribution (confident predictions for threshold tests)."""
    config = LLaDAConfig(
        d_model=32,
        n_layers=n_layers,
        n_heads=4,
        n_kv_heads=n_kv_heads,
        mlp_hidden_size=48,
        vocab_size=VOCAB,
        embedding_size=VOCAB,
        rope_theta=10000.0,
        mask_token_id=MASK,
        eos_token_id=PAD,
        pad_token_id=PAD,
        bos_token_id=0,
    )
    model = LLaDAModelLM(config)
    init_weights_(model, torch.Generator().manual_seed(seed), std=std)
    with torch.no_grad():
        model.model.transformer.ff_out.weight.mul_(head_scale)
    return model.to(dtype).eval()


def _prompts(seed: int, lengths: list[int]) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, MASK, (n,), generator=g).tolist() for n in lengths]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _padded(seed: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return left_pad(_prompts(seed, lengths), PAD)


def _full_mask(attn: torch.Tensor, gen_length: int) -> torch.Tensor:
    return torch.cat([attn, torch.ones(attn.shape[0], gen_length, dtype=attn.dtype)], dim=1)


# --------------------------------------------------------------------------- model: KV cache


@pytest.mark.parametrize("n_kv_heads", [4, 2])
@pytest.mark.parametrize("padded", [False, True])
def test_refresh_and_unchanged_chunks_equal_full_forward(n_kv_heads, padded) -> None:
    # The cache's mechanics: a full forward with use_cache gives the plain forward's logits, and
    # a chunk run against the cache before anything changed gives the full forward's logits at
    # the chunk's positions (prefix-style [s, L) and dual-style [s, e) chunks), so the cache's
    # keys/values, RoPE positions and padding mask are all placed right.
    model = _llada(3, n_kv_heads=n_kv_heads)
    ids, attn = _padded(1, [3, 7, 5] if padded else [6, 6, 6])
    x = torch.cat([ids, torch.full((3, 12), MASK)], dim=1)
    x[:, -12:-6] = torch.randint(2, MASK, (3, 6), generator=_gen(0))
    mask = _full_mask(attn, 12)
    with torch.no_grad():
        full = model(x, attention_mask=mask).logits
        out = model(x, attention_mask=mask, use_cache=True)
        assert isinstance(out.cache, LLaDAKVCache)
        assert torch.equal(out.logits, full)
        cache = out.cache
        assert (cache.seq_length, cache.batch_size) == (x.shape[1], 3)
        assert cache.keys[0].shape == (3, n_kv_heads, x.shape[1], 8)
        s, e = ids.shape[1] + 4, ids.shape[1] + 8
        for hi in (x.shape[1], e):
            chunk = model(x[:, s:hi], cache=cache, cache_position=s).logits
            torch.testing.assert_close(chunk, full[:, s:hi], rtol=0, atol=1e-12)
        # logits_to_keep (HF semantics) and the tuple output.
        kept = model(x, attention_mask=mask, logits_to_keep=slice(s, e)).logits
        torch.testing.assert_close(kept, full[:, s:e], rtol=0, atol=1e-12)
        last = model(x, attention_mask=mask, logits_to_keep=3).logits
        torch.testing.assert_close(last, full[:, -3:], rtol=0, atol=1e-12)
        picked = model(x, attention_mask=mask, logits_to_keep=torch.tensor([0, 5])).logits
        torch.testing.assert_close(picked, full[:, [0, 5]], rtol=0, atol=1e-12)
        tup = model(x, attention_mask=mask, use_cache=True, return_dict=False)
        assert len(tup) == 2 and isinstance(tup[1], LLaDAKVCache)
        assert torch.equal(tup[0], full)
        # `past_key_values` (transformers' old name) is read as `cache`.
        old = model(x[:, s:e], past_key_values=cache, cache_position=torch.arange(s, e)).logits
        torch.testing.assert_close(old, full[:, s:e], rtol=0, atol=1e-12)


def test_chunk_after_edits_one_layer_is_exact_deeper_is_approximate() -> None:
    # Layer-0 keys/values depend on a position's own token only, so in a one-layer model the
    # cached keys of unchanged positions are exact: a chunk forward after edits inside the chunk
    # equals a fresh full forward. With two layers the cached keys are stale (approximate).
    ids, attn = _padded(2, [4, 2])
    x = torch.cat([ids, torch.full((2, 8), MASK)], dim=1)
    mask = _full_mask(attn, 8)
    s = ids.shape[1]
    errors = {}
    for n_layers in (1, 2):
        model = _llada(5, n_layers=n_layers)
        with torch.no_grad():
            cache = model(x, attention_mask=mask, use_cache=True).cache
            y = x.clone()
            y[:, s : s + 3] = torch.tensor([[7, 8, 9], [10, 11, 12]])
            for hi in (s + 4, y.shape[1]):  # dual-style, then prefix-style chunk
                chunk = model(y[:, s:hi], cache=cache, cache_position=s).logits
                full = model(y, attention_mask=mask).logits[:, s:hi]
                errors[n_layers, hi] = float((chunk - full).abs().max())
    assert max(errors[1, h] for h in (s + 4, x.shape[1])) < 1e-12
    assert min(errors[2, h] for h in (s + 4, x.shape[1])) > 1e-4


def test_cache_errors_name_the_problem() -> None:
    model = _llada(0)
    x = torch.randint(2, MASK, (2, 10), generator=_gen(0))
    with torch.no_grad():
        cache = model(x, use_cache=True).cache
        with pytest.raises(ValueError, match="cache_position"):
            model(x[:, 2:4], cache=cache)
        with pytest.raises(ValueError, match="does not fit the cache"):
            model(x[:, 2:6], cache=cache, cache_position=8)
        with pytest.raises(ValueError, match="does not fit the cache"):
            model(x[:1, 2:4], cache=cache, cache_position=2)
        with pytest.raises(ValueError, match="filled by a full forward"):
            model(x[:, 2:4], cache=LLaDAKVCache(2, None, torch.arange(10)), cache_position=2)
        with pytest.raises(ValueError, match="whole sequence"):
            model(x[:, 2:4], cache=cache, cache_position=2, attention_mask=torch.ones(2, 2))


# --------------------------------------------------------------------------- exact equivalences


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_threshold_one_no_cache_is_reference_one_token_per_step(remasking, temperature) -> None:
    # A confidence never exceeds 1, so threshold 1.0 commits exactly one token per step: the
    # reference sampler with steps = gen_length.
    model = _llada(4, head_scale=6.0)  # confident predictions (some reach ~1 in float64)
    ids, attn = _padded(4, [2, 6])
    common = dict(mask_id=MASK, remasking=remasking, temperature=temperature, gen_length=12)
    ref = generate(model, ids, attn, block_length=4, steps=12, generator=_gen(3), **common)
    fast = generate_fast(
        model, ids, attn, block_length=4, steps=3, cache="none", threshold=1.0,
        generator=_gen(3), **common,
    )  # fmt: skip
    assert torch.equal(fast, ref)


@pytest.mark.parametrize("cache", CACHES)
def test_tiny_threshold_is_one_step_per_block_in_every_cache_mode(cache) -> None:
    # Every confidence exceeds 1e-12 (vocabulary of 40): each block is decoded in its first step, which with a cache
    # is the refresh (an exact full forward): the reference with steps = number of blocks.
    model = _llada(6)
    ids, attn = _padded(6, [5, 1, 3])
    stats = SamplingStats()
    kwargs = dict(gen_length=12, block_length=4, mask_id=MASK)
    ref = generate(model, ids, attn, steps=3, **kwargs)
    fast = generate_fast(
        model, ids, attn, steps=12, cache=cache, threshold=1e-12, stats=stats, **kwargs
    )
    assert torch.equal(fast, ref)
    assert stats.steps == 3 and stats.full_forwards == 3 and stats.cached_forwards == 0


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("threshold", [None, 0.6])
def test_one_layer_cache_is_exact(cache, threshold) -> None:
    # In a one-layer model the cached keys/values of positions outside the chunk (prompt,
    # earlier blocks; with the dual cache also the all-mask suffix) are exact, so the cached
    # sampler equals the uncached one token for token, with padding, CFG and sampling.
    model = _llada(7, n_layers=1, head_scale=6.0)
    ids, attn = _padded(7, [2, 8, 5])
    for temperature, cfg_scale in ((0.0, 0.0), (0.9, 0.0), (0.0, 1.0)):
        kwargs = dict(
            gen_length=16, block_length=8, steps=8, mask_id=MASK, threshold=threshold,
            temperature=temperature, cfg_scale=cfg_scale,
        )  # fmt: skip
        plain = generate_fast(model, ids, attn, cache="none", generator=_gen(1), **kwargs)
        cached = generate_fast(model, ids, attn, cache=cache, generator=_gen(1), **kwargs)
        assert torch.equal(cached, plain), (temperature, cfg_scale)
        if threshold is None:
            ref = generate(model, ids, attn, generator=_gen(1), **{
                k: v for k, v in kwargs.items() if k != "threshold"
            })  # fmt: skip
            assert torch.equal(cached, ref)


# --------------------------------------------------------------------------- cached steps


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_block_first_step_exact_later_steps_close(cache) -> None:
    # Inside the sampler: the logits of each block's first step equal a full forward's (the
    # refresh); later steps, computed against stale keys/values, are close but not equal.
    model = _llada(0, std=0.02)  # the usual smooth initialisation
    ids, attn = _padded(8, [3, 6])
    plen, gen_length, block_length, steps = ids.shape[1], 16, 8, 8
    calls: list[tuple[torch.Tensor, bool]] = []
    widths: list[int] = []

    def hook(module, args, kwargs, out):
        calls.append((out.logits.clone(), kwargs.get("cache") is not None))
        widths.append(kwargs["input_ids"].shape[1])

    handle = model.register_forward_hook(hook, with_kwargs=True)
    snaps: list[torch.Tensor] = []
    try:
        generate_fast(
            model, ids, attn, gen_length=gen_length, block_length=block_length, steps=steps,
            mask_id=MASK, cache=cache, trace=snaps,
        )  # fmt: skip
    finally:
        handle.remove()
    assert len(calls) == len(snaps) == steps
    canvas = torch.cat([ids, torch.full((2, gen_length), MASK)], dim=1)
    states = [canvas, *snaps[:-1]]
    mask = _full_mask(attn, gen_length)
    per_block = steps // (gen_length // block_length)
    later = []
    for i, (logits, used_cache) in enumerate(calls):
        start = plen + (i // per_block) * block_length
        with torch.no_grad():
            full = model(states[i], attention_mask=mask).logits[:, start : start + block_length]
        diff = float((logits.log_softmax(-1) - full.log_softmax(-1)).abs().max())
        if i % per_block == 0:
            assert not used_cache and diff < 1e-12, (i, diff)
        else:
            assert used_cache
            later.append(diff)
    assert max(later) < 0.05, later  # close...
    assert min(later) > 1e-6, later  # ...but really from the cache
    # What each call ran on: the whole sequence at block starts; then the block and the suffix
    # (prefix cache) or the block only (dual cache).
    total = plen + gen_length
    expected = []
    for i in range(steps):
        start = plen + (i // per_block) * block_length
        if i % per_block == 0:
            expected.append(total)
        else:
            expected.append(total - start if cache == "prefix" else block_length)
    assert widths == expected


# --------------------------------------------------------------------------- threshold decoding


def test_select_above_threshold_hand_computed() -> None:
    conf = torch.tensor(
        [
            [0.95, 0.20, 0.91, 0.99, 0.50],  # 0.99 is committed already: not a candidate
            [0.30, 0.10, 0.40, 0.05, 0.35],  # nothing above: the most confident only
            [0.80, 0.80, 0.10, 0.20, 0.30],  # tie for the best: the lower index
            [0.99, 0.99, 0.99, 0.99, 0.99],  # no mask left: nothing
        ],
        dtype=torch.float64,
    )
    masked = torch.tensor(
        [[1, 1, 1, 0, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool
    )
    out = select_above_threshold(conf, masked, 0.9)
    assert out.int().tolist() == [
        [1, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]
    # Strictly above: a confidence equal to the threshold is not enough (unless it is the best).
    eq = select_above_threshold(
        torch.tensor([[0.9, 0.95]]), torch.ones(1, 2, dtype=torch.bool), 0.9
    )
    assert eq.tolist() == [[False, True]]


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_threshold_trace_invariants(cache, remasking) -> None:
    model = _llada(9, head_scale=6.0)
    ids, attn = _padded(9, [4, 6, 2])
    plen, gen_length, block_length, threshold = ids.shape[1], 16, 8, 0.7
    steps_seen: list[tuple[int, int]] = []
    snaps: list[torch.Tensor] = []

    def trace(step: int, block: int, x: torch.Tensor) -> None:
        steps_seen.append((step, block))
        snaps.append(x)

    out = generate_fast(
        model, ids, attn, gen_length=gen_length, block_length=block_length, steps=2,
        mask_id=MASK, cache=cache, threshold=threshold, remasking=remasking, temperature=0.5,
        generator=_gen(2), trace=trace,
    )  # fmt: skip
    assert [s for s, _ in steps_seen] == list(range(len(snaps)))
    assert torch.equal(snaps[-1], out)
    assert not (out[:, plen:] == MASK).any()
    prev = torch.cat([ids, torch.full((3, gen_length), MASK)], dim=1)
    parallel = 0
    for (_, block), x in zip(steps_seen, snaps, strict=True):
        lo, hi = plen + block * block_length, plen + (block + 1) * block_length
        committed = prev != MASK
        assert torch.equal(x[committed], prev[committed]), "a committed token changed"
        newly = (prev == MASK) & (x != MASK)
        had_mask = (prev[:, lo:hi] == MASK).any(dim=1)
        # At least one commit per step in every row that still had a mask in the block.
        assert torch.equal(newly.sum(dim=1) >= 1, had_mask)
        assert not newly[:, :lo].any() and not newly[:, hi:].any(), "commit outside the block"
        parallel += int((newly.sum(dim=1) > 1).sum())
        prev = x
    # Adaptive: fewer steps than tokens, because some steps commit several tokens.
    assert parallel > 0 and len(snaps) < gen_length
    blocks = [b for _, b in steps_seen]
    assert blocks == sorted(blocks) and set(blocks) == {0, 1}


def test_threshold_commits_every_confident_token() -> None:
    # One step, checked against an independent computation from a full forward: committed =
    # masked positions with softmax(logits)[argmax] > threshold, or the single most confident.
    model = _llada(10, head_scale=6.0)
    ids, attn = _padded(10, [3, 5])
    snaps: list[torch.Tensor] = []
    generate_fast(
        model, ids, attn, gen_length=8, block_length=8, steps=8, mask_id=MASK,
        cache="dual", threshold=0.8, trace=snaps,
    )  # fmt: skip
    plen = ids.shape[1]
    x = torch.cat([ids, torch.full((2, 8), MASK)], dim=1)
    with torch.no_grad():
        logits = model(x, attention_mask=_full_mask(attn, 8)).logits[:, plen:].double()
    logits[..., MASK] = float("-inf")
    probs = logits.softmax(-1)
    conf, x0 = probs.max(-1)
    expected = x.clone()
    for b in range(2):
        chosen = (conf[b] > 0.8).nonzero().flatten().tolist() or [int(conf[b].argmax())]
        assert len(chosen) >= 1
        for i in chosen:
            expected[b, plen + i] = x0[b, i]
    assert torch.equal(snaps[0], expected)


# --------------------------------------------------------------------------- batches, determinism


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("threshold", [None, 0.7])
def test_padding_invariance_every_mode(cache, threshold) -> None:
    # Each prompt gets the same completion in a left-padded batch as alone (greedy), in every
    # cache mode, with and without threshold decoding and CFG. The test has teeth: without the
    # padding mask the batched logits differ.
    model = _llada(11, head_scale=6.0)
    prompts = _prompts(11, [2, 9, 5, 1])
    ids, attn = left_pad(prompts, PAD)
    with torch.no_grad():
        x = torch.cat([ids, torch.full((4, 4), MASK)], dim=1)
        assert not torch.allclose(model(x).logits[0, -4:], model(x[:1, -6:]).logits[0, -4:])
    for cfg_scale in (0.0, 1.5):
        kwargs = dict(
            gen_length=12, block_length=4, steps=6, mask_id=MASK, cfg_scale=cfg_scale,
            cache=cache, threshold=threshold,
        )  # fmt: skip
        batched = generate_fast(model, ids, attn, **kwargs)[:, ids.shape[1] :]
        for b, p in enumerate(prompts):
            single = generate_fast(model, torch.tensor([p]), **kwargs)[0, len(p) :]
            assert torch.equal(batched[b], single), (cfg_scale, b)


@pytest.mark.parametrize("cache", CACHES)
def test_deterministic_per_seed(cache) -> None:
    model = _llada(12, dtype=torch.float32)
    ids, attn = _padded(12, [3, 5])
    kwargs = dict(
        gen_length=16, block_length=8, steps=8, temperature=1.0, mask_id=MASK, cache=cache,
        threshold=0.5,
    )  # fmt: skip
    a = generate_fast(model, ids, attn, generator=_gen(10), **kwargs)
    b = generate_fast(model, ids, attn, generator=_gen(10), **kwargs)
    c = generate_fast(model, ids, attn, generator=_gen(11), **kwargs)
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- wrappers, configs


def test_lora_wrapped_model_uses_adapters() -> None:
    from d1.core.models import LoraSettings, apply_lora

    model = _llada(13, n_layers=1)
    peft_model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # non-zero adapters, so LoRA changes the outputs
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=_gen(0), dtype=p.dtype))
    peft_model.eval()
    assert cache_model(peft_model) is peft_model.get_base_model()
    ids, attn = _padded(13, [3, 6])
    kwargs = dict(gen_length=8, block_length=4, steps=4, mask_id=MASK)
    ref = generate(peft_model, ids, attn, **kwargs)
    fast = generate_fast(peft_model, ids, attn, cache="dual", **kwargs)  # exact: one layer
    assert torch.equal(fast, ref)
    with peft_model.disable_adapter():
        plain = generate(peft_model, ids, attn, **kwargs)
    assert not torch.equal(plain, ref)


def test_unsupported_models_and_options() -> None:
    class NotLLaDA(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _llada(0)

        def forward(self, input_ids, attention_mask=None, **kwargs):
            return self.inner(input_ids, attention_mask=attention_mask)

    wrapped = NotLLaDA()
    ids = torch.randint(2, MASK, (1, 4), generator=_gen(0))
    kwargs = dict(gen_length=8, block_length=4, steps=4, mask_id=MASK)
    with pytest.raises(ValueError, match="native LLaDA model"):
        generate_fast(wrapped, ids, cache="dual", **kwargs)
    # Threshold decoding alone works with any model.
    out = generate_fast(wrapped, ids, cache="none", threshold=0.5, **kwargs)
    assert not (out == MASK).any()
    with pytest.raises(ValueError, match="logit shift"):
        generate_fast(_llada(0), ids, cache="prefix", logit_shift=True, **kwargs)
    with pytest.raises(ValueError, match="Unknown cache"):
        generate_fast(_llada(0), ids, cache="full", **kwargs)
    with pytest.raises(ValueError, match="threshold must be in"):
        generate_fast(_llada(0), ids, threshold=1.5, **kwargs)
    with pytest.raises(ValueError, match="mask_id is required"):
        generate_fast(_llada(0), ids, gen_length=8, block_length=4, steps=4)


def test_sampler_config_and_registry() -> None:
    assert "fast" in sampler_names()
    model = _llada(14, head_scale=6.0)
    ids, attn = _padded(14, [2, 5])
    base = dict(gen_length=8, block_length=4, steps=4, temperature=0.6)

    def run(config: SamplerConfig) -> torch.Tensor:
        return sample(model, ids, attn, config=config, mask_id=MASK, generator=_gen(4))

    def direct(**kw) -> torch.Tensor:
        return generate_fast(model, ids, attn, mask_id=MASK, generator=_gen(4), **base, **kw)

    # "fast" defaults to the dual cache with the fixed schedule.
    assert torch.equal(run(SamplerConfig(name="fast", **base)), direct(cache="dual"))
    cfg = SamplerConfig(name="fast", cache="prefix", threshold=0.9, **base)
    assert torch.equal(run(cfg), direct(cache="prefix", threshold=0.9))
    assert cfg.generate_kwargs()["cache"] == "prefix"
    assert torch.equal(
        run(SamplerConfig(name="fast", cache="none", **base)),
        run(SamplerConfig(**base)),
    )
    # The reference sampler never receives fast options; "none" is its own mode.
    kw = SamplerConfig(cache="none", **base).generate_kwargs()
    assert "cache" not in kw and "threshold" not in kw
    with pytest.raises(ValueError, match="use name='fast'"):
        SamplerConfig(cache="dual")
    with pytest.raises(ValueError, match="use name='fast'"):
        SamplerConfig(threshold=0.9)
    with pytest.raises(ValueError, match="use name='fast'"):
        SamplerConfig(early_exit=True)
    with pytest.raises(ValueError, match="Unknown cache"):
        SamplerConfig(name="fast", cache="both")
    with pytest.raises(ValueError, match="threshold must be in"):
        SamplerConfig(name="fast", threshold=-0.1)


def test_cli_generate_fast() -> None:
    from typer.testing import CliRunner

    from d1.cli import app

    args = ["generate", "--model", "tiny", "--prompt", "hi", "--gen-length", "16"]
    fast = CliRunner().invoke(app, [*args, "--sampler", "fast", "--block-length", "8"])
    assert fast.exit_code == 0, fast.output
