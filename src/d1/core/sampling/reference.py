"""LLaDA's sampler: semi-autoregressive blocks with low-confidence remasking (docs/method.md §2).

`generate` is the reference sampler, LLaDA's algorithm step for step:

1. `x = prompt ++ [M] * gen_length`, split into `gen_length / block_length` blocks, each decoded
   in `steps / num_blocks` steps, left to right.
2. Per block with `m` masked tokens and `s` steps, step j commits `floor(m / s)` tokens, plus one
   for the first `m mod s` steps (`num_transfer_tokens`).
3. Each step runs one forward pass over the whole sequence (two, batched, with classifier-free
   guidance), proposes `x0` for the block's masked positions (argmax, or Gumbel-max sampling at
   temperature > 0), scores each proposal (`softmax(logits)[x0]` or a uniform draw), and commits
   the top-k proposals. Committed tokens are never remasked.

Where we differ from the official script, on purpose:

- An attention mask (the prompt's, extended with ones over the generated part) is passed at
  every step, so left-padded batches give each prompt the tokens it would get alone (the
  official code passes none).
- Only the current block's positions are scored (the official code scores all L positions, then
  sets those past the block to -inf; the committed set is the same), and a native LLaDA model
  computes the LM head for the block only (`logits_to_keep`). Mask tokens inside the
  *prompt* are therefore allowed and treated as fixed conditioning: they are never filled (the
  official code would let them compete for the block's commits).
- Gumbel-max uses the log form `logits + T * Gumbel` in float64, which has the same argmax as
  LLaDA's `exp(logits) / (-log U)^T` but cannot overflow; at temperature 0 no noise is drawn.
- The mask token is never proposed (its logit is set to -inf before sampling and scoring).
  A trained LLaDA gives it ~0 probability, so this only matters for untrained models, where
  committing a mask token would leave the position masked and break the schedule.
- Classifier-free guidance is combined in float64 on the block's logits (LLaDA: model dtype).
- Randomness comes only from the passed `torch.Generator` (the official code uses the global
  RNG). Draw order per step: Gumbel noise `[B, block_length, V]` float64 (temperature > 0 only),
  then the `random` remasking scores `[B, block_length]` float32.

The steps themselves live in `d1.core.sampling.steps`, and the decoding loop is the fast
sampler's (`d1.core.sampling.fast.generate_fast` with `cache="none"` and no threshold, which
adds nothing to this algorithm); `tests/test_sampling.py` checks it token for token against a
slow per-sequence reference written from the steps above.
"""

from __future__ import annotations

import torch

from d1.core.sampling.fast import generate_fast
from d1.core.sampling.steps import SamplingStats, TraceFn

__all__ = ["generate"]


@torch.no_grad()
def generate(
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
    stats: SamplingStats | None = None,
) -> torch.Tensor:
    """LLaDA's semi-autoregressive remasking sampler; see the module docstring.

    Args:
        model: a mask predictor, called through `d1.core.models.forward.model_logits`. Its train/eval
            mode is left as is (call `model.eval()` first so dropout is off).
        input_ids: [B, P] prompt ids, left-padded when prompts differ in length. Mask tokens in
            the prompt are allowed and stay masked (conditioning, never filled).
        attention_mask: optional [B, P], 1 = real token, 0 = padding. It is extended with ones
            over the generated part and passed at every step. None means no padding.
        gen_length: tokens to generate; a multiple of `block_length`.
        block_length: block size.
        steps: total steps; a multiple of `gen_length / block_length`, at most `gen_length`.
        temperature: 0 = argmax; > 0 samples with float64 Gumbel-max.
        cfg_scale: > 0 enables classifier-free guidance: a second pass with the prompt's real
            tokens replaced by the mask (padding stays padding), batched with the conditional
            pass, combined as `u + (cfg_scale + 1) * (c - u)` in float64.
        remasking: "low_confidence" (confidence = softmax(logits)[x0], float64) or "random"
            (confidence ~ U(0, 1) from the generator).
        mask_id: the mask token id (LLaDA: 126336). Required.
        generator: source of the sampling noise; must live on `input_ids`' device. None uses
            torch's global RNG. At temperature 0 with low_confidence nothing is drawn.
        logit_shift: True for Dream-style models (see `model_logits`).
        trace: optional observer of decoding: a callable `trace(step_index, block_index, x)` or a
            list that receives a copy of `x` [B, P + gen_length] after every step.
        stats: optional `SamplingStats` that receives the work done (added to its counts).

    Returns:
        [B, P + gen_length] int64: the prompts followed by their completions.
    """
    # One decoding loop serves both samplers: the fast sampler without cache or threshold is
    # this algorithm step for step (its cache and threshold branches are all it adds).
    return generate_fast(
        model,
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
        logit_shift=logit_shift,
        trace=trace,
        cache="none",
        threshold=None,
        stats=stats,
    )
