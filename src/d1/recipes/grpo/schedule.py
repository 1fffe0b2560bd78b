"""The inner-iteration prompt-mask schedule of diffu-GRPO (docs/method.md §4, docs/method.md §8).

After one generation batch, diffu-GRPO takes `mu` (`num_iterations`) gradient steps on it.
Inner iteration k uses its own random prompt mask `q'_k`; within iteration k the SAME mask is
used for the current, old and reference log-probs; across k the masks differ (the paper's
regulariser: "random masking").

Where the reference code went wrong, and what we do instead:

- It seeded masks with `set_seed(seed)`, resetting the global RNGs of the whole process. Here
  mask k of generation batch g comes from its own `torch.Generator`, seeded with a stable hash
  of (run seed, g, k): nothing global is touched, and a resumed run redraws identical masks.
- It advanced the mask index once per *micro-batch*, so with gradient accumulation each
  micro-batch only ever saw every other mask. Here the mask of iteration k is drawn once for the
  whole generation batch ([N, P]) and every micro-batch takes its own rows of it, so each row
  uses each of the mu masks exactly once.
"""

from __future__ import annotations

import torch

from d1.core.likelihood import draw_prompt_mask
from d1.training.data import derive_seed

__all__ = ["iteration_generator", "iteration_prompt_mask", "mask_seed"]


def mask_seed(run_seed: int, generation_batch: int, iteration: int, row: int = 0) -> int:
    """A 63-bit seed that depends only on (run seed, generation batch, inner iteration, row).

    `row` is the completion's index within the whole generation batch (all processes), so a
    completion draws the same mask however many processes share the batch.

    A hash (`d1.training.data.derive_seed`) rather than arithmetic mixing, so neighbouring
    (g, k) pairs never give correlated or colliding seeds; stable across processes and runs.
    """
    return derive_seed(run_seed, "grpo-prompt-mask", generation_batch, iteration, row)


def iteration_generator(
    run_seed: int,
    generation_batch: int,
    iteration: int,
    row: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Generator:
    """A fresh `torch.Generator` seeded with `mask_seed(run_seed, generation_batch, iteration,
    row)`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(mask_seed(run_seed, generation_batch, iteration, row))
    return gen


def iteration_prompt_mask(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    p_mask: float,
    *,
    mask_id: int,
    run_seed: int,
    generation_batch: int,
    iteration: int,
    random_masking: bool = True,
    row_offset: int = 0,
) -> torch.Tensor:
    """The [N, P] bool prompt mask of inner iteration `iteration` for a whole generation batch.

    Row i's mask comes from its own generator, keyed by its global index `row_offset + i`, and is
    drawn over its real tokens only, in order: it depends neither on which process holds the row
    nor on how far the batch is padded, so W processes draw exactly the masks of one process
    with the same global batch. Drawn on the CPU (CPU and GPU runs draw the same masks) and
    moved to `prompt_ids`' device.

    Args:
        prompt_ids, prompt_mask: the [N, P] prompts and attention mask (padding is never masked).
        p_mask: probability of masking each real prompt token (d1: 0.15).
        mask_id: the mask token id.
        run_seed, generation_batch, iteration: what the mask depends on, with the row.
        random_masking: d1's switch; False reuses iteration 0's mask for every k (d1 then used
            the fixed seed 42 for all iterations).
        row_offset: the global index of row 0 (this process's first completion in the
            generation batch of all processes).
    """
    k = iteration if random_masking else 0
    ids = prompt_ids.cpu()
    real = (
        torch.ones_like(ids, dtype=torch.bool) if prompt_mask is None else prompt_mask.cpu().bool()
    )
    out = torch.zeros_like(ids, dtype=torch.bool)
    for i in range(ids.shape[0]):
        cols = real[i].nonzero().squeeze(1)
        gen = iteration_generator(run_seed, generation_batch, k, row_offset + i)
        out[i, cols] = draw_prompt_mask(
            ids[i, cols][None], None, p_mask, mask_id=mask_id, generator=gen
        )[0]
    return out.to(prompt_ids.device)
