"""Fast sampling (SPEC 2 "Faster samplers", Fast-dLLM): block KV cache + threshold decoding.

`generate_fast` is LLaDA's semi-autoregressive sampler (`d1.sampling.generate`, SPEC 2) with two
training-free accelerations from Fast-dLLM (Wu et al. 2025), usable separately or together:

- **Block-wise approximate KV cache** (`cache`, LLADA_ARCH.md "Fast-dLLM's cache"). At the start
  of each block one full forward runs over the whole sequence and fills an `LLaDAKVCache` with
  every layer's keys/values (the refresh; its logits make the block's first step). The block's
  later steps run the model on a chunk only, attending over the cache:
  - `"prefix"`: the chunk is the current block plus everything after it; the keys/values of the
    prompt and the earlier blocks come from the refresh;
  - `"dual"`: the chunk is the current block only; the suffix's keys/values are cached too;
  - `"none"`: every step is a full forward, exactly as the reference sampler.
  Cached keys/values are stale (they were computed when the block's tokens were still masks),
  so cached steps are approximate; each block's refresh bounds the error. Unlike Fast-dLLM's
  public code, both caches work with batches: prompts are left-padded, and the refresh's
  key-padding mask and RoPE positions are kept in the cache and used by every chunk.
- **Confidence-threshold parallel decoding** (`threshold`). Instead of the fixed number of
  commits per step (SPEC 2.2), a step commits every masked position of the current block whose
  confidence exceeds `threshold`, and at least the most confident one. A block ends when it has
  no mask left (in every row of the batch), so the number of steps adapts; `steps` is not used.
  Threshold 1.0 never commits two tokens in a step (a confidence never exceeds 1).

Everything else is the reference sampler's, through its own pieces (`_propose_masked`,
`_select_top_k`, `_guide`, ...): Gumbel-max in float64, low-confidence or random remasking, CFG,
the mask token never proposed, committed tokens never remasked, randomness only from the
`torch.Generator` and drawn in the same order and shapes (Gumbel noise `[B, block_length, V]`,
then remasking scores `[B, block_length]`, once per step). With `cache="none"` and
`threshold=None` it reproduces `generate` token for token.

The cache needs the native LLaDA model (`d1.models.LLaDAModelLM`, also inside a peft or DDP
wrapper); threshold decoding alone works with any model `model_logits` can call.

Registered as sampler "fast": `SamplerConfig(sampler="fast")` (dual cache, fixed schedule),
`SamplerConfig(sampler="fast", threshold=0.9)` (both), `cache="prefix"`, `cache="none"`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from d1.models.forward import model_logits
from d1.models.modeling_llada import LLaDAKVCache, LLaDAModelLM
from d1.sampling import (
    CACHE_MODES,
    TraceFn,
    _check_inputs,
    _emit_trace,
    _guide,
    _init_canvas,
    _propose_masked,
    _select_top_k,
    _uncond_prompt,
    check_fast_options,
    num_transfer_tokens,
    register_sampler,
)

__all__ = ["SamplingStats", "cache_model", "generate_fast", "select_above_threshold"]


@dataclass
class SamplingStats:
    """Work done by one `generate_fast` call (for benchmarks and compute accounting).

    Attributes:
        steps: decoding steps (each is one model call; CFG's two passes are batched into it).
        full_forwards: calls over the whole sequence (every step without a cache; the refresh
            at each block start with one).
        cached_forwards: chunk calls against the cache.
        query_tokens: positions run through the model, summed over calls (rows x length, CFG
            rows included): the transformer's work, up to attention's key length.
    """

    steps: int = 0
    full_forwards: int = 0
    cached_forwards: int = 0
    query_tokens: int = 0


def select_above_threshold(
    confidence: torch.Tensor, masked: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Fast-dLLM's parallel-decoding choice: which positions one step commits.

    Args:
        confidence: [B, n] confidences of the block's proposals.
        masked: [B, n] bool, the still-masked positions (the only candidates).
        threshold: commit every masked position whose confidence is strictly above it.

    Returns:
        [B, n] bool: the masked positions above `threshold`, plus each row's most confident
        masked position (ties: the lower index), so every row with a mask commits at least one.
    """
    has_mask = masked.any(dim=-1).to(torch.int64)
    candidates = confidence.masked_fill(~masked, float("-inf"))
    best = _select_top_k(candidates, has_mask)
    return (best | (candidates > threshold)) & masked


def cache_model(model: torch.nn.Module) -> LLaDAModelLM:
    """The native LLaDA model inside `model` (peft, DDP/accelerate wrappers are unwrapped).

    Calling it directly keeps LoRA active (peft injects its layers into the base model).
    Raises ValueError naming the fix when there is none (the cache needs `LLaDAKVCache`).
    """
    inner = model
    for _ in range(8):
        if isinstance(inner, LLaDAModelLM):
            return inner
        if hasattr(inner, "get_base_model"):  # peft
            inner = inner.get_base_model()
        elif isinstance(getattr(inner, "module", None), torch.nn.Module):  # DDP / accelerate
            inner = inner.module
        else:
            break
    raise ValueError(
        f"The block KV cache needs the native LLaDA model (d1.models.LLaDAModelLM); got "
        f"{type(model).__name__}. Use cache='none' (threshold decoding still works) or load the "
        f"model with d1.models.load_model."
    )


@torch.no_grad()
def generate_fast(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    gen_length: int,
    block_length: int,
    steps: int,
    temperature: float = 0.0,
    cfg_scale: float = 0.0,
    remasking: str = "low_confidence",
    mask_id: int | None = None,
    generator: torch.Generator | None = None,
    logit_shift: bool = False,
    trace: TraceFn | list[torch.Tensor] | None = None,
    cache: str = "dual",
    threshold: float | None = None,
    stats: SamplingStats | None = None,
) -> torch.Tensor:
    """LLaDA's sampler with Fast-dLLM's block KV cache and threshold decoding (module docstring).

    Args:
        model, input_ids, attention_mask, gen_length, block_length, steps, temperature,
        cfg_scale, remasking, mask_id, generator, logit_shift, trace: as `d1.sampling.generate`
            (with `threshold`, `steps` is validated but not used; `trace` is called after every
            step, so it also counts the adaptive steps).
        cache: "dual" (default: the block only is recomputed), "prefix" (the block and the
            suffix) or "none" (every step a full forward). Needs the native LLaDA model and no
            logit shift unless "none".
        threshold: None = the fixed schedule (SPEC 2.2); a confidence in [0, 1] = commit every
            masked block position above it, at least the most confident (Fast-dLLM: 0.9).
        stats: optional `SamplingStats` that receives the work done (added to its counts).

    Returns:
        [B, P + gen_length] int64: the prompts followed by their completions.
    """
    _check_inputs(
        input_ids,
        attention_mask,
        gen_length=gen_length,
        block_length=block_length,
        steps=steps,
        temperature=temperature,
        cfg_scale=cfg_scale,
        remasking=remasking,
        mask_id=mask_id,
        generator=generator,
    )
    check_fast_options(cache, threshold)
    if cache is None:
        raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}; got None.")
    lm = None
    if cache != "none":
        if logit_shift:
            raise ValueError(
                "The block KV cache supports LLaDA-style models (no logit shift); use "
                "cache='none' for Dream-style models."
            )
        lm = cache_model(model)
    stats = stats if stats is not None else SamplingStats()

    x, attn = _init_canvas(input_ids, attention_mask, gen_length, mask_id)
    prompt_len = input_ids.shape[1]
    use_cfg = cfg_scale > 0.0
    rows_attn = attn
    if use_cfg:
        uncond_prompt = _uncond_prompt(input_ids, attention_mask, mask_id)
        rows_attn = torch.cat([attn, attn], dim=0) if attn is not None else None

    def model_rows(lo: int, hi: int | None = None) -> torch.Tensor:
        """Columns [lo, hi) of the model's input rows: x, then x with the unconditional prompt
        under CFG (the two differ only in the prompt)."""
        if not use_cfg:
            return x[:, lo:hi]
        if lo >= prompt_len:
            return torch.cat([x[:, lo:hi], x[:, lo:hi]])
        x_uncond = x.clone()
        x_uncond[:, :prompt_len] = uncond_prompt
        return torch.cat([x, x_uncond])[:, lo:hi]

    def block_logits(raw: torch.Tensor) -> torch.Tensor:
        """The block's float64 logits [B, n, V] from the model's rows (CFG combined)."""
        return _guide(raw, cfg_scale) if use_cfg else raw.to(torch.float64)

    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    step_index = 0
    for block_index in range(num_blocks):
        start = prompt_len + block_index * block_length
        end = start + block_length
        schedule = None
        if threshold is None:
            schedule = num_transfer_tokens(x[:, start:end] == mask_id, steps_per_block)
        kv: LLaDAKVCache | None = None
        j = 0
        while True:
            if threshold is None:
                if j == steps_per_block:
                    break
            elif not bool((x[:, start:end] == mask_id).any()):
                break
            if lm is None:
                # Exactly the reference sampler's call.
                rows = model_rows(0)
                raw = model_logits(model, rows, rows_attn, logit_shift=logit_shift)
                raw = raw[:, start:end]
                stats.full_forwards += 1
            elif kv is None:
                # Block start: the refresh fills the cache from a full forward.
                rows = model_rows(0)
                out = lm(
                    input_ids=rows,
                    attention_mask=rows_attn,
                    use_cache=True,
                    logits_to_keep=slice(start, end),
                )
                raw, kv = out.logits, out.cache
                stats.full_forwards += 1
            else:
                hi = None if cache == "prefix" else end
                rows = model_rows(start, hi)
                raw = lm(
                    input_ids=rows,
                    cache=kv,
                    cache_position=start,
                    logits_to_keep=slice(0, block_length),
                ).logits
                stats.cached_forwards += 1
            stats.query_tokens += rows.numel()
            logits = block_logits(raw)
            block = x[:, start:end]
            x0, confidence, masked = _propose_masked(
                block,
                logits,
                mask_id=mask_id,
                temperature=temperature,
                remasking=remasking,
                generator=generator,
            )
            if schedule is not None:
                transfer = _select_top_k(confidence, schedule[:, j]) & masked
            else:
                transfer = select_above_threshold(confidence, masked, threshold)
            x[:, start:end] = torch.where(transfer, x0, block)
            _emit_trace(trace, step_index, block_index, x)
            stats.steps += 1
            step_index += 1
            j += 1
    return x


register_sampler("fast", generate_fast)
