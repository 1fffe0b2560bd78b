"""`SFTConfig`: the masked-SFT run config. Defaults reproduce the paper (docs/method.md §3).

Paper / d1 settings: LLaDA-8B-Instruct, s1K, LoRA r 128 alpha 256 dropout 0.05, lr 1e-5 (AdamW,
weight decay 0.1, linear decay, no warm-up, max grad norm 1.0: transformers' Trainer defaults
as d1 used them), 20 epochs, effective batch 8, 4,096 tokens with EOS padding, 1 % of the data
held out to choose the checkpoint by eval loss (evaluated every 100 steps).
One deliberate difference: LoRA adapts all of LLaDA's linear layers (d1's target names matched
only q/k/v; docs/method.md §8); set `lora.target_modules=[q_proj,k_proj,v_proj]` to reproduce d1 exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from d1.config import ConfigError
from d1.core.sampling.config import SamplerConfig
from d1.training.config import (
    LoraConfig,
    ModelConfig,
    OptimConfig,
    TrainingConfig,
    active_lora,
)

__all__ = ["DEFAULT_SOURCES", "GenerationEvalConfig", "SFTConfig", "SFTDataConfig"]

# The default data source of each format (None: required).
DEFAULT_SOURCES: dict[str, str | None] = {
    "s1k": "simplescaling/s1K",
    "prompt_response": None,
    "task": None,
}
_LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class SFTDataConfig:
    """Where demonstrations come from and how sequences are built.

    Attributes:
        format: "s1k" (rows with question / thinking_trajectories / attempt), "prompt_response"
            (rows with `prompt_field` / `response_field`), or "task" (a registered task's
            examples carrying a `response` demonstration, e.g. generated Sudoku / Countdown).
        path: a hub dataset id or a local .jsonl/.json/.csv/.parquet file (null: the format's
            default: simplescaling/s1K for "s1k"; for "task", the task's own default source).
        split: the hub split (or task split) to train on.
        hub_config: the hub dataset configuration name, if any.
        task: the task name for format "task" (see `d1.tasks.list_tasks()`).
        task_options: keyword arguments for the task's constructor (e.g. generator settings).
        prompt_field, response_field: column names for format "prompt_response".
        system_prompt: prepend d1's format instruction to the user message (s1k /
            prompt_response; tasks write their own prompt).
        limit: use at most this many examples (before the validation split).
        max_length: sequence length (prompt + response + EOS padding); longer examples are
            dropped with a warning, never truncated.
        pad_to: "max_length" (paper) or "longest" (pad each batch to its longest row).
        validation_fraction: share held out for the eval loss (paper: 1 %).
        validation_size: alternatively, the number of held-out examples (overrides the fraction).
    """

    format: Literal["s1k", "prompt_response", "task"] = "s1k"
    path: str | None = None
    split: str = "train"
    hub_config: str | None = None
    task: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    prompt_field: str = "prompt"
    response_field: str = "response"
    system_prompt: bool = True
    limit: int | None = None
    max_length: int = 4096
    pad_to: Literal["max_length", "longest"] = "max_length"
    validation_fraction: float = 0.01
    validation_size: int | None = None

    def source(self) -> str | None:
        """The data source after applying the format's default."""
        return self.path if self.path is not None else DEFAULT_SOURCES[self.format]

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        if self.format == "task":
            if not self.task:
                problems.append(("task", "required when format is 'task' (e.g. task=sudoku)."))
            else:
                from d1.tasks import list_tasks

                if self.task.lower() not in list_tasks():
                    problems.append(
                        ("task", f"unknown task {self.task!r}; known: {', '.join(list_tasks())}.")
                    )
        elif self.source() is None:
            problems.append(("path", f"required for format {self.format!r} (a file or hub id)."))
        src = self.path
        # A path with a data-file suffix is a local file and must exist (hub ids have none).
        if (
            src is not None
            and Path(src).suffix.lower() in _LOCAL_SUFFIXES
            and not Path(src).is_file()
        ):
            problems.append(("path", f"local data file {src!r} does not exist."))
        if self.max_length < 8:
            problems.append(("max_length", f"must be >= 8, got {self.max_length}."))
        if not 0.0 < self.validation_fraction < 1.0:
            problems.append(("validation_fraction", "must be in (0, 1)."))
        if self.validation_size is not None and self.validation_size < 1:
            problems.append(("validation_size", "must be >= 1 or null."))
        if self.limit is not None and self.limit < 2:
            problems.append(("limit", "must be >= 2 (one training and one held-out example)."))
        if problems:
            raise ConfigError.keyed(problems)


@dataclass
class GenerationEvalConfig:
    """Greedy-decoding accuracy on held-out examples at each evaluation (format "task" only).

    Attributes:
        num_examples: held-out examples to decode (the first ones of the validation split).
        sampler: the sampler and its settings (`d1.core.sampling.SamplerConfig`; default d1's
            evaluation: greedy, gen length 256, block 32, steps = gen_length / 2).
        batch_size: prompts per sampling batch.
        num_samples_logged: completions written to `samples.jsonl` per evaluation.
    """

    num_examples: int = 32
    sampler: SamplerConfig = field(default_factory=SamplerConfig.for_eval)
    batch_size: int = 8
    num_samples_logged: int = 4

    __config_moved__: ClassVar[dict[str, str]] = {
        "gen_length": "sampler.gen_length",
        "block_length": "sampler.block_length",
        "steps": "sampler.steps",
    }


def _paper_training() -> TrainingConfig:
    return TrainingConfig(
        run_name="sft",
        num_epochs=20,
        per_device_batch_size=1,
        gradient_accumulation_steps=1,
        logging_steps=2,
        eval_steps=100,
        save_steps=100,
        save_total_limit=20,
        metric_for_best="eval/loss",
        greater_is_better=False,
    )


@dataclass
class SFTConfig:
    """A masked-SFT run (docs/method.md §3). Sections: model, lora (null = full fine-tuning), optim,
    train, data; plus the forward process's `eps` and optional generation-accuracy eval.

    Attributes:
        model: the model to fine-tune.
        lora: LoRA settings, or null for full fine-tuning.
        optim: optimizer and schedule.
        train: loop, batch (the paper's effective batch 8 = per_device_batch_size 1 x
            gradient_accumulation_steps 1 x 8 GPUs; or set `global_batch_size`), logging,
            checkpoints (best by `eval/loss`).
        global_batch_size: if set, `train.gradient_accumulation_steps` is derived from it at
            launch (= global / (per_device_batch_size x processes); must divide exactly), so
            one config gives the paper's batch on any number of GPUs.
        data: demonstrations and sequence layout.
        eps: the forward process's lower bound on the masking probability (LLaDA: 1e-3).
        semi_ar_fraction: share of training rows masked block-wise instead of uniformly
            (`d1.core.masking.blockwise_forward_process`: clean earlier blocks, a partly masked
            block, masked later blocks: the states LLaDA's block sampler visits). 0 = the
            paper's uniform process; an option for small models that fail at block sampling.
            Held-out loss always uses the uniform process.
        semi_ar_block_length: the block length of those rows (the sampler's; d1: 32).
        eval_generation: optional greedy accuracy on held-out examples (null: off).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig | None = field(default_factory=lambda: LoraConfig(r=128, alpha=256))
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            learning_rate=1e-5, weight_decay=0.1, lr_scheduler="linear", max_grad_norm=1.0
        )
    )
    train: TrainingConfig = field(default_factory=_paper_training)
    global_batch_size: int | None = 8
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    eps: float = 1e-3
    semi_ar_fraction: float = 0.0
    semi_ar_block_length: int = 32
    eval_generation: GenerationEvalConfig | None = None

    def __post_init__(self) -> None:
        self.lora = active_lora(self.lora)  # `enabled: false` is full fine-tuning

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        if not 0.0 <= self.eps < 1.0:
            problems.append(("eps", f"must be in [0, 1), got {self.eps}."))
        if not 0.0 <= self.semi_ar_fraction <= 1.0:
            problems.append(
                ("semi_ar_fraction", f"must be in [0, 1], got {self.semi_ar_fraction}.")
            )
        if self.semi_ar_block_length < 1:
            problems.append(
                ("semi_ar_block_length", f"must be >= 1, got {self.semi_ar_block_length}.")
            )
        if self.global_batch_size is not None:
            if self.global_batch_size % self.train.per_device_batch_size:
                problems.append(
                    (
                        "global_batch_size",
                        f"{self.global_batch_size} is not a multiple of "
                        f"train.per_device_batch_size={self.train.per_device_batch_size}.",
                    )
                )
            if self.train.gradient_accumulation_steps != 1:
                problems.append(
                    (
                        "global_batch_size",
                        "set either global_batch_size or train.gradient_accumulation_steps, "
                        "not both (use global_batch_size=null to set accumulation directly).",
                    )
                )
        if self.model.load_in_4bit and self.lora is None:
            problems.append(
                ("model.load_in_4bit", "QLoRA needs a `lora` section (4-bit weights are frozen).")
            )
        if self.eval_generation is not None and self.data.format != "task":
            problems.append(
                ("eval_generation", "needs data.format 'task' (a task scores completions).")
            )
        if problems:
            raise ConfigError.keyed(problems)
