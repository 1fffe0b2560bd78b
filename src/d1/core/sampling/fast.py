"""Fast sampling (Fast-dLLM): block KV cache, threshold decoding, EOS early exit.

`generate_fast` is LLaDA's semi-autoregressive sampler (`d1.core.sampling.reference.generate`,
which runs this loop without cache or threshold) with
Fast-dLLM's training-free accelerations (Wu et al. 2025), usable separately or together
(docs/method.md §2):

- **Block-wise approximate KV cache** (`cache`). At the start of each block one full forward
  runs over the whole sequence and fills an `LLaDAKVCache` with every layer's keys/values (the
  refresh; its logits make the block's first step). The block's later steps run the model on a
  chunk only, attending over the cache:
  - `"prefix"`: the chunk is the current block plus everything after it; the keys/values of the
    prompt and the earlier blocks come from the refresh;
  - `"dual"`: the chunk is the current block only; the suffix's keys/values are cached too;
  - `"none"`: every step is a full forward, exactly as the reference sampler.
  Cached keys/values are stale (they were computed when the block's tokens were still masks),
  so cached steps are approximate; each block's refresh bounds the error. Unlike Fast-dLLM's
  public code, both caches work with batches: prompts are left-padded, and the refresh's
  key-padding mask and RoPE positions are kept in the cache and used by every chunk.
- **Confidence-threshold parallel decoding** (`threshold`). Instead of the fixed number of
  commits per step, a step commits every masked position of the current block whose
  confidence exceeds `threshold`, and at least the most confident one. A block ends when it has
  no mask left (in every row of the batch), so the number of steps adapts; `steps` is not used.
  Threshold 1.0 never commits two tokens in a step (a confidence never exceeds 1).
- **EOS early exit** (`early_exit`, off by default). After each block, once every row of the
  batch holds an EOS token in its decoded blocks, the remaining blocks are filled with EOS and
  decoding stops. Committed tokens are never remasked and later blocks never change earlier
  ones, so each row's text up to its first EOS is exactly what the full run gives; only the
  positions after it differ (EOS instead of what the model would have written there, which a
  model that ends early writes anyway). The generator is then left with fewer draws consumed.

Everything else is the reference sampler's, through the shared steps of `d1.core.sampling.steps`:
Gumbel-max in float64, low-confidence or random remasking, CFG, the mask token never proposed,
committed tokens never remasked, randomness only from the `torch.Generator` and drawn in the
same order and shapes (Gumbel noise `[B, block_length, V]`, then remasking scores
`[B, block_length]`, once per step). With `cache="none"` and `threshold=None` it *is* the
reference sampler (`generate` runs this loop so).

The cache needs the native LLaDA model (`d1.core.models.LLaDAModelLM`, also inside a peft or DDP
wrapper); threshold decoding and early exit work with any model `model_logits` can call.

Registered as sampler "fast": `SamplerConfig(name="fast")` (dual cache, fixed schedule),
`SamplerConfig(name="fast", threshold=0.9)` (both), `cache="prefix"`, `cache="none"`.
"""

from __future__ import annotations

import torch

from d1.core.models.forward import native_llada
from d1.core.models.modeling_llada import LLaDAKVCache, LLaDAModelLM
from d1.core.sampling.steps import (
    CACHE_MODES,
    SamplingStats,
    TraceFn,
    block_logits,
    check_fast_options,
    check_inputs,
    emit_trace,
    guide,
    init_canvas,
    num_transfer_tokens,
    propose_masked,
    select_above_threshold,
    select_top_k,
    uncond_prompt,
)

__all__ = ["cache_model", "generate_fast"]


def cache_model(model: torch.nn.Module) -> LLaDAModelLM:
    """The native LLaDA model inside `model` (peft, DDP/accelerate wrappers are unwrapped).

    Calling it directly keeps LoRA active (peft injects its layers into the base model).
    Raises ValueError naming the fix when there is none (the cache needs `LLaDAKVCache`).
    """
    inner = native_llada(model)
    if inner is not None:
        return inner
    raise ValueError(
        f"The block KV cache needs the native LLaDA model (d1.core.models.LLaDAModelLM); got "
        f"{type(model).__name__}. Use cache='none' (threshold decoding still works) or load the "
        f"model with d1.core.models.load_model."
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
    early_exit: bool = False,
    eos_id: int | None = None,
) -> torch.Tensor:
    """LLaDA's sampler with Fast-dLLM's block KV cache and threshold decoding (module docstring).

    Args:
        model, input_ids, attention_mask, gen_length, block_length, steps, temperature,
        cfg_scale, remasking, mask_id, generator, logit_shift, trace: as the reference sampler
            (with `threshold`, `steps` is validated but not used; `trace` is called after every
            step, so it also counts the adaptive steps).
        cache: "dual" (default: the block only is recomputed), "prefix" (the block and the
            suffix) or "none" (every step a full forward). Needs the native LLaDA model and no
            logit shift unless "none".
        threshold: None = the fixed schedule; a confidence in (0, 1] = commit every masked
            block position above it, at least the most confident (Fast-dLLM: 0.9).
        stats: optional `SamplingStats` that receives the work done (added to its counts).
        early_exit: stop once every row has an EOS in its decoded blocks, filling the rest
            with EOS (module docstring). Needs `eos_id`.
        eos_id: the model's EOS id (LLaDA: 126081); used by `early_exit` only.

    Returns:
        [B, P + gen_length] int64: the prompts followed by their completions.
    """
    check_inputs(
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
    if early_exit and eos_id is None:
        raise ValueError(
            "early_exit needs the model's EOS id: pass eos_id (LLaDA: 126081; "
            "`load_model(...).spec.eos_token_id`)."
        )
    stats = stats if stats is not None else SamplingStats()

    x, attn = init_canvas(input_ids, attention_mask, gen_length, mask_id)
    prompt_len = input_ids.shape[1]
    use_cfg = cfg_scale > 0.0
    rows_attn = attn
    if use_cfg:
        prompt_uncond = uncond_prompt(input_ids, attention_mask, mask_id)
        rows_attn = torch.cat([attn, attn], dim=0) if attn is not None else None

    def model_rows(lo: int, hi: int | None = None) -> torch.Tensor:
        """Columns [lo, hi) of the model's input rows: x, then x with the unconditional prompt
        under CFG (the two differ only in the prompt)."""
        if not use_cfg:
            return x[:, lo:hi]
        if lo >= prompt_len:
            return torch.cat([x[:, lo:hi], x[:, lo:hi]])
        x_uncond = x.clone()
        x_uncond[:, :prompt_len] = prompt_uncond
        return torch.cat([x, x_uncond])[:, lo:hi]

    def combine(raw: torch.Tensor) -> torch.Tensor:
        """The block's float64 logits [B, n, V] from the model's rows (CFG combined)."""
        return guide(raw, cfg_scale) if use_cfg else raw.to(torch.float64)

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
                # A full forward per step: the reference sampler.
                rows = model_rows(0)
                raw = block_logits(model, rows, rows_attn, start, end, logit_shift=logit_shift)
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
            else:
                hi = None if cache == "prefix" else end
                rows = model_rows(start, hi)
                raw = lm(
                    input_ids=rows,
                    cache=kv,
                    cache_position=start,
                    logits_to_keep=slice(0, block_length),
                ).logits
            stats.count_call(rows, cached=lm is not None and j > 0)  # j 0: the refresh
            logits = combine(raw)
            block = x[:, start:end]
            x0, confidence, masked = propose_masked(
                block,
                logits,
                mask_id=mask_id,
                temperature=temperature,
                remasking=remasking,
                generator=generator,
            )
            if schedule is not None:
                transfer = select_top_k(confidence, schedule[:, j]) & masked
            else:
                transfer = select_above_threshold(confidence, masked, threshold)
            x[:, start:end] = torch.where(transfer, x0, block)
            emit_trace(trace, step_index, block_index, x)
            stats.steps += 1
            step_index += 1
            j += 1
        # Every row has ended in its decoded blocks: the rest can only be EOS padding.
        ended = early_exit and bool((x[:, prompt_len:end] == eos_id).any(dim=1).all())
        if ended and block_index + 1 < num_blocks:
            x[:, end:] = eos_id
            stats.early_exit_blocks += num_blocks - block_index - 1
            break
    return x
