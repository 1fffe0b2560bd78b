"""The diffu-GRPO objective (docs/method.md §4): clipped policy ratio, k3 KL penalty, token aggregation.

Per completion token o_k of completion o_i, with `rho = exp(logp - logp_old)`:

    loss_k = -( min(rho * A_i, clip(rho, 1 - eps, 1 + eps_high) * A_i) - beta * KL_k )
    KL_k   = exp(ref - logp) - (ref - logp) - 1          (the k3 estimator, >= 0)

Only valid completion tokens count: those up to and including the first EOS
(`completion_mask`). How the per-token terms are averaged is the `aggregation`:

- "group_token_mean" (default; d1's code): within each prompt group, sum over its valid tokens /
  their count; then the mean over groups. d1 computes `sum(loss * mask) / sum(mask)` over each
  micro-batch and averages micro-batches (gradient accumulation) and GPUs (DDP); its published
  runs use micro-batch = num_generations = 6, so one micro-batch is exactly one group. We compute
  that quantity directly, so it does not depend on how the batch is split into micro-batches.
- "token_mean": sum over every valid token of the optimizer batch / their count (one global
  token mean; docs/method.md §4's wording read over the whole batch; DAPO's choice).
- "sequence_mean": per-sequence mean, then batch mean (the paper's written objective,
  d1's Eq. 4: `1/G sum_i 1/|o_i| sum_k`, and TRL <= 0.15).

All three are expressed as per-token weights over the whole batch that sum to 1
(`token_weights`); a micro-batch's loss is `sum(weights * loss_k)` over its rows, so summing the
micro-batch losses (no extra division by the number of accumulation steps) gives exactly the
full-batch loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

__all__ = [
    "AGGREGATIONS",
    "GRPOLossOutput",
    "LossStats",
    "completion_mask",
    "grpo_loss",
    "k3_kl",
    "token_weights",
]

Aggregation = Literal["group_token_mean", "token_mean", "sequence_mean"]
AGGREGATIONS: tuple[str, ...] = ("group_token_mean", "token_mean", "sequence_mean")


def completion_mask(completion_ids: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """[B, C] bool: True on completion tokens up to and including the first EOS (docs/method.md §4).

    A completion without EOS is valid over its whole length. With `eos_id=None` every token is
    valid.
    """
    if completion_ids.dim() != 2:
        raise ValueError(f"completion_ids must be [B, C]; got {list(completion_ids.shape)}.")
    if eos_id is None:
        return torch.ones_like(completion_ids, dtype=torch.bool)
    is_eos = completion_ids == eos_id
    # Number of EOS strictly before position k; position k is valid iff none came before.
    before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()
    return before == 0


def token_weights(
    mask: torch.Tensor,
    *,
    aggregation: Aggregation | str = "group_token_mean",
    num_generations: int | None = None,
) -> torch.Tensor:
    """Per-token weights [N, C] (float32, zero off `mask`, summing to 1) for an aggregation.

    Args:
        mask: [N, C] bool valid-token mask of the whole optimizer batch (or generation batch).
        aggregation: "group_token_mean" | "token_mean" | "sequence_mean" (see module docs).
        num_generations: group size G; required for "group_token_mean" (rows grouped
            contiguously, N divisible by G).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(
            f"loss aggregation must be one of {', '.join(AGGREGATIONS)}; got {aggregation!r}."
        )
    m = mask.to(torch.float32)
    n = m.shape[0]
    if aggregation == "token_mean":
        return m / m.sum().clamp(min=1.0)
    if aggregation == "sequence_mean":
        return m / m.sum(dim=1, keepdim=True).clamp(min=1.0) / n
    if num_generations is None or num_generations < 1 or n % num_generations:
        raise ValueError(
            f"group_token_mean needs num_generations dividing the batch ({n} rows); "
            f"got {num_generations}."
        )
    grouped = m.view(n // num_generations, num_generations, -1)
    per_group = grouped.sum(dim=(1, 2), keepdim=True).clamp(min=1.0)
    return (grouped / per_group / (n // num_generations)).view_as(m)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """Per-token k3 KL estimate `exp(ref - logp) - (ref - logp) - 1` (docs/method.md §4), >= 0.

    `clamp`: the log-ratio `ref - logp` limited to [-clamp, clamp] first (see `grpo_loss`'s
    `log_ratio_clamp`); None: the exact formula."""
    d = ref_logps - logps
    if clamp is not None:
        d = d.clamp(-clamp, clamp)
    return torch.exp(d) - d - 1.0


@dataclass
class GRPOLossOutput:
    """Loss of one (micro-)batch and the raw sums behind its metrics.

    Attributes:
        loss: scalar, `sum(weights * per_token_loss)`, differentiable w.r.t. `logps`.
        per_token_loss: [B, C] unweighted per-token loss (zero off the mask).
        sums: summed statistics over the valid tokens as float64 device scalars, ready to merge
            across micro-batches with `LossStats` ("tokens", "kl", "clip_low", "clip_high",
            "clip_region", "ratio", "ratio_min", "ratio_max").
    """

    loss: torch.Tensor
    per_token_loss: torch.Tensor
    sums: dict[str, torch.Tensor]


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float = 0.5,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    log_ratio_clamp: float | None = None,
) -> GRPOLossOutput:
    """The diffu-GRPO loss of a batch of completions (docs/method.md §4).

    Args:
        logps: [B, C] current per-token log-probs (with gradient).
        old_logps: [B, C] log-probs of the sampling policy on the same prompt mask (no grad).
        advantages: [B] one advantage per completion.
        mask: [B, C] bool valid-token mask (`completion_mask`).
        epsilon: clip range below 1 (d1: 0.5); also above 1 unless `epsilon_high` is given.
        epsilon_high: optional clip range above 1 (TRL's name; DAPO's "clip higher").
        beta: KL coefficient (d1: 0.04). 0 skips the reference entirely.
        ref_logps: [B, C] reference log-probs on the same prompt mask; required when beta > 0.
        weights: [B, C] aggregation weights (`token_weights` over the full batch, sliced to these
            rows). None: the token mean of this batch (`sum(loss * mask) / sum(mask)`, d1's
            per-micro-batch normalisation).
        log_ratio_clamp: clamp `logp - logp_old` and `ref - logp` to [-c, c] before `exp` (no
            gradient beyond): for estimates with large weights (the ELBO's 1/t) whose ratio
            could overflow. None (d1): no clamp, the exact formula.

    Returns:
        A `GRPOLossOutput`.
    """
    if logps.shape != old_logps.shape or logps.shape != mask.shape:
        raise ValueError(
            f"logps {list(logps.shape)}, old_logps {list(old_logps.shape)} and mask "
            f"{list(mask.shape)} must have the same shape."
        )
    if advantages.shape != (logps.shape[0],):
        raise ValueError(
            f"advantages must be [{logps.shape[0]}] (one per completion); "
            f"got {list(advantages.shape)}."
        )
    if epsilon < 0 or (epsilon_high is not None and epsilon_high < 0):
        raise ValueError("epsilon and epsilon_high must be >= 0.")
    if beta < 0:
        raise ValueError(f"beta must be >= 0; got {beta}.")
    if beta > 0 and ref_logps is None:
        raise ValueError("beta > 0 needs ref_logps (the reference policy's log-probs).")
    eps_high = epsilon if epsilon_high is None else epsilon_high
    valid = mask.to(torch.bool)
    m = valid.to(logps.dtype)
    if weights is None:
        weights = m / m.sum().clamp(min=1.0)
    elif weights.shape != logps.shape:
        raise ValueError(f"weights must be {list(logps.shape)}; got {list(weights.shape)}.")

    adv = advantages.to(logps.dtype)[:, None]
    log_ratio = logps - old_logps.detach()
    if log_ratio_clamp is not None:
        log_ratio = log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + eps_high)
    surrogate = torch.minimum(ratio * adv, clipped * adv)
    per_token = -surrogate
    kl = None
    if beta > 0:
        assert ref_logps is not None
        kl = k3_kl(logps, ref_logps.detach(), clamp=log_ratio_clamp)
        per_token = per_token + beta * kl
    per_token = per_token * m
    loss = (per_token * weights.to(per_token.dtype)).sum()

    with torch.no_grad():
        # Device scalars, not Python floats: reading them back is one host sync per optimizer
        # step (`LossStats.finalize`), not eight per micro-batch.
        r = ratio.detach()
        low = (r < 1.0 - epsilon) & (adv < 0) & valid
        high = (r > 1.0 + eps_high) & (adv > 0) & valid
        f64 = torch.float64
        sums = {
            "tokens": valid.sum().to(f64),
            "kl": (kl.detach() * m).sum().to(f64) if kl is not None else r.new_zeros((), dtype=f64),
            "clip_low": low.sum().to(f64),
            "clip_high": high.sum().to(f64),
            "clip_region": (low | high).sum().to(f64),
            "ratio": r[valid].sum().to(f64),
            "ratio_min": r.masked_fill(~valid, math.inf).amin().to(f64),
            "ratio_max": r.masked_fill(~valid, -math.inf).amax().to(f64),
        }
    return GRPOLossOutput(loss=loss, per_token_loss=per_token, sums=sums)


@dataclass
class LossStats:
    """Merges `GRPOLossOutput.sums` over micro-batches into token-weighted means.

    `update` accepts Python floats or device scalars and keeps them on the device;
    `finalize` turns the totals into floats with one host sync.
    """

    totals: dict[str, Any] = field(default_factory=dict)

    def update(self, sums: dict[str, Any]) -> None:
        for key, value in sums.items():
            if key not in self.totals:
                self.totals[key] = value
            elif key == "ratio_min":
                self.totals[key] = _pairwise(torch.minimum, min, self.totals[key], value)
            elif key == "ratio_max":
                self.totals[key] = _pairwise(torch.maximum, max, self.totals[key], value)
            else:
                self.totals[key] = self.totals[key] + value

    def finalize(self) -> LossStats:
        """The totals as Python floats (one host sync for all of them); returns self."""
        keys = [k for k, v in self.totals.items() if isinstance(v, torch.Tensor)]
        if keys:
            values = torch.stack([self.totals[k].detach().to(torch.float64) for k in keys])
            for k, v in zip(keys, values.tolist(), strict=True):
                self.totals[k] = v
        return self

    def summary(self) -> dict[str, float]:
        """Token means: kl, clip_ratio/{low,high,region}, ratio/{mean,min,max}."""
        self.finalize()
        n = self.totals.get("tokens", 0.0)
        if n <= 0:
            return {}
        t = self.totals
        out: dict[str, float] = {}
        # A ratio-free objective (wd1) reports no ratio / clip / KL sums.
        for key, name in (
            ("kl", "kl"),
            ("clip_low", "clip_ratio/low"),
            ("clip_high", "clip_ratio/high"),
            ("clip_region", "clip_ratio/region"),
            ("ratio", "ratio/mean"),
        ):
            if key in t:
                out[name] = t[key] / n
        if "ratio_min" in t:
            out["ratio/min"] = t["ratio_min"]
            out["ratio/max"] = t["ratio_max"]
        return out


def _pairwise(tensor_op: Any, float_op: Any, a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ref = a if isinstance(a, torch.Tensor) else b
        return tensor_op(
            torch.as_tensor(a, device=ref.device, dtype=ref.dtype),
            torch.as_tensor(b, device=ref.device, dtype=ref.dtype),
        )
    return float_op(a, b)
