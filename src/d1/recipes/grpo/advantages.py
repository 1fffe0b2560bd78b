"""Group-relative advantages (docs/method.md §4).

d1 uses `A_i = r_i - mean(r_group)` and does not divide by the standard deviation; TRL's
`scale_rewards` option ("group" divides by the group's std, "batch" by the whole batch's std) is
offered for comparison. Every token of completion i gets the same advantage `A_i`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["SCALE_REWARDS", "AdvantageResult", "compute_advantages"]

ScaleRewards = Literal["none", "group", "batch"]
SCALE_REWARDS: tuple[str, ...] = ("none", "group", "batch")

# A group whose reward std is below this counts as "zero std" (all completions scored alike,
# so every advantage is 0 and the group contributes no policy gradient). d1 uses 1e-6.
ZERO_STD_TOL = 1e-6


@dataclass
class AdvantageResult:
    """Advantages of one generation batch and the group statistics worth logging.

    Attributes:
        advantages: [N] float32, one per completion (N = groups x num_generations).
        group_mean: [N / G] mean reward of each group.
        group_std: [N / G] unbiased std of each group's rewards (what TRL divides by).
        zero_std_count: number of groups whose rewards are all equal (no learning signal).
        zero_std_fraction: zero_std_count / number of groups.
        nonzero_fraction: share of completions with a non-zero advantage (healthy: 0.9-1.0;
            0 means RL silently does nothing, e.g. a sampler that never varies).
    """

    advantages: torch.Tensor
    group_mean: torch.Tensor
    group_std: torch.Tensor
    zero_std_count: int
    zero_std_fraction: float
    nonzero_fraction: float


def compute_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    scale_rewards: ScaleRewards | str = "none",
    *,
    eps: float = 1e-4,
) -> AdvantageResult:
    """`A_i = r_i - mean(group)`, optionally divided by a std (docs/method.md §4; TRL's `scale_rewards`).

    Args:
        rewards: [N] total rewards, grouped contiguously: rows `[g*G, (g+1)*G)` are the G
            completions of prompt g.
        num_generations: G, the group size (>= 2: a group of one has no baseline).
        scale_rewards: "none" (d1), "group" (divide by the group's std + eps, TRL's default) or
            "batch" (divide by the std of all N rewards + eps).
        eps: added to the std before dividing (TRL: 1e-4).

    Returns:
        An `AdvantageResult`.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(
            f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}; got {scale_rewards!r}."
        )
    if num_generations < 2:
        raise ValueError(
            f"num_generations must be >= 2 for a group baseline; got {num_generations}."
        )
    rewards = rewards.detach().float().reshape(-1)
    n = rewards.numel()
    if n == 0 or n % num_generations:
        raise ValueError(
            f"{n} rewards do not split into groups of num_generations={num_generations}."
        )
    grouped = rewards.view(-1, num_generations)
    group_mean = grouped.mean(dim=1)
    group_std = grouped.std(dim=1)
    advantages = (grouped - group_mean[:, None]).reshape(-1)
    if scale_rewards == "group":
        advantages = advantages / (group_std.repeat_interleave(num_generations) + eps)
    elif scale_rewards == "batch":
        advantages = advantages / (rewards.std() + eps)
    zero = group_std < ZERO_STD_TOL
    zero_count = int(zero.sum())
    return AdvantageResult(
        advantages=advantages,
        group_mean=group_mean,
        group_std=group_std,
        zero_std_count=zero_count,
        zero_std_fraction=zero_count / group_std.numel(),
        nonzero_fraction=float((advantages.abs() > ZERO_STD_TOL).float().mean()),
    )
