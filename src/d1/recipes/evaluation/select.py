"""`d1 select`: choose the checkpoint to report on the validation split (docs/method.md §7).

Every saved checkpoint of a run is evaluated on the *validation* split with the same protocol;
the one with the best validation score is named, and only that fixed checkpoint should then be
evaluated on the test split (`d1 eval --model <chosen> --split test`). The test split is never
read here, unless `best_on_test=True` asks for the paper's original protocol (best of all
checkpoints *on test*), which is optimistically biased and labelled so in every output.

Score of a checkpoint: the mean, over the requested tasks and gen lengths, of the chosen
metric (default "accuracy"). Ties go to the later checkpoint (more training, and closest to the
"fixed last checkpoint" convention).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d1.recipes.evaluation.runner import EvalConfig, EvalResult, ProgressFn, evaluate_model

# Files whose presence makes a folder a loadable checkpoint (full model or LoRA adapter).
CHECKPOINT_MARKERS: tuple[str, ...] = ("config.json", "adapter_config.json")
_STEP = re.compile(r"(\d+)$")

OPTIMISTIC_LABEL = (
    "OPTIMISTIC: best-of-checkpoints chosen ON THE TEST SPLIT (the paper's original protocol); "
    "the reported number is biased upwards and is not a held-out estimate."
)


@dataclass
class Checkpoint:
    """A saved checkpoint folder and its training step (parsed from the name; -1 if none)."""

    path: Path
    step: int


def find_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Checkpoint folders of a run, in training order.

    The trainers write `RUN_DIR/checkpoints/checkpoint-{step}/`; a folder of checkpoints can be
    passed directly too. A checkpoint is a sub-folder holding `config.json` or
    `adapter_config.json` (folders being written, whose names start with "." or end with
    ".tmp", are skipped); its step is the trailing number of its name ("checkpoint-500" ->
    500). `run_dir` itself is not a candidate.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"Run directory {root} does not exist.")
    if (root / "checkpoints").is_dir():
        root = root / "checkpoints"
    found = []
    for sub in root.iterdir():
        if not sub.is_dir() or sub.name.startswith(".") or sub.name.endswith(".tmp"):
            continue
        if not any((sub / m).is_file() for m in CHECKPOINT_MARKERS):
            continue
        m = _STEP.search(sub.name)
        found.append(Checkpoint(sub, int(m.group(1)) if m else -1))
    if not found:
        raise FileNotFoundError(
            f"No checkpoints in {root}: expected sub-folders (e.g. checkpoint-100/) holding "
            f"{' or '.join(CHECKPOINT_MARKERS)}, as written by `d1 sft` / `d1 grpo`."
        )
    return sorted(found, key=lambda c: (c.step, c.path.name))


@dataclass
class SelectConfig:
    """What `d1 select` does.

    Attributes:
        run_dir: the run folder holding checkpoint sub-folders.
        eval: the evaluation protocol (its `split` is forced to "validation" unless
            `best_on_test`; its `model` is replaced by each checkpoint).
        metric: the `Task.aggregate` metric to maximise (mean over tasks and gen lengths).
        best_on_test: the paper's original, optimistic protocol: choose on the test split.
        out: where to write `selection.json` / `selection.md` (default: the run folder).
    """

    run_dir: str
    eval: EvalConfig = field(default_factory=EvalConfig)
    metric: str = "accuracy"
    best_on_test: bool = False
    out: str | None = None


@dataclass
class Selection:
    """The outcome: every checkpoint's score, the chosen one, and on which split."""

    chosen: Checkpoint
    scores: list[tuple[Checkpoint, float]]
    split: str
    metric: str
    optimistic: bool
    results: dict[str, EvalResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": str(self.chosen.path),
            "chosen_step": self.chosen.step,
            "split": self.split,
            "metric": self.metric,
            "protocol": OPTIMISTIC_LABEL
            if self.optimistic
            else "chosen on the validation split; evaluate only this checkpoint on test",
            "optimistic": self.optimistic,
            "scores": [{"path": str(c.path), "step": c.step, "score": s} for c, s in self.scores],
        }


def checkpoint_score(result: EvalResult, metric: str) -> float:
    """Mean of `metric` over the result's (task, gen length) rows."""
    vals = []
    for row in result.summary:
        if metric not in row["metrics"]:
            raise KeyError(
                f"Task {row['task']!r} reports no metric {metric!r}; it has "
                f"{sorted(row['metrics'])}. Pass --metric with one of them."
            )
        vals.append(row["metrics"][metric]["mean"])
    return sum(vals) / len(vals)


def default_loader(path: str, config: EvalConfig) -> tuple[Any, Any, int, bool]:
    """Load a checkpoint with `d1.core.models.load_model`: (model, tokenizer, mask id, logit shift)."""
    import torch

    from d1.core.models import load_model

    loaded = load_model(
        path,
        dtype=config.dtype,
        device=config.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        trust_remote_code=config.trust_remote_code,
    )
    return loaded.model, loaded.tokenizer, loaded.spec.mask_token_id, loaded.spec.logit_shift


def select_checkpoint(
    config: SelectConfig,
    *,
    loader: Callable[[str, EvalConfig], tuple[Any, Any, int, bool]] = default_loader,
    tasks: Sequence[Any] | None = None,
    progress: ProgressFn | None = None,
) -> Selection:
    """Evaluate every checkpoint of `config.run_dir` on validation and choose one (see module).

    Args:
        config: the selection settings.
        loader: `loader(path, eval_config) -> (model, tokenizer, mask_id, logit_shift)`.
        tasks: optional Task objects instead of `config.eval.tasks` names.
        progress: optional `progress(done, total, description)`.
    """
    split = "test" if config.best_on_test else "validation"
    checkpoints = find_checkpoints(config.run_dir)
    scores: list[tuple[Checkpoint, float]] = []
    results: dict[str, EvalResult] = {}
    for ckpt in checkpoints:
        ecfg = dataclasses.replace(config.eval, model=str(ckpt.path), split=split, out=None)
        model, tokenizer, mask_id, shift = loader(str(ckpt.path), ecfg)
        res = evaluate_model(
            model,
            tokenizer,
            ecfg,
            mask_id=mask_id,
            logit_shift=shift,
            tasks=tasks,
            progress=progress,
        )
        del model
        results[str(ckpt.path)] = res
        scores.append((ckpt, checkpoint_score(res, config.metric)))
    # Ties -> the later checkpoint: iterate in training order and keep >=.
    best = scores[0]
    for item in scores[1:]:
        if item[1] >= best[1]:
            best = item
    sel = Selection(
        chosen=best[0],
        scores=scores,
        split=split,
        metric=config.metric,
        optimistic=config.best_on_test,
        results=results,
    )
    write_selection(sel, Path(config.out) if config.out else Path(config.run_dir))
    return sel


def selection_markdown(sel: Selection) -> str:
    """The selection as markdown: protocol line, a table of scores, the chosen checkpoint."""
    lines = ["# Checkpoint selection", ""]
    if sel.optimistic:
        lines += [f"**{OPTIMISTIC_LABEL}**", ""]
    else:
        lines += [
            f"Chosen on the **validation** split by mean `{sel.metric}`; the test split was not "
            "read. Report the test score of this one checkpoint:",
            "",
            f"    {test_split_command(sel)}",
            "",
        ]
    lines += [f"| checkpoint | step | {sel.split} {sel.metric} (%) |", "|---|---|---|"]
    for c, s in sel.scores:
        mark = " **(chosen)**" if c.path == sel.chosen.path else ""
        lines.append(f"| {c.path.name}{mark} | {c.step} | {100 * s:.1f} |")
    return "\n".join(lines) + "\n"


def test_split_command(sel: Selection) -> str:
    """The `d1 eval` command that scores the chosen checkpoint on test with the protocol it was
    chosen by (tasks, lengths; the sampler comes from the checkpoint's run like here)."""
    cmd = f"d1 eval --model {sel.chosen.path} --split test"
    result = sel.results.get(str(sel.chosen.path))
    if result is not None:
        ev = result.config
        cmd += f" --tasks {','.join(ev.tasks)} --gen-lengths {','.join(map(str, ev.gen_lengths))}"
    return cmd


def write_selection(sel: Selection, out: Path) -> None:
    """Write `selection.json` and `selection.md` (names say `best_on_test` when optimistic)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = "selection_best_on_test" if sel.optimistic else "selection"
    (out / f"{stem}.json").write_text(json.dumps(sel.to_dict(), indent=2) + "\n")
    (out / f"{stem}.md").write_text(selection_markdown(sel))
