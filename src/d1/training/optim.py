"""AdamW with decoupled weight decay (torch's, or bitsandbytes' 8-bit / paged 8-bit) and
transformers' learning-rate schedules."""

from __future__ import annotations

import importlib.util

import torch
from transformers import get_scheduler

from d1.training.config import OptimConfig

__all__ = [
    "EIGHT_BIT_OPTIMIZERS",
    "build_optimizer",
    "build_scheduler",
    "check_optimizer_available",
    "clip_grad_norm",
    "parameter_groups",
]

# optim.optimizer name -> bitsandbytes.optim class name.
EIGHT_BIT_OPTIMIZERS = {"adamw_8bit": "AdamW8bit", "paged_adamw_8bit": "PagedAdamW8bit"}


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two groups: matrices (decayed) and vectors (biases, norm weights:
    not decayed, as in transformers' Trainer)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("The model has no trainable parameters.")
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def check_optimizer_available(name: str) -> None:
    """Raise a clear error unless optimizer `name` can run here (8-bit: bitsandbytes + CUDA)."""
    if name not in EIGHT_BIT_OPTIMIZERS:
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            f"optim.optimizer={name} needs the bitsandbytes package: pip install bitsandbytes "
            "(or pip install 'd1[quant]'), or set optim.optimizer=adamw."
        )
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"optim.optimizer={name} needs a CUDA GPU (bitsandbytes' 8-bit kernels) and none is "
            "available: set optim.optimizer=adamw."
        )


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (`cfg.optimizer`: torch's, or bitsandbytes' 8-bit / paged 8-bit) over the model's
    trainable parameters (`OptimConfig`)."""
    kwargs = {
        "lr": cfg.learning_rate,
        "betas": (cfg.adam_beta1, cfg.adam_beta2),
        "eps": cfg.adam_epsilon,
    }
    groups = parameter_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    check_optimizer_available(cfg.optimizer)
    import bitsandbytes

    return getattr(bitsandbytes.optim, EIGHT_BIT_OPTIMIZERS[cfg.optimizer])(groups, **kwargs)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule, stepped once per optimizer step (`get_scheduler`)."""
    return get_scheduler(
        cfg.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=cfg.num_warmup_steps(total_steps),
        num_training_steps=total_steps,
    )


def clip_grad_norm(
    accelerator, model: torch.nn.Module, max_norm: float | None
) -> torch.Tensor | None:
    """Clip the global gradient norm (across processes; FSDP/DeepSpeed aware via accelerate);
    returns the norm before clipping as a tensor on the device (computed even when `max_norm`
    is None; not read back, so no host sync here), or None under DeepSpeed, which clips
    inside its engine."""
    params = [p for p in model.parameters() if p.requires_grad]
    norm = accelerator.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf"))
    return None if norm is None else torch.as_tensor(norm)
