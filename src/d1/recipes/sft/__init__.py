"""Masked SFT (docs/method.md §3): loss, data, trainer. `from d1.recipes.sft import SFTConfig, train_sft`."""

from __future__ import annotations

from typing import Any

from d1.recipes.sft.config import GenerationEvalConfig, SFTConfig, SFTDataConfig
from d1.recipes.sft.loss import SFTLoss, masked_sft_loss

__all__ = [
    "GenerationEvalConfig",
    "SFTConfig",
    "SFTDataConfig",
    "SFTLoss",
    "masked_sft_loss",
    "train_sft",
]


def __getattr__(name: str) -> Any:
    # The trainer pulls in accelerate/transformers; import it on first use.
    if name == "train_sft":
        from d1.recipes.sft.trainer import train_sft

        return train_sft
    raise AttributeError(name)
