"""LLaDA's sampler: semi-autoregressive blocks with low-confidence remasking (SPEC 2).

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
  every step, so left-padded batches give each prompt the tokens it would get alone (SPEC 2.4,
  SPEC 8: the official code passes none).
- Only the current block's positions are scored (the official code scores all L positions, then
  sets those past the block to -inf; the committed set is the same). Mask tokens inside the
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

`SamplerConfig` names a sampler and its settings; `sample` dispatches on `config.sampler`, and
`generate_text` goes from strings to completion strings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from d1.models.forward import model_logits

__all__ = [
    "CACHE_MODES",
    "REMASKING",
    "SamplerConfig",
    "TraceFn",
    "chat_prompt",
    "check_fast_options",
    "check_schedule",
    "completion_stop_ids",
    "decode_completions",
    "encode_prompts",
    "generate",
    "generate_text",
    "left_pad",
    "num_transfer_tokens",
    "register_sampler",
    "run_generate",
    "sample",
    "sampler_names",
    "show_tokens",
]

REMASKING = ("low_confidence", "random")
# Block KV cache modes of the fast sampler (`d1.sampling_fast`, LLADA_ARCH.md "Fast-dLLM's cache").
CACHE_MODES = ("none", "prefix", "dual")

# trace(step_index, block_index, x): called after every step with a copy of the full sequences.
TraceFn = Callable[[int, int, torch.Tensor], None]


@dataclass
class SamplerConfig:
    """Which sampler to run and its settings (SPEC 2).

    Defaults are d1's RL rollout shape at temperature 0 (gen length 256, block 32, 128 steps:
    2 tokens per step). d1 evaluates at temperature 0, block 32, `steps = gen_length / 2`
    for gen lengths 128 / 256 / 512 (`SamplerConfig.for_eval`); its RL rollouts use
    256 / 32 / 128 at temperature 0.9 (`SamplerConfig.for_rollouts`).

    Attributes:
        gen_length: number of generated tokens.
        block_length: semi-autoregressive block size; must divide `gen_length`.
        steps: total denoising steps (forward passes, doubled with CFG); a multiple of the
            number of blocks, at most `gen_length`.
        temperature: Gumbel-max sampling temperature; 0 = argmax (greedy).
        cfg_scale: classifier-free guidance scale; 0 disables it (one forward per step).
        remasking: "low_confidence" (commit the most probable proposals) or "random".
        sampler: which registered sampler `sample` runs ("reference": `generate`; "fast":
            `d1.sampling_fast.generate_fast`, Fast-dLLM's block KV cache and parallel decoding).
        cache: the "fast" sampler's block KV cache: "none", "prefix" or "dual"; None = the
            sampler's default ("fast": "dual"; the reference sampler has no cache).
        threshold: the "fast" sampler's confidence-threshold parallel decoding: each step
            commits every masked position of the block whose confidence exceeds `threshold`
            (at least the most confident one), so the number of steps adapts and `steps` is
            not used. None = the fixed schedule of SPEC 2.2 (Fast-dLLM uses 0.9).
    """

    gen_length: int = 256
    block_length: int = 32
    steps: int = 128
    temperature: float = 0.0
    cfg_scale: float = 0.0
    remasking: str = "low_confidence"
    sampler: str = "reference"
    cache: str | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        check_schedule(self.gen_length, self.block_length, self.steps)
        _check_options(self.temperature, self.cfg_scale, self.remasking)
        check_fast_options(self.cache, self.threshold)
        if self.sampler == "reference" and (
            self.cache not in (None, "none") or self.threshold is not None
        ):
            raise ValueError(
                f"The reference sampler has no KV cache or threshold decoding (got cache="
                f"{self.cache!r}, threshold={self.threshold!r}); use sampler='fast' for them."
            )

    @classmethod
    def for_eval(cls, gen_length: int = 256, **overrides: Any) -> SamplerConfig:
        """d1's evaluation sampler: temperature 0, block 32, `steps = gen_length / 2`."""
        kwargs: dict[str, Any] = {
            "gen_length": gen_length,
            "block_length": 32,
            "steps": gen_length // 2,
            "temperature": 0.0,
        }
        return cls(**{**kwargs, **overrides})

    @classmethod
    def for_rollouts(cls, **overrides: Any) -> SamplerConfig:
        """d1's RL rollout sampler: gen length 256, block 32, 128 steps, temperature 0.9."""
        kwargs: dict[str, Any] = {
            "gen_length": 256,
            "block_length": 32,
            "steps": 128,
            "temperature": 0.9,
        }
        return cls(**{**kwargs, **overrides})

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments a sampler function takes from this config."""
        kwargs = asdict(self)
        kwargs.pop("sampler")
        # Fast-sampler options go only to samplers that take them: when set, and never to the
        # reference sampler (whose only mode, cache "none", is then implied).
        if self.cache is None or self.sampler == "reference":
            kwargs.pop("cache")
        if self.threshold is None:
            kwargs.pop("threshold")
        return kwargs


def check_schedule(gen_length: int, block_length: int, steps: int) -> None:
    """Raise ValueError unless (gen_length, block_length, steps) is a valid LLaDA schedule."""
    for name, value in (("gen_length", gen_length), ("block_length", block_length)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value}.")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps}.")
    if gen_length % block_length != 0:
        raise ValueError(
            f"gen_length ({gen_length}) must be a multiple of block_length ({block_length}); "
            f"pick a block_length that divides gen_length (d1 uses 32) or set "
            f"block_length = gen_length for a single block."
        )
    if steps > gen_length:
        raise ValueError(
            f"steps ({steps}) must be at most gen_length ({gen_length}): each step commits at "
            f"least one token. Use steps <= {gen_length} (d1 uses gen_length / 2)."
        )
    num_blocks = gen_length // block_length
    if steps % num_blocks != 0:
        raise ValueError(
            f"steps ({steps}) must be a multiple of the number of blocks "
            f"(gen_length / block_length = {num_blocks}); e.g. steps = "
            f"{max(num_blocks, steps // num_blocks * num_blocks)}."
        )


def _check_options(temperature: float, cfg_scale: float, remasking: str) -> None:
    if remasking not in REMASKING:
        raise ValueError(f"Unknown remasking {remasking!r}; choose one of {', '.join(REMASKING)}.")
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}.")
    if not cfg_scale >= 0.0:
        raise ValueError(f"cfg_scale must be >= 0 (0 disables guidance); got {cfg_scale}.")


def check_fast_options(cache: str | None, threshold: float | None) -> None:
    """Raise ValueError unless `cache` is None or a cache mode and `threshold` None or in [0, 1]."""
    if cache is not None and cache not in CACHE_MODES:
        raise ValueError(f"Unknown cache {cache!r}; choose one of {', '.join(CACHE_MODES)}.")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(
            f"threshold must be in [0, 1] (a confidence; Fast-dLLM uses 0.9) or None for the "
            f"fixed schedule; got {threshold}."
        )


def num_transfer_tokens(mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """How many tokens each step commits, per row (SPEC 2.2).

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


def _select_top_k(confidence: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool mask of the `k[b]` highest-confidence positions of each row (ties: lower index).

    A per-row k without a Python loop or host sync: sort once, keep ranks below k.
    """
    order = torch.argsort(confidence, dim=-1, descending=True, stable=True)
    keep = torch.arange(confidence.shape[-1], device=confidence.device)[None, :] < k[:, None]
    return torch.zeros_like(keep).scatter_(-1, order, keep)


def _propose(
    logits: torch.Tensor,
    temperature: float,
    remasking: str,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Proposals x0 [B, n] and their confidences [B, n] (float64) from a block's logits."""
    logits64 = logits.to(torch.float64)  # a no-op: generate passes float64 logits
    if temperature == 0.0:
        x0 = logits64.argmax(dim=-1)
    else:
        # Gumbel-max in float64: argmax(l + T * G), G = -log(-log U), is the argmax of LLaDA's
        # exp(l) / (-log U)^T, without exp overflow (low-precision noise hurts quality).
        u = torch.rand(
            logits64.shape, generator=generator, device=logits64.device, dtype=torch.float64
        )
        x0 = (logits64 - temperature * torch.log(-torch.log(u))).argmax(dim=-1)
    if remasking == "low_confidence":
        # softmax(logits)[x0] in float64, without materialising the full softmax.
        chosen = logits64.gather(-1, x0[..., None]).squeeze(-1)
        confidence = torch.exp(chosen - torch.logsumexp(logits64, dim=-1))
    else:
        confidence = torch.rand(x0.shape, generator=generator, device=x0.device)
        confidence = confidence.to(torch.float64)
    return x0, confidence


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
) -> torch.Tensor:
    """LLaDA's semi-autoregressive remasking sampler (SPEC 2); see the module docstring.

    Args:
        model: a mask predictor, called through `d1.models.forward.model_logits`. Its train/eval
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
    x, attn = _init_canvas(input_ids, attention_mask, gen_length, mask_id)
    prompt_len = input_ids.shape[1]
    use_cfg = cfg_scale > 0.0
    if use_cfg:
        uncond_prompt = _uncond_prompt(input_ids, attention_mask, mask_id)
        attn_cfg = torch.cat([attn, attn], dim=0) if attn is not None else None

    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    step_index = 0
    for block_index in range(num_blocks):
        start = prompt_len + block_index * block_length
        end = start + block_length
        schedule = num_transfer_tokens(x[:, start:end] == mask_id, steps_per_block)
        for j in range(steps_per_block):
            if use_cfg:
                x_uncond = x.clone()
                x_uncond[:, :prompt_len] = uncond_prompt
                both = model_logits(
                    model, torch.cat([x, x_uncond]), attn_cfg, logit_shift=logit_shift
                )[:, start:end]
                logits = _guide(both, cfg_scale)
            else:
                logits = model_logits(model, x, attn, logit_shift=logit_shift)[:, start:end]
                # float64 for Gumbel-max and confidences; for a float64 model this stays a view of
                # its output, which is fine: nothing else reads that output.
                logits = logits.to(torch.float64)
            block = x[:, start:end]
            x0, confidence, masked = _propose_masked(
                block,
                logits,
                mask_id=mask_id,
                temperature=temperature,
                remasking=remasking,
                generator=generator,
            )
            # `& masked` keeps committed tokens fixed even if k ever exceeded the masked count.
            transfer = _select_top_k(confidence, schedule[:, j]) & masked
            x[:, start:end] = torch.where(transfer, x0, block)
            _emit_trace(trace, step_index, block_index, x)
            step_index += 1
    return x


def _check_inputs(
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
    _check_options(temperature, cfg_scale, remasking)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, P]; got shape {list(input_ids.shape)}.")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {list(input_ids.shape)}; got "
            f"{list(attention_mask.shape)}. Build both with the same tokenizer call "
            f"(e.g. `d1.sampling.encode_prompts`)."
        )
    device = input_ids.device
    needs_noise = temperature > 0.0 or remasking == "random"
    if needs_noise and generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the inputs are on {device}; create it with "
            f"torch.Generator(device={str(device)!r}).manual_seed(seed)."
        )


def _init_canvas(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    gen_length: int,
    mask_id: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`x = prompt ++ [M] * gen_length` (SPEC 2.1) and its [B, P + gen_length] mask.

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


def _uncond_prompt(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, mask_id: int
) -> torch.Tensor:
    """The prompt of the unconditional CFG pass: real tokens -> mask, padding stays padding."""
    real_prompt = input_ids != mask_id
    if attention_mask is not None:
        real_prompt &= attention_mask.to(input_ids.device).bool()
    return input_ids.masked_fill(real_prompt, mask_id)


def _guide(both: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance on [2B, n, V] logits (conditional rows first), in float64:
    `u + (cfg_scale + 1) * (c - u)` (SPEC 2.3)."""
    cond, uncond = both.to(torch.float64).chunk(2, dim=0)
    return uncond + (cfg_scale + 1.0) * (cond - uncond)


def _propose_masked(
    block: torch.Tensor,
    logits: torch.Tensor,
    *,
    mask_id: int,
    temperature: float,
    remasking: str,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step's proposals for a block (SPEC 2.3): x0, confidence and the masked positions.

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
    x0, confidence = _propose(logits, temperature, remasking, generator)
    masked = block == mask_id
    confidence = confidence.masked_fill(~masked, float("-inf"))
    return x0, confidence, masked


def _emit_trace(
    trace: TraceFn | list[torch.Tensor] | None, step_index: int, block_index: int, x: torch.Tensor
) -> None:
    """Hand a copy of `x` to the trace observer (a list or a callable), if any."""
    if trace is None:
        return
    if isinstance(trace, list):
        trace.append(x.clone())
    else:
        trace(step_index, block_index, x.clone())


# Sampler registry: every entry takes generate's signature. Faster samplers register here.
_SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"reference": generate}


def register_sampler(name: str, fn: Callable[..., torch.Tensor]) -> None:
    """Make `fn` selectable as `SamplerConfig(sampler=name)`.

    `fn` takes `generate`'s signature (all of it: `sample` passes `mask_id`, `generator`,
    `logit_shift`, `trace` and every `SamplerConfig` setting; `cache` and `threshold` only when
    they are set) and returns [B, P + gen_length].
    """
    _SAMPLERS[name] = fn


def sampler_names() -> list[str]:
    """Names `SamplerConfig.sampler` accepts."""
    return sorted(_SAMPLERS)


def sample(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    config: SamplerConfig,
    mask_id: int | None,
    generator: torch.Generator | None = None,
    logit_shift: bool = False,
    trace: TraceFn | list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run the sampler `config.sampler` with `config`'s settings; returns [B, P + gen_length]."""
    fn = _SAMPLERS.get(config.sampler)
    if fn is None:
        raise ValueError(
            f"Unknown sampler {config.sampler!r}; choose one of {', '.join(sampler_names())}."
        )
    return fn(
        model,
        input_ids,
        attention_mask,
        mask_id=mask_id,
        generator=generator,
        logit_shift=logit_shift,
        trace=trace,
        **config.generate_kwargs(),
    )


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into `(input_ids [B, P], attention_mask [B, P])` (1 = real token)."""
    if not sequences:
        raise ValueError("No sequences to pad.")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if len(seq):
            ids[i, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
            attn[i, width - len(seq) :] = 1
    return ids.to(device), attn.to(device)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize prompt strings (no special tokens added) and left-pad them with a mask.

    Prompts are full text: apply the chat template first (it inserts LLaDA's BOS).
    """
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return left_pad(encoded, _pad_id(tokenizer), device)


# Special tokens that end a completion, where the tokenizer knows them.
_STOP_TOKENS = ("<|eot_id|>", "<|endoftext|>", "<|im_end|>", "<|end_of_text|>")


def completion_stop_ids(tokenizer: Any) -> list[int]:
    """Token ids that end a completion: EOS and the end-of-turn tokens the tokenizer has."""
    stop = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        stop.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    stop.update(int(vocab[t]) for t in _STOP_TOKENS if t in vocab)
    return sorted(stop)


def decode_completions(
    tokenizer: Any, completion_ids: torch.Tensor, stop_ids: Sequence[int] | None = None
) -> list[str]:
    """Decode [B, G] completions, each cut before its first stop token, specials dropped."""
    stop = set(completion_stop_ids(tokenizer) if stop_ids is None else stop_ids)
    texts = []
    for row in completion_ids.tolist():
        cut = next((i for i, tok in enumerate(row) if tok in stop), len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True))
    return texts


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def generate_text(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[str],
    *,
    config: SamplerConfig,
    mask_id: int | None,
    generator: torch.Generator | None = None,
    logit_shift: bool = False,
    stop_ids: Sequence[int] | None = None,
) -> list[str]:
    """Completions for prompt strings: left-pad with a mask, sample, decode (SPEC 2).

    Args:
        model: the diffusion LM (inputs go to its parameters' device).
        tokenizer: its tokenizer; prompts are encoded without added special tokens, so apply
            the chat template beforehand for instruct models.
        prompts: full prompt strings.
        config: the sampler and its settings.
        mask_id: the mask token id.
        generator: sampling noise source on the model's device (see `generate`).
        logit_shift: True for Dream-style models.
        stop_ids: token ids that end a completion (default: `completion_stop_ids(tokenizer)`).

    Returns:
        One string per prompt: the completion up to its first EOS / end-of-turn token, special
        tokens dropped.
    """
    input_ids, attention_mask = encode_prompts(tokenizer, prompts, _model_device(model))
    out = sample(
        model,
        input_ids,
        attention_mask,
        config=config,
        mask_id=mask_id,
        generator=generator,
        logit_shift=logit_shift,
    )
    return decode_completions(tokenizer, out[:, input_ids.shape[1] :], stop_ids)


# --------------------------------------------------------------------------- `d1 generate`


def chat_prompt(tokenizer: Any, text: str, *, chat: bool = True) -> str:
    """The prompt string for one user message: through the chat template when `chat`."""
    if not chat:
        return text
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "This tokenizer has no chat template; pass --no-chat (chat=False) to use the raw "
            "prompt (e.g. for a base model)."
        )
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def show_tokens(tokenizer: Any, ids: Sequence[int], mask_id: int, mask_glyph: str = "░") -> str:
    """One-line view of partly decoded ids: masks as `mask_glyph`, newlines as '⏎'."""
    pieces = [
        mask_glyph if tok == mask_id else tokenizer.decode([tok], skip_special_tokens=False)
        for tok in ids
    ]
    return "".join(pieces).replace("\n", "⏎")


def run_generate(
    model_name: str,
    prompt: str,
    *,
    config: SamplerConfig,
    seed: int = 0,
    chat: bool = True,
    mask_token_id: int | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    on_step: Callable[[int, int, str], None] | None = None,
) -> str:
    """Load a model and complete one prompt (the `d1 generate` command).

    Args:
        model_name: built-in tiny name, checkpoint folder or hub id (`d1.models.load_model`).
        prompt: the user's text; wrapped in the chat template when `chat`.
        config: the sampler and its settings.
        seed: seed of the sampling generator (matters at temperature > 0 or random remasking).
        chat: apply the tokenizer's chat template.
        mask_token_id: override the model's mask id.
        trust_remote_code: allow a checkpoint's own modelling code.
        device: "cpu", "cuda", ...; default: cuda when available.
        dtype: model dtype name; default: the checkpoint's own.
        on_step: optional `on_step(step_index, block_index, text)` with a one-line view of the
            completion after each step (masks shown as '░').

    Returns:
        The completion text (up to the first EOS / end-of-turn token).
    """
    from d1.models import load_model

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model(
        model_name,
        dtype=dtype,
        device=device,
        mask_token_id=mask_token_id,
        trust_remote_code=trust_remote_code,
    )
    model, tokenizer, spec = loaded.model, loaded.tokenizer, loaded.spec
    text = chat_prompt(tokenizer, prompt, chat=chat)
    input_ids, attention_mask = encode_prompts(tokenizer, [text], _model_device(model))
    plen = input_ids.shape[1]
    trace = None
    if on_step is not None:

        def trace(step: int, block: int, x: torch.Tensor) -> None:
            on_step(step, block, show_tokens(tokenizer, x[0, plen:].tolist(), spec.mask_token_id))

    generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    out = sample(
        model,
        input_ids,
        attention_mask,
        config=config,
        mask_id=spec.mask_token_id,
        generator=generator,
        logit_shift=spec.logit_shift,
        trace=trace,
    )
    return decode_completions(tokenizer, out[:, plen:])[0]


# The fast sampler registers itself as "fast" on import; importing it here makes the name known
# wherever `d1.sampling` is (configs validate names with `sampler_names()`). A plain module import
# (no `from`) so either module may be imported first.
import d1.sampling_fast  # noqa: E402, F401
