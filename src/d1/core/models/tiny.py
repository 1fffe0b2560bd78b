"""Built-in tiny LLaDA models: names a user passes where a hub id goes ("tiny", "tiny-xs", ...).

They share LLaDA's architecture and config class exactly (only the sizes differ) and use the
character-level tokenizer, so every code path (sampling, SFT, diffu-GRPO, saving, LoRA) runs on a
CPU in seconds. Initialisation is deterministic by seed through a local `torch.Generator`; the
global RNG is neither reset nor consumed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from d1.core.models.configuration_llada import LLaDAConfig
from d1.core.models.modeling_llada import LLaDAModelLM, LLaDARMSNorm
from d1.core.models.tokenizer import build_tokenizer

# Architecture sizes only; vocabulary and special-token ids come from the tokenizer.
# Parameter counts with the 104-token character vocabulary: tiny-xs ~96k, tiny ~0.88M,
# tiny-m ~5.2M. MLP width 3 x d_model as in LLaDA-8B (12288 / 4096).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny-xs": {
        "d_model": 64,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 4,
        "mlp_hidden_size": 128,
    },
    "tiny": {"d_model": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 384},
    "tiny-m": {
        "d_model": 256,
        "n_layers": 6,
        "n_heads": 8,
        "n_kv_heads": 8,
        "mlp_hidden_size": 768,
    },
}
# "-base" variants: the same architectures with a tokenizer that has no chat template (like
# LLaDA-8B-Base), so task prompts are the bare task text (`d1.tasks.render_prompt`). A model
# trained from scratch learns markedly faster without ~25 template tokens around each prompt.
BASE_SUFFIX = "-base"
TINY_CONFIGS.update({name + BASE_SUFFIX: sizes for name, sizes in list(TINY_CONFIGS.items())})
_TINY_COMMON: dict[str, Any] = {
    "rope_theta": 10000.0,
    "max_sequence_length": 2048,
    "weight_tying": False,
    "init_std": 0.02,
}


def tiny_config(name: str, tokenizer: PreTrainedTokenizerFast | None = None) -> LLaDAConfig:
    """The LLaDAConfig of built-in tiny model `name`, with vocab and token ids from the tokenizer."""
    if name not in TINY_CONFIGS:
        raise ValueError(f"Unknown tiny model {name!r}; built-in names: {sorted(TINY_CONFIGS)}.")
    tok = tokenizer if tokenizer is not None else build_tokenizer()
    return LLaDAConfig(
        **TINY_CONFIGS[name],
        **_TINY_COMMON,
        vocab_size=len(tok),
        embedding_size=len(tok),
        mask_token_id=tok.mask_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        architectures=["LLaDAModelLM"],
    )


def tiny_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """The built-in tokenizer of tiny model `name` (no chat template for "-base" names)."""
    return build_tokenizer(chat_template=not name.endswith(BASE_SUFFIX))


def init_weights_(model: nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    """Re-initialise `model` in place from `generator`: N(0, std) linears/embeddings, ones norms.

    Parameters are visited in `named_modules` order, so the result depends only on the seed.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std, generator=generator)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, LLaDARMSNorm):
                module.weight.fill_(1.0)


def make_tiny_model(
    name: str = "tiny", seed: int = 0
) -> tuple[LLaDAModelLM, PreTrainedTokenizerFast]:
    """A freshly initialised built-in tiny LLaDA (float32, CPU, train mode) and its tokenizer.

    Deterministic by `seed`: weights are drawn from `torch.Generator().manual_seed(seed)`.
    """
    tok = tiny_tokenizer(name)
    config = tiny_config(name, tok)
    # Build on the meta device so construction draws no random numbers, then materialise.
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    model.to_empty(device="cpu")
    init_weights_(model, torch.Generator().manual_seed(seed), std=config.init_std)
    model.config.name_or_path = name
    return model, tok


__all__ = [
    "BASE_SUFFIX",
    "TINY_CONFIGS",
    "init_weights_",
    "make_tiny_model",
    "tiny_config",
    "tiny_tokenizer",
]
