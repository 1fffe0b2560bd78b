"""The masked SFT loss (docs/method.md §3), as a pure function of logits and the forward-process draw.

Per sequence b with response positions R_b (the demonstration, its end-of-turn token and the EOS
padding) and masked positions M_b within R_b, drawn with probability p_b:

    loss_b = (1 / |R_b|) * sum_{i in M_b} CE(logits[b, i], x[b, i]) / p_b

and the batch loss is the mean of loss_b over the batch (LLaDA's SFT guideline). Prompt tokens
are never masked and never enter the loss. d1's reference code divided the summed loss by the
response-token count of the whole batch instead (identical for batch size 1 and for equal
response lengths); we follow docs/method.md §3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["SFTLoss", "masked_sft_loss"]


@dataclass
class SFTLoss:
    """Output of `masked_sft_loss`.

    Attributes:
        loss: scalar, the batch mean of `per_sequence` (differentiable).
        per_sequence: [B] each sequence's 1/p-weighted loss, normalised by its response length.
        unweighted: [B] each sequence's mean cross-entropy over its masked tokens (no 1/p
            weight; 0 where nothing was masked): an interpretable number to log.
        num_masked: [B] number of masked (scored) tokens per sequence.
    """

    loss: torch.Tensor
    per_sequence: torch.Tensor
    unweighted: torch.Tensor
    num_masked: torch.Tensor


def masked_sft_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    is_masked: torch.Tensor,
    p_mask: torch.Tensor,
    response_mask: torch.Tensor,
) -> SFTLoss:
    """Masked diffusion SFT loss (docs/method.md §3): sum of CE/p over masked response tokens / |response|.

    Args:
        logits: [B, L, V] model logits where position i scores the token at i (use
            `model_logits`, which shifts Dream-style outputs).
        targets: [B, L] the clean token ids.
        is_masked: [B, L] bool, positions the forward process masked (must lie in the response).
        p_mask: [B] per-sequence masking probability (or [B, L] per token; only masked
            positions are read).
        response_mask: [B, L] bool, True on response positions, EOS padding included.

    Returns:
        An `SFTLoss`; cross-entropy is computed in float32 on the masked positions only, so the
        [B, L, V] logits are never upcast as a whole.

    Raises:
        ValueError: on shape mismatches, masked prompt tokens, or an empty response.
    """
    if logits.dim() != 3 or logits.shape[:2] != targets.shape:
        raise ValueError(
            f"logits must be [B, L, V] matching targets [B, L]; got {list(logits.shape)} and "
            f"{list(targets.shape)}."
        )
    if is_masked.shape != targets.shape or response_mask.shape != targets.shape:
        raise ValueError("is_masked and response_mask must have the shape of targets [B, L].")
    is_masked = is_masked.bool()
    response_mask = response_mask.bool()
    if bool((is_masked & ~response_mask).any()):
        raise ValueError("A prompt (non-response) position is masked; SFT masks response only.")
    resp_len = response_mask.sum(dim=1)
    if bool((resp_len == 0).any()):
        raise ValueError("Every sequence needs at least one response position.")
    batch = targets.shape[0]
    if p_mask.dim() == 1:
        if p_mask.shape[0] != batch:
            raise ValueError(f"p_mask must be [B]={batch} or [B, L]; got {list(p_mask.shape)}.")
        p_tok = p_mask[:, None].expand_as(targets)
    elif p_mask.shape == targets.shape:
        p_tok = p_mask
    else:
        raise ValueError(f"p_mask must be [B] or [B, L]; got {list(p_mask.shape)}.")

    rows, cols = is_masked.nonzero(as_tuple=True)
    ce = F.cross_entropy(logits[rows, cols].float(), targets[rows, cols], reduction="none")
    weight = 1.0 / p_tok[rows, cols].to(device=ce.device, dtype=torch.float32)
    zeros = torch.zeros(batch, dtype=torch.float32, device=ce.device)
    weighted_sum = zeros.index_add(0, rows, ce * weight)
    ce_sum = zeros.index_add(0, rows.detach(), ce.detach())
    num_masked = is_masked.sum(dim=1).to(ce.device)
    per_sequence = weighted_sum / resp_len.to(device=ce.device, dtype=torch.float32)
    unweighted = ce_sum / num_masked.clamp(min=1).float()
    return SFTLoss(
        loss=per_sequence.mean(),
        per_sequence=per_sequence,
        unweighted=unweighted,
        num_masked=num_masked,
    )
