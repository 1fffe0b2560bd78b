"""`GRPOConfig`: the diffu-GRPO run config. Defaults reproduce the paper (docs/method.md §4).

Paper / d1 settings: G = 6 completions per prompt, mu = 12 inner iterations (GSM8K, MATH; 8 for
Countdown and Sudoku), prompt masking probability 0.15, clip epsilon 0.5, KL beta 0.04 (k3
estimator, reference = the model before RL), advantages `r - mean(group)` without std scaling,
AdamW lr 3e-6 constant with warm-up, betas (0.9, 0.99), weight decay 0.1, max grad norm 0.2,
16 prompts = 96 completions per optimizer step (d1: 8 GPUs x 6 per device x 2 accumulation),
LoRA r 128 alpha 64 dropout 0.05 on a 4-bit NF4 base, max prompt length 200, rollouts of 256
tokens in blocks of 32 with 128 steps at temperature 0.9 (`grpo.sampler`; decoded by default
with the fast sampler's dual block cache, same schedule; `name: reference` is d1's sampler).

Sections: `model`, `lora` (null = full fine-tuning), `optim`, `train` (the shared toolkit's),
`grpo` (the method), `tasks` (one or several training tasks with mixture weights).

Batch vocabulary (TRL's): `train.per_device_batch_size` counts *completions* per micro-batch;
one generation batch holds `per_device_batch_size x gradient_accumulation_steps` completions per
process (whole groups of G), sampled once and reused for `num_iterations` optimizer steps, each
of which goes through all of them. `global_batch_size` (completions per optimizer step, all
processes) derives the accumulation steps at launch, so one config gives the paper's batch on any
number of GPUs.

Deliberate differences from d1's code (docs/method.md §8), each switchable where it matters:
LoRA adapts all of LLaDA's linear layers (`lora.target_modules=[q_proj,k_proj,v_proj,up_proj]`
reproduces d1's effective set); prompts and rollouts carry attention masks; prompt padding is
never masked; masks are drawn from per-(seed, generation batch, iteration) generators; every
micro-batch sees every mask once under gradient accumulation; mu = 1 works with beta > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from d1.config import ConfigError
from d1.core.sampling.config import SamplerConfig
from d1.tasks.timeout import REWARD_TIMEOUT_S, check_timeout
from d1.training.config import (
    LoraConfig,
    ModelConfig,
    OptimConfig,
    TrainingConfig,
    active_lora,
)

__all__ = [
    "GRPOConfig",
    "GRPOLoraConfig",
    "GRPOModelConfig",
    "GRPOOptimConfig",
    "GRPOSection",
    "GRPOTrainingConfig",
    "TaskSpec",
]

_LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class TaskSpec:
    """One training task of the run (several make a multi-task mixture, docs/method.md §5).

    Attributes:
        name: a registered task ("gsm8k", "math", "countdown", "sudoku", "kodcode", ...).
        weight: mixture weight (each prompt's task is drawn with probability weight / total).
        split: which split to train on ("train"; "validation" is for checkpoint choice).
        path: a local data file replacing the task's default source.
        limit: use at most this many training examples.
        options: keyword arguments for the task's constructor (e.g. `{blanks: [6, 10]}`).
    """

    name: str = "gsm8k"
    weight: float = 1.0
    split: str = "train"
    path: str | None = None
    limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> list[tuple[str, str]]:
        """Problems as (key, message) pairs; `GRPOConfig.validate` prefixes `tasks[i].`."""
        from d1.tasks import list_tasks

        problems: list[tuple[str, str]] = []
        if self.name.lower() not in list_tasks():
            problems.append(
                ("name", f"unknown task {self.name!r}; known: {', '.join(list_tasks())}.")
            )
        if not self.weight > 0:
            problems.append(("weight", f"must be > 0, got {self.weight}."))
        if (
            self.path is not None
            and Path(self.path).suffix.lower() in _LOCAL_SUFFIXES
            and not Path(self.path).is_file()
        ):
            problems.append(("path", f"local data file {self.path!r} does not exist."))
        if self.limit is not None and self.limit < 1:
            problems.append(("limit", "must be >= 1 or null."))
        return problems


@dataclass
class GRPOSection:
    """diffu-GRPO's own settings (docs/method.md §4); names follow TRL's GRPOConfig where they match.

    Attributes:
        num_generations: G, completions per prompt (d1: 6).
        num_iterations: mu, optimizer steps per generation batch (d1: 12 GSM8K/MATH, 8
            Countdown/Sudoku).
        epsilon: clip range (d1: 0.5).
        epsilon_high: upper clip range if different (TRL / DAPO "clip higher"; null = epsilon).
        beta: KL coefficient (d1: 0.04); 0 skips the reference model entirely.
        scale_rewards: "none" (d1: `r - mean`), "group" or "batch" (divide by that std; TRL).
        loss_aggregation: "group_token_mean" (d1's code: token mean within each prompt group,
            then the mean over groups), "token_mean" (one token mean over the optimizer batch)
            or "sequence_mean" (the paper's written objective: per-sequence token mean, then
            mean). See `d1.recipes.grpo.loss`.
        p_mask_prompt: probability of masking each real prompt token in the log-prob estimate
            (d1's name; paper: 0.15; 0.1-0.3 is stable, 0.5+ unstable). Objectives `d1` and
            `wd1` only (`coupled` and `mc_elbo` keep the prompt clean: changing it is an error).
        random_masking: a fresh prompt mask per inner iteration (d1: true); false reuses one.
        estimator: the log-prob estimator of the `d1` and `wd1` objectives
            (`d1.core.likelihood.list_estimators()`).
        objective: the policy objective of the inner iterations (`d1.recipes.grpo.objectives`):
            "d1" (diffu-GRPO: one-step estimate, clipped ratio, k3 KL; the paper),
            "coupled" (DiffuCoder's complementary-mask pair, arXiv 2506.20639),
            "mc_elbo" (masked-diffusion ELBO with n Monte Carlo draws shared with the
            reference, VRPO / LLaDA 1.5, arXiv 2505.19223) or "wd1" (ratio-free weighted
            likelihood, arXiv 2507.08838; needs `beta: 0`).
        objective_options: the chosen objective's own options (an option of another objective
            is an error): coupled `{t_min: 0.2, t_max: 0.8, full_mask_pass: false}`; mc_elbo
            `{n: 4, t_eps: 0.001, antithetic: true,
            log_ratio_clamp: 20.0}`; wd1 `{psi: 1.0}`; d1 none.
        max_prompt_length: prompts are left-truncated to this many tokens (d1: 200; null: off).
        sampler: the rollout sampler, every setting (`d1.core.sampling.SamplerConfig`). Default
            (`SamplerConfig.rl_default`): d1's schedule (gen length 256, block 32, 128 steps,
            temperature 0.9) with the fast sampler's dual block cache, measured to learn as
            reference rollouts do, faster (benchmarks/RESULTS_rl_throughput.md); d1's own
            sampler is `grpo.sampler.name=reference` (the paper configs set it); threshold
            decoding is opt-in, e.g. `grpo.sampler.threshold=0.95`.
        generation_batch_size: sequences per sampler call (null: the micro-batch size).
        logprob_chunk_size: sequences per no-grad forward for old/reference log-probs (null: the
            micro-batch size).
        log_completions_steps: write sample completions with their rewards to
            `samples.jsonl` every this many optimizer steps (0: never).
        num_completions_to_log: completions written each time.
        reward_timeout_s: wall-clock limit in seconds of each reward-component and scorer call
            on one completion (null: none); a call cut short scores 0 and is counted in the
            `reward/timeouts` metric, so a pathological completion cannot stall training.
    """

    num_generations: int = 6
    num_iterations: int = 12
    epsilon: float = 0.5
    epsilon_high: float | None = None
    beta: float = 0.04
    scale_rewards: Literal["none", "group", "batch"] = "none"
    loss_aggregation: Literal["group_token_mean", "token_mean", "sequence_mean"] = (
        "group_token_mean"
    )
    p_mask_prompt: float = 0.15
    random_masking: bool = True
    estimator: str = "d1_one_step"
    objective: str = "d1"
    objective_options: dict[str, Any] = field(default_factory=dict)
    max_prompt_length: int | None = 200
    sampler: SamplerConfig = field(default_factory=SamplerConfig.rl_default)
    generation_batch_size: int | None = None
    logprob_chunk_size: int | None = None
    log_completions_steps: int = 10
    num_completions_to_log: int = 6
    reward_timeout_s: float | None = REWARD_TIMEOUT_S

    # The flat rollout keys of earlier versions: an error names the new key (no aliasing).
    __config_moved__: ClassVar[dict[str, str]] = {
        "max_completion_length": "sampler.gen_length",
        "block_length": "sampler.block_length",
        "diffusion_steps": "sampler.steps",
        "temperature": "sampler.temperature",
        "cfg_scale": "sampler.cfg_scale",
        "remasking": "sampler.remasking",
    }

    def validate(self) -> None:
        from d1.core.likelihood import list_estimators

        problems: list[tuple[str, str]] = []
        if self.num_generations < 2:
            problems.append(("num_generations", "must be >= 2 (the group mean is the baseline)."))
        if self.num_iterations < 1:
            problems.append(("num_iterations", "must be >= 1."))
        if self.epsilon < 0 or (self.epsilon_high is not None and self.epsilon_high < 0):
            problems.append(("epsilon", "clip ranges must be >= 0."))
        if self.beta < 0:
            problems.append(("beta", "must be >= 0."))
        if not 0.0 <= self.p_mask_prompt <= 1.0:
            problems.append(("p_mask_prompt", "must be in [0, 1] (paper: 0.15)."))
        if self.estimator not in list_estimators():
            problems.append(
                ("estimator", f"unknown {self.estimator!r}; known: {', '.join(list_estimators())}.")
            )
        from d1.recipes.grpo.objectives import objective_problems

        if not isinstance(self.objective_options, dict):
            problems.append(
                ("objective_options", f"must be a mapping; got {self.objective_options!r}.")
            )
        else:
            changed = [
                f.name
                for f in fields(self)
                if f.name in ("p_mask_prompt", "estimator") and getattr(self, f.name) != f.default
            ]
            problems += objective_problems(
                self.objective, self.objective_options, beta=self.beta, changed=changed
            )
        if self.max_prompt_length is not None and self.max_prompt_length < 1:
            problems.append(("max_prompt_length", "must be >= 1 or null."))
        for key in ("generation_batch_size", "logprob_chunk_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                problems.append((key, "must be >= 1 or null."))
        if self.log_completions_steps < 0:
            problems.append(("log_completions_steps", "must be >= 0."))
        try:
            check_timeout(self.reward_timeout_s, "reward_timeout_s")
        except ValueError as e:
            problems.append(("reward_timeout_s", str(e).removeprefix("reward_timeout_s ")))
        if problems:
            raise ConfigError.keyed(problems)


# The shared sections with diffu-GRPO's paper defaults as *class* defaults, so that the section
# types themselves document (and, built on their own, give) the paper's values.


@dataclass
class GRPOModelConfig(ModelConfig):
    """`ModelConfig` with the paper's diffu-GRPO default: a 4-bit NF4 base (QLoRA)."""

    load_in_4bit: bool = True


@dataclass
class GRPOLoraConfig(LoraConfig):
    """`LoraConfig` with the paper's diffu-GRPO defaults: r 128, alpha 64, dropout 0.05."""

    r: int = 128
    alpha: int = 64
    dropout: float = 0.05


@dataclass
class GRPOOptimConfig(OptimConfig):
    """`OptimConfig` with the paper's diffu-GRPO defaults: lr 3e-6 constant with warm-up
    (d1: warmup_ratio 1e-4), betas (0.9, 0.99), weight decay 0.1, max grad norm 0.2."""

    learning_rate: float = 3e-6
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = (
        "constant_with_warmup"
    )
    warmup_ratio: float = 0.0001
    max_grad_norm: float | None = 0.2


@dataclass
class GRPOTrainingConfig(TrainingConfig):
    """`TrainingConfig` with diffu-GRPO defaults: 6 completions per micro-batch (one group),
    log every step, checkpoint every 100 steps (keep all), no in-loop evaluation (evaluate
    checkpoints with `d1 eval`), 7,700 optimizer steps (the rebuttal's fixed GSM8K
    checkpoint; the paper does not state a step count per task)."""

    run_name: str | None = "grpo"
    per_device_batch_size: int = 6
    max_steps: int | None = 7700
    logging_steps: int = 1
    eval_steps: int | None = None
    save_steps: int | None = 100
    save_total_limit: int | None = None


@dataclass
class GRPOConfig:
    """A diffu-GRPO run (docs/method.md §4). See the module docstring for the paper defaults.

    Attributes:
        model: the policy to train (an SFT checkpoint folder, a hub id or a tiny model name).
        lora: LoRA settings (paper: r 128, alpha 64, dropout 0.05), or null for full
            fine-tuning (the reference is then a frozen copy of the initial model).
        optim: AdamW and the schedule (paper: lr 3e-6, constant with warm-up, betas
            (0.9, 0.99), weight decay 0.1, max grad norm 0.2).
        train: loop, batch, logging, checkpoints (`max_steps` counts optimizer steps; the
            paper's fixed GSM8K checkpoint is step 7700).
        global_batch_size: completions per optimizer step over all processes (paper: 96 = 16
            prompts x 6); derives `train.gradient_accumulation_steps` at launch. null: use
            `train.gradient_accumulation_steps` as given.
        grpo: the method's settings.
        tasks: training tasks; several make a multi-task mixture.
    """

    model: GRPOModelConfig = field(default_factory=GRPOModelConfig)
    lora: GRPOLoraConfig | None = field(default_factory=GRPOLoraConfig)
    optim: GRPOOptimConfig = field(default_factory=GRPOOptimConfig)
    train: GRPOTrainingConfig = field(default_factory=GRPOTrainingConfig)
    global_batch_size: int | None = 96
    grpo: GRPOSection = field(default_factory=GRPOSection)
    tasks: list[TaskSpec] = field(default_factory=lambda: [TaskSpec()])

    def __post_init__(self) -> None:
        self.lora = active_lora(self.lora)  # `enabled: false` is full fine-tuning

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        g = self.grpo.num_generations
        per_device = self.train.per_device_batch_size
        if self.global_batch_size is not None:
            if self.global_batch_size % g:
                problems.append(
                    (
                        "global_batch_size",
                        f"{self.global_batch_size} completions do not split into groups of "
                        f"grpo.num_generations={g}.",
                    )
                )
            if self.global_batch_size % per_device:
                problems.append(
                    (
                        "global_batch_size",
                        f"{self.global_batch_size} is not a multiple of "
                        f"train.per_device_batch_size={per_device}.",
                    )
                )
            if self.train.gradient_accumulation_steps != 1:
                problems.append(
                    (
                        "global_batch_size",
                        "set either global_batch_size or train.gradient_accumulation_steps, "
                        "not both (global_batch_size=null sets accumulation directly).",
                    )
                )
        elif (per_device * self.train.gradient_accumulation_steps) % g:
            problems.append(
                (
                    "train.gradient_accumulation_steps",
                    f"per_device_batch_size x gradient_accumulation_steps = "
                    f"{per_device * self.train.gradient_accumulation_steps} completions per "
                    f"process must be whole groups of grpo.num_generations={g}.",
                )
            )
        if self.model.load_in_4bit and self.lora is None:
            problems.append(
                ("model.load_in_4bit", "QLoRA needs a `lora` section (4-bit weights are frozen).")
            )
        if not self.tasks:
            problems.append(("tasks", "name at least one training task."))
        for i, task in enumerate(self.tasks):
            problems += [(f"tasks[{i}].{key}", msg) for key, msg in task.check()]
        names = [t.name.lower() for t in self.tasks]
        if len(set(names)) != len(names):
            problems.append(("tasks", f"each task may appear once; got {names}."))
        if self.train.max_steps is None:
            problems.append(("train.max_steps", "required for diffu-GRPO (optimizer steps)."))
        problems += [
            (f"grpo.sampler.{key}", msg)
            for key, msg in self.grpo.sampler.model_problems(self.model.name_or_path)
        ]
        if problems:
            raise ConfigError.keyed(problems)

    def gradient_accumulation_steps(self, num_processes: int) -> int:
        """Micro-batches per optimizer step on each process (derived from global_batch_size)."""
        if self.global_batch_size is None:
            return self.train.gradient_accumulation_steps
        per_step = self.train.per_device_batch_size * num_processes
        if self.global_batch_size % per_step:
            raise ConfigError.keyed(
                [
                    (
                        "global_batch_size",
                        f"{self.global_batch_size} is not divisible by "
                        f"train.per_device_batch_size x processes = "
                        f"{self.train.per_device_batch_size} x {num_processes} = {per_step}: "
                        "launch a number of processes that divides it, or change "
                        "global_batch_size / train.per_device_batch_size.",
                    )
                ]
            )
        ga = self.global_batch_size // per_step
        if (ga * self.train.per_device_batch_size) % self.grpo.num_generations:
            raise ConfigError.keyed(
                [
                    (
                        "global_batch_size",
                        f"each of the {num_processes} processes would get "
                        f"{ga * self.train.per_device_batch_size} completions, not whole groups "
                        f"of grpo.num_generations={self.grpo.num_generations}: launch a "
                        "number of processes that divides the number of prompts per step.",
                    )
                ]
            )
        return ga
