"""Config sections shared by every trainer (masked SFT, diffu-GRPO).

Each trainer's run config nests these sections (`model`, `lora`, `optim`, `train`) and sets its
own paper defaults through `field(default_factory=...)`. All are read with `d1.config.load_config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from d1.config import ConfigError
from d1.core.models.loading import LLADA_LORA_TARGETS

__all__ = [
    "LLADA_LORA_TARGETS",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainingConfig",
    "active_lora",
]


@dataclass
class ModelConfig:
    """Which model to train and how to load it.

    Attributes:
        name_or_path: a hub id, a local folder, or a built-in tiny model ("tiny-xs", "tiny",
            "tiny-m").
        dtype: weight dtype. "auto": float32 on CPU; on GPU bfloat16 for a frozen (LoRA/QLoRA)
            base and float32 master weights for full fine-tuning (bf16 autocast computes).
        mask_token_id: override the mask id (LLaDA: 126336; read from the model by default).
        trust_remote_code: allow a checkpoint's own modelling code (Dream); LLaDA is native.
        load_in_4bit: QLoRA: 4-bit NF4 base weights (GPU + bitsandbytes only; needs `lora`).
        gradient_checkpointing: recompute activations in backward to save memory.
    """

    name_or_path: str = "GSAI-ML/LLaDA-8B-Instruct"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    mask_token_id: int | None = None
    trust_remote_code: bool = False
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False


@dataclass
class LoraConfig:
    """LoRA adapter settings (d1's own section, converted to PEFT's LoraConfig at load time).

    Full fine-tuning is `lora: null` (or `enabled: false`). A `lora` mapping written in a YAML
    file is on unless it says `enabled: false`. On the command line, keys of a section that is
    null do not switch LoRA on by themselves: `lora.r=8` on a full fine-tuning config is an
    error; write `lora.enabled=true lora.r=8` (or the whole section, `lora={r: 8, alpha: 16}`).

    Attributes:
        enabled: train LoRA adapters (true) or the whole model (false: the same as null).
        r: adapter rank.
        alpha: scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the adapter input.
        target_modules: leaf names of the linear layers to adapt; default: every per-block
            projection of LLaDA (docs/method.md §8: d1's names matched only q/k/v), mapped to the
            family's own names for other families (Dream).
        adapt_lm_head: also adapt the output head.
    """

    enabled: bool = True
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LLADA_LORA_TARGETS))
    adapt_lm_head: bool = False

    def settings(self):
        """The equivalent `d1.core.models.LoraSettings`."""
        from d1.core.models.loading import LoraSettings

        return LoraSettings(
            r=self.r,
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=tuple(self.target_modules),
            adapt_lm_head=self.adapt_lm_head,
        )

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        if self.r <= 0:
            problems.append(("r", f"must be > 0, got {self.r}."))
        if not 0.0 <= self.dropout < 1.0:
            problems.append(("dropout", f"must be in [0, 1), got {self.dropout}."))
        if not self.target_modules:
            problems.append(("target_modules", "must name at least one module."))
        if problems:
            raise ConfigError.keyed(problems)


def active_lora(lora: LoraConfig | None) -> LoraConfig | None:
    """The section when LoRA is on, else None (`lora: null` and `enabled: false` agree)."""
    return lora if lora is not None and lora.enabled else None


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (transformers' `get_scheduler`).

    Attributes:
        optimizer: "adamw" (torch), or bitsandbytes' 8-bit AdamW "adamw_8bit" / its paged
            variant "paged_adamw_8bit" (optimizer states in 8 bits: 2 bytes per parameter
            instead of 8, what lets a full fine-tune of an 8B model fit one GPU; CUDA and
            bitsandbytes only, checked before training starts).
        learning_rate: peak learning rate.
        weight_decay: AdamW decoupled weight decay (not applied to biases and norm weights).
        adam_beta1, adam_beta2, adam_epsilon: AdamW constants.
        lr_scheduler: "constant", "constant_with_warmup", "linear" (decay to 0) or "cosine".
        warmup_steps: linear warm-up steps; if 0, `warmup_ratio` x total steps is used.
        warmup_ratio: warm-up as a fraction of the total optimizer steps.
        max_grad_norm: clip the global gradient norm to this; null disables clipping.
    """

    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = "adamw"
    learning_rate: float = 1e-5
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "linear"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    max_grad_norm: float | None = 1.0

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        if self.learning_rate <= 0:
            problems.append(("learning_rate", f"must be > 0, got {self.learning_rate}."))
        if self.warmup_steps < 0:
            problems.append(("warmup_steps", "must be >= 0."))
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(("warmup_ratio", "must be in [0, 1)."))
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            problems.append(("max_grad_norm", "must be > 0 or null."))
        if problems:
            raise ConfigError.keyed(problems)

    def num_warmup_steps(self, total_steps: int) -> int:
        """Warm-up length in optimizer steps (`warmup_steps`, else `warmup_ratio` x total)."""
        if self.warmup_steps > 0:
            return self.warmup_steps
        return math.ceil(self.warmup_ratio * total_steps)  # as transformers' Trainer


@dataclass
class TrainingConfig:
    """The training loop: batch, length, precision, logging, evaluation, checkpoints.

    The global (effective) batch is `per_device_batch_size x gradient_accumulation_steps x
    number of processes`; each optimizer step consumes exactly one global batch, and an epoch's
    leftover examples (fewer than a global batch) are skipped, as in d1's runs.

    Attributes:
        output_dir: parent folder of run folders.
        run_name: the run folder's name under `output_dir` (default: the command name).
        overwrite: allow starting from scratch in a run folder that already holds checkpoints.
        resume_from: null (fresh run), "auto" (the run folder's newest complete checkpoint,
            if any: a damaged one is skipped with a warning) or a checkpoint folder (verified;
            a damaged one is an error). Metrics logged after the restored step are dropped.
        seed: seeds data order, masking noise, adapter init and (for tiny models) weights.
        per_device_batch_size: sequences per process per micro-batch.
        gradient_accumulation_steps: micro-batches per optimizer step on each process.
        num_epochs: passes over the training set (ignored when `max_steps` is set).
        max_steps: total optimizer steps (overrides `num_epochs`).
        mixed_precision: "auto" = bf16 autocast on GPU, none (float32) on CPU.
        num_threads: torch CPU threads per process (null: min(available cores / processes, 8)).
        logging_steps: log training metrics every this many optimizer steps.
        eval_steps: evaluate every this many steps (null: only at the end).
        save_steps: checkpoint every this many steps (null: only at the end).
        save_total_limit: keep at most this many recent checkpoints (the best one is kept too).
        metric_for_best: the logged metric that picks the best checkpoint (null: none).
        greater_is_better: whether a larger `metric_for_best` is better.
        report_to: trackers besides the always-written metrics.jsonl: "tensorboard", "wandb",
            or "none" (TRL's option name).
        wandb_project: W&B project when "wandb" is in `report_to`.
        progress: rich progress bar: "auto" (only on an interactive terminal), "on", "off".
        on_nonfinite: what an optimizer step with a non-finite (NaN / inf) loss or gradient
            norm does. "stop": raise an error naming the step (no checkpoint is written after
            it, so the last good one stays the latest). "skip": drop that update (gradients
            zeroed; weights and optimizer moments unchanged; the step counter and the schedule
            still advance), count it in `train/nonfinite_skipped`. Under fp16 the gradient
            scaler already skips overflowing gradients, so only the loss is checked there.
        max_nonfinite_skips: with "skip", at most this many steps in a row are skipped; a
            further non-finite step stops the run as "stop" would.
    """

    output_dir: str = "runs"
    run_name: str | None = None
    overwrite: bool = False
    resume_from: str | None = None
    seed: int = 42
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    num_epochs: int = 1
    max_steps: int | None = None
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    num_threads: int | None = None
    logging_steps: int = 1
    eval_steps: int | None = 100
    save_steps: int | None = 100
    save_total_limit: int | None = 3
    metric_for_best: str | None = None
    greater_is_better: bool = False
    report_to: list[Literal["tensorboard", "wandb", "none"]] = field(
        default_factory=lambda: ["tensorboard"]
    )
    wandb_project: str = "d1"
    progress: Literal["auto", "on", "off"] = "auto"
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_nonfinite_skips: int = 10

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        keys = ("per_device_batch_size", "gradient_accumulation_steps", "logging_steps")
        for key in (*keys, "max_nonfinite_skips"):
            if getattr(self, key) < 1:
                problems.append((key, "must be >= 1."))
        for key in ("max_steps", "eval_steps", "save_steps", "save_total_limit", "num_threads"):
            value = getattr(self, key)
            if value is not None and value < 1:
                problems.append((key, "must be >= 1 or null."))
        if self.max_steps is None and self.num_epochs < 1:
            problems.append(("num_epochs", "must be >= 1 (or set max_steps)."))
        if "none" in self.report_to and len(self.report_to) > 1:
            problems.append(("report_to", "'none' cannot be combined with others."))
        # Before any model loads: an output path that can never be a folder.
        for parent in (Path(self.output_dir), *Path(self.output_dir).parents):
            if parent.exists():
                if not parent.is_dir():
                    problems.append(
                        ("output_dir", f"{str(parent)!r} is a file, not a folder; choose a folder.")
                    )
                break
        if problems:
            raise ConfigError.keyed(problems)
