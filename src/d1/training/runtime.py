"""Process setup: the Accelerator (one code path from CPU to multi-GPU), threads, run folder,
and the trainable model (full, LoRA or QLoRA)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from d1.errors import make_folder
from d1.training.config import LoraConfig, ModelConfig, TrainingConfig, active_lora
from d1.training.data import derive_seed

__all__ = [
    "default_num_threads",
    "enable_gradient_checkpointing",
    "load_for_training",
    "make_accelerator",
    "prepare_run_dir",
    "resolve_model_dtype",
    "run_dir_for",
    "save_base_for_adapter",
    "warn_if_not_low_rank",
]

logger = logging.getLogger(__name__)


def default_num_threads(num_local_processes: int) -> int:
    """CPU threads per process: the machine's cores shared among local processes, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) // max(1, num_local_processes)))


def make_accelerator(train: TrainingConfig):
    """An `accelerate.Accelerator` for the run; sets torch's CPU thread count.

    Mixed precision "auto" is bf16 autocast on GPU and none (float32) on CPU, where bf16 matmuls
    are slow (measured on a 2-core CPU: under 1 GFLOP/s for bf16 `a @ b` vs ~110 for float32). Gradient accumulation is done by the trainers (explicit
    `no_sync` on all but the last micro-batch), so accelerate's own counter stays at 1, and the
    LR scheduler is stepped by the trainer once per optimizer step (not prepared: accelerate
    would step it once per process).
    """
    from accelerate import Accelerator

    mp = train.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() else "no"
    accelerator = Accelerator(
        # Without a GPU, processes started by `accelerate launch --multi_gpu` / torchrun form a
        # CPU group over gloo (accelerate's own multi-CPU launcher needs MPI).
        cpu=not torch.cuda.is_available(),
        mixed_precision=mp,
        gradient_accumulation_steps=1,
        step_scheduler_with_optimizer=False,
    )
    if accelerator.device.type == "cpu" or train.num_threads is not None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(train.num_threads or default_num_threads(local))
    return accelerator


def run_dir_for(train: TrainingConfig, default_name: str) -> Path:
    """The run folder `output_dir/run_name` (`default_name`, e.g. "sft", without a name)."""
    return Path(train.output_dir) / (train.run_name or default_name)


def prepare_run_dir(train: TrainingConfig, default_name: str, accelerator: Any) -> Path:
    """The run folder `output_dir/run_name`, checked against accidental reuse.

    A folder with checkpoints is only reused with `resume_from` set, or wiped first with
    `overwrite=true` (checkpoints, metrics and TensorBoard logs of the old run are removed).
    """
    run_dir = run_dir_for(train, default_name)
    ckpts = run_dir / "checkpoints"
    has_ckpts = ckpts.is_dir() and any(p.name.startswith("checkpoint-") for p in ckpts.iterdir())
    if has_ckpts and train.resume_from is None:
        if not train.overwrite:
            raise FileExistsError(
                f"{run_dir} already holds checkpoints of an earlier run. Resume it with "
                "train.resume_from=auto, choose another train.run_name, or start over with "
                "train.overwrite=true."
            )
        if accelerator.is_main_process:
            for name in ("checkpoints", "tensorboard", "base_model"):
                shutil.rmtree(run_dir / name, ignore_errors=True)
            for name in ("metrics.jsonl", "samples.jsonl"):
                (run_dir / name).unlink(missing_ok=True)
    if accelerator.is_main_process:
        make_folder(run_dir, what="the run folder", fix="set train.output_dir to a writable folder")
    accelerator.wait_for_everyone()
    return run_dir


def resolve_model_dtype(model_cfg: ModelConfig, *, on_gpu: bool, lora: bool) -> str:
    """ "auto": float32 on CPU; on GPU bf16 for a frozen (LoRA) base, float32 master weights for
    full fine-tuning (bf16 autocast does the compute)."""
    if model_cfg.dtype != "auto":
        return model_cfg.dtype
    if not on_gpu:
        return "float32"
    return "bfloat16" if lora else "float32"


def load_for_training(
    model_cfg: ModelConfig,
    lora: LoraConfig | None,
    *,
    seed: int,
    device: torch.device | str,
):
    """Load the model to train (`d1.core.models.load_model`), in train mode.

    LoRA adapters are initialised from `seed` inside `torch.random.fork_rng`, so the adapter
    init is reproducible while the global RNG state is left as it was. QLoRA (`load_in_4bit`)
    needs a GPU and bitsandbytes (clear error otherwise) and a `lora` section.

    Returns:
        `d1.core.models.LoadedModel` (model, tokenizer, spec).
    """
    from d1.core.models import load_model

    lora = active_lora(lora)
    device = torch.device(device)
    if model_cfg.load_in_4bit:
        if lora is None:
            raise ValueError("model.load_in_4bit (QLoRA) needs a `lora` section.")
        if device.type != "cuda":
            raise RuntimeError(
                "model.load_in_4bit (QLoRA) needs a CUDA GPU; this process runs on "
                f"{device.type}. Drop model.load_in_4bit to train LoRA on bf16/fp32 weights."
            )
    dtype = resolve_model_dtype(model_cfg, on_gpu=device.type == "cuda", lora=lora is not None)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, "lora-init"))
        loaded = load_model(
            model_cfg.name_or_path,
            dtype=dtype,
            device=device,
            mask_token_id=model_cfg.mask_token_id,
            trust_remote_code=model_cfg.trust_remote_code,
            lora=lora.settings() if lora is not None else None,
            load_in_4bit=model_cfg.load_in_4bit,
            seed=seed,
        )
    model = loaded.model
    if model_cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if lora is not None:
        warn_if_not_low_rank(model, lora.r)
    model.train()
    return loaded


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each block's activations in backward (a PEFT model: its base model's)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # Non-reentrant checkpointing needs no input gradients (frozen embeddings under LoRA).
    # transformers 5 renamed the method; the old name still works but warns.
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(base.config, "use_cache"):
        base.config.use_cache = False


def warn_if_not_low_rank(model: torch.nn.Module, r: int) -> str | None:
    """Warn (and return the message) when the LoRA rank is not below the narrowest adapted
    layer's width: the adapters then cost more than the layers they adapt (the paper's
    r = 128 on a 128-wide tiny model: more trainable parameters than the whole model, and a
    step about twice as slow as full fine-tuning, measured)."""
    widths = [
        min(m.base_layer.in_features, m.base_layer.out_features)
        for m in model.modules()
        if hasattr(m, "lora_A") and isinstance(getattr(m, "base_layer", None), torch.nn.Linear)
    ]
    if not widths or r < min(widths):
        return None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters()) - trainable
    msg = (
        f"lora.r={r} is not below the width of the layers it adapts (narrowest: {min(widths)}): "
        f"the adapters hold {trainable:,} parameters for a {total:,}-parameter model and cost "
        "more per step than full fine-tuning. Use a smaller lora.r (e.g. 8), or lora=null."
    )
    logger.warning(msg)
    return msg


def save_base_for_adapter(
    model: torch.nn.Module, tokenizer: Any, run_dir: Path, name_or_path: str
) -> Path | None:
    """Make saved adapters point at a loadable base (`adapter_config.json`'s
    `base_model_name_or_path`): for a built-in tiny model (which lives nowhere on disk) the
    base is saved into `run_dir/base_model`; otherwise the model's folder or hub id is used.
    Returns the saved folder, or None when nothing was saved."""
    from d1.core.models import TINY_CONFIGS

    if not hasattr(model, "peft_config"):
        return None
    peft_cfg = model.peft_config["default"]
    if name_or_path not in TINY_CONFIGS or Path(name_or_path).expanduser().is_dir():
        if not peft_cfg.base_model_name_or_path:
            peft_cfg.base_model_name_or_path = name_or_path
        return None
    target = (run_dir / "base_model").resolve()
    base = model.get_base_model()
    # The frozen base weights (LoRA wrappers keep them under `base_layer`).
    state = {
        k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k
    }
    base.save_pretrained(str(target), state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    peft_cfg.base_model_name_or_path = str(target)
    return target
