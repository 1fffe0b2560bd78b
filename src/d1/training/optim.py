"""AdamW with decoupled weight decay and transformers' learning-rate schedules."""

from __future__ import annotations

import torch
from transformers import get_scheduler

from d1.training.config import OptimConfig

__all__ = ["build_optimizer", "build_scheduler", "clip_grad_norm", "parameter_groups"]


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


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters (`OptimConfig`)."""
    return torch.optim.AdamW(
        parameter_groups(model, cfg.weight_decay),
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
    )


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
