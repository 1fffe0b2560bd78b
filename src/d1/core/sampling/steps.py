"""The steps every sampler of `d1.core.sampling` is made of (docs/method.md §2).

One LLaDA decoding step over a block: propose `x0` for the block's masked positions from its
logits (`propose_masked`: argmax, or Gumbel-max at temperature > 0, in float64; the mask token is
never proposed), score the proposals (`softmax(logits)[x0]` or a uniform draw), and commit some
of them: the top-k of the fixed schedule (`num_transfer_tokens`, `select_top_k`) or every one
above a confidence threshold (`select_above_threshold`). Around it: the canvas
`prompt ++ [M] * gen_length` with its attention mask (`init_canvas`), classifier-free guidance
(`uncond_prompt`, `guide`), the argument checks (`check_inputs`), the trace observer
(`emit_trace`) and the work counter (`SamplingStats`).

These are public inside the package: `reference.py` and `fast.py` compose them; nothing here
imports a sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from d1.core.models.forward import model_logits

__all__ = [
    "CACHE_MODES",
    "REMASKING",
    "SamplingStats",
    "SettingError",
    "TraceFn",
    "block_logits",
    "check_fast_options",
    "check_inputs",
    "check_options",
    "check_schedule",
    "emit_trace",
    "guide",
    "init_canvas",
    "num_transfer_tokens",
    "propose",
    "propose_masked",
    "select_above_threshold",
    "select_top_k",
    "uncond_prompt",
]

REMASKING = ("low_confidence", "random")
# Block KV cache modes of the fast sampler (docs/method.md §2).
CACHE_MODES = ("none", "prefix", "dual")

# trace(step_index, block_index, x): called after every step with a copy of the full sequences.
TraceFn = Callable[[int, int, torch.Tensor], None]


class SettingError(ValueError):
    """An invalid sampler setting; `key` names the `SamplerConfig` field to fix."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass
class SamplingStats:
    """Work done by sampler calls, added up (compute accounting, benchmarks).

    Every sampler fills it the same way, so the counts compare across samplers: a cached chunk
    call counts its own positions, not a full pass.

    Attributes:
        steps: decoding steps (each is one model call; CFG's two passes are batched into it).
        full_forwards: model calls over the whole sequence (every step of the reference
            sampler; the cache refresh at each block start of the fast one).
        cached_forwards: chunk calls against the block KV cache.
        full_sequences: rows run through full calls (CFG rows included): `batch x steps`
            for the reference sampler without CFG.
        cached_sequences: rows run through chunk calls (each a chunk, not a full pass).
        query_tokens: positions run through the model, summed over calls (rows x length):
            the transformer's work, up to attention's key length.
        early_exit_blocks: blocks skipped by the EOS early exit (`early_exit=True`).
    """

    steps: int = 0
    full_forwards: int = 0
    cached_forwards: int = 0
    full_sequences: int = 0
    cached_sequences: int = 0
    query_tokens: int = 0
    early_exit_blocks: int = 0

    @property
    def model_calls(self) -> int:
        """Model invocations (full + cached)."""
        return self.full_forwards + self.cached_forwards

    def count_call(self, rows: torch.Tensor, *, cached: bool) -> None:
        """Record one model call on `rows` [R, n] (R sequences of n positions)."""
        if cached:
            self.cached_forwards += 1
            self.cached_sequences += rows.shape[0]
        else:
            self.full_forwards += 1
            self.full_sequences += rows.shape[0]
        self.query_tokens += rows.numel()

    def add(self, other: SamplingStats) -> None:
        """Add `other`'s counts to this one."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        """The counts (and `model_calls`) as a plain dict."""
        out = {f.name: int(getattr(self, f.name)) for f in fields(self)}
        out["model_calls"] = self.model_calls
        return out


def check_schedule(gen_length: int, block_length: int, steps: int) -> None:
    """Raise ValueError unless (gen_length, block_length, steps) is a valid LLaDA schedule."""
    for name, value in (("gen_length", gen_length), ("block_length", block_length)):
        if int(value) != value or value < 1:
            raise SettingError(name, f"{name} must be a positive integer; got {value}.")
    if int(steps) != steps or steps < 1:
        raise SettingError("steps", f"steps must be a positive integer; got {steps}.")
    if gen_length % block_length != 0:
        raise SettingError(
            "block_length",
            f"gen_length ({gen_length}) must be a multiple of block_length ({block_length}); "
            f"pick a block_length that divides gen_length (d1 uses 32) or set "
            f"block_length = gen_length for a single block.",
        )
    if steps > gen_length:
        raise SettingError(
            "steps",
            f"steps ({steps}) must be at most gen_length ({gen_length}): each step commits at "
            f"least one token. Use steps <= {gen_length} (d1 uses gen_length / 2).",
        )
    num_blocks = gen_length // block_length
    if steps % num_blocks != 0:
        raise SettingError(
            "steps",
            f"steps ({steps}) must be a multiple of the number of blocks "
            f"(gen_length / block_length = {num_blocks}); e.g. steps = "
            f"{max(num_blocks, steps // num_blocks * num_blocks)}.",
        )


def check_options(temperature: float, cfg_scale: float, remasking: str) -> None:
    """Raise ValueError unless temperature >= 0, cfg_scale >= 0 and remasking is known."""
    if remasking not in REMASKING:
        raise SettingError(
            "remasking", f"Unknown remasking {remasking!r}; choose one of {', '.join(REMASKING)}."
        )
    if not temperature >= 0.0:
        raise SettingError(
            "temperature", f"temperature must be >= 0 (0 = greedy); got {temperature}."
        )
    if not cfg_scale >= 0.0:
        raise SettingError(
            "cfg_scale", f"cfg_scale must be >= 0 (0 disables guidance); got {cfg_scale}."
        )


def check_fast_options(cache: str | None, threshold: float | None) -> None:
    """Raise ValueError unless `cache` is None or a cache mode and `threshold` None or in (0, 1]."""
    if cache is not None and cache not in CACHE_MODES:
        raise SettingError(
            "cache", f"Unknown cache {cache!r}; choose one of {', '.join(CACHE_MODES)}."
        )
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise SettingError(
            "threshold",
            f"threshold must be in (0, 1] (a confidence; Fast-dLLM uses 0.9) or None for the "
            f"fixed schedule; got {threshold}.",
        )


def check_inputs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    gen_length: int,
    block_length: int,
    steps: int,
    temperature: float,
    cfg_scale: float,
    remasking: str,
    mask_id: int | None,
    generator: torch.Generator | None,
) -> None:
    """The argument checks every sampler shares (clear errors naming the fix)."""
    if mask_id is None:
        raise ValueError(
            "mask_id is required: pass the model's mask token id (LLaDA: 126336; "
            "`load_model(...).spec.mask_token_id`)."
        )
    check_schedule(gen_length, block_length, steps)
    check_options(temperature, cfg_scale, remasking)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, P]; got shape {list(input_ids.shape)}.")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {list(input_ids.shape)}; got "
            f"{list(attention_mask.shape)}. Build both with the same tokenizer call "
            f"(e.g. `d1.core.sampling.encode_prompts`)."
        )
    device = input_ids.device
    needs_noise = temperature > 0.0 or remasking == "random"
    if needs_noise and generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the inputs are on {device}; create it with "
            f"torch.Generator(device={str(device)!r}).manual_seed(seed)."
        )


def num_transfer_tokens(mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """How many tokens each step commits, per row (docs/method.md §2, step 2).

    Args:
        mask_index: [B, L_block] bool, the masked positions of the block at its start.
        steps: the block's number of steps.

    Returns:
        [B, steps] int64: with `m` masked tokens in a row, `floor(m / steps)` per step plus one
        for the first `m mod steps` steps (so the row sums to `m`).
    """
    if mask_index.dim() != 2:
        raise ValueError(f"mask_index must be [B, L_block]; got shape {list(mask_index.shape)}.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}.")
    m = mask_index.sum(dim=1, keepdim=True).to(torch.int64)
    base = m // steps
    remainder = m % steps
    step = torch.arange(steps, device=mask_index.device)[None, :]
    return base + (step < remainder).to(torch.int64)


def select_top_k(confidence: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool mask of the `k[b]` highest-confidence positions of each row (ties: lower index).

    A per-row k without a Python loop or host sync: sort once, keep ranks below k.
    """
    order = torch.argsort(confidence, dim=-1, descending=True, stable=True)
    keep = torch.arange(confidence.shape[-1], device=confidence.device)[None, :] < k[:, None]
    return torch.zeros_like(keep).scatter_(-1, order, keep)


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
    best = select_top_k(candidates, has_mask)
    return (best | (candidates > threshold)) & masked


def propose(
    logits: torch.Tensor,
    temperature: float,
    remasking: str,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Proposals x0 [B, n] and their confidences [B, n] (float64) from a block's logits."""
    logits64 = logits.to(torch.float64)  # a no-op: the samplers pass float64 logits
    if temperature == 0.0:
        x0 = logits64.argmax(dim=-1)
    else:
        # Gumbel-max in float64: argmax(l + T * G), G = -log(-log U), is the argmax of LLaDA's
        # exp(l) / (-log U)^T, without exp overflow (low-precision noise hurts quality).
        u = torch.rand(
            logits64.shape, generator=generator, device=logits64.device, dtype=torch.float64
        )
        # In place on the fresh uniforms, the same values bit for bit as
        # `logits64 - temperature * log(-log(u))` (a - b == (-b) + a exactly) without four
        # [B, n, V] float64 temporaries per step.
        x0 = u.log_().neg_().log_().mul_(temperature).neg_().add_(logits64).argmax(dim=-1)
    if remasking == "low_confidence":
        # softmax(logits)[x0] in float64, without materialising the full softmax.
        chosen = logits64.gather(-1, x0[..., None]).squeeze(-1)
        confidence = torch.exp(chosen - torch.logsumexp(logits64, dim=-1))
    else:
        confidence = torch.rand(x0.shape, generator=generator, device=x0.device)
        confidence = confidence.to(torch.float64)
    return x0, confidence


def propose_masked(
    block: torch.Tensor,
    logits: torch.Tensor,
    *,
    mask_id: int,
    temperature: float,
    remasking: str,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step's proposals for a block (docs/method.md §2, step 3).

    Args:
        block: [B, n] current tokens of the block.
        logits: [B, n, V] float64 logits of the block (modified in place: the mask token's
            logit is set to -inf, so it is never proposed).

    Returns:
        x0 [B, n], confidence [B, n] float64 (-inf where the position is already committed) and
        `masked` [B, n] bool.
    """
    if not 0 <= mask_id < logits.shape[-1]:
        raise ValueError(
            f"mask_id {mask_id} is outside the model's vocabulary of "
            f"{logits.shape[-1]} tokens; pass the model's own mask token id."
        )
    # The mask token is never a proposal (committing it would leave the position masked and
    # break the schedule); a trained model gives it ~0 probability anyway.
    logits[..., mask_id] = float("-inf")
    x0, confidence = propose(logits, temperature, remasking, generator)
    masked = block == mask_id
    confidence = confidence.masked_fill(~masked, float("-inf"))
    return x0, confidence, masked


def init_canvas(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    gen_length: int,
    mask_id: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`x = prompt ++ [M] * gen_length` and its [B, P + gen_length] mask.

    The mask is None when nothing is padded: one check up front (a host sync) instead of one
    per step, and no mask at all gives exactly the unmasked result.
    """
    device = input_ids.device
    batch, prompt_len = input_ids.shape
    x = torch.full((batch, prompt_len + gen_length), mask_id, dtype=torch.long, device=device)
    x[:, :prompt_len] = input_ids
    attn = None
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        ones = torch.ones((batch, gen_length), dtype=attention_mask.dtype, device=device)
        attn = torch.cat([attention_mask.to(device), ones], dim=1)
    return x, attn


def uncond_prompt(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, mask_id: int
) -> torch.Tensor:
    """The prompt of the unconditional CFG pass: real tokens -> mask, padding stays padding."""
    real_prompt = input_ids != mask_id
    if attention_mask is not None:
        real_prompt &= attention_mask.to(input_ids.device).bool()
    return input_ids.masked_fill(real_prompt, mask_id)


def guide(both: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance on [2B, n, V] logits (conditional rows first), in float64:
    `u + (cfg_scale + 1) * (c - u)`."""
    cond, uncond = both.to(torch.float64).chunk(2, dim=0)
    return uncond + (cfg_scale + 1.0) * (cond - uncond)


def emit_trace(
    trace: TraceFn | list[torch.Tensor] | None, step_index: int, block_index: int, x: torch.Tensor
) -> None:
    """Hand a copy of `x` to the trace observer (a list or a callable), if any."""
    if trace is None:
        return
    if isinstance(trace, list):
        trace.append(x.clone())
    else:
        trace(step_index, block_index, x.clone())


def block_logits(
    model: torch.nn.Module,
    rows: torch.Tensor,
    attention_mask: torch.Tensor | None,
    start: int,
    end: int,
    *,
    logit_shift: bool,
) -> torch.Tensor:
    """Logits [R, end - start, V] of positions [start, end) of a full forward over `rows`.

    The sampler reads one block, so a native LLaDA computes the head for the block only
    (`model_logits`'s `keep`; the head over the whole sequence was ~10 % of a tiny model's
    sampler step).
    """
    return model_logits(
        model, rows, attention_mask, logit_shift=logit_shift, keep=slice(start, end)
    )
