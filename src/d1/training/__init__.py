"""Reusable training infrastructure (masked SFT, diffu-GRPO): config sections, accelerate
setup, optimizer and schedule, data order, checkpoints, tracking, the run object."""

from d1.training.config import (
    LLADA_LORA_TARGETS,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    TrainingConfig,
)

__all__ = ["LLADA_LORA_TARGETS", "LoraConfig", "ModelConfig", "OptimConfig", "TrainingConfig"]
