"""The one forward call every sampler and estimator goes through.

It hides per-family differences (SPEC 1): Dream-style models predict token i from the output at
position i-1, so their logits are shifted right by one to line up with LLaDA's convention
(position i predicts token i).
"""

from __future__ import annotations

import torch


def model_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    logit_shift: bool = False,
) -> torch.Tensor:
    """Logits [B, L, V] where position i scores the token at position i.

    Args:
        model: a diffusion LM returning an object with `.logits` (or a tensor).
        input_ids: [B, L] token ids.
        attention_mask: optional [B, L] 1 = real token, 0 = padding.
        logit_shift: True for Dream-style families (prediction for j is the raw output at j-1).
    """
    kwargs = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    out = model(input_ids=input_ids, **kwargs)
    logits = out.logits if hasattr(out, "logits") else out
    if logit_shift:
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    return logits
