"""Load a diffusion LM by name: a local folder, a built-in tiny model, or a hub id.

`load_model` returns the model, its tokenizer and a `DiffusionSpec`, the one small object the
rest of d1 consumes (mask / eos / pad ids and whether logits are shifted, docs/method.md §1).

Resolution of `name_or_path`: an existing local folder, else a built-in tiny name
(`TINY_CONFIGS`, freshly initialised from `seed`), else a hub id. Checkpoints whose
`model_type` is "llada" load through the native `LLaDAModelLM` (any `auto_map` to remote code is
ignored: the native class reads the official state dict unchanged); other families load through
`AutoModel` with `trust_remote_code` and take their spec from `FAMILIES`.

LoRA (`LoraSettings`, `apply_lora`) fixes d1's reference-code defect (docs/method.md §8) of naming modules
that do not exist in LLaDA: target names are checked against the model and a missing one is an
error, never a silent no-op.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from d1.core.models.configuration_llada import LLaDAConfig
from d1.core.models.modeling_llada import LLaDAModelLM
from d1.core.models.tiny import TINY_CONFIGS, make_tiny_model
from d1.errors import D1Error, ModelNotFoundError

# LLaDA's linear layers (docs/method.md §8): every per-block projection. `ff_out` is also the name of the LM
# head `model.transformer.ff_out`; `apply_lora` leaves the head out unless asked (adapt_lm_head).
LLADA_LORA_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "attn_out",
    "ff_proj",
    "up_proj",
    "ff_out",
)
# Dream (Qwen2 names): the same set of per-block projections.
DREAM_LORA_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


@dataclass(frozen=True)
class DiffusionSpec:
    """What samplers, estimators and trainers need to know about a diffusion LM family.

    family: "llada", "dream", or another model_type loaded with an explicit mask id.
    mask_token_id: the mask token M (LLaDA 126336, Dream 151666; docs/method.md §1).
    eos_token_id / pad_token_id: end of text and padding (LLaDA: both 126081).
    logit_shift: True when position i is predicted from the output at i-1 (Dream, docs/method.md §1);
        pass it to `d1.core.models.forward.model_logits`.
    """

    family: str
    mask_token_id: int
    eos_token_id: int
    pad_token_id: int
    logit_shift: bool = False


@dataclass(frozen=True)
class _Family:
    """Known defaults for a model family (fallbacks when config and tokenizer are silent)."""

    logit_shift: bool
    mask_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    lora_targets: tuple[str, ...]
    needs_remote_code: bool


# Keys are lower-cased `model_type`s (Dream's config says "Dream").
FAMILIES: dict[str, _Family] = {
    "llada": _Family(False, 126336, 126081, 126081, LLADA_LORA_TARGETS, needs_remote_code=False),
    "dream": _Family(True, 151666, 151643, 151643, DREAM_LORA_TARGETS, needs_remote_code=True),
}


@dataclass
class LoraSettings:
    """LoRA hyper-parameters; defaults are d1's (docs/method.md §3-§4: r 128, alpha 256, dropout 0.05).

    target_modules: leaf names of the linear layers to adapt. The default is every per-block
        projection of LLaDA (`load_model` swaps in the family's equivalent, e.g. Dream's Qwen
        names, when this default is left unchanged). Names missing from the model are an error.
    adapt_lm_head: also adapt the output head (LLaDA's `model.transformer.ff_out`, whose leaf
        name collides with the per-block `ff_out`). Default False: blocks only, as d1 intends.
    """

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: tuple[str, ...] = LLADA_LORA_TARGETS
    adapt_lm_head: bool = False


@dataclass
class LoadedModel:
    """A loaded diffusion LM: `model` (eval mode), `tokenizer`, and its `spec`."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    spec: DiffusionSpec
    source: str = field(default="")


# --- LoRA -------------------------------------------------------------------------------------


def _module_name(model: nn.Module, target: nn.Module | None) -> str | None:
    if target is None:
        return None
    for name, module in model.named_modules():
        if module is target:
            return name
    return None


def apply_lora(model: nn.Module, settings: LoraSettings | None = None):
    """Wrap `model` in a peft `PeftModel` with LoRA adapters on `settings.target_modules`.

    Every target name must be the leaf name of at least one linear layer of the model; the error
    lists the model's linear-layer names otherwise (d1's reference code silently adapted only
    the names that happened to exist, docs/method.md §8). The LM head is excluded unless
    `settings.adapt_lm_head`. Adapters start at zero (B = 0), so the wrapped model initially
    computes exactly the base model.
    """
    from peft import LoraConfig, get_peft_model

    settings = settings or LoraSettings()
    targets = list(dict.fromkeys(settings.target_modules))
    if not targets:
        raise D1Error("LoraSettings.target_modules is empty: name at least one linear layer.")
    linear_leaves = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name
    }
    missing = [t for t in targets if t not in linear_leaves]
    if missing:
        raise D1Error(
            f"LoRA target modules {missing} do not exist in this model; its linear layers are "
            f"named {sorted(linear_leaves)}. Set LoraSettings.target_modules (--lora-targets)."
        )
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_name = _module_name(model, head)
    exclude: list[str] | None = None
    if head_name:
        if settings.adapt_lm_head and head_name.rsplit(".", 1)[-1] not in targets:
            targets.append(head_name)
        elif not settings.adapt_lm_head and head_name.rsplit(".", 1)[-1] in targets:
            exclude = [head_name]
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        exclude_modules=exclude,
        bias="none",
    )
    return get_peft_model(model, config)


# --- loading ----------------------------------------------------------------------------------

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """torch dtype from a name ("bf16", "bfloat16", "float32", ...); "auto" and None pass."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key == "auto":
        return "auto"
    if key not in _DTYPES:
        raise D1Error(f"Unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or 'auto'.")
    return _DTYPES[key]


def check_4bit_available() -> None:
    """Raise a clear error unless 4-bit loading can work (bitsandbytes installed, CUDA present)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            "load_in_4bit needs the bitsandbytes package: pip install bitsandbytes "
            "(or pip install 'd1[quant]'), or drop load_in_4bit / --load-in-4bit."
        )
    if not torch.cuda.is_available():
        raise RuntimeError(
            "load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit kernels); none is available. "
            "Drop load_in_4bit / --load-in-4bit to load in bf16/fp32 instead."
        )


def _bnb_config():
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    """The tokenizer of a folder / hub id, or the built-in one for a tiny name."""
    if not Path(name_or_path).expanduser().is_dir() and name_or_path in TINY_CONFIGS:
        from d1.core.models.tiny import tiny_tokenizer

        return tiny_tokenizer(name_or_path)
    return AutoTokenizer.from_pretrained(
        str(Path(name_or_path).expanduser())
        if Path(name_or_path).expanduser().is_dir()
        else name_or_path,
        trust_remote_code=trust_remote_code,
    )


def _first_not_none(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _config_token(config: PretrainedConfig, name: str) -> int | None:
    value = getattr(config, name, None)
    if isinstance(value, (list, tuple)):  # some configs list several eos ids
        value = value[0] if value else None
    return value


def model_family(name_or_path: str) -> str | None:
    """The model family ("llada", "dream", ...) of a tiny name, local folder or cached hub id,
    read from its config only (no weights); None when it cannot be told without a download.

    Config checks use it before any model loads (e.g. the KV cache needs a LLaDA model)."""
    if name_or_path in TINY_CONFIGS and not Path(name_or_path).expanduser().is_dir():
        return "llada"
    path = Path(name_or_path).expanduser()
    source = str(path) if path.is_dir() else name_or_path
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(source, local_files_only=True)
    except Exception:  # not local, not cached, or not a model: the loader reports it later
        return None
    model_type = config_dict.get("model_type")
    return str(model_type).lower() if model_type else None


# A hub id: "name" or "namespace/name" (letters, digits, "-", "_", ".").
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _hub_id(name: str) -> str:
    """`name` when it can be a hub id; ModelNotFoundError naming what it is not otherwise."""
    if not _HUB_ID.match(name) or name.startswith((".", "~")) or ".." in name:
        raise ModelNotFoundError(
            f"Model {name!r} not found: no such folder, not a built-in tiny model "
            f"({', '.join(TINY_CONFIGS)}) and not a Hugging Face hub id (namespace/name)."
        )
    return name


def _not_loadable(name: str, error: Exception) -> D1Error:
    """The message for a model whose config cannot be read (a folder that is no checkpoint,
    or a hub id that is unreachable or unknown)."""
    path = Path(name).expanduser()
    if path.is_dir():
        hint = ""
        if (path / "checkpoints").is_dir():
            hint = f"; it is a d1 run folder: pass one of {path / 'checkpoints'}/checkpoint-N"
        return ModelNotFoundError(
            f"{str(path)!r} is a folder but not a model (no config.json){hint}."
        )
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
    return ModelNotFoundError(
        f"Cannot load the model {name!r} from the Hugging Face Hub{offline}: {reason}. Download "
        f"it first (`hf download {name}`) or pass a local checkpoint folder."
    )


@contextlib.contextmanager
def _reading(source: str) -> Iterator[None]:
    """Weights or tokenizer files that cannot be read: one message naming the checkpoint."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise D1Error(
            f"Cannot read the model files of {source!r} ({reason}): the checkpoint is incomplete "
            "or damaged; use another checkpoint (d1 verifies its own checkpoints on resume)."
        ) from None


def _unknown_family_error(family: str) -> D1Error:
    return D1Error(
        f"Unknown diffusion model family {family!r} (known: {sorted(FAMILIES)}). If it is a "
        "masked diffusion LM with unshifted logits, pass its mask token id: "
        "mask_token_id=... (CLI: --mask-token-id)."
    )


def resolve_spec(
    family: str,
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    mask_token_id: int | None = None,
) -> DiffusionSpec:
    """Build the DiffusionSpec: explicit mask id > config > tokenizer > family table.

    Raises ValueError for a family d1 does not know unless `mask_token_id` is given (then it is
    treated as an unshifted, LLaDA-style masked diffusion model), when no mask token can be
    found, or when config and tokenizer disagree on it.
    """
    known = FAMILIES.get(family)
    if known is None and mask_token_id is None:
        raise _unknown_family_error(family)
    cfg_mask = _config_token(config, "mask_token_id")
    tok_mask = getattr(tokenizer, "mask_token_id", None)
    if mask_token_id is None and None not in (cfg_mask, tok_mask) and cfg_mask != tok_mask:
        raise D1Error(
            f"The model config says mask_token_id={cfg_mask} but the tokenizer's mask token "
            f"has id {tok_mask}; pass the right one explicitly: mask_token_id=... "
            "(CLI: --mask-token-id)."
        )
    mask = _first_not_none(
        mask_token_id, cfg_mask, tok_mask, known.mask_token_id if known else None
    )
    if mask is None:
        raise D1Error(
            f"No mask token found for {family!r}: neither its config nor its tokenizer defines "
            "one. Pass mask_token_id=... (CLI: --mask-token-id)."
        )
    eos = _first_not_none(
        getattr(tokenizer, "eos_token_id", None),
        _config_token(config, "eos_token_id"),
        known.eos_token_id if known else None,
    )
    pad = _first_not_none(
        getattr(tokenizer, "pad_token_id", None),
        _config_token(config, "pad_token_id"),
        known.pad_token_id if known else None,
        eos,
    )
    if eos is None:
        raise D1Error(f"No eos token found for {family!r}: its tokenizer needs an eos_token.")
    return DiffusionSpec(
        family=family,
        mask_token_id=int(mask),
        eos_token_id=int(eos),
        pad_token_id=int(pad),
        logit_shift=known.logit_shift if known else False,
    )


def _complete_tokenizer(tokenizer: PreTrainedTokenizerBase, spec: DiffusionSpec) -> None:
    """Give the tokenizer a mask / pad token when it lacks one (LLaDA's declares no mask token)."""
    vocab = len(tokenizer)
    if getattr(tokenizer, "mask_token", None) is None and spec.mask_token_id < vocab:
        tokenizer.mask_token = tokenizer.convert_ids_to_tokens(spec.mask_token_id)
    if getattr(tokenizer, "pad_token", None) is None and spec.pad_token_id < vocab:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(spec.pad_token_id)


def _remote_auto_class(config_dict: dict[str, Any]):
    """The Auto class for a non-native family: the first of MaskedLM / Model / CausalLM its
    auto_map provides (Dream: AutoModel); without an auto_map, AutoModelForMaskedLM."""
    auto_map = config_dict.get("auto_map") or {}
    for name, cls in (
        ("AutoModelForMaskedLM", AutoModelForMaskedLM),
        ("AutoModel", AutoModel),
        ("AutoModelForCausalLM", AutoModelForCausalLM),
    ):
        if name in auto_map:
            return cls
    return AutoModelForMaskedLM


def load_model(
    name_or_path: str,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    mask_token_id: int | None = None,
    trust_remote_code: bool = False,
    lora: LoraSettings | None = None,
    load_in_4bit: bool = False,
    seed: int = 0,
) -> LoadedModel:
    """Load a diffusion LM, its tokenizer and its DiffusionSpec (see the module docstring).

    Args:
        name_or_path: local folder, built-in tiny name ("tiny-xs", "tiny", "tiny-m"), or hub id.
        dtype: torch dtype or name ("bf16", "float32", "auto"). None: the checkpoint's own dtype
            (transformers "auto"); tiny models are float32.
        device: where to put the model (None: CPU, or the first GPU with load_in_4bit).
        mask_token_id: override the mask id (required for families d1 does not know).
        trust_remote_code: allow a checkpoint's own modelling code (needed for Dream). Never
            used for model_type "llada", which always loads natively.
        lora: wrap the model with LoRA adapters (`apply_lora`); None = full model.
        load_in_4bit: QLoRA-style NF4 weights, bf16 compute, double quantisation (needs CUDA and
            bitsandbytes; checked up front with a clear error).
        seed: initialisation seed of a built-in tiny model (ignored otherwise).

    Returns:
        LoadedModel with the model in eval mode.
    """
    torch_dtype = resolve_dtype(dtype)
    if load_in_4bit:
        check_4bit_available()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _not_loadable(name_or_path, FileNotFoundError("no config.json"))
        source = str(path)
    elif name_or_path in TINY_CONFIGS:
        if load_in_4bit:
            raise D1Error(
                "load_in_4bit applies to saved checkpoints, not to the built-in tiny models."
            )
        model, tokenizer = make_tiny_model(name_or_path, seed=seed)
        if torch_dtype not in (None, "auto"):
            model = model.to(torch_dtype)
        if device is not None:
            model = model.to(device)
        spec = resolve_spec("llada", model.config, tokenizer, mask_token_id)
        return _finish(model, tokenizer, spec, lora, name_or_path)
    else:
        source = _hub_id(name_or_path)

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(source)
    except OSError as e:
        raise _not_loadable(name_or_path, e) from None
    model_type = str(config_dict.get("model_type", ""))
    family = model_type.lower()
    load_kwargs: dict[str, Any] = {"dtype": torch_dtype if torch_dtype is not None else "auto"}
    if load_in_4bit:
        load_kwargs["quantization_config"] = _bnb_config()
        load_kwargs["device_map"] = {"": torch.device(device) if device else 0}
        if torch_dtype in (None, "auto"):
            load_kwargs["dtype"] = torch.bfloat16

    if family == "llada":
        config = LLaDAConfig.from_pretrained(source)
        if hasattr(config, "auto_map"):
            del config.auto_map  # native class; saved copies must not point at absent code
        with _reading(source):
            model = LLaDAModelLM.from_pretrained(source, config=config, **load_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source)
    else:
        if family not in FAMILIES and mask_token_id is None:
            raise _unknown_family_error(family)  # before downloading any weights
        if config_dict.get("auto_map") and not trust_remote_code:
            raise D1Error(
                f"{source!r} (model_type {model_type!r}) ships its own modelling code; pass "
                "trust_remote_code=True (CLI: --trust-remote-code) after reviewing it."
            )
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        except ValueError as err:
            raise D1Error(
                f"transformers cannot build model_type {model_type!r} from {source!r}: {err} "
                "If the checkpoint needs its own code, pass trust_remote_code=True "
                "(CLI: --trust-remote-code)."
            ) from err
        auto_cls = _remote_auto_class(config_dict)
        with _reading(source):
            model = auto_cls.from_pretrained(
                source, config=config, trust_remote_code=trust_remote_code, **load_kwargs
            )
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if device is not None and not load_in_4bit:
        model = model.to(device)
    spec = resolve_spec(family, model.config, tokenizer, mask_token_id)
    return _finish(model, tokenizer, spec, lora, source)


def _embedding_rows(model: nn.Module) -> int | None:
    """Rows of the input embedding (None when the model does not expose it)."""
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return getattr(emb, "num_embeddings", None)


def _finish(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    spec: DiffusionSpec,
    lora: LoraSettings | None,
    source: str,
) -> LoadedModel:
    rows = _embedding_rows(model)
    for name in ("mask_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(spec, name)
        if rows is not None and not 0 <= value < rows:
            raise D1Error(
                f"{name}={value} is outside the model's vocabulary (0..{rows - 1}); "
                "pass the right id: mask_token_id=... (CLI: --mask-token-id)."
            )
    _complete_tokenizer(tokenizer, spec)
    if lora is not None:
        known = FAMILIES.get(spec.family)
        if known is not None and lora.target_modules == LLADA_LORA_TARGETS:
            # The default means "every per-block projection", in the family's own names.
            lora = dataclasses.replace(lora, target_modules=known.lora_targets)
        model = apply_lora(model, lora)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, source=source)


__all__ = [
    "DREAM_LORA_TARGETS",
    "FAMILIES",
    "LLADA_LORA_TARGETS",
    "DiffusionSpec",
    "LoadedModel",
    "LoraSettings",
    "apply_lora",
    "check_4bit_available",
    "load_model",
    "load_tokenizer",
    "resolve_dtype",
    "resolve_spec",
]
