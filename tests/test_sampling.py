"""Tests for LLaDA's sampler (docs/method.md §2): schedule, exactness against a slow reference, padding
invariance, decoding invariants, sampling at temperature > 0, configs and bad inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from d1.core.sampling import (
    SamplerConfig,
    check_schedule,
    completion_stop_ids,
    decode_completions,
    encode_prompts,
    generate,
    generate_text,
    left_pad,
    num_transfer_tokens,
    register_sampler,
    sample,
    sampler_names,
)
from d1.recipes.sft.data import render_chat_prompt

VOCAB = 24
MASK = 23
PAD = 22


class TinyBidirectional(torch.nn.Module):
    """A random one-layer bidirectional transformer (float64), standing in for a dLLM.

    Like the native LLaDA model, it honours `attention_mask` as a key-padding mask and derives
    positions from it (cumsum - 1), so left padding changes nothing for the real tokens.
    """

    def __init__(self, seed: int, vocab: int = VOCAB, dim: int = 16, max_len: int = 96):
        super().__init__()
        g = torch.Generator().manual_seed(seed)

        def param(*shape: int, scale: float = 1.0) -> torch.nn.Parameter:
            w = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
            return torch.nn.Parameter(w)

        self.emb = param(vocab, dim)
        self.pos = param(max_len, dim)
        self.wq, self.wk, self.wv = (param(dim, dim, scale=dim**-0.5) for _ in range(3))
        self.w1 = param(dim, 4 * dim, scale=dim**-0.5)
        self.w2 = param(4 * dim, dim, scale=(4 * dim) ** -0.5)
        self.head = param(dim, vocab, scale=2.0 * dim**-0.5)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask.bool()
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        h = self.emb[input_ids] + self.pos[positions]
        scores = (h @ self.wq) @ (h @ self.wk).transpose(1, 2) / math.sqrt(h.shape[-1])
        scores = scores.masked_fill(~keep[:, None, :], float("-inf"))
        h = h + scores.softmax(-1) @ (h @ self.wv)
        h = h + F.gelu(h @ self.w1) @ self.w2
        return SimpleNamespace(logits=h @ self.head)


class FixedLogits(torch.nn.Module):
    """Returns the same logits at every position, whatever the input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask=None):
        b, n = input_ids.shape
        return SimpleNamespace(logits=self.logits.expand(b, n, -1).clone())


class Spy(torch.nn.Module):
    """Wraps a model and records every (input_ids, attention_mask) it receives."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def forward(self, input_ids, attention_mask=None):
        self.calls.append((input_ids.clone(), None if attention_mask is None else attention_mask))
        return self.inner(input_ids, attention_mask)


@dataclass
class Case:
    """A model under test with its token ids."""

    model: torch.nn.Module
    mask_id: int
    pad_id: int
    vocab: int  # the model's vocabulary size
    low: int  # ordinary (non-special) prompt tokens are drawn from [low, high)
    high: int

    def prompts(self, seed: int, lengths: list[int]) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        return [torch.randint(self.low, self.high, (n,), generator=g).tolist() for n in lengths]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one intra-op thread is faster, and much faster on a busy machine
    (2 threads contending with other processes made each small matmul ~40x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_case(tiny_model_factory):
    """`make_case(kind, seed, dtype)`: "toy" (TinyBidirectional) or "llada" (random tiny-xs)."""

    def make(kind: str, seed: int, dtype: torch.dtype = torch.float64) -> Case:
        if kind == "toy":
            return Case(TinyBidirectional(seed).to(dtype), MASK, PAD, VOCAB, 0, PAD)
        model = tiny_model_factory("tiny-xs", seed).to(dtype)
        cfg = model.config
        # The character tokenizer's special tokens are ids 0..6.
        return Case(model, cfg.mask_token_id, cfg.pad_token_id, cfg.vocab_size, 7, cfg.vocab_size)

    return make


def _prompts(seed: int, lengths: list[int]) -> list[list[int]]:
    """Random toy-model prompts (ids below PAD)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, PAD, (n,), generator=g).tolist() for n in lengths]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- slow reference


@torch.no_grad()
def reference_generate(
    model: torch.nn.Module,
    prompts: list[list[int]],
    *,
    gen_length: int,
    block_length: int,
    steps: int,
    temperature: float,
    cfg_scale: float,
    remasking: str,
    generator: torch.Generator | None,
    mask_id: int,
    vocab: int,
) -> list[list[int]]:
    """LLaDA's sampler written the slow, obvious way: every sequence runs alone (no padding),
    per block, per step, per position, with plain softmax/argmax and a sort.

    Randomness: to be comparable with the batched sampler it draws from the same generator in
    the same order, once per step for the whole batch: Gumbel uniforms [B, block, V] float64
    (temperature > 0), then remasking uniforms [B, block] float32 (random remasking). It uses
    LLaDA's original form exp(l) / (-log U)^T, not the sampler's log form.
    """
    batch = len(prompts)
    seqs = [list(p) + [mask_id] * gen_length for p in prompts]
    steps_per_block = steps // (gen_length // block_length)
    for blk in range(gen_length // block_length):
        starts = [len(p) + blk * block_length for p in prompts]
        masked_at_start = [
            sum(seqs[b][i] == mask_id for i in range(starts[b], starts[b] + block_length))
            for b in range(batch)
        ]
        for j in range(steps_per_block):
            noise = rand_conf = None
            if temperature > 0:
                noise = torch.rand(
                    (batch, block_length, vocab), generator=generator, dtype=torch.float64
                )
            if remasking == "random":
                rand_conf = torch.rand((batch, block_length), generator=generator)
            for b in range(batch):
                seq, start, plen = seqs[b], starts[b], len(prompts[b])
                logits = model(torch.tensor([seq])).logits[0].double()
                if cfg_scale > 0:
                    uncond_seq = [mask_id] * plen + seq[plen:]
                    un = model(torch.tensor([uncond_seq])).logits[0].double()
                    logits = un + (cfg_scale + 1) * (logits - un)
                m = masked_at_start[b]
                k = m // steps_per_block + (1 if j < m % steps_per_block else 0)
                candidates = []
                for i in range(start, start + block_length):
                    if seq[i] != mask_id:
                        continue
                    row = logits[i].clone()
                    row[mask_id] = float("-inf")  # the mask token is never proposed
                    if temperature > 0:
                        scores = row.exp() / (-torch.log(noise[b, i - start])) ** temperature
                        x0 = int(torch.argmax(scores))
                    else:
                        x0 = int(torch.argmax(row))
                    if remasking == "low_confidence":
                        conf = float(torch.softmax(row, dim=-1)[x0])
                    else:
                        conf = float(rand_conf[b, i - start])
                    candidates.append((-conf, i, x0))
                for _, i, x0 in sorted(candidates)[:k]:
                    seq[i] = x0
    return [s[len(p) :] for s, p in zip(seqs, prompts, strict=True)]


# --------------------------------------------------------------------------- schedule


def test_num_transfer_tokens_hand_computed() -> None:
    def sched(m: int, s: int, width: int = 16) -> list[int]:
        mask = torch.zeros(1, width, dtype=torch.bool)
        mask[0, :m] = True
        return num_transfer_tokens(mask, s)[0].tolist()

    assert sched(10, 4) == [3, 3, 2, 2]
    assert sched(0, 3) == [0, 0, 0]
    assert sched(3, 5) == [1, 1, 1, 0, 0]
    assert sched(8, 4) == [2, 2, 2, 2]
    assert sched(7, 1) == [7]
    assert sched(16, 16) == [1] * 16
    # Per row: each row has its own count (masked positions need not be contiguous).
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 1], [0, 1, 0, 1, 0, 0, 0], [0] * 7]).bool()
    out = num_transfer_tokens(mask, 3)
    assert out.tolist() == [[2, 2, 2], [1, 1, 0], [0, 0, 0]]
    assert out.dtype == torch.int64


# --------------------------------------------------------------------------- exactness

SCHEDULES = [(8, 8, 8), (10, 10, 4), (12, 4, 6), (16, 8, 4), (6, 2, 3)]
# (kind, seeds): random toy models and random tiny LLaDAs.
MODELS = [("toy", (0, 1, 2)), ("llada", (0, 1, 2))]


def _compare(case: Case, prompts: list[list[int]], seed: int, **kwargs) -> None:
    """Batched, left-padded sampler vs the per-sequence reference, token for token."""
    ids, attn = left_pad(prompts, case.pad_id)
    out = generate(case.model, ids, attn, mask_id=case.mask_id, generator=_gen(seed), **kwargs)
    ref = reference_generate(
        case.model,
        prompts,
        mask_id=case.mask_id,
        vocab=case.vocab,
        generator=_gen(seed),
        **kwargs,
    )
    assert torch.equal(out[:, : ids.shape[1]], ids)
    assert out[:, ids.shape[1] :].tolist() == ref


@pytest.mark.parametrize("kind,seeds", MODELS)
@pytest.mark.parametrize("gen_length,block_length,steps", SCHEDULES)
@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_matches_reference_greedy(
    make_case, kind, seeds, gen_length, block_length, steps, remasking
) -> None:
    # float64 models: batched-with-padding and alone agree to ~1e-15, so no near-tie can flip.
    for seed in seeds:
        case = make_case(kind, seed)
        _compare(
            case,
            case.prompts(seed, [3, 7, 5]),
            seed,
            gen_length=gen_length,
            block_length=block_length,
            steps=steps,
            remasking=remasking,
            temperature=0.0,
            cfg_scale=0.0,
        )


@pytest.mark.parametrize("kind", ["toy", "llada"])
@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("temperature,cfg_scale", [(0.0, 1.5), (0.8, 0.0), (1.0, 0.5)])
def test_matches_reference_sampling_and_cfg(
    make_case, kind, remasking, temperature, cfg_scale
) -> None:
    for seed, (gen_length, block_length, steps) in zip(
        (3, 4), [(12, 4, 6), (10, 10, 4)], strict=True
    ):
        case = make_case(kind, seed)
        _compare(
            case,
            case.prompts(seed, [4, 2, 6]),
            seed,
            gen_length=gen_length,
            block_length=block_length,
            steps=steps,
            remasking=remasking,
            temperature=temperature,
            cfg_scale=cfg_scale,
        )


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("kind", ["toy", "llada"])
def test_padding_invariance(make_case, kind) -> None:
    # float32, as the models run in practice.
    case = make_case(kind, 5, torch.float32)
    prompts = case.prompts(2, [2, 9, 5, 1])
    ids, attn = left_pad(prompts, case.pad_id)
    # The test has teeth: without the mask, padding changes this model's logits.
    x = torch.cat([ids, torch.full((4, 4), case.mask_id)], dim=1)
    with torch.no_grad():
        padded = case.model(x).logits[0, -4:]
        alone = case.model(x[:1, -6:]).logits[0, -4:]
    assert not torch.allclose(padded, alone, atol=1e-4)
    for cfg_scale in (0.0, 2.0):
        kwargs = dict(
            gen_length=8, block_length=4, steps=4, cfg_scale=cfg_scale, mask_id=case.mask_id
        )
        batched = generate(case.model, ids, attn, **kwargs)[:, ids.shape[1] :]
        for b, p in enumerate(prompts):
            single = generate(case.model, torch.tensor([p]), **kwargs)[0, len(p) :]
            assert torch.equal(batched[b], single), (cfg_scale, b)


def test_attention_mask_and_cfg_inputs() -> None:
    prompts = [[5, 6], [MASK, 1, 2, 3]]  # a mask token inside a prompt is allowed
    ids, attn = left_pad(prompts, PAD)
    spy = Spy(TinyBidirectional(0))
    out = generate(
        spy, ids, attn, gen_length=4, block_length=4, steps=2, cfg_scale=1.0, mask_id=MASK
    )
    assert len(spy.calls) == 2  # one batched (conditional + unconditional) forward per step
    expected_attn = torch.cat([attn, torch.ones(2, 4, dtype=attn.dtype)], dim=1)
    for x, mask in spy.calls:
        assert x.shape == (4, 8)
        assert torch.equal(mask, torch.cat([expected_attn, expected_attn]))
        cond, uncond = x[:2], x[2:]
        # Unconditional prompt: real tokens -> mask, padding stays padding; completion shared.
        assert torch.equal(uncond[:, :4], torch.where(attn.bool(), MASK, PAD))
        assert torch.equal(uncond[:, 4:], cond[:, 4:])
    assert out[1, 0] == MASK  # the prompt's mask token is conditioning, never filled
    assert not (out[:, 4:] == MASK).any()
    # Without padding no mask is passed at all (the model sees plain sequences).
    spy.calls.clear()
    generate(spy, ids, torch.ones_like(ids), gen_length=4, block_length=4, steps=2, mask_id=MASK)
    assert len(spy.calls) == 2 and all(mask is None for _, mask in spy.calls)


# --------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_trace_invariants(make_case, remasking) -> None:
    case = make_case("llada", 7, torch.float32)
    ids, attn = left_pad(case.prompts(3, [4, 6]), case.pad_id)
    plen, gen_length, block_length, steps = ids.shape[1], 12, 4, 9
    mask_id = case.mask_id
    snaps: list[torch.Tensor] = []
    calls: list[tuple[int, int]] = []
    kwargs = dict(gen_length=gen_length, block_length=block_length, steps=steps, mask_id=mask_id)
    out = generate(
        case.model,
        ids,
        attn,
        remasking=remasking,
        temperature=0.7,
        generator=_gen(0),
        trace=snaps,
        **kwargs,
    )
    assert len(snaps) == steps
    assert torch.equal(snaps[-1], out)
    expected_per_step = [2, 1, 1] * 3  # a block of 4 in 3 steps: floor(4/3) + [1, 0, 0]
    prev = torch.cat([ids, torch.full((2, gen_length), mask_id)], dim=1)
    for s, x in enumerate(snaps):
        block = s // 3
        lo, hi = plen + block * block_length, plen + (block + 1) * block_length
        committed = prev != mask_id
        assert torch.equal(x[committed], prev[committed]), "a committed token changed"
        newly = (prev == mask_id) & (x != mask_id)
        assert newly.sum(dim=1).tolist() == [expected_per_step[s]] * 2
        assert not newly[:, :lo].any() and not newly[:, hi:].any(), "commit outside the block"
        assert (x[:, hi:] == mask_id).all(), "a later block was touched"
        prev = x
    assert not (out[:, plen:] == mask_id).any()
    # The callable form sees (step_index, block_index) in order.
    generate(case.model, ids, attn, trace=lambda step, blk, x: calls.append((step, blk)), **kwargs)
    assert calls == [(s, s // 3) for s in range(steps)]


# --------------------------------------------------------------------------- temperature > 0


def test_sampling_deterministic_per_seed(make_case) -> None:
    case = make_case("llada", 1, torch.float32)
    ids, attn = left_pad(case.prompts(4, [3, 5]), case.pad_id)
    kwargs = dict(gen_length=16, block_length=8, steps=8, temperature=1.0, mask_id=case.mask_id)
    a = generate(case.model, ids, attn, generator=_gen(10), **kwargs)
    b = generate(case.model, ids, attn, generator=_gen(10), **kwargs)
    c = generate(case.model, ids, attn, generator=_gen(11), **kwargs)
    greedy = generate(case.model, ids, attn, **{**kwargs, "temperature": 0.0})
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, greedy)
    # Not degenerate: many distinct tokens are sampled.
    assert len(set(a[:, ids.shape[1] :].flatten().tolist())) > 8


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_sampled_distribution_follows_softmax(temperature, offset) -> None:
    # Regression: samples at temperature > 0 must follow softmax(logits / T), not collapse onto
    # one token (e.g. token 0 when exp(logits) overflows; offset 1000 would overflow LLaDA's
    # exp form even in float64).
    # The last token is the mask token: it carries the largest logit but is never sampled, so
    # the samples follow the softmax over the other tokens.
    logits = torch.tensor([2.0, 0.5, 1.5, -1.0, 0.0, 1.0, -3.0, 0.2, 3.0]) + offset
    model = FixedLogits(logits.float())
    n = 6000
    ids = torch.zeros((n, 1), dtype=torch.long)
    out = generate(
        model,
        ids,
        gen_length=1,
        block_length=1,
        steps=1,
        temperature=temperature,
        mask_id=8,
        generator=_gen(0),
    )
    counts = torch.bincount(out[:, 1], minlength=len(logits)).double()
    assert counts[8] == 0
    counts = counts[:8]
    expected = torch.softmax(logits[:8].double() / temperature, dim=0) * n
    assert counts.sum() == n
    # Pearson chi-square with 7 degrees of freedom: 99.9 % quantile is 24.3.
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 24.3, (chi2, counts.tolist(), expected.tolist())


# --------------------------------------------------------------------------- configs and errors


def test_sampler_config_presets_and_dispatch(monkeypatch) -> None:
    from d1.core.sampling import registry

    monkeypatch.setattr(registry, "_SAMPLERS", dict(registry._SAMPLERS))  # the fake is temporary
    cfg = SamplerConfig()
    assert (cfg.gen_length, cfg.block_length, cfg.steps, cfg.temperature) == (256, 32, None, 0.0)
    assert cfg.num_steps == 128  # null steps: gen_length / 2, d1's two tokens per step
    assert (cfg.cfg_scale, cfg.remasking, cfg.name) == (0.0, "low_confidence", "reference")
    ev = SamplerConfig.for_eval(512)
    assert (ev.gen_length, ev.block_length, ev.num_steps, ev.temperature) == (512, 32, 256, 0.0)
    assert ev.for_length(128).num_steps == 64 and ev.for_length(16).block_length == 16
    ro = SamplerConfig.for_rollouts()
    assert (ro.gen_length, ro.block_length, ro.num_steps, ro.temperature) == (256, 32, 128, 0.9)
    assert "reference" in sampler_names()

    ids, attn = left_pad(_prompts(5, [3, 4]), PAD)
    model = TinyBidirectional(2)
    small = SamplerConfig(gen_length=8, block_length=4, steps=4, temperature=0.5)
    via_config = sample(model, ids, attn, config=small, mask_id=MASK, generator=_gen(1))
    direct = generate(
        model,
        ids,
        attn,
        gen_length=8,
        block_length=4,
        steps=4,
        temperature=0.5,
        mask_id=MASK,
        generator=_gen(1),
    )
    assert torch.equal(via_config, direct)

    seen = {}

    def fake(model, input_ids, attention_mask=None, **kwargs):
        seen.update(kwargs)
        return input_ids

    register_sampler("test-fake", fake)
    sample(model, ids, attn, config=SamplerConfig(name="test-fake"), mask_id=MASK)
    assert seen["steps"] == 128 and seen["mask_id"] == MASK
    # Only the options a sampler declares are passed (the fake declares none).
    assert not {"cache", "threshold", "early_exit"} & set(seen)
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        SamplerConfig(name="nope")


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(gen_length=10, block_length=4), "multiple of block_length"),
        (dict(gen_length=8, block_length=2, steps=6), "multiple of the number of blocks"),
        (dict(gen_length=8, block_length=8, steps=9), "at most gen_length"),
        (dict(steps=0), "steps must be a positive integer"),
        (dict(remasking="lowest"), "Unknown remasking"),
        (dict(temperature=-1.0), "temperature"),
        (dict(cfg_scale=-0.5), "cfg_scale"),
        (dict(mask_id=None), "mask_id is required"),
        (dict(attention_mask=torch.ones(2, 3)), "attention_mask must have the shape"),
    ],
)
def test_bad_inputs(overrides, match) -> None:
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    kwargs = dict(gen_length=8, block_length=4, steps=4, mask_id=MASK)
    kwargs.update(overrides)
    with pytest.raises(ValueError, match=match):
        generate(TinyBidirectional(0), ids, **kwargs)


def test_mask_id_outside_vocabulary() -> None:
    model = FixedLogits(torch.zeros(8))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        generate(
            model,
            torch.zeros(1, 2, dtype=torch.long),
            gen_length=2,
            block_length=2,
            steps=1,
            mask_id=8,
        )


def test_bad_config_and_schedule() -> None:
    with pytest.raises(ValueError, match="multiple of block_length"):
        SamplerConfig(gen_length=100, block_length=32)
    with pytest.raises(ValueError, match="Unknown remasking"):
        SamplerConfig(remasking="top")
    check_schedule(256, 32, 128)  # d1's defaults are valid


# --------------------------------------------------------------------------- text helpers, CLI


def test_encode_prompts_left_pads(tokenizer) -> None:
    ids, attn = encode_prompts(tokenizer, ["abc", "a", "hello"])
    pad = tokenizer.pad_token_id
    assert ids.shape == attn.shape == (3, 5)
    assert attn.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]]
    assert ids[0, :2].tolist() == [pad, pad]
    assert ids[0, 2:].tolist() == tokenizer("abc", add_special_tokens=False)["input_ids"]
    assert ids[2].tolist() == tokenizer("hello", add_special_tokens=False)["input_ids"]


def test_decode_completions_cuts_at_stop_tokens(tokenizer) -> None:
    enc = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = tokenizer.eos_token_id
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    bos = tokenizer.bos_token_id
    assert set(completion_stop_ids(tokenizer)) == {eos, eot}
    rows = [
        [*enc("ab"), eos, *enc("cd")],
        [*enc("x y"), eot, *enc("z"), eos],
        [bos, *enc("no stop")],  # specials are dropped, nothing cut
        [eos, *enc("abc")],
    ]
    width = max(len(r) for r in rows)
    rows = [r + [eos] * (width - len(r)) for r in rows]
    assert decode_completions(tokenizer, torch.tensor(rows)) == ["ab", "x y", "no stop", ""]
    # Explicit stop ids replace the defaults.
    assert decode_completions(tokenizer, torch.tensor([rows[1]]), stop_ids=[eos]) == ["x yz"]


def test_generate_text(tiny_model_factory, tokenizer) -> None:
    model = tiny_model_factory("tiny-xs", 3)
    mask_id = tokenizer.mask_token_id
    prompts = [
        render_chat_prompt(tokenizer, q, system_prompt=False)
        for q in ("What is 2+2?", "hi", "Name a colour.")
    ]
    config = SamplerConfig(gen_length=16, block_length=8, steps=8)
    texts = generate_text(model, tokenizer, prompts, config=config, mask_id=mask_id)
    # Same as the pieces composed by hand...
    ids, attn = encode_prompts(tokenizer, prompts)
    out = generate(model, ids, attn, mask_id=mask_id, **config.generate_kwargs())
    assert texts == decode_completions(tokenizer, out[:, ids.shape[1] :])
    # ...and each prompt gets the same text alone.
    for p, t in zip(prompts, texts, strict=True):
        assert generate_text(model, tokenizer, [p], config=config, mask_id=mask_id) == [t]


def test_cli_generate() -> None:
    from typer.testing import CliRunner

    from d1.cli import app

    runner = CliRunner()
    args = ["generate", "--model", "tiny", "--prompt", "hi", "--gen-length", "8"]
    result = runner.invoke(app, [*args, "--block-length", "8", "--steps", "4"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, [*args, "--steps", "4", "--temperature", "0.9", "--seed", "1", "--show-steps"]
    )
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.output.splitlines()[:4]] == [
        ["step", str(i)] for i in range(1, 5)
    ]
    result = runner.invoke(app, [*args, "--block-length", "3"])
    assert result.exit_code != 0
    assert "multiple of block_length" in result.output
