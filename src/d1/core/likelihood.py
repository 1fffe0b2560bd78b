"""Per-token log-likelihood estimators of a completion under a masked diffusion LM (docs/method.md §4).

A dLLM has no tractable sequence likelihood, so policy-gradient methods need an estimate of
`log pi(o_k | q)` for every completion token. This module holds those estimators behind one
interface, `estimate_logps`, and a small registry so that other estimators (e.g. Monte-Carlo
ELBO estimates) can be added by name without touching the trainer.

The one estimator implemented is d1's one-step estimator (`"d1_one_step"`, docs/method.md §4):

1. build `q'` by masking each *real* prompt token (never padding) independently with
   probability `p_mask`;
2. replace the whole completion by the mask token;
3. run ONE forward pass on `q' ++ [M] * |o|`;
4. read `log softmax(logits)[k, o_k]` at every completion position k.

The sequence log-probability is the sum (mean-field) of these per-token terms; this module only
returns the per-token terms.

Other estimators (a masked-diffusion ELBO with Monte Carlo draws, DiffuCoder's coupled pair)
score each completion token from forward passes where only *some* completion tokens are
masked; they all reduce to `masked_draws_logps`: D forward passes per sequence, draw d masking
the completion positions `completion_noise[:, d]`, and the per-token estimate

    ell_k = sum_d coef[:, d, k] * 1[k masked in draw d] * log p(o_k | x_d)

(`d1.recipes.grpo.objectives` builds the draws and coefficients of each objective).

The prompt mask can be drawn once (`draw_prompt_mask`) and passed back in as `prompt_noise`, so
that the current, old and reference policies are all evaluated on the same `q'` within one
diffu-GRPO inner iteration (docs/method.md §4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from d1.core.masking import mask_tokens
from d1.core.models.forward import model_logits

__all__ = [
    "DEFAULT_ESTIMATOR",
    "Estimator",
    "d1_one_step_logps",
    "draw_prompt_mask",
    "estimate_logps",
    "get_estimator",
    "list_estimators",
    "masked_draws_logps",
    "register_estimator",
    "token_logprobs",
]

DEFAULT_ESTIMATOR = "d1_one_step"


class Estimator(Protocol):
    """Signature every registered estimator follows (see `estimate_logps` for the arguments)."""

    def __call__(
        self,
        model: torch.nn.Module,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor | None,
        completion_ids: torch.Tensor,
        *,
        mask_id: int,
        generator: torch.Generator | None,
        p_mask: float,
        logit_shift: bool,
        prompt_noise: torch.Tensor | None,
        chunk_size: int | None,
    ) -> torch.Tensor: ...


_ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Decorator registering a log-prob estimator under `name` (e.g. a Monte-Carlo ELBO one)."""

    def deco(fn: Estimator) -> Estimator:
        if name in _ESTIMATORS:
            raise ValueError(f"An estimator named {name!r} is already registered.")
        _ESTIMATORS[name] = fn
        return fn

    return deco


def list_estimators() -> list[str]:
    """Names of the registered estimators."""
    return sorted(_ESTIMATORS)


def get_estimator(name: str) -> Estimator:
    """The estimator registered as `name`; a clear error lists the known ones."""
    try:
        return _ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"Unknown log-prob estimator {name!r}. Known estimators: {', '.join(list_estimators())}."
        ) from None


def _real_tokens(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor | None) -> torch.Tensor:
    """[B, P] bool: True on real prompt tokens (the attention mask), all True when None."""
    if prompt_mask is None:
        return torch.ones_like(prompt_ids, dtype=torch.bool)
    if prompt_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_mask must have the shape of prompt_ids {list(prompt_ids.shape)}; "
            f"got {list(prompt_mask.shape)}."
        )
    return prompt_mask.to(torch.bool)


def draw_prompt_mask(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    p_mask: float,
    *,
    mask_id: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Draw d1's random prompt mask (docs/method.md §4): [B, P] bool, True where a prompt token is masked.

    Each real prompt token (attention mask 1) is masked independently with probability `p_mask`;
    padding is never masked. The only randomness is one [B, P] uniform draw from `generator`
    (through `d1.core.masking.mask_tokens`), so a generator seeded per (run, generation batch, inner
    iteration) reproduces the mask exactly.
    """
    if not 0.0 <= p_mask <= 1.0:
        raise ValueError(f"p_mask must lie in [0, 1]; got {p_mask} (d1 uses 0.15).")
    _, is_masked = mask_tokens(
        prompt_ids,
        _real_tokens(prompt_ids, prompt_mask),
        p_mask,
        mask_id=mask_id,
        generator=generator,
    )
    return is_masked


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`log_softmax(logits)[..., target]` in float32, without materialising the log-softmax.

    Computes `logit[target] - logsumexp(logits)`. Float32 logits are used as they are; lower
    precision logits (bf16 models) are upcast one sequence at a time, so the float32 copy never
    holds more than one row of [C, V] at once.

    Args:
        logits: [B, C, V] logits at the completion positions.
        targets: [B, C] token ids.

    Returns:
        [B, C] float32 log-probabilities.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {list(logits.shape)} and targets {list(targets.shape)} do not line up."
        )
    if logits.dtype == torch.float32 or logits.dtype == torch.float64:
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (picked - torch.logsumexp(logits, dim=-1)).float()
    rows = []
    for row_logits, row_targets in zip(logits, targets, strict=True):
        row = row_logits.float()
        picked = row.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row, dim=-1))
    return torch.stack(rows)


def _noisy_prompt(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    prompt_noise: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    mask_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt with `prompt_noise`'s positions masked, and the attention mask of
    prompt ++ completion. Completion positions attend everywhere, as during sampling; padding
    may never be masked."""
    real = _real_tokens(prompt_ids, prompt_mask)
    if prompt_noise.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_noise must have the shape of prompt_ids {list(prompt_ids.shape)}; "
            f"got {list(prompt_noise.shape)}."
        )
    prompt_noise = prompt_noise.to(device=prompt_ids.device, dtype=torch.bool)
    if bool((prompt_noise & ~real).any()):
        raise ValueError(
            "prompt_noise masks padding positions; only real prompt tokens may be masked."
        )
    noisy_prompt = torch.where(prompt_noise, torch.full_like(prompt_ids, mask_id), prompt_ids)
    # Always built: `model_logits` drops a mask without padding (one check, not two).
    attention = torch.cat([real, torch.ones_like(completion_ids, dtype=torch.bool)], dim=1)
    return noisy_prompt, attention.long()


@register_estimator("d1_one_step")
def d1_one_step_logps(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    completion_ids: torch.Tensor,
    *,
    mask_id: int,
    generator: torch.Generator | None,
    p_mask: float = 0.15,
    logit_shift: bool = False,
    prompt_noise: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """d1's one-step per-token log-prob estimate (docs/method.md §4); see `estimate_logps`."""
    if prompt_noise is None:
        prompt_noise = draw_prompt_mask(
            prompt_ids, prompt_mask, p_mask, mask_id=mask_id, generator=generator
        )
    # One draw that masks the whole completion, coefficient 1: exactly d1's estimate.
    whole = torch.ones_like(completion_ids, dtype=torch.bool)[:, None]
    return masked_draws_logps(
        model,
        prompt_ids,
        prompt_mask,
        completion_ids,
        mask_id=mask_id,
        prompt_noise=prompt_noise,
        completion_noise=whole,
        coef=whole.float(),
        logit_shift=logit_shift,
        chunk_size=chunk_size,
    )


def estimate_logps(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    completion_ids: torch.Tensor,
    *,
    mask_id: int,
    generator: torch.Generator | None = None,
    p_mask: float = 0.15,
    logit_shift: bool = False,
    estimator: str = DEFAULT_ESTIMATOR,
    prompt_noise: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Per-token log-probs `log pi(o_k | q)` of the completion tokens, [B, C] float32 (docs/method.md §4).

    Gradients flow through the model unless the caller wraps the call in `torch.no_grad()`.

    Args:
        model: the diffusion LM (anything `d1.core.models.forward.model_logits` accepts).
        prompt_ids: [B, P] prompt ids, left-padded.
        prompt_mask: [B, P] attention mask of the prompt (1 real, 0 padding), or None (no
            padding). Padding is never masked and never attended to.
        completion_ids: [B, C] the sampled completion tokens (every position is scored; the
            caller applies the completion mask, e.g. `d1.recipes.grpo.loss.completion_mask`).
        mask_id: the mask token id.
        generator: randomness for the prompt mask when `prompt_noise` is not given.
        p_mask: probability of masking each real prompt token (d1: 0.15; 0 keeps the prompt).
        logit_shift: True for Dream-style models (position i predicted at i-1).
        estimator: a registered estimator name (`list_estimators()`); d1's is "d1_one_step".
        prompt_noise: optional pre-drawn [B, P] bool prompt mask (`draw_prompt_mask`), so the
            same `q'` can be reused for the current, old and reference policies.
        chunk_size: optional number of sequences per forward pass; peak memory then depends on
            the chunk, not the batch (the result is identical).

    Returns:
        [B, C] float32 per-token log-probabilities.
    """
    if prompt_ids.dim() != 2 or completion_ids.dim() != 2:
        raise ValueError(
            "prompt_ids and completion_ids must be [B, P] and [B, C]; got "
            f"{list(prompt_ids.shape)} and {list(completion_ids.shape)}."
        )
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(
            f"prompt_ids has {prompt_ids.shape[0]} rows but completion_ids has "
            f"{completion_ids.shape[0]}."
        )
    fn = get_estimator(estimator)
    return fn(
        model,
        prompt_ids,
        prompt_mask,
        completion_ids,
        mask_id=mask_id,
        generator=generator,
        p_mask=p_mask,
        logit_shift=logit_shift,
        prompt_noise=prompt_noise,
        chunk_size=chunk_size,
    )


def masked_draws_logps(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    completion_ids: torch.Tensor,
    *,
    mask_id: int,
    prompt_noise: torch.Tensor,
    completion_noise: torch.Tensor,
    coef: torch.Tensor,
    logit_shift: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Per-token estimates from D partially masked forward passes per sequence, [B, C] float32.

    Draw d feeds `q' ++ o_d` to the model, where `q'` masks the prompt positions
    `prompt_noise` and `o_d` replaces the completion positions `completion_noise[:, d]` by the
    mask token (the other completion tokens stay visible), and reads
    `log p(o_k | q', o_d)` at every masked position k. The estimate of token k is
    `sum_d coef[:, d, k] * log p(o_k | q', o_d)` over the draws that mask k (zero when none
    does). With one draw masking the whole completion and `coef = 1` this is d1's one-step
    estimate; `d1.recipes.grpo.objectives` builds the coupled (DiffuCoder) and Monte Carlo ELBO
    (LLaDA / VRPO) draws.

    Args:
        model, prompt_ids, prompt_mask, completion_ids, mask_id, logit_shift, chunk_size: as
            in `estimate_logps` (the chunks split the rows; the result does not depend on it).
        prompt_noise: [B, P] bool, prompt positions to mask (padding never).
        completion_noise: [B, D, C] bool, completion positions masked in each draw.
        coef: [B, D, C] float, the coefficient of each draw's log-prob at each position.

    Returns:
        [B, C] float32; gradients flow unless called under `torch.no_grad()`.
    """
    b, c = completion_ids.shape
    if (
        completion_noise.dim() != 3
        or completion_noise.shape[0] != b
        or completion_noise.shape[2] != c
    ):
        raise ValueError(
            f"completion_noise must be [B, D, C] = [{b}, D, {c}]; got {list(completion_noise.shape)}."
        )
    if coef.shape != completion_noise.shape:
        raise ValueError(
            f"coef {list(coef.shape)} must match completion_noise {list(completion_noise.shape)}."
        )
    noisy_prompt, attention = _noisy_prompt(
        prompt_ids, prompt_mask, prompt_noise, completion_ids, mask_id=mask_id
    )
    completion_noise = completion_noise.to(device=completion_ids.device, dtype=torch.bool)
    coef = coef.to(device=completion_ids.device, dtype=torch.float32)
    p_len = prompt_ids.shape[1]
    draws = completion_noise.shape[1]
    # Every (row, draw) pair is one sequence, and the forwards run over chunks of sequences:
    # a row's D draws share forwards with other rows' (fewer, larger forwards than one per
    # draw); `chunk_size` bounds the sequences per forward.
    row_of = torch.arange(b, device=completion_ids.device).repeat_interleave(draws)
    hidden = completion_noise.reshape(b * draws, c)
    weight = coef.reshape(b * draws, c)
    targets = completion_ids[row_of]
    inputs = torch.cat(
        [noisy_prompt[row_of], torch.where(hidden, torch.full_like(targets, mask_id), targets)],
        dim=1,
    )
    attention = attention[row_of]
    n = b * draws
    step = n if chunk_size is None or chunk_size <= 0 else chunk_size
    parts = []
    for start in range(0, n, step):
        sl = slice(start, start + step)
        logits = model_logits(
            model, inputs[sl], attention[sl], logit_shift=logit_shift, keep=slice(p_len, None)
        )
        lp = token_logprobs(logits, targets[sl])
        del logits
        parts.append(torch.where(hidden[sl], weight[sl] * lp, torch.zeros_like(lp)))
    return torch.cat(parts).view(b, draws, c).sum(dim=1)
