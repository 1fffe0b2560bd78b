"""Metrics tracking: one `Tracker.log(metrics, step)` for JSONL, TensorBoard and W&B, and a
rich progress bar.

`metrics.jsonl` in the run folder is always written (one JSON object per `log` call with
`step` and `time`); it is what `d1 report` and tests read. TensorBoard and W&B are added through
`report_to` (TRL-style: ["tensorboard"], ["wandb"], ["tensorboard", "wandb"], ["none"]). Only
the main process writes; other processes get a no-op tracker.

Every step appears once: a run resumed at step S first drops the rows of steps after S from
`metrics.jsonl` and `samples.jsonl` (`rewind_jsonl`: the file is rewritten atomically rather
than the rows marked superseded, so that every reader, plots and `d1 report` included, sees
one history without knowing about resumes; the dropped rows are the ones the resumed run logs
again, identically for an exact resume), and TensorBoard purges its events after S
(`purge_step`). A fresh start drops the rows of an earlier attempt that saved no checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from d1.config import atomic_write_text

__all__ = ["METRICS_FILE", "SAMPLES_FILE", "ProgressBar", "Tracker", "rewind_jsonl"]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"


def rewind_jsonl(path: str | Path, step: int | None) -> int:
    """Keep the rows of JSONL log `path` whose `step` is <= `step` (None: keep none); rows
    that do not parse (a line cut short by a kill) are dropped too. The file is rewritten
    atomically, and only when something changes. Returns the number of rows dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        row_step = row.get("step") if isinstance(row, dict) else None
        if step is not None and isinstance(row_step, int) and row_step <= step:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return dropped


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class Tracker:
    """Log scalar metrics to `run_dir/metrics.jsonl` (+ TensorBoard / W&B).

    Args:
        run_dir: the run folder.
        report_to: extra backends: "tensorboard", "wandb" or "none".
        enabled: False on non-main processes (nothing is written).
        config: the resolved run config (a plain dict), recorded by W&B.
        run_name: the W&B run name.
        wandb_project: the W&B project.
        filename: the JSONL file name.
        purge_step: TensorBoard hides the events of this step and later ones already in
            the run's log folder (a resumed run's restored step + 1).
    """

    def __init__(
        self,
        run_dir: str | Path,
        report_to: list[str] | tuple[str, ...] = ("tensorboard",),
        *,
        enabled: bool = True,
        config: dict[str, Any] | None = None,
        run_name: str | None = None,
        wandb_project: str = "d1",
        filename: str = METRICS_FILE,
        purge_step: int | None = None,
    ):
        self.enabled = enabled
        self.path = Path(run_dir) / filename
        self._tb = None
        self._wandb = None
        self._file = None
        if not enabled:
            return
        backends = [r for r in report_to if r != "none"]
        unknown = set(backends) - {"tensorboard", "wandb"}
        if unknown:
            raise ValueError(f"Unknown report_to {sorted(unknown)}; use tensorboard, wandb, none.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        if "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(
                log_dir=str(Path(run_dir) / "tensorboard"), purge_step=purge_step
            )
        if "wandb" in backends:
            try:
                import wandb
            except ImportError as e:
                raise ImportError(
                    "report_to includes 'wandb' but wandb is not installed: "
                    "`pip install wandb` (or `pip install d1[wandb]`), or drop it from report_to."
                ) from e
            self._wandb = wandb.init(
                project=wandb_project, name=run_name, dir=str(run_dir), config=config or {}
            )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Record `metrics` (name -> number; non-numbers go to the JSONL only) at `step`."""
        if not self.enabled:
            return
        row = {
            "step": int(step),
            "time": time.time(),
            **{k: _jsonable(v) for k, v in metrics.items()},
        }
        assert self._file is not None
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        scalars = {
            k: float(v)
            for k, v in row.items()
            if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, global_step=step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_progress_info(info: dict[str, float]) -> str:
    """The values shown next to a progress bar: `lr 1.00e-04  1,234 tok/s  reward 0.5000`."""
    parts = []
    for k, v in info.items():
        if k == "lr":
            parts.append(f"lr {v:.2e}")
        elif k == "tok_s":
            parts.append(f"{v:,.0f} tok/s")
        elif k == "accuracy":
            parts.append(f"acc {100 * v:.1f}%")
        else:
            parts.append(f"{k} {v:.4f}")
    return "  ".join(parts)


class ProgressBar:
    """A rich progress bar with the phase, loss / reward, lr, tokens/s and ETA; silent unless
    enabled.

    The position moves every optimizer step (`update(step)` without values keeps the last
    ones); `phase("rollout, block 3/8")` names what a long step is doing, so a first rollout or
    an evaluation does not look frozen.

    Args:
        total: total optimizer steps.
        start: steps already done (resumed runs).
        mode: "on", "off", or "auto" (on only when stderr is an interactive terminal).
        enabled: False on non-main processes.
        stream: where to draw (default: stderr); tests pass a buffer.
    """

    def __init__(
        self,
        total: int,
        *,
        start: int = 0,
        mode: str = "auto",
        enabled: bool = True,
        stream: Any = None,
    ):
        on = mode == "on" or (mode == "auto" and sys.stderr.isatty())
        self.active = bool(enabled and on)
        self._progress = None
        self._task = None
        self.info = ""
        self.description = "train"
        if not self.active:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = None
        if stream is not None:
            console = Console(file=stream, force_terminal=True, width=200)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=False,
            console=console,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total, completed=start, info="")

    def update(self, step: int, **info: float) -> None:
        """Move to `step`; with values, show e.g. loss=..., reward=..., lr=..., tok_s=..."""
        if info:
            self.info = format_progress_info(info)
        if not self.active:
            return
        assert self._progress is not None
        self._progress.update(self._task, completed=step, info=self.info)

    def phase(self, text: str | None) -> None:
        """Name what the current step is doing (None: back to "train")."""
        self.description = text or "train"
        if not self.active:
            return
        assert self._progress is not None
        self._progress.update(self._task, description=self.description)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
