"""Models: native LLaDA, the built-in tiny models and tokenizer, loading, LoRA, the forward call.

Importing this package registers LLaDA with transformers' Auto classes (`AutoConfig`,
`AutoModel`, `AutoModelForMaskedLM`), so `from_pretrained` / `save_pretrained` work offline with
no remote code.
"""

from __future__ import annotations

import contextlib

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from d1.core.models.configuration_llada import LLaDAConfig
from d1.core.models.forward import model_logits
from d1.core.models.loading import (
    LLADA_LORA_TARGETS,
    DiffusionSpec,
    LoadedModel,
    LoraSettings,
    apply_lora,
    load_model,
    load_tokenizer,
    model_family,
)
from d1.core.models.modeling_llada import LLaDAModelLM
from d1.core.models.tiny import TINY_CONFIGS, make_tiny_model
from d1.core.models.tokenizer import build_tokenizer


def _register() -> None:
    """Register "llada" with the Auto classes (idempotent)."""
    # ValueError = already registered (e.g. the module was reloaded).
    with contextlib.suppress(ValueError):
        AutoConfig.register("llada", LLaDAConfig)
    for auto in (AutoModel, AutoModelForMaskedLM):
        with contextlib.suppress(ValueError):
            auto.register(LLaDAConfig, LLaDAModelLM)


_register()

__all__ = [
    "LLADA_LORA_TARGETS",
    "TINY_CONFIGS",
    "DiffusionSpec",
    "LLaDAConfig",
    "LLaDAModelLM",
    "LoadedModel",
    "LoraSettings",
    "apply_lora",
    "build_tokenizer",
    "load_model",
    "load_tokenizer",
    "make_tiny_model",
    "model_family",
    "model_logits",
]
