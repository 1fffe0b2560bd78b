"""LLaDA's configuration, with LLaDA's own key names (docs/llada.md "LLaDA-8B-Instruct").

The official checkpoint's `config.json` loads into `LLaDAConfig` unchanged: every key of the
reference config is a field here (so its value is parsed and kept), and unknown extra keys (e.g.
a third party's `flash_attention`) are tolerated and stored as plain attributes, the usual
`PreTrainedConfig` behaviour. Standard transformers names (`hidden_size`, `num_hidden_layers`, ...)
are aliases of LLaDA's through `attribute_map`, so generic tooling (peft, accelerate, Trainer)
can read them.

Only the subset of LLaDA's options that the released checkpoints use is implemented by the
model (`modeling_llada.LLaDAModelLM` checks and names anything else); the config itself accepts
every value so that any LLaDA config can at least be read and inspected.
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import PretrainedConfig


class LLaDAConfig(PretrainedConfig):
    """Configuration of a LLaDA masked diffusion transformer (defaults = LLaDA-8B-Instruct).

    Field names and defaults follow the official `configuration_llada.py` / `config.json`.
    The fields the native model uses:

    - d_model, n_layers, n_heads, n_kv_heads (None = n_heads; GQA when smaller),
      mlp_hidden_size (SwiGLU width), vocab_size, embedding_size (rows of the embedding and of
      the LM head; None = vocab_size), rms_norm_eps, rope_theta, max_sequence_length,
      weight_tying (LM head shares the embedding; LLaDA-8B: False), init_std.
    - mask_token_id, eos_token_id, pad_token_id, bos_token_id (docs/method.md §1: LLaDA's mask is 126336).
    """

    model_type: ClassVar[str] = "llada"
    keys_to_ignore_at_inference: ClassVar[list[str]] = []
    # Generic transformers names -> LLaDA's names (read and write go to the LLaDA field).
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "num_key_value_heads": "n_kv_heads",
        "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
        "tie_word_embeddings": "weight_tying",
        "initializer_range": "init_std",
    }

    # Architecture (LLaDA-8B values).
    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int | None = None
    n_layers: int = 32
    mlp_ratio: int = 4
    mlp_hidden_size: int | None = 12288
    activation_type: str = "silu"
    block_type: str = "llama"
    block_group_size: int = 1
    alibi: bool = False
    alibi_bias_max: float = 8.0
    rope: bool = True
    rope_full_precision: bool = True
    rope_theta: float = 500000.0
    multi_query_attention: bool | None = None
    attention_layer_norm: bool = False
    attention_layer_norm_with_affine: bool = True
    layer_norm_type: str = "rms"
    layer_norm_with_affine: bool = True
    bias_for_layer_norm: bool | None = False
    rms_norm_eps: float = 1e-5
    include_bias: bool = False
    include_qkv_bias: bool | None = False
    input_emb_norm: bool = False
    scale_logits: bool = False
    weight_tying: bool = False
    max_sequence_length: int = 4096
    vocab_size: int = 126464
    embedding_size: int | None = 126464
    # Dropouts (all 0 in the released checkpoints; the native model rejects non-zero values).
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0
    embedding_dropout: float = 0.0
    # Initialisation / training bookkeeping kept for fidelity with the official file.
    init_device: str | None = None
    init_fn: str = "normal"
    init_std: float = 0.02
    init_cutoff_factor: float | None = None
    precision: str | None = None
    use_cache: bool = False
    # Special tokens (docs/llada.md "Tokens").
    mask_token_id: int | None = 126336
    eos_token_id: int | None = 126081
    pad_token_id: int | None = 126081
    bos_token_id: int | None = 126080

    def __post_init__(self, **kwargs: Any) -> None:
        if self.n_kv_heads is None:
            # LLaDA's convention: multi_query_attention=True means one KV head, else MHA.
            self.n_kv_heads = 1 if self.multi_query_attention else self.n_heads
        if self.mlp_hidden_size is None:
            self.mlp_hidden_size = self.mlp_ratio * self.d_model
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        """Per-head width, d_model / n_heads (128 for LLaDA-8B)."""
        return self.d_model // self.n_heads

    @property
    def effective_embedding_size(self) -> int:
        """Rows of the embedding matrix and of the LM head (embedding_size, else vocab_size)."""
        return self.embedding_size if self.embedding_size is not None else self.vocab_size


__all__ = ["LLaDAConfig"]
