"""The one forward call every sampler and estimator goes through.

It hides per-family differences (docs/method.md §1):
- Dream-style models predict token i from the output at position i-1, so their logits are
  shifted right by one to line up with LLaDA's convention (position i predicts token i).
- Attention masks (docs/method.md §2 item 4): LLaDA (native `LLaDAModelLM`) takes the [B, L] padding mask
  as is and derives positions from it. Dream's forward hands a tensor mask straight to SDPA and
  does not expand a 2-D mask (docs/llada.md "Dream"), so for Dream a boolean [B, 1, L, L]
  key-padding mask and position_ids = cumsum(mask) - 1 are built here.
"""

from __future__ import annotations

import torch

from d1.core.models.modeling_llada import LLaDAModelLM

# model_type values (lower-cased) whose forward needs a ready 4-D mask and explicit positions.
FOUR_D_MASK_FAMILIES: frozenset[str] = frozenset({"dream"})


def _model_type(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", "") or "").lower()


def dream_mask_inputs(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L] padding mask -> (boolean [B, 1, L, L] mask, position_ids [B, L]) for Dream.

    On real query rows this equals Dream's own mask (key valid AND query valid). Padded query
    rows attend to the real keys instead of to nothing, so they stay finite (an all-False SDPA
    row is NaN, which would leak into every position through the next layer's values).
    A row without any real token attends everywhere. Positions: cumsum(mask) - 1, clamped at 0.
    """
    valid = attention_mask.bool()
    valid = valid | ~valid.any(dim=-1, keepdim=True)
    b, n = valid.shape
    mask = valid[:, None, None, :].expand(b, 1, n, n)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return mask, position_ids


def native_llada(model: torch.nn.Module) -> LLaDAModelLM | None:
    """The native LLaDA model inside `model` (peft, DDP / accelerate wrappers unwrapped), or
    None when there is none."""
    inner = model
    for _ in range(8):
        if isinstance(inner, LLaDAModelLM):
            return inner
        if hasattr(inner, "get_base_model"):  # peft
            inner = inner.get_base_model()
        elif isinstance(getattr(inner, "module", None), torch.nn.Module):  # DDP / accelerate
            inner = inner.module
        else:
            break
    return None


def model_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    logit_shift: bool = False,
    family: str | None = None,
    keep: slice | None = None,
) -> torch.Tensor:
    """Logits [B, L, V] where position i scores the token at position i.

    Args:
        model: a diffusion LM returning an object with `.logits` (or a tensor); a peft wrapper
            is fine.
        input_ids: [B, L] token ids.
        attention_mask: optional [B, L] 1 = real token, 0 = padding. A mask without zeros is
            not passed on at all, so it gives exactly the unmasked result.
        logit_shift: True for Dream-style families (prediction for j is the raw output at j-1).
        family: how to hand the mask to the model; default: the model's `config.model_type`
            ("dream" -> 4-D boolean mask + position_ids; anything else -> the [B, L] mask).
        keep: only these positions of the result (a slice, e.g. a sampler's block or an
            estimator's completion). A native LLaDA model (also inside a peft / DDP wrapper,
            which is still what is called) then runs its final norm and LM head on those
            positions only (`logits_to_keep`): less compute, and no [B, L, V] logits (at
            LLaDA-8B's vocabulary of 126,464 the prompt's logits alone are ~50 MB per 200-token
            row in bf16). Other models, and logit shift, compute all logits and slice. Kept
            logits equal the slice of the full ones up to the GEMM's blocking for fewer rows
            (bit for bit in float64; <= 1 float32 ulp seen otherwise).
    """
    kwargs = {}
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        fam = (family if family is not None else _model_type(model)).lower()
        if fam in FOUR_D_MASK_FAMILIES:
            kwargs["attention_mask"], kwargs["position_ids"] = dream_mask_inputs(attention_mask)
        else:
            kwargs["attention_mask"] = attention_mask
    native_keep = keep is not None and not logit_shift and native_llada(model) is not None
    if native_keep:
        kwargs["logits_to_keep"] = keep
    out = model(input_ids=input_ids, **kwargs)
    logits = out.logits if hasattr(out, "logits") else out
    if logit_shift:
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    if keep is not None and not native_keep:
        logits = logits[:, keep]
    return logits
