"""Merge a LoRA adapter into its base model: a full model that loads with plain
`from_pretrained` (and `d1.core.models.load_model`), tokenizer included.

`d1 merge ADAPTER_DIR OUT_DIR` (e.g. a `checkpoint-N` folder of a LoRA SFT run). The output is
written into a temporary folder beside OUT_DIR and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["merge_adapter"]


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").is_file()


def merge_adapter(
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    base: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Merge the LoRA adapter in `adapter_dir` into its base and save the result to `out_dir`.

    Args:
        adapter_dir: a folder with `adapter_config.json` + `adapter_model.safetensors`.
        out_dir: where the merged model goes (must not exist unless `overwrite`).
        base: the base model (folder or hub id); default: the adapter's
            `base_model_name_or_path` (d1 SFT runs on built-in tiny models point it at the run's
            saved `base_model/`).
        dtype: dtype to load the base in and save ("float32", "bfloat16", ...; default: the
            base checkpoint's own).
        overwrite: replace an existing `out_dir`.

    Returns:
        The output folder. The tokenizer is copied from the adapter folder when it holds one
        (d1 checkpoints do), else from the base.
    """
    from peft import PeftModel

    from d1.core.models import TINY_CONFIGS, load_model

    adapter_dir = Path(adapter_dir)
    out_dir = Path(out_dir)
    cfg_file = adapter_dir / "adapter_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(
            f"{adapter_dir} holds no adapter_config.json: not a LoRA adapter folder. A "
            "full-model checkpoint needs no merge; load it directly."
        )
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; choose another folder or pass overwrite.")
    base = base or json.loads(cfg_file.read_text())["base_model_name_or_path"]
    if base in TINY_CONFIGS and not Path(base).is_dir():
        raise ValueError(
            f"The adapter's base is the built-in {base!r}, whose random weights depend on a "
            "seed: pass the saved base folder (a d1 run's base_model/) as `base`."
        )
    loaded = load_model(base, dtype=dtype)
    model = PeftModel.from_pretrained(loaded.model, str(adapter_dir))
    merged = model.merge_and_unload()
    merged.config.name_or_path = str(out_dir)
    tokenizer = loaded.tokenizer
    if _has_tokenizer(adapter_dir):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
