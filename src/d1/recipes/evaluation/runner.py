"""`d1 eval`: batched generation on a task split, scoring, and summaries across seeds (docs/method.md §2, 7).

Protocol (d1's evaluation, every value overridable in `EvalConfig`): temperature 0, block 32,
`steps = gen_length / 2`, gen lengths 128 / 256 / 512, the test split.

Honesty rules this module enforces:
- Results do not depend on the batch size: prompts are left-padded with an attention mask
  (`d1.core.sampling.encode_prompts`), so at temperature 0 a prompt gets the same completion alone or
  in any batch (tested). Examples are batched in order of prompt length (less padding); the
  output keeps the data order.
- Temperature > 0 (or random remasking) draws its noise from one `torch.Generator` seeded per
  (seed, task, gen length) run, so seeds are independent runs and re-running a seed reproduces
  it (for a fixed batch size: the noise is drawn per batch). At temperature 0 with
  low-confidence remasking decoding is deterministic: several seeds would repeat the same run,
  so only the first seed is run and the summary says so.
- Every generation is written with its parsed answer and correctness (JSONL), so any number in
  the summary can be recomputed from the files.

Summary per task and gen length: each metric of `Task.aggregate` as mean, sample standard
deviation across seeds and a 95 % interval (`d1.recipes.evaluation.stats.summarize`: Student t across
seeds, or, with one seed, an interval over examples); the effective tokens per answer (the
model's own tokens before the first EOS / end-of-turn token); wall time and tokens/s.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from d1.config import ConfigError
from d1.core.sampling.config import SamplerConfig
from d1.core.sampling.steps import SamplingStats
from d1.errors import make_folder
from d1.recipes.evaluation.stats import Summary, format_pct, format_summary, summarize
from d1.tasks import Example, Task, get_task, render_prompt

ALL_TASKS: tuple[str, ...] = ("gsm8k", "math500", "countdown", "sudoku")

# progress(done, total, description): called after every batch.
ProgressFn = Callable[[int, int, str], None]


@dataclass
class EvalConfig:
    """What `d1 eval` evaluates and how (defaults: d1's evaluation protocol).

    Loadable from YAML (`d1 eval --config configs/eval/NAME.yaml`) like the training configs:
    unknown keys and bad values are reported, naming the key, before any model loads.

    Attributes:
        model: a built-in name ("tiny"), a local checkpoint folder or a hub id.
        tasks: task names (see `d1.tasks.list_tasks()`).
        gen_lengths: generation lengths (d1: 128, 256, 512); each run uses `sampler` at
            that length.
        seeds: sampling seeds; only matter when decoding is random (temperature > 0 or random
            remasking). With deterministic decoding only the first is run.
        split: "test" (reporting) or "validation" (checkpoint choice; `d1 select`).
        limit: evaluate only the first `limit` examples of the split (null: all).
        data_seed: seed of the task's own subsampling / generation of the split (fixed, so every
            seed and checkpoint sees the same examples).
        data_paths: optional local data file per task name (else the hub / built-in data).
        task_options: constructor keyword arguments per task name (e.g.
            `{"sudoku": {"prompt_style": "compact"}}`).
        batch_size: prompts per generation batch; results do not depend on it at temperature 0.
        sampler: the sampler and all its settings (`d1.core.sampling.SamplerConfig`; d1: greedy,
            block 32, steps = gen_length / 2, the reference sampler). It runs at each of
            `gen_lengths` (its block clamped to it), so an eval config does not set
            `sampler.gen_length`.
        dtype: model dtype for loading ("float32", "bfloat16", "auto").
        device: "cpu", "cuda", ... (null: "cuda" when a GPU is available, else "cpu").
        trust_remote_code: passed to the model loader for hub models with custom code.
        num_threads: torch CPU threads (null: as training, min(available cores, 8)).
        confidence: confidence level of the reported intervals.
        out: output folder (null: nothing written).
    """

    model: str = "tiny"
    tasks: tuple[str, ...] = ALL_TASKS
    gen_lengths: tuple[int, ...] = (128, 256, 512)
    seeds: tuple[int, ...] = (0,)
    split: str = "test"
    limit: int | None = None
    data_seed: int = 42
    data_paths: dict[str, str] = field(default_factory=dict)
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 8
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig.for_eval(None))
    dtype: str = "auto"
    device: str | None = None
    trust_remote_code: bool = False
    num_threads: int | None = None
    confidence: float = 0.95
    out: str | None = None

    # Sampler keys of earlier versions (flat): an error names the new key (no aliasing).
    __config_moved__: ClassVar[dict[str, str]] = {
        "block_length": "sampler.block_length",
        "steps": "sampler.steps",
        "temperature": "sampler.temperature",
        "cfg_scale": "sampler.cfg_scale",
        "remasking": "sampler.remasking",
    }
    __config_forbidden__: ClassVar[dict[str, str]] = {
        "sampler.gen_length": "eval generates at each of gen_lengths; set gen_lengths=[...] "
        "instead.",
    }

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        self.gen_lengths = tuple(int(g) for g in self.gen_lengths)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.validate()

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) pairs for every invalid setting; the model is not loaded."""
        from d1.tasks import list_tasks

        out: list[tuple[str, str]] = []
        known = list_tasks()
        if not self.tasks:
            out.append(("tasks", "no tasks to evaluate: name at least one, e.g. tasks=[gsm8k]."))
        for t in self.tasks:
            if t.lower() not in known:
                out.append(("tasks", f"unknown task {t!r}; known: {', '.join(known)}."))
        for key in self.data_paths:
            if key not in self.tasks:
                out.append(("data_paths", f"{key!r} is not one of the tasks {list(self.tasks)}."))
        if not self.gen_lengths or any(g < 1 for g in self.gen_lengths):
            out.append(("gen_lengths", f"must be positive integers; got {list(self.gen_lengths)}."))
        else:
            for g in self.gen_lengths:
                try:
                    self.sampler.for_length(g)  # validates the sampler at that length
                except ConfigError as e:
                    out += [(f"sampler.{key}", f"at gen length {g}: {msg}") for key, msg in e.keyed]
        if not self.seeds:
            out.append(("seeds", "pass at least one seed."))
        if self.batch_size < 1:
            out.append(("batch_size", f"must be >= 1; got {self.batch_size}."))
        if self.limit is not None and self.limit < 1:
            out.append(("limit", f"must be >= 1 (or null for all); got {self.limit}."))
        if self.num_threads is not None and self.num_threads < 1:
            out.append(("num_threads", f"must be >= 1 (or null); got {self.num_threads}."))
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            out.append(("out", f"{self.out!r} is a file, not a folder; choose a folder."))
        if not 0.0 < self.confidence < 1.0:
            out.append(("confidence", f"must be in (0, 1); got {self.confidence}."))
        out += [(f"sampler.{k}", m) for k, m in self.sampler.model_problems(self.model)]
        return out

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError.keyed(problems)

    @property
    def deterministic(self) -> bool:
        """True when decoding draws no random numbers (every seed gives the same run)."""
        return self.sampler.deterministic

    def run_seeds(self) -> tuple[int, ...]:
        """The seeds actually run (one when decoding is deterministic)."""
        return self.seeds[:1] if self.deterministic else self.seeds

    def sampler_config(self, gen_length: int) -> SamplerConfig:
        """The `SamplerConfig` of one gen length (`sampler` at that length)."""
        return self.sampler.for_length(gen_length)


@dataclass
class Generation:
    """One scored completion (a JSONL row of the generations file)."""

    id: str
    prompt: str
    completion: str
    parsed: str | None
    gold: str
    correct: float
    tokens: int
    details: dict[str, Any] = field(default_factory=dict)
    # The scored example (question, answer, meta), so that `d1 score` can rescore the row
    # whatever the prompt style (a compact prompt holds no Countdown numbers, for instance).
    example: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """One (task, gen length, seed) run: its generations and task metrics."""

    task: str
    gen_length: int
    seed: int
    metrics: dict[str, float]
    generations: list[Generation]
    wall_s: float
    sampler: dict[str, Any]
    compute: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.generations)

    @property
    def mean_tokens(self) -> float:
        return sum(g.tokens for g in self.generations) / max(1, self.n)

    @property
    def generated_positions(self) -> int:
        """Positions decoded (n x gen_length): the work a diffusion sampler always does."""
        return self.n * self.gen_length


@dataclass
class EvalResult:
    """All runs of an evaluation and their summary rows."""

    config: EvalConfig
    runs: list[RunResult]
    summary: list[dict[str, Any]]
    out_dir: Path | None = None

    def metric(self, task: str, gen_length: int, name: str = "accuracy") -> Summary:
        """The `Summary` of one metric (e.g. `result.metric("sudoku", 128).mean`)."""
        for row in self.summary:
            if row["task"] == task and row["gen_length"] == gen_length:
                return Summary(**row["metrics"][name])
        raise KeyError(f"No summary for task {task!r} at gen length {gen_length}.")


def effective_tokens(completion_ids: Sequence[int], stop_ids: Sequence[int]) -> int:
    """Tokens of a completion before its first stop (EOS / end-of-turn) token."""
    stop = set(stop_ids)
    return next((i for i, t in enumerate(completion_ids) if t in stop), len(completion_ids))


def _resolve_task(task: str | Task, options: dict[str, dict[str, Any]] | None = None) -> Task:
    if not isinstance(task, str):
        return task
    return get_task(task, **(options or {}).get(task, {}))


def load_examples(config: EvalConfig, task: Task, split: str | None = None) -> list[Example]:
    """The evaluation examples of one task: `Task.load(split, path, limit, seed=data_seed)`."""
    split = split or config.split
    examples = task.load(
        split, path=config.data_paths.get(task.name), limit=config.limit, seed=config.data_seed
    )
    if not examples:
        raise ValueError(f"Task {task.name!r} returned no examples for split {split!r}.")
    return examples


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    sampler_config: Any,
    mask_id: int,
    batch_size: int,
    generator: Any = None,
    logit_shift: bool = False,
    progress: Callable[[int], None] | None = None,
    stats: Any = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[list[str], list[int]]:
    """Completions and their effective token counts for `prompts`, in `prompts` order.

    Prompts are batched by length (longest first: less padding, and memory peaks early); each
    batch is left-padded with an attention mask, so at temperature 0 the result of a prompt does
    not depend on `batch_size` or on its batch neighbours. `stats` (a
    `d1.core.sampling.SamplingStats`) receives the sampler's work; `on_step(step, block)` is called
    after every sampler step (progress within a batch).
    """
    from d1.core.sampling import (
        completion_stop_ids,
        decode_completions,
        encode_prompts,
        model_device,
        sample,
    )

    stop_ids = completion_stop_ids(tokenizer)
    device = model_device(model)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))
    texts: list[str] = [""] * len(prompts)
    n_tokens: list[int] = [0] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, attention_mask = encode_prompts(tokenizer, [prompts[i] for i in idx], device)
        out = sample(
            model,
            input_ids,
            attention_mask,
            config=sampler_config,
            mask_id=mask_id,
            generator=generator,
            logit_shift=logit_shift,
            stats=stats,
            eos_id=getattr(tokenizer, "eos_token_id", None),
            trace=None if on_step is None else (lambda step, block, _x: on_step(step, block)),
        )
        completion_ids = out[:, input_ids.shape[1] :]
        decoded = decode_completions(tokenizer, completion_ids, stop_ids)
        for row, i in enumerate(idx):
            texts[i] = decoded[row]
            n_tokens[i] = effective_tokens(completion_ids[row].tolist(), stop_ids)
        if progress is not None:
            progress(len(idx))
    return texts, n_tokens


def _per_example(metric: str, generations: Sequence[Generation]) -> list[float] | None:
    """Per-example values of an aggregate metric, when they can be read off the scores."""
    if metric == "accuracy":
        return [g.correct for g in generations]
    for key in (metric, metric.removesuffix("_rate"), metric.removesuffix("_accuracy")):
        vals = [g.details.get(key) for g in generations]
        if all(isinstance(v, (int, float, bool)) for v in vals):
            return [float(v) for v in vals]  # type: ignore[arg-type]
    return None


def summarize_runs(runs: Sequence[RunResult], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Summary rows, one per (task, gen length), over the runs' seeds."""
    keyed: dict[tuple[str, int], list[RunResult]] = {}
    for r in runs:
        keyed.setdefault((r.task, r.gen_length), []).append(r)
    rows = []
    for (task, gen_length), rs in keyed.items():
        rs = sorted(rs, key=lambda r: r.seed)
        names = [k for k in rs[0].metrics if k != "n"]
        metrics = {}
        for name in names:
            per_seed = [r.metrics[name] for r in rs]
            per_ex = _per_example(name, rs[0].generations) if len(rs) == 1 else None
            metrics[name] = summarize(per_seed, per_ex, confidence).to_dict()
        wall = sum(r.wall_s for r in rs)
        eff = sum(sum(g.tokens for g in r.generations) for r in rs)
        positions = sum(r.generated_positions for r in rs)
        rows.append(
            {
                "task": task,
                "gen_length": gen_length,
                "seeds": [r.seed for r in rs],
                "n_examples": rs[0].n,
                "metrics": metrics,
                "mean_effective_tokens": eff / max(1, sum(r.n for r in rs)),
                "wall_s": wall,
                "effective_tokens_per_s": eff / wall if wall > 0 else float("nan"),
                "generated_tokens_per_s": positions / wall if wall > 0 else float("nan"),
                "sampler": rs[0].sampler,
                # The sampler's work (`SamplingStats`), summed over seeds: model calls and the
                # positions they processed (a cached chunk call counts its chunk only).
                "compute": {k: sum(r.compute.get(k, 0) for r in rs) for k in rs[0].compute},
            }
        )
    return rows


def summary_markdown(
    summary: Sequence[dict[str, Any]], config: EvalConfig, title: str = "Evaluation"
) -> str:
    """A markdown table of the summary (percentages; mean ± std [95 % CI])."""
    metric_names: list[str] = []
    for row in summary:
        metric_names += [m for m in row["metrics"] if m not in metric_names]
    seeds = config.run_seeds()
    lines = [
        f"# {title}",
        "",
        f"Model `{config.model}`, split `{config.split}`, sampler "
        f"{config.sampler.describe()}, remasking {config.sampler.remasking}, "
        f"seeds {list(seeds)}.",
    ]
    if config.deterministic and len(config.seeds) > 1:
        lines.append(
            f"Decoding is deterministic (temperature 0, low-confidence remasking): seeds "
            f"{list(config.seeds)} would give identical runs, so only seed {seeds[0]} was run."
        )
    cell = "mean ± std across seeds" if len(seeds) > 1 else "value"
    ci = (
        "Student t across seeds"
        if len(seeds) > 1
        else "over examples: Wilson for 0/1 scores, Student t for fractional ones"
    )
    lines += [
        f"Cells: {cell} in %, [{int(config.confidence * 100)} % CI, {ci}]. Tokens: mean "
        "effective tokens per answer (before the first EOS), model tokenizer.",
        "",
        "| task | gen length | n | "
        + " | ".join(metric_names)
        + " | tokens | wall s | tokens/s (effective / generated) | model calls |",
        "|---|---|---|" + "---|" * len(metric_names) + "---|---|---|---|",
    ]
    for row in summary:
        cells = []
        for m in metric_names:
            cells.append(
                format_summary(Summary(**row["metrics"][m])) if m in row["metrics"] else ""
            )
        lines.append(
            f"| {row['task']} | {row['gen_length']} | {row['n_examples']} | "
            + " | ".join(cells)
            + f" | {row['mean_effective_tokens']:.1f} | {row['wall_s']:.1f} | "
            f"{row['effective_tokens_per_s']:.1f} / {row['generated_tokens_per_s']:.1f} | "
            f"{row.get('compute', {}).get('model_calls', '')} |"
        )
    return "\n".join(lines) + "\n"


def evaluate_model(
    model: Any,
    tokenizer: Any,
    config: EvalConfig,
    *,
    mask_id: int,
    logit_shift: bool = False,
    tasks: Sequence[str | Task] | None = None,
    examples: dict[str, list[Example]] | None = None,
    progress: ProgressFn | None = None,
    title: str = "Evaluation",
) -> EvalResult:
    """Evaluate an already-loaded model (the body of `evaluate`; used by the demo and tests).

    Args:
        model: the diffusion LM (put in eval mode here).
        tokenizer: its tokenizer (with a chat template).
        config: the protocol; `config.model` is only recorded.
        mask_id: the model's mask token id.
        logit_shift: True for Dream-style models.
        tasks: Task objects or names (default: `config.tasks`).
        examples: optional examples per task name, instead of `Task.load` (e.g. a generated set).
        progress: optional `progress(done, total, description)` called after every batch.
        title: the markdown summary's title.
    """
    import torch

    model.eval()
    task_objs = [
        _resolve_task(t, config.task_options)
        for t in (tasks if tasks is not None else config.tasks)
    ]
    data = {}
    for task in task_objs:
        if examples is not None and task.name in examples:
            exs = examples[task.name][: config.limit] if config.limit else examples[task.name]
        else:
            exs = load_examples(config, task)
        data[task.name] = exs
    seeds = config.run_seeds()
    total = sum(len(v) for v in data.values()) * len(config.gen_lengths) * len(seeds)
    done = 0
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")

    runs: list[RunResult] = []
    for task in task_objs:
        exs = data[task.name]
        prompts = [render_prompt(tokenizer, task, ex) for ex in exs]
        for gen_length in config.gen_lengths:
            scfg = config.sampler_config(gen_length)
            for seed in seeds:
                gen = None
                if not config.deterministic:
                    # One generator per run, seeded by (seed, task, length): runs are independent
                    # of each other's order, and of which tasks are evaluated together.
                    run_key = f"{seed}:{task.name}:{gen_length}".encode()
                    gen = torch.Generator(device=device).manual_seed(_stable_hash(run_key))
                desc = f"{task.name} len {gen_length} seed {seed}"

                def _tick(k: int, desc: str = desc) -> None:
                    nonlocal done
                    done += k
                    if progress is not None:
                        progress(done, total, desc)

                def _step(step: int, block: int, desc: str = desc, blocks: int = 0) -> None:
                    # Moves within a batch: one long batch is minutes on a CPU.
                    if progress is not None:
                        progress(done, total, f"{desc}, block {block + 1}/{blocks}")

                stats = SamplingStats()
                t0 = time.perf_counter()
                texts, n_tok = generate_completions(
                    model,
                    tokenizer,
                    prompts,
                    sampler_config=scfg,
                    mask_id=mask_id,
                    batch_size=config.batch_size,
                    generator=gen,
                    logit_shift=logit_shift,
                    progress=_tick,
                    stats=stats,
                    on_step=functools.partial(_step, blocks=scfg.num_blocks),
                )
                wall = time.perf_counter() - t0
                scores = [task.score_within(t, ex) for t, ex in zip(texts, exs, strict=True)]
                gens = [
                    Generation(
                        id=str(ex.id),
                        prompt=p,
                        completion=t,
                        parsed=s.parsed,
                        gold=str(ex.answer),
                        correct=float(s.correct),
                        tokens=k,
                        details=dict(s.details),
                        example={"question": ex.question, "answer": ex.answer, "meta": ex.meta},
                    )
                    for ex, p, t, s, k in zip(exs, prompts, texts, scores, n_tok, strict=True)
                ]
                runs.append(
                    RunResult(
                        task=task.name,
                        gen_length=gen_length,
                        seed=seed,
                        metrics={k: float(v) for k, v in task.aggregate(scores).items()},
                        generations=gens,
                        wall_s=wall,
                        sampler=asdict(scfg),
                        compute=stats.as_dict(),
                    )
                )
    result = EvalResult(config=config, runs=runs, summary=summarize_runs(runs, config.confidence))
    if config.out is not None:
        result.out_dir = write_outputs(result, Path(config.out), title=title)
    return result


def _stable_hash(data: bytes) -> int:
    """A 63-bit seed from bytes, stable across processes (unlike `hash`)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") & ((1 << 63) - 1)


def to_jsonable(x: Any) -> Any:
    """A JSON-safe copy: NaN / inf become null, tuples lists, unknown objects strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def write_outputs(result: EvalResult, out: Path, title: str = "Evaluation") -> Path:
    """Write `config.json`, `generations/*.jsonl`, `summary.json` and `summary.md` under `out`."""
    import torch

    import d1

    make_folder(out, what="the output folder", fix="pass --out with a writable folder")
    gen_dir = out / "generations"
    gen_dir.mkdir(exist_ok=True)
    for r in result.runs:
        path = gen_dir / f"{r.task}_len{r.gen_length}_seed{r.seed}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for g in r.generations:
                f.write(json.dumps(to_jsonable(asdict(g)), ensure_ascii=False) + "\n")
    meta = {
        "config": asdict(result.config),
        "seeds_run": list(result.config.run_seeds()),
        "versions": {
            "d1": d1.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    (out / "config.json").write_text(json.dumps(to_jsonable(meta), indent=2) + "\n")
    runs = [
        {
            "task": r.task,
            "gen_length": r.gen_length,
            "seed": r.seed,
            "n": r.n,
            "metrics": r.metrics,
            "mean_effective_tokens": r.mean_tokens,
            "wall_s": r.wall_s,
            "compute": r.compute,
        }
        for r in result.runs
    ]
    summary = {"summary": result.summary, "runs": runs, **meta}
    (out / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(result.summary, result.config, title))
    return out


def evaluate(config: EvalConfig, progress: ProgressFn | None = None) -> EvalResult:
    """Load `config.model` through `d1.core.models.load_model` and evaluate it (`d1 eval`)."""
    import torch

    from d1.core.models import load_model

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    set_threads(config.num_threads, device)
    loaded = load_model(
        config.model,
        dtype=config.dtype,
        device=device,
        trust_remote_code=config.trust_remote_code,
    )
    return evaluate_model(
        loaded.model,
        loaded.tokenizer,
        config,
        mask_id=loaded.spec.mask_token_id,
        logit_shift=loaded.spec.logit_shift,
        progress=progress,
    )


def accuracy_line(result: EvalResult) -> str:
    """One line per (task, length) with the headline accuracy (for logs)."""
    return "; ".join(
        f"{r['task']}@{r['gen_length']}: {format_pct(r['metrics']['accuracy']['mean'])} %"
        for r in result.summary
        if "accuracy" in r["metrics"]
    )


def set_threads(num_threads: int | None, device: str) -> None:
    """torch's CPU threads for a command: `num_threads`, or on a CPU the training default
    (min(available cores, 8)), so a busy machine's default thread count does not apply."""
    import torch

    from d1.training.runtime import default_num_threads

    if num_threads is not None or str(device).startswith("cpu"):
        torch.set_num_threads(num_threads or default_num_threads(1))
