"""`d1 demo`: the whole d1 recipe, small enough for a laptop CPU (SPEC 3, 4, 7).

Story (the paper's, at toy scale): masked SFT teaches format and basic skill on a *limited*
distribution, then diffu-GRPO improves the model with task rewards alone on a *harder*
distribution for which no demonstrations are used. Concretely, with 4x4 Sudoku and the
built-in character-level tiny LLaDA, trained from scratch:

1. build the tiny model and tokenizer (random weights, one per seed);
2. generate the data offline: SFT demonstrations on easy puzzles (few blanks), RL prompts,
   validation and test puzzles on hard ones (many blanks); splits never share a puzzle;
3. masked SFT from scratch on the easy demonstrations (`d1.sft.train_sft`);
4. diffu-GRPO from the final SFT checkpoint on hard puzzles, reward = fraction of blanks
   right (`d1.grpo.train_grpo`);
5. evaluate the base model, the SFT checkpoint and the final RL checkpoint (fixed checkpoints:
   nothing is chosen on the test set) on the same held-out hard test set, greedy decoding.

Per seed everything is re-run (model init, SFT, RL); the table reports mean ± standard
deviation across seeds and a 95 % interval (`d1.evaluation.stats`), and the paired per-seed
difference RL - SFT. The report folder holds the configs used, the trainers' metrics JSONL,
PNG curves and the summary.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d1.evaluation.runner import to_jsonable
from d1.evaluation.stats import Summary, format_summary, summarize

__all__ = ["DemoConfig", "DemoResult", "run_demo"]

STAGES: tuple[str, ...] = ("base", "sft", "grpo")
STAGE_LABELS: dict[str, str] = {
    "base": "base (random init)",
    "sft": "SFT (easy puzzles)",
    "grpo": "SFT + diffu-GRPO (hard, rewards only)",
}
METRICS: dict[str, str] = {"accuracy": "cell accuracy", "solved": "fully solved"}


@dataclass
class DemoConfig:
    """Every setting of `d1 demo` (defaults: the full CPU demo; `DemoConfig.quick()`: a
    sub-minute smoke version that checks the plumbing, not learning).

    Attributes:
        seeds: one full pipeline (model init, SFT, RL, evaluation) per seed.
        out: output folder.
        model: built-in tiny model name.
        threads: torch CPU threads (the demo is sized for 2 cores).
        progress: show progress bars.
        sft_blanks: empty cells of the SFT demonstration puzzles (inclusive range: easy).
        hard_blanks: empty cells of the RL, validation and test puzzles (inclusive range: hard).
        sft_train_size, rl_train_size, validation_size, test_size: puzzles per set.
        sft_steps, sft_batch_size, sft_lr, sft_warmup_steps: masked SFT (full fine-tuning,
            AdamW, constant learning rate after a linear warm-up).
        grpo_steps: diffu-GRPO optimizer steps.
        grpo_prompts: puzzles per generation batch (x `num_generations` completions).
        num_generations: G, completions per puzzle.
        num_iterations: mu, optimizer steps per generation batch.
        grpo_lr, grpo_warmup_steps: diffu-GRPO learning rate and warm-up.
        epsilon, beta, p_mask_prompt: clip range, KL weight, prompt masking probability.
        temperature: rollout temperature.
        diffusion_steps: rollout sampler steps (for `gen_length` tokens in one block).
        gen_length: completion length (the answer format needs ~61 character tokens).
        eval_steps: evaluation sampler steps (greedy; d1 uses gen_length / 2).
        eval_batch_size: prompts per evaluation batch.
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    out: str = "demo_out"
    model: str = "tiny"
    threads: int | None = 2
    progress: bool = True
    # data
    sft_blanks: list[int] = field(default_factory=lambda: [2, 5])
    hard_blanks: list[int] = field(default_factory=lambda: [8, 10])
    sft_train_size: int = 6000
    rl_train_size: int = 2000
    validation_size: int = 128
    test_size: int = 256
    # masked SFT
    sft_steps: int = 300
    sft_batch_size: int = 32
    sft_lr: float = 3e-3
    sft_warmup_steps: int = 20
    # diffu-GRPO
    grpo_steps: int = 48
    grpo_prompts: int = 8
    num_generations: int = 8
    num_iterations: int = 4
    grpo_lr: float = 1e-4
    grpo_warmup_steps: int = 4
    epsilon: float = 0.2
    beta: float = 0.0
    p_mask_prompt: float = 0.15
    temperature: float = 1.0
    diffusion_steps: int = 16
    gen_length: int = 64
    # evaluation
    eval_steps: int = 32
    eval_batch_size: int = 64

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A sub-minute end-to-end run of every phase (plumbing only: it does not learn)."""
        kw: dict[str, Any] = {
            "seeds": [0],
            "model": "tiny-xs",
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
            "diffusion_steps": 4,
            "eval_steps": 4,
            "eval_batch_size": 8,
        }
        kw.update(overrides)
        return cls(**kw)

    def validate(self) -> None:
        from d1.config import ConfigError

        problems: list[tuple[str, str]] = []
        if not self.seeds:
            problems.append(("seeds", "give at least one seed."))
        for key in ("sft_blanks", "hard_blanks"):
            lo_hi = getattr(self, key)
            if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1] <= 12:
                problems.append(
                    (key, f"must be [low, high] with 1 <= low <= high <= 12; got {lo_hi}.")
                )
        if self.gen_length < 64:
            problems.append(("gen_length", "the answer format needs at least 64 tokens."))
        for key in ("sft_steps", "grpo_steps", "grpo_prompts", "test_size", "validation_size"):
            if getattr(self, key) < 1:
                problems.append((key, "must be >= 1."))
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


# ----------------------------------------------------------------------------- helpers


def _task_options(cfg: DemoConfig) -> dict[str, Any]:
    """Sudoku task options of the demo: compact prompts, answer-only demonstrations."""
    return {"prompt_style": "compact", "source": "generated", "demo_reasoning": False}


def _task(cfg: DemoConfig) -> Any:
    from d1.tasks import get_task

    return get_task("sudoku", **_task_options(cfg))


def make_data(cfg: DemoConfig, data_dir: Path, data_seed: int = 1234) -> dict[str, Path]:
    """Write the demo's puzzle files (d1's CSV format) and return their paths.

    `sft_train` holds solver-written demonstrations of easy puzzles; `rl_train`, `validation`
    and `test` hold hard puzzles without demonstrations. Generated splits never share a puzzle
    (membership is a hash of the puzzle), and easy and hard puzzles differ in blank count.
    """
    from d1.puzzles.io import write_rows
    from d1.puzzles.sudoku import generate_sudoku, sudoku_demonstration, sudoku_to_row

    data_dir.mkdir(parents=True, exist_ok=True)
    easy, hard = tuple(cfg.sft_blanks), tuple(cfg.hard_blanks)
    sets = {
        "sft_train": ("train", easy, cfg.sft_train_size),
        "rl_train": ("train", hard, cfg.rl_train_size),
        "validation": ("validation", hard, cfg.validation_size),
        "test": ("test", hard, cfg.test_size),
    }
    paths = {}
    for name, (split, blanks, n) in sets.items():
        puzzles = generate_sudoku(n, seed=data_seed, blanks=blanks, split=split)
        paths[name] = data_dir / f"{name}.csv"
        # Only the SFT set carries demonstrations: answer-only (empty reasoning), as the SFT
        # stage reads them. The hard sets have none: RL learns from the reward alone.
        rows = (
            sudoku_to_row(
                p,
                response=sudoku_demonstration(p.puzzle, p.solution, reasoning=False)
                if name == "sft_train"
                else None,
            )
            for p in puzzles
        )
        write_rows(rows, paths[name])
    return paths


def sft_config(cfg: DemoConfig, seed: int, seed_dir: Path, data: dict[str, Path]) -> Any:
    """The masked-SFT run config of one seed (full fine-tuning of the tiny model from scratch)."""
    from d1.sft import SFTConfig, SFTDataConfig
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
            task="sudoku",
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
    from d1.grpo.config import (
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
            temperature=cfg.temperature,
            max_prompt_length=64,
            max_completion_length=cfg.gen_length,
            block_length=cfg.gen_length,
            diffusion_steps=cfg.diffusion_steps,
            log_completions_steps=max(1, cfg.grpo_steps // 8),
        ),
        tasks=[TaskSpec(name="sudoku", path=str(data["rl_train"]), options=_task_options(cfg))],
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
    from d1.evaluation.runner import EvalConfig, evaluate_model
    from d1.models import load_model

    loaded = load_model(name_or_path, dtype="float32", device="cpu", seed=seed)
    ecfg = EvalConfig(
        model=name_or_path,
        tasks=("sudoku",),
        gen_lengths=(cfg.gen_length,),
        block_length=cfg.gen_length,
        steps=(cfg.eval_steps,),
        batch_size=cfg.eval_batch_size,
        split="test",
        task_options={"sudoku": _task_options(cfg)},
        out=str(out),
    )
    res = evaluate_model(
        loaded.model,
        loaded.tokenizer,
        ecfg,
        mask_id=loaded.spec.mask_token_id,
        logit_shift=loaded.spec.logit_shift,
        examples={"sudoku": examples},
        progress=progress,
        title=f"Demo evaluation: {name_or_path} (seed {seed})",
    )
    run = res.runs[0]
    metrics = {k: v for k, v in run.metrics.items() if k != "n"}
    # Per-example values, for the single-seed interval over examples.
    metrics["_per_example"] = {  # type: ignore[assignment]
        "accuracy": [g.correct for g in run.generations],
        "solved": [float(g.details["solved"]) for g in run.generations],
    }
    return metrics


def _final_checkpoint(run_dir: Path) -> Path:
    from d1.evaluation.select import find_checkpoints

    return find_checkpoints(run_dir)[-1].path


def summarize_demo(
    scores: dict[int, dict[str, dict[str, float]]],
) -> tuple[dict[str, dict[str, Summary]], dict[str, Summary]]:
    """Per stage and metric: mean / std / 95 % t interval across seeds; and the paired
    per-seed difference SFT + diffu-GRPO minus SFT."""
    seeds = sorted(scores)
    summary: dict[str, dict[str, Summary]] = {}
    for stage in STAGES:
        summary[stage] = {}
        for m in METRICS:
            per_ex = scores[seeds[0]][stage].get("_per_example", {}).get(m)  # type: ignore[union-attr]
            summary[stage][m] = summarize([scores[s][stage][m] for s in seeds], per_ex)
    diff = {
        m: summarize([scores[s]["grpo"][m] - scores[s]["sft"][m] for s in seeds]) for m in METRICS
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
    many = len(seeds) > 1
    cell = (
        "mean ± std across seeds [95 % t interval]"
        if many
        else "single seed [95 % interval over test puzzles]; run several seeds for the spread"
    )
    lines = [
        "# d1 demo: masked SFT, then diffu-GRPO, on 4x4 Sudoku (tiny LLaDA, CPU)",
        "",
        f"Test set: {n_test} held-out puzzles with {cfg.hard_blanks[0]}-{cfg.hard_blanks[1]} "
        f"blanks, greedy decoding, the same puzzles for every model. SFT saw only puzzles with "
        f"{cfg.sft_blanks[0]}-{cfg.sft_blanks[1]} blanks; diffu-GRPO saw hard puzzles and the "
        f"reward only. Fixed checkpoints (the last of each stage); seeds {seeds}. "
        f"Cells: % ({cell}).",
        "",
        "| model | " + " | ".join(METRICS.values()) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for stage in STAGES:
        row = [format_summary(summary[stage][m]) for m in METRICS]
        lines.append(f"| {STAGE_LABELS[stage]} | " + " | ".join(row) + " |")
    row = [format_summary(diff[m]) for m in METRICS]
    lines.append("| RL − SFT (paired per seed) | " + " | ".join(row) + " |")
    lines += [
        "",
        "Per seed (%):",
        "",
        "| seed | "
        + " | ".join(
            f"{STAGE_LABELS[st].split(' (')[0]} {METRICS[m]}" for st in STAGES for m in METRICS
        )
        + " |",
        "|---|" + "---|" * (len(STAGES) * len(METRICS)),
    ]
    for s in seeds:
        vals = [f"{100 * scores[s][st][m]:.1f}" for st in STAGES for m in METRICS]
        lines.append(f"| {s} | " + " | ".join(vals) + " |")
    lines += ["", "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), ""]
    return "\n".join(lines)


def _combined_plot(runs: dict[int, Path], key: str, title: str, path: Path) -> Path | None:
    """One figure with `key` from every seed's metrics.jsonl (None if no run logged it)."""
    from d1.report import load_metrics, numeric_series, plot_group

    series = {}
    for seed, run_dir in runs.items():
        f = run_dir / "metrics.jsonl"
        if f.is_file():
            _, s = numeric_series(load_metrics(f))
            if key in s:
                series[f"seed {seed}"] = s[key]
    if not series:
        return None
    return plot_group(path, title, "step", series)


def write_demo_report(
    cfg: DemoConfig, out: Path, sft_runs: dict[int, Path], grpo_runs: dict[int, Path], md: str
) -> Path:
    """`out/report/`: configs, metrics JSONL, PNG curves (per run and across seeds), summary."""
    from d1.config import save_config
    from d1.report import write_report

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
        (sft_runs, "train/loss", "Masked SFT loss (easy puzzles)", "sft_loss"),
        (grpo_runs, "train/reward", "diffu-GRPO reward on hard puzzles (rollouts)", "grpo_reward"),
        (grpo_runs, "train/accuracy", "diffu-GRPO rollout cell accuracy", "grpo_accuracy"),
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


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run the demo end to end (see the module docstring); returns scores and writes reports."""
    import torch
    from rich.console import Console

    from d1.evaluation.progress import progress_bar

    cfg.validate()
    # The demo owns its process: silence transformers' per-load progress bars.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    console = Console(quiet=not cfg.progress)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def phase(i: int, text: str) -> float:
        console.rule(f"[bold][{i}/5] {text}")
        return time.perf_counter()

    t = phase(1, f"Build the built-in {cfg.model!r} LLaDA and its character tokenizer")
    from d1.models import make_tiny_model

    model, tok = make_tiny_model(cfg.model, seed=cfg.seeds[0])
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"{cfg.model}: {n_params / 1e6:.2f}M parameters, vocabulary {len(tok)}.")
    del model
    timings["model"] = time.perf_counter() - t

    t = phase(2, "Generate Sudoku data offline (easy SFT set; hard RL / validation / test)")
    data = make_data(cfg, out / "data")
    task = _task(cfg)
    test_examples = task.load("test", path=str(data["test"]))
    for name, p in data.items():
        console.print(f"{name}: {p}")
    timings["data"] = time.perf_counter() - t

    from d1.grpo.trainer import train_grpo
    from d1.sft import train_sft

    scores: dict[int, dict[str, dict[str, float]]] = {}
    sft_runs: dict[int, Path] = {}
    grpo_runs: dict[int, Path] = {}
    timings.update({"sft": 0.0, "grpo": 0.0, "eval": 0.0})
    for seed in cfg.seeds:
        seed_dir = out / f"seed{seed}"
        t = phase(3, f"Masked SFT from scratch on easy puzzles (seed {seed})")
        sft_runs[seed] = Path(train_sft(sft_config(cfg, seed, seed_dir, data)))
        sft_ckpt = _final_checkpoint(sft_runs[seed])
        timings["sft"] += time.perf_counter() - t

        t = phase(4, f"diffu-GRPO from the SFT checkpoint on hard puzzles (seed {seed})")
        res = train_grpo(grpo_config(cfg, seed, seed_dir, data, sft_ckpt))
        grpo_runs[seed] = Path(res.run_dir)
        grpo_ckpt = res.last_checkpoint or _final_checkpoint(grpo_runs[seed])
        timings["grpo"] += time.perf_counter() - t

        t = phase(5, f"Evaluate base, SFT and SFT + diffu-GRPO on the test set (seed {seed})")
        scores[seed] = {}
        models = {"base": cfg.model, "sft": str(sft_ckpt), "grpo": str(grpo_ckpt)}
        with progress_bar("eval", enabled=cfg.progress) as bar:
            for stage, path in models.items():
                scores[seed][stage] = evaluate_checkpoint(
                    cfg, path, seed, test_examples, seed_dir / "eval" / stage, progress=bar
                )
        timings["eval"] += time.perf_counter() - t
        console.print(
            " | ".join(
                f"{stage}: cells {100 * scores[seed][stage]['accuracy']:.1f} %, "
                f"solved {100 * scores[seed][stage]['solved']:.1f} %"
                for stage in STAGES
            )
        )

    summary, diff = summarize_demo(scores)
    timings["total"] = sum(timings.values())
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
    console.print(md)
    console.print(f"Report: {rep / 'summary.md'}")
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
