"""Score saved generations with a task's scorer: `d1 score --task TASK FILE...` (docs/method.md §5, 6).

Two input formats are read:

- JSON Lines (or a JSON list) of records with a `completion`, a `question` (or `prompt`) and a
  `gold` (or `answer` / `ground_truth`), optionally `gen_length`. This includes `d1 eval`'s own
  `generations/<task>_len<N>_seed<S>.jsonl`: their rows carry the scored `example` (question,
  answer, meta), which is rescored as is, whatever the prompt style, the generation length comes
  from the file name, and the task options come from the evaluation's `config.json` next to the
  `generations/` folder, so the scores are the ones the evaluation recorded;
- d1's evaluation output (`eval/eval.py`): a JSON object whose `generations` is a list of
  `{question, generations, ground_truth}` plus top-level `gen_length`, `diffusion_steps`, ...

Accuracy is computed per (task, generation length) over all the files given together, the way
d1's `parse_and_get_acc.py` aggregates its per-rank files; the task's `aggregate` decides the
metric (mean correctness, or Sudoku's cell-level accuracy).
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d1.tasks import get_task, list_tasks, same_task
from d1.tasks.base import Example, Score, Task
from d1.tasks.data import load_rows

COMPLETION_FIELDS = ("completion", "generation", "generations")
QUESTION_FIELDS = ("question", "prompt")
GOLD_FIELDS = ("gold", "answer", "ground_truth")


@dataclass
class GenerationRecord:
    """One saved generation to score."""

    question: str
    completion: str
    gold: Any
    gen_length: int | None
    source: str
    index: int
    example: dict[str, Any] | None = None  # the Example as `d1 eval` saved it


@dataclass
class ScoredRecord:
    """A record with its task, score and parsed answer."""

    task: str
    record: GenerationRecord
    score: Score

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "task": self.task,
            "file": r.source,
            "index": r.index,
            "gen_length": r.gen_length,
            "question": r.question,
            "parsed": self.score.parsed,
            "gold": r.gold,
            "correct": self.score.correct,
            **({"details": self.score.details} if self.score.details else {}),
        }


def expand_paths(patterns: Iterable[str | Path]) -> list[Path]:
    """Files named by paths or glob patterns (sorted, duplicates removed)."""
    out: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        if any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text))
            if not matches:
                raise FileNotFoundError(f"No file matches {text!r}.")
            out.extend(Path(m) for m in matches)
        else:
            p = Path(text)
            if not p.is_file():
                raise FileNotFoundError(f"Generation file {text} does not exist.")
            out.append(p)
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _first(row: dict[str, Any], names: Sequence[str]) -> str | None:
    return next((n for n in names if n in row), None)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def read_generations(path: str | Path) -> list[GenerationRecord]:
    """Records of one file, JSONL or d1's evaluation JSON (see module doc)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("generations"), list):
            gen_length = _int_or_none(data.get("gen_length"))
            records = []
            for i, item in enumerate(data["generations"]):
                for field in ("question", "generations", "ground_truth"):
                    if field not in item:
                        raise ValueError(
                            f"{path}: generations[{i}] is missing field {field!r} "
                            "(d1's format has question, generations, ground_truth)."
                        )
                records.append(
                    GenerationRecord(
                        question=str(item["question"]),
                        completion=str(item["generations"]),
                        gold=item["ground_truth"],
                        gen_length=gen_length,
                        source=str(path),
                        index=i,
                    )
                )
            return records
    rows = load_rows(path)
    file_length = _length_from_name(path)
    records = []
    for i, row in enumerate(rows):
        names = {
            "completion": _first(row, COMPLETION_FIELDS),
            "question": _first(row, QUESTION_FIELDS),
            "gold": _first(row, GOLD_FIELDS),
        }
        for kind, name in names.items():
            if name is None:
                options = {"completion": COMPLETION_FIELDS, "question": QUESTION_FIELDS}.get(
                    kind, GOLD_FIELDS
                )
                raise ValueError(
                    f"{path}: row {i} has no {kind} field (one of {', '.join(options)}); "
                    f"fields present: {sorted(row)}."
                )
        example = row.get("example")
        length = _int_or_none(row.get("gen_length"))
        records.append(
            GenerationRecord(
                question=str(row[names["question"]]),  # type: ignore[index]
                completion=str(row[names["completion"]]),  # type: ignore[index]
                gold=row[names["gold"]],  # type: ignore[index]
                gen_length=file_length if length is None else length,
                source=str(path),
                index=i,
                example=example if isinstance(example, dict) and example else None,
            )
        )
    return records


_LENGTH_IN_NAME = re.compile(r"_len(\d+)(?:_|\.|$)")


def _length_from_name(path: Path) -> int | None:
    """The generation length in `d1 eval`'s file names (`gsm8k_len256_seed0.jsonl`)."""
    m = _LENGTH_IN_NAME.search(path.name)
    return int(m.group(1)) if m else None


def eval_task_options(path: str | Path) -> dict[str, dict[str, Any]]:
    """The task options of the `d1 eval` run that wrote `path` (its `config.json`, one folder
    above `generations/`), or {} for any other file."""
    path = Path(path)
    config = path.parent.parent / "config.json"
    if path.parent.name != "generations" or not config.is_file():
        return {}
    try:
        options = json.loads(config.read_text(encoding="utf-8"))["config"]["task_options"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(
            f"{config} is not a d1 eval config.json (no config.task_options); pass --task."
        ) from None
    return options if isinstance(options, dict) else {}


def infer_task_name(path: str | Path) -> str | None:
    """The task a file belongs to from d1's naming (`<task>_<model>_<len>_..._generations.json`):
    its first `_`-separated word when that is a registered task."""
    word = re.split(r"[_\-.]", Path(path).name, maxsplit=1)[0].lower()
    return word if word in list_tasks() else None


def make_task(name: str, *, d1_compat: bool = False, options: dict[str, Any] | None = None) -> Task:
    """The registered task with `options` (constructor arguments), in d1-compatible mode when
    asked (an error if it has none)."""
    options = dict(options or {})
    if not d1_compat:
        return get_task(name, **options)
    try:
        return get_task(name, **{**options, "d1_compat": True})
    except TypeError:
        raise ValueError(f"Task {name!r} has no d1_compat mode; drop --d1-compat.") from None


def record_example(task: Task, record: GenerationRecord) -> Example:
    """The Example of a record: the one `d1 eval` saved with it, else rebuilt from the
    question and gold (`Task.example_from_gold`)."""
    example_id = f"{record.source}#{record.index}"
    saved = record.example
    if saved is not None and "answer" in saved:
        meta = saved.get("meta")
        return Example(
            id=example_id,
            question=str(saved.get("question", record.question)),
            answer=str(saved["answer"]),
            meta=dict(meta) if isinstance(meta, dict) else {},
        )
    return task.example_from_gold(record.question, record.gold, example_id=example_id)


def score_records(task: Task, records: Sequence[GenerationRecord]) -> list[ScoredRecord]:
    """Score each record with `task.score` (time-limited, `Task.score_within`)."""
    return [
        ScoredRecord(task.name, r, task.score_within(r.completion, record_example(task, r)))
        for r in records
    ]


def score_files(
    paths: Iterable[str | Path],
    task: str | None = None,
    *,
    d1_compat: bool = False,
) -> list[ScoredRecord]:
    """Score every record of the files (globs allowed). `task` applies to all files; without
    it each file's task is inferred from its name."""
    files = expand_paths(paths)
    if not files:
        raise ValueError("No generation files given.")
    tasks: dict[str, Task] = {}
    results: list[ScoredRecord] = []
    for f in files:
        name = task or infer_task_name(f)
        if name is None:
            raise ValueError(
                f"Cannot tell the task of {f.name}; pass --task (one of {', '.join(list_tasks())})."
            )
        options = next((o for k, o in eval_task_options(f).items() if same_task(k, name)), {})
        key = f"{name}:{json.dumps(options, sort_keys=True, default=str)}"
        if key not in tasks:
            tasks[key] = make_task(name, d1_compat=d1_compat, options=options)
        results.extend(score_records(tasks[key], read_generations(f)))
    return results


@dataclass
class GroupSummary:
    """Accuracy of one (task, generation length) group."""

    task: str
    gen_length: int | None
    n: int
    accuracy: float  # percent
    files: int


def summarize(
    results: Sequence[ScoredRecord], *, tasks: dict[str, Task] | None = None
) -> list[GroupSummary]:
    """Per (task, gen_length) accuracy in percent, using each task's `aggregate`."""
    groups: dict[tuple[str, int | None], list[ScoredRecord]] = {}
    for r in results:
        groups.setdefault((r.task, r.record.gen_length), []).append(r)
    tasks = dict(tasks or {})
    out = []
    for (name, length), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        if name not in tasks:
            tasks[name] = get_task(name)
        metrics = tasks[name].aggregate([r.score for r in items])
        out.append(
            GroupSummary(
                task=name,
                gen_length=length,
                n=len(items),
                accuracy=100.0 * metrics["accuracy"],
                files=len({r.record.source for r in items}),
            )
        )
    return out


def write_results(results: Sequence[ScoredRecord], out: str | Path) -> None:
    """Per-example results as JSON Lines (question, parsed, gold, correct, ...)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")


def summary_table(summary: Sequence[GroupSummary], *, title: str = "Accuracy") -> Any:
    """A rich Table of the summary."""
    from rich.table import Table

    table = Table(title=title)
    for col, justify in (
        ("task", "left"),
        ("gen length", "right"),
        ("files", "right"),
        ("n", "right"),
        ("accuracy %", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in summary:
        table.add_row(
            s.task,
            "-" if s.gen_length is None else str(s.gen_length),
            str(s.files),
            str(s.n),
            f"{s.accuracy:.2f}",
        )
    return table


def run_score_command(
    files: Sequence[str],
    *,
    task: str | None = None,
    out: str | Path | None = None,
    d1_compat: bool = False,
) -> list[GroupSummary]:
    """What `d1 score` does: score, print a table, optionally write per-example results."""
    from rich.console import Console

    results = score_files(files, task, d1_compat=d1_compat)
    summary = summarize(results)
    title = "Accuracy (d1-compatible parser)" if d1_compat else "Accuracy"
    Console().print(summary_table(summary, title=title))
    if out is not None:
        write_results(results, out)
        Console().print(f"Wrote {len(results)} per-example results to {out}")
    return summary


__all__ = [
    "GenerationRecord",
    "GroupSummary",
    "ScoredRecord",
    "eval_task_options",
    "expand_paths",
    "infer_task_name",
    "read_generations",
    "record_example",
    "run_score_command",
    "score_files",
    "score_records",
    "summarize",
    "summary_table",
    "write_results",
]
