"""`d1 demo`: the whole d1 recipe, small enough for a laptop CPU (docs/method.md §3, 4, 7).

Story (the paper's, at toy scale): masked SFT teaches format and basic skill on a *limited*
distribution, then diffu-GRPO improves the model with task rewards alone on a *harder*
distribution for which no demonstrations are used. The default task is multi-digit addition
(`d1.tasks.addition`) with the built-in character-level tiny LLaDA trained from scratch:

1. build the tiny model and tokenizer (random weights, one per seed);
2. generate the data offline: SFT demonstrations of easy problems (few carries), RL prompts,
   validation and test problems of hard ones (more carries); splits never share a problem;
3. masked SFT from scratch on the easy demonstrations (`d1.recipes.sft.train_sft`);
4. diffu-GRPO from the final SFT checkpoint on hard problems, rewards only
   (`d1.recipes.grpo.train_grpo`);
5. evaluate the base model, the SFT checkpoint and the final RL checkpoint (fixed checkpoints:
   nothing is chosen on the test set) on the same held-out hard test set, greedy decoding.

Per seed everything is re-run (model init, SFT, RL, evaluation); seeds run in parallel worker
processes (one torch thread each), so a seed's numbers do not depend on how many ran beside it.
The table reports mean ± standard deviation across seeds with a 95 % interval
(`d1.recipes.evaluation.stats`) and the paired per-seed difference RL - SFT. The report folder holds
the configs used, the trainers' metrics JSONL, PNG curves and the summary.

`task=sudoku` runs the same recipe on 4x4 Sudoku (difficulty = blanks), the paper's task; a
model this small does not learn Sudoku's rules from scratch in minutes (see README).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d1.recipes.evaluation.runner import to_jsonable
from d1.recipes.evaluation.stats import Summary, format_summary, summarize

__all__ = ["DEMO_TASKS", "DemoConfig", "DemoResult", "DemoTask", "run_demo"]

STAGES: tuple[str, ...] = ("base", "sft", "grpo")
STAGE_LABELS: dict[str, str] = {
    "base": "base (random init)",
    "sft": "SFT (easy problems)",
    "grpo": "SFT + diffu-GRPO (hard, rewards only)",
}


@dataclass(frozen=True)
class DemoTask:
    """What the demo needs to know about a task.

    Attributes:
        name: the registered task.
        difficulty: what the `easy` / `hard` ranges count.
        limits: the allowed difficulty values (inclusive).
        metrics: metric key -> label; "accuracy" is the task's accuracy, the others are read
            from each `Score.details` under `details[key]`.
        details: metric key -> `Score.details` key for per-example values.
        answer_tokens: tokens of a complete answer (+ end of turn + EOS): the least gen_length.
        gen_length: default completion length.
    """

    name: str
    difficulty: str
    limits: tuple[int, int]
    metrics: dict[str, str]
    details: dict[str, str]
    answer_tokens: int
    gen_length: int


DEMO_TASKS: dict[str, DemoTask] = {
    "addition": DemoTask(
        name="addition",
        difficulty="carries",
        limits=(0, 4),
        metrics={"accuracy": "exact sums", "digit_accuracy": "digits right"},
        details={"digit_accuracy": "digits"},
        answer_tokens=6,  # 4 digits, end of turn, EOS
        gen_length=8,
    ),
    "sudoku": DemoTask(
        name="sudoku",
        difficulty="blanks",
        limits=(1, 12),
        metrics={"accuracy": "cell accuracy", "solved": "fully solved"},
        details={"solved": "solved"},
        answer_tokens=37,  # "<answer>\n" + 16 digits + "\n</answer>", end of turn, EOS
        gen_length=40,
    ),
}


@dataclass
class DemoConfig:
    """Every setting of `d1 demo` (defaults: the full CPU demo; `DemoConfig.quick()`: a
    sub-minute smoke version that checks the plumbing, not learning).

    Attributes:
        seeds: one full pipeline (model init, SFT, RL, evaluation) per seed.
        out: output folder.
        model: built-in tiny model name ("-base": no chat template, bare task prompts).
        task: "addition" (default) or "sudoku" (see `DEMO_TASKS`).
        digits: addition only, digits per operand.
        easy, hard: inclusive difficulty ranges (addition: carries; sudoku: blanks) of the SFT
            demonstrations and of the RL, validation and test problems.
        workers: seeds run at once, each in its own process (0: all seeds at once; 1: one
            after the other in this process).
        threads: torch CPU threads per seed (1 is fastest for tiny models).
        progress: show progress bars.
        sft_train_size, rl_train_size, validation_size, test_size: problems per set.
        sft_steps, sft_batch_size, sft_lr, sft_warmup_steps: masked SFT (full fine-tuning,
            AdamW, constant learning rate after a linear warm-up).
        grpo_steps: diffu-GRPO optimizer steps (`num_iterations` per generation batch).
        grpo_prompts: prompts per generation batch (x `num_generations` completions).
        num_generations: G, completions per prompt.
        num_iterations: mu, optimizer steps per generation batch.
        grpo_lr, grpo_warmup_steps: diffu-GRPO learning rate and warm-up.
        epsilon, beta, p_mask_prompt: clip range, KL weight, prompt masking probability.
        temperature: rollout temperature.
        gen_length: completion length (None: the task's default).
        diffusion_steps: rollout sampler steps, one block (None: gen_length / 2).
        eval_steps: evaluation sampler steps, greedy (None: gen_length / 2, as d1).
        eval_batch_size: prompts per evaluation batch.
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    out: str = "demo_out"
    model: str = "tiny-xs-base"
    task: str = "addition"
    digits: int = 3
    easy: list[int] = field(default_factory=lambda: [0, 1])
    hard: list[int] = field(default_factory=lambda: [2, 3])
    workers: int = 0
    threads: int = 1
    progress: bool = True
    # data
    sft_train_size: int = 20000
    rl_train_size: int = 5000
    validation_size: int = 256
    test_size: int = 512
    # masked SFT
    sft_steps: int = 2000
    sft_batch_size: int = 32
    sft_lr: float = 1e-3
    sft_warmup_steps: int = 20
    # diffu-GRPO
    grpo_steps: int = 400
    grpo_prompts: int = 16
    num_generations: int = 8
    num_iterations: int = 2
    grpo_lr: float = 5e-4
    grpo_warmup_steps: int = 4
    epsilon: float = 0.2
    beta: float = 0.0
    p_mask_prompt: float = 0.15
    temperature: float = 1.0
    gen_length: int | None = None
    diffusion_steps: int | None = None
    # evaluation
    eval_steps: int | None = None
    eval_batch_size: int = 128

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A sub-minute end-to-end run of every phase (plumbing only: it does not learn)."""
        kw: dict[str, Any] = {
            "seeds": [0],
            "workers": 1,
            "sft_train_size": 24,
            "rl_train_size": 8,
            "validation_size": 4,
            "test_size": 6,
            "sft_steps": 3,
            "sft_batch_size": 4,
            "sft_warmup_steps": 1,
            "grpo_steps": 2,
            "grpo_prompts": 2,
            "num_generations": 2,
            "num_iterations": 1,
            "grpo_warmup_steps": 1,
            "eval_batch_size": 8,
        }
        kw.update(overrides)
        return cls(**kw)

    @property
    def spec(self) -> DemoTask:
        return DEMO_TASKS[self.task]

    @property
    def completion_length(self) -> int:
        return self.gen_length if self.gen_length is not None else self.spec.gen_length

    @property
    def rollout_steps(self) -> int:
        return self.diffusion_steps or max(1, self.completion_length // 2)

    @property
    def evaluation_steps(self) -> int:
        return self.eval_steps or max(1, self.completion_length // 2)

    def validate(self) -> None:
        from d1.config import ConfigError
        from d1.core.models import TINY_CONFIGS

        problems: list[tuple[str, str]] = []
        if self.task not in DEMO_TASKS:
            problems.append(("task", f"must be one of {', '.join(DEMO_TASKS)}; got {self.task!r}."))
            raise ConfigError.keyed(problems)
        if self.model not in TINY_CONFIGS:
            problems.append(
                ("model", f"must be a built-in tiny model ({', '.join(sorted(TINY_CONFIGS))}).")
            )
        if not self.seeds:
            problems.append(("seeds", "give at least one seed."))
        lo, hi = self.spec.limits
        for key in ("easy", "hard"):
            r = getattr(self, key)
            if len(r) != 2 or not lo <= r[0] <= r[1] <= hi:
                problems.append(
                    (
                        key,
                        f"must be [low, high] {self.spec.difficulty} with {lo} <= low <= high "
                        f"<= {hi}; got {r}.",
                    )
                )
        if self.completion_length < self.spec.answer_tokens:
            problems.append(
                (
                    "gen_length",
                    f"a {self.task} answer needs at least {self.spec.answer_tokens} tokens.",
                )
            )
        for key in ("sft_steps", "grpo_steps", "grpo_prompts", "test_size", "validation_size"):
            if getattr(self, key) < 1:
                problems.append((key, "must be >= 1."))
        if self.workers < 0 or self.threads < 1:
            problems.append(("workers", "workers must be >= 0 and threads >= 1."))
        if self.num_generations < 2:
            problems.append(("num_generations", "must be >= 2 (the group mean is the baseline)."))
        if problems:
            raise ConfigError.keyed(problems)


@dataclass
class DemoResult:
    """Per-seed scores {seed: {stage: {metric: value}}}, summaries, timings, output folder."""

    out: Path
    scores: dict[int, dict[str, dict[str, float]]]
    summary: dict[str, dict[str, Summary]]
    difference: dict[str, Summary]
    timings: dict[str, float]
    markdown: str


# ----------------------------------------------------------------------------- data


def _task_options(cfg: DemoConfig) -> dict[str, Any]:
    """Task options of the demo: compact prompts and answer-only demonstrations (a model of
    0.1M parameters learns markedly faster without reasoning text to imitate)."""
    if cfg.task == "addition":
        return {"prompt_style": "compact", "digits": cfg.digits}
    return {"prompt_style": "compact", "source": "generated", "demo_reasoning": False}


def _task(cfg: DemoConfig) -> Any:
    from d1.tasks import get_task

    return get_task(cfg.task, **_task_options(cfg))


def sudoku_answer_only(solution: str) -> str:
    """The Sudoku SFT response: the answer block alone, `<answer>\\n{solution}\\n</answer>`
    (d1's Sudoku reward and scorer read only the `<answer>` block)."""
    return f"<answer>\n{solution}\n</answer>"


def make_data(cfg: DemoConfig, data_dir: Path, data_seed: int = 1234) -> dict[str, Path]:
    """Write the demo's data files and return their paths.

    `sft_train` holds demonstrations of easy problems; `rl_train`, `validation` and `test`
    hold hard problems without demonstrations. Generated splits never share a problem
    (membership is a hash of the problem), and easy and hard problems differ in difficulty.
    """
    from d1.tasks.puzzles.io import write_rows

    data_dir.mkdir(parents=True, exist_ok=True)
    sets = {
        "sft_train": ("train", cfg.easy, cfg.sft_train_size),
        "rl_train": ("train", cfg.hard, cfg.rl_train_size),
        "validation": ("validation", cfg.hard, cfg.validation_size),
        "test": ("test", cfg.hard, cfg.test_size),
    }
    paths = {}
    for name, (split, difficulty, n) in sets.items():
        demos = name == "sft_train"  # the hard sets have none: RL learns from the reward alone
        if cfg.task == "addition":
            from d1.tasks.puzzles.addition import addition_to_row, generate_addition

            problems = generate_addition(
                n, seed=data_seed, digits=cfg.digits, carries=difficulty, split=split
            )
            task = _task(cfg)  # its compact demonstration: the bare zero-padded sum
            rows = [
                addition_to_row(p, response=task.demonstration(p) if demos else None)
                for p in problems
            ]
        else:
            from d1.tasks.puzzles.sudoku import generate_sudoku, sudoku_to_row

            puzzles = generate_sudoku(n, seed=data_seed, blanks=tuple(difficulty), split=split)
            rows = [
                sudoku_to_row(p, response=sudoku_answer_only(p.solution) if demos else None)
                for p in puzzles
            ]
        paths[name] = data_dir / f"{name}.csv"
        write_rows(rows, paths[name])
    return paths


# ----------------------------------------------------------------------------- run configs


def sft_config(cfg: DemoConfig, seed: int, seed_dir: Path, data: dict[str, Path]) -> Any:
    """The masked-SFT run config of one seed (full fine-tuning of the tiny model from scratch)."""
    from d1.recipes.sft import SFTConfig, SFTDataConfig
    from d1.training.config import ModelConfig, OptimConfig, TrainingConfig

    return SFTConfig(
        model=ModelConfig(name_or_path=cfg.model, dtype="float32"),
        lora=None,
        optim=OptimConfig(
            learning_rate=cfg.sft_lr,
            weight_decay=0.0,
            lr_scheduler="constant_with_warmup",
            warmup_steps=cfg.sft_warmup_steps,
            max_grad_norm=1.0,
        ),
        train=TrainingConfig(
            output_dir=str(seed_dir),
            run_name="sft",
            overwrite=True,
            seed=seed,
            per_device_batch_size=cfg.sft_batch_size,
            max_steps=cfg.sft_steps,
            logging_steps=max(1, cfg.sft_steps // 50),
            eval_steps=None,
            save_steps=None,
            save_total_limit=1,
            report_to=["none"],
            num_threads=cfg.threads,
            progress="on" if cfg.progress else "off",
        ),
        global_batch_size=cfg.sft_batch_size,
        data=dataclasses.replace(
            SFTDataConfig(),
            format="task",
            task=cfg.task,
            path=str(data["sft_train"]),
            task_options=_task_options(cfg),
            max_length=128,
            pad_to="longest",
            validation_size=min(32, max(1, cfg.sft_train_size // 10)),
        ),
    )


def grpo_config(
    cfg: DemoConfig, seed: int, seed_dir: Path, data: dict[str, Path], init: Path
) -> Any:
    """The diffu-GRPO run config of one seed, starting from the SFT checkpoint `init`."""
    from d1.core.sampling import SamplerConfig
    from d1.recipes.grpo.config import (
        GRPOConfig,
        GRPOModelConfig,
        GRPOOptimConfig,
        GRPOSection,
        GRPOTrainingConfig,
        TaskSpec,
    )

    completions = cfg.grpo_prompts * cfg.num_generations
    return GRPOConfig(
        model=GRPOModelConfig(name_or_path=str(init), dtype="float32", load_in_4bit=False),
        lora=None,
        optim=GRPOOptimConfig(
            learning_rate=cfg.grpo_lr,
            weight_decay=0.0,
            lr_scheduler="constant_with_warmup",
            warmup_steps=cfg.grpo_warmup_steps,
            max_grad_norm=1.0,
        ),
        train=GRPOTrainingConfig(
            output_dir=str(seed_dir),
            run_name="grpo",
            overwrite=True,
            seed=seed,
            per_device_batch_size=completions,
            max_steps=cfg.grpo_steps,
            logging_steps=1,
            save_steps=None,
            save_total_limit=1,
            report_to=["none"],
            num_threads=cfg.threads,
            progress="on" if cfg.progress else "off",
        ),
        global_batch_size=completions,
        grpo=GRPOSection(
            num_generations=cfg.num_generations,
            num_iterations=cfg.num_iterations,
            epsilon=cfg.epsilon,
            beta=cfg.beta,
            p_mask_prompt=cfg.p_mask_prompt,
            max_prompt_length=64,
            sampler=SamplerConfig(
                gen_length=cfg.completion_length,
                block_length=cfg.completion_length,
                steps=cfg.rollout_steps,
                temperature=cfg.temperature,
            ),
            log_completions_steps=max(1, cfg.grpo_steps // 8),
        ),
        tasks=[TaskSpec(name=cfg.task, path=str(data["rl_train"]), options=_task_options(cfg))],
    )


def evaluate_checkpoint(
    cfg: DemoConfig,
    name_or_path: str,
    seed: int,
    examples: list[Any],
    out: Path,
    progress: Any = None,
) -> dict[str, float]:
    """Greedy evaluation of one model on the demo's test examples; returns the task metrics."""
    from d1.core.models import load_model
    from d1.core.sampling import SamplerConfig
    from d1.recipes.evaluation.runner import EvalConfig, evaluate_model

    loaded = load_model(name_or_path, dtype="float32", device="cpu", seed=seed)
    ecfg = EvalConfig(
        model=name_or_path,
        tasks=(cfg.task,),
        gen_lengths=(cfg.completion_length,),
        sampler=SamplerConfig.for_eval(
            cfg.completion_length, block_length=cfg.completion_length, steps=cfg.evaluation_steps
        ),
        batch_size=cfg.eval_batch_size,
        split="test",
        task_options={cfg.task: _task_options(cfg)},
        out=str(out),
    )
    res = evaluate_model(
        loaded.model,
        loaded.tokenizer,
        ecfg,
        mask_id=loaded.spec.mask_token_id,
        logit_shift=loaded.spec.logit_shift,
        examples={cfg.task: examples},
        progress=progress,
        title=f"Demo evaluation: {name_or_path} (seed {seed})",
    )
    run = res.runs[0]
    metrics = {k: v for k, v in run.metrics.items() if k != "n"}
    # Per-example values, for the single-seed interval over examples.
    details = cfg.spec.details
    metrics["_per_example"] = {  # type: ignore[assignment]
        m: [g.correct if m == "accuracy" else float(g.details[details[m]]) for g in run.generations]
        for m in cfg.spec.metrics
    }
    return metrics


def _final_checkpoint(run_dir: Path) -> Path:
    from d1.recipes.evaluation.select import find_checkpoints

    return find_checkpoints(run_dir)[-1].path


def summarize_demo(
    scores: dict[int, dict[str, dict[str, float]]], metrics: list[str]
) -> tuple[dict[str, dict[str, Summary]], dict[str, Summary]]:
    """Per stage and metric: mean / std / 95 % t interval across seeds; and the paired
    per-seed difference SFT + diffu-GRPO minus SFT."""
    seeds = sorted(scores)
    summary: dict[str, dict[str, Summary]] = {}
    for stage in STAGES:
        summary[stage] = {}
        for m in metrics:
            per_ex = scores[seeds[0]][stage].get("_per_example", {}).get(m)  # type: ignore[union-attr]
            summary[stage][m] = summarize([scores[s][stage][m] for s in seeds], per_ex)
    diff = {
        m: summarize([scores[s]["grpo"][m] - scores[s]["sft"][m] for s in seeds]) for m in metrics
    }
    return summary, diff


def demo_markdown(
    cfg: DemoConfig,
    scores: dict[int, dict[str, dict[str, float]]],
    summary: dict[str, dict[str, Summary]],
    diff: dict[str, Summary],
    timings: dict[str, float],
    n_test: int,
) -> str:
    """The demo's summary table (markdown)."""
    seeds = sorted(scores)
    metrics = cfg.spec.metrics
    many = len(seeds) > 1
    cell = (
        "mean ± std across seeds [95 % t interval]"
        if many
        else "single seed [95 % interval over test problems]; run several seeds for the spread"
    )
    what = (
        f"{cfg.digits}-digit addition" if cfg.task == "addition" else "4x4 Sudoku"
    ) + f" ({cfg.spec.difficulty})"
    (e0, e1), (h0, h1) = cfg.easy, cfg.hard
    lines = [
        f"# d1 demo: masked SFT, then diffu-GRPO, on {what} (tiny LLaDA from scratch, CPU)",
        "",
        f"Test set: {n_test} held-out problems with {h0}-{h1} {cfg.spec.difficulty}, greedy "
        f"decoding, the same problems for every model. SFT saw only problems with {e0}-{e1} "
        f"{cfg.spec.difficulty}; diffu-GRPO saw hard problems and the reward only. Fixed "
        f"checkpoints (the last of each stage); seeds {seeds}. Cells: % ({cell}).",
        "",
        "| model | " + " | ".join(metrics.values()) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for stage in STAGES:
        row = [format_summary(summary[stage][m]) for m in metrics]
        lines.append(f"| {STAGE_LABELS[stage]} | " + " | ".join(row) + " |")
    row = [format_summary(diff[m]) for m in metrics]
    lines.append("| RL − SFT (paired per seed) | " + " | ".join(row) + " |")
    lines += [
        "",
        "Per seed (%):",
        "",
        "| seed | "
        + " | ".join(
            f"{STAGE_LABELS[st].split(' (')[0]} {metrics[m]}" for st in STAGES for m in metrics
        )
        + " |",
        "|---|" + "---|" * (len(STAGES) * len(metrics)),
    ]
    for s in seeds:
        vals = [f"{100 * scores[s][st][m]:.1f}" for st in STAGES for m in metrics]
        lines.append(f"| {s} | " + " | ".join(vals) + " |")
    lines += ["", "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), ""]
    return "\n".join(lines)


def _combined_plot(runs: dict[int, Path], key: str, title: str, path: Path) -> Path | None:
    """One figure with `key` from every seed's metrics.jsonl (None if no run logged it)."""
    from dataclasses import replace

    from d1.recipes.report import group_keys, group_spec, load_metrics, numeric_series, plot_group

    series = {}
    for seed, run_dir in runs.items():
        f = run_dir / "metrics.jsonl"
        if f.is_file():
            _, s = numeric_series(load_metrics(f))
            if key in s:
                series[f"seed {seed}"] = s[key]
    if not series:
        return None
    stem = next(iter(group_keys([key])))  # the metric's figure group gives its y label
    return plot_group(path, replace(group_spec(stem, [key]), title=title), "step", series)


def write_demo_report(
    cfg: DemoConfig, out: Path, sft_runs: dict[int, Path], grpo_runs: dict[int, Path], md: str
) -> Path:
    """`out/report/`: configs, metrics JSONL, PNG curves (per run and across seeds), summary."""
    from d1.config import save_config
    from d1.recipes.report import write_report

    rep = out / "report"
    if rep.exists():
        shutil.rmtree(rep)
    (rep / "configs").mkdir(parents=True)
    (rep / "metrics").mkdir()
    save_config(cfg, rep / "configs" / "demo.yaml")
    figures = []
    for stage, runs in (("sft", sft_runs), ("grpo", grpo_runs)):
        for seed, run_dir in runs.items():
            if (run_dir / "config.yaml").is_file():
                shutil.copy(run_dir / "config.yaml", rep / "configs" / f"{stage}_seed{seed}.yaml")
            if (run_dir / "metrics.jsonl").is_file():
                shutil.copy(
                    run_dir / "metrics.jsonl", rep / "metrics" / f"{stage}_seed{seed}.jsonl"
                )
                write_report(
                    run_dir, rep / "curves" / f"{stage}_seed{seed}", title=f"{stage} seed {seed}"
                )
    for runs, key, title, stem in (
        (sft_runs, "train/loss", "Masked SFT loss (easy problems)", "sft_loss"),
        (grpo_runs, "train/reward", "diffu-GRPO reward on hard problems (rollouts)", "grpo_reward"),
        (grpo_runs, "train/accuracy", "diffu-GRPO rollout accuracy", "grpo_accuracy"),
    ):
        png = _combined_plot(runs, key, title, rep / f"{stem}.png")
        if png is not None:
            figures.append(png)
    body = md + "\n" + "\n".join(f"![{p.stem}]({p.name})\n" for p in figures)
    body += (
        "\nPer-run curves: `curves/<stage>_seed<k>/report.md`; metrics: `metrics/`; "
        "configs: `configs/`.\n"
    )
    (rep / "summary.md").write_text(body, encoding="utf-8")
    return rep


def run_seed(cfg: DemoConfig, seed: int, data: dict[str, Path]) -> dict[str, Any]:
    """One seed's pipeline (SFT, RL, evaluation of the three stages); a worker process's job.

    Writes `seed<k>/scores.json` after each evaluation (the parent's progress reads it) and
    returns {"scores", "sft_run", "grpo_run", "timings"}.
    """
    import torch
    from transformers.utils import logging as hf_logging

    from d1.recipes.grpo.trainer import train_grpo
    from d1.recipes.sft import train_sft

    hf_logging.disable_progress_bar()
    torch.set_num_threads(cfg.threads)
    seed_dir = Path(cfg.out) / f"seed{seed}"
    if seed_dir.exists():  # a fresh run: no stale metrics or checkpoints of an earlier demo
        shutil.rmtree(seed_dir)
    quiet = dataclasses.replace(cfg, progress=False)  # the parent draws the progress
    timings: dict[str, float] = {}

    t = time.perf_counter()
    sft_run = Path(train_sft(sft_config(quiet, seed, seed_dir, data)))
    sft_ckpt = _final_checkpoint(sft_run)
    timings["sft"] = time.perf_counter() - t

    t = time.perf_counter()
    res = train_grpo(grpo_config(quiet, seed, seed_dir, data, sft_ckpt))
    grpo_run = Path(res.run_dir)
    grpo_ckpt = res.last_checkpoint or _final_checkpoint(grpo_run)
    timings["grpo"] = time.perf_counter() - t

    t = time.perf_counter()
    test = _task(cfg).load("test", path=str(data["test"]))
    scores: dict[str, dict[str, Any]] = {}
    for stage, path in {"base": cfg.model, "sft": str(sft_ckpt), "grpo": str(grpo_ckpt)}.items():
        scores[stage] = evaluate_checkpoint(cfg, path, seed, test, seed_dir / "eval" / stage)
        tmp = seed_dir / "scores.json.tmp"
        tmp.write_text(json.dumps(to_jsonable(scores)))
        tmp.replace(seed_dir / "scores.json")
    timings["eval"] = time.perf_counter() - t
    return {"scores": scores, "sft_run": sft_run, "grpo_run": grpo_run, "timings": timings}


def _last_step(metrics_file: Path) -> int:
    """The last logged step of a run's metrics.jsonl (0 before the first line); reads only the
    file's tail, so polling stays cheap while the file grows."""
    try:
        with metrics_file.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line).get("step", 0))
        except (ValueError, AttributeError):
            continue
    return 0


def _seed_progress(seed_dir: Path) -> tuple[int, int, int]:
    """(SFT steps, RL steps, stages evaluated) done so far by a seed's worker."""
    try:
        evaluated = len(json.loads((seed_dir / "scores.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        evaluated = 0
    return (
        _last_step(seed_dir / "sft" / "metrics.jsonl"),
        _last_step(seed_dir / "grpo" / "metrics.jsonl"),
        evaluated,
    )


def worker_pool(workers: int) -> Any:
    """An executor for per-seed work: in-process for one worker, else spawned processes (a
    clean interpreter per worker: no forked torch / thread state)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    if workers <= 1:
        return cf.ThreadPoolExecutor(max_workers=1)
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))


def run_bars(console: Any, *, enabled: bool, refresh_per_second: float = 2) -> Any:
    """The progress display of the per-seed runs (one bar per run and phase)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
        refresh_per_second=refresh_per_second,
    )


def _run_seeds(cfg: DemoConfig, data: dict[str, Path], console: Any) -> dict[int, dict[str, Any]]:
    """Run every seed (in parallel worker processes unless `workers == 1`), drawing one
    progress bar per seed and phase from the files the workers write."""
    import concurrent.futures as cf

    pool = worker_pool(cfg.workers or len(cfg.seeds))
    out = Path(cfg.out)
    results: dict[int, dict[str, Any]] = {}
    with pool, run_bars(console, enabled=cfg.progress) as bar:
        futures = {pool.submit(run_seed, cfg, seed, data): seed for seed in cfg.seeds}
        bars = {
            seed: [
                bar.add_task(f"seed {seed}  masked SFT", total=cfg.sft_steps),
                bar.add_task(f"seed {seed}  diffu-GRPO", total=cfg.grpo_steps),
                bar.add_task(f"seed {seed}  evaluation", total=len(STAGES)),
            ]
            for seed in cfg.seeds
        }
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=1.0)
            for seed, ids in bars.items():
                for task_id, value in zip(ids, _seed_progress(out / f"seed{seed}"), strict=True):
                    bar.update(task_id, completed=value)
            for fut in done:
                seed = futures[fut]
                results[seed] = fut.result()  # a worker's exception surfaces here
                for task_id in bars[seed]:
                    bar.update(task_id, completed=bar.tasks[task_id].total)
                s = results[seed]["scores"]
                console.print(
                    f"seed {seed}: "
                    + " | ".join(
                        f"{stage} "
                        + ", ".join(
                            f"{label} {100 * s[stage][m]:.1f} %"
                            for m, label in cfg.spec.metrics.items()
                        )
                        for stage in STAGES
                    )
                )
    return results


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run the demo end to end (see the module docstring); returns scores and writes reports."""
    from rich.console import Console

    cfg.validate()
    # The demo owns its process: silence transformers' per-load progress bars.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    console = Console(quiet=not cfg.progress)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def phase(i: int, text: str) -> float:
        console.rule(f"[bold][{i}/4] {text}")
        return time.perf_counter()

    t = phase(1, f"Build the built-in {cfg.model!r} LLaDA and its character tokenizer")
    from d1.core.models import make_tiny_model

    model, tok = make_tiny_model(cfg.model, seed=cfg.seeds[0])
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"{cfg.model}: {n_params / 1e6:.2f}M parameters, vocabulary {len(tok)}.")
    del model
    timings["model"] = time.perf_counter() - t

    lo, hi = cfg.hard
    t = phase(2, f"Generate {cfg.task} data offline (easy SFT set; hard RL / validation / test)")
    data = make_data(cfg, out / "data")
    test_examples = _task(cfg).load("test", path=str(data["test"]))
    for name, p in data.items():
        console.print(f"{name}: {p}")
    timings["data"] = time.perf_counter() - t

    workers = cfg.workers or len(cfg.seeds)
    t = phase(
        3,
        f"Per seed: masked SFT from scratch (easy), diffu-GRPO ({lo}-{hi} "
        f"{cfg.spec.difficulty}, rewards only), evaluation of base / SFT / RL "
        f"({len(cfg.seeds)} seeds, {workers} at a time)",
    )
    results = _run_seeds(cfg, data, console)
    timings["seeds"] = time.perf_counter() - t
    scores = {seed: results[seed]["scores"] for seed in cfg.seeds}
    for key in ("sft", "grpo", "eval"):
        timings[f"{key} (per seed, mean)"] = sum(r["timings"][key] for r in results.values()) / len(
            results
        )
    sft_runs = {seed: results[seed]["sft_run"] for seed in cfg.seeds}
    grpo_runs = {seed: results[seed]["grpo_run"] for seed in cfg.seeds}

    phase(4, "Summary across seeds and report")
    summary, diff = summarize_demo(scores, list(cfg.spec.metrics))
    timings["total"] = time.perf_counter() - start
    md = demo_markdown(cfg, scores, summary, diff, timings, len(test_examples))
    rep = write_demo_report(cfg, out, sft_runs, grpo_runs, md)
    payload = {
        "config": dataclasses.asdict(cfg),
        "scores": {
            str(s): {
                st: {m: v for m, v in ms.items() if m != "_per_example"} for st, ms in v.items()
            }
            for s, v in scores.items()
        },
        "summary": {st: {m: v.to_dict() for m, v in ms.items()} for st, ms in summary.items()},
        "rl_minus_sft": {m: v.to_dict() for m, v in diff.items()},
        "timings_s": timings,
        "n_test": len(test_examples),
    }
    (rep / "summary.json").write_text(json.dumps(to_jsonable(payload), indent=2) + "\n")
    # The results and where they are go out even without progress output.
    results_console = Console()
    results_console.print(md)
    results_console.print(f"Report: {rep / 'summary.md'}")
    return DemoResult(
        out=out, scores=scores, summary=summary, difference=diff, timings=timings, markdown=md
    )


def load_demo_config(
    *,
    quick: bool = False,
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seeds: list[int] | None = None,
    out: str | None = None,
    progress: bool | None = None,
) -> DemoConfig:
    """The demo config: defaults (or `DemoConfig.quick()`), then a YAML file, then `key=value`
    overrides, then the explicit arguments; checked with `d1.config` (typos are named)."""
    import yaml

    from d1.config import ConfigError, apply_overrides, config_from_dict, config_to_dict

    data: dict[str, Any] = config_to_dict(DemoConfig.quick() if quick else DemoConfig())
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist.")
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys.")
        data.update(loaded)
    apply_overrides(data, list(overrides))
    if seeds is not None:
        data["seeds"] = list(seeds)
    if out is not None:
        data["out"] = out
    if progress is not None:
        data["progress"] = progress
    return config_from_dict(DemoConfig, data, source=str(path) if path else "")
