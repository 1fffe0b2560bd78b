"""Training reports: PNG curves and a markdown summary from a run's metrics JSONL (SPEC 7).

`write_report(run_dir)` reads the metrics JSON Lines file a trainer writes (one object per
logged step; nested objects are flattened with "/"), groups the numeric series it finds into
figures (reward per component, accuracy, KL, completion length, clip fraction, loss, learning
rate, gradient norm, then anything else numeric), draws each figure with matplotlib's Agg
backend (no display needed), and writes `report.md` with a table of first / last / min / max
per metric, the figures, and (when present) the run's evaluation summary and sample completions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys used as the x axis, in order of preference (the row index is the fallback).
X_KEYS: tuple[str, ...] = ("step", "global_step", "optimizer_step", "iteration")
# Keys never plotted: bookkeeping, not curves (exact names, and patterns on the lower-cased key).
SKIP_KEYS: frozenset[str] = frozenset(
    {*X_KEYS, "epoch_step", "seed", "timestamp", "time", "wall_time", "rank"}
)
SKIP_PATTERN = r"inner_iteration|generation_batch$|(^|/)epoch$|examples_seen|tokens_seen"
# Figure groups: (file stem, title, regex on the lower-cased key, log-scale y). First match wins.
GROUPS: tuple[tuple[str, str, str, bool], ...] = (
    ("reward_spread", "Reward spread (std)", r"rewards?([/_.].*)?_std$|reward_group_std", False),
    ("reward", "Reward (total and per component)", r"(^|/)rewards?([/_.]|$)", False),
    ("accuracy", "Accuracy", r"acc(uracy)?|solved|correct", False),
    ("kl", "KL to the reference policy", r"(^|[/_.])kl([/_.]|$)", False),
    ("completion_length", "Completion length (tokens)", r"length|(^|[/_.])len([/_.]|$)", False),
    ("clip_fraction", "Clip fraction", r"clip", False),
    ("ratio", "Importance ratio", r"(^|/)ratio/", False),
    ("loss", "Loss", r"loss|masked_ce|(^|/)ce$", False),
    ("lr", "Learning rate", r"(^|[/_.])lr([/_.]|$)|learning_rate", False),
    ("grad_norm", "Gradient norm", r"grad_?norm", False),
    ("advantage", "Advantages", r"advantage", False),
    ("compute", "Compute so far (counts)", r"^compute/", True),
    ("time", "Time and throughput", r"^time/|tokens_per_s|seconds", False),
)


@dataclass
class ReportResult:
    """What `write_report` wrote: the markdown file and the PNG figures (group -> path)."""

    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)
    n_rows: int = 0


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts: {"reward": {"xml": 1}} -> {"reward/xml": 1}."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, prefix=f"{key}/"))
        else:
            out[key] = v
    return out


def load_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics JSON Lines file into flat dicts; a malformed line raises, naming it."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {lineno} is not valid JSON ({e.msg}).") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: line {lineno} is not a JSON object.")
        rows.append(flatten(obj))
    return rows


def find_metrics_files(run_dir: str | Path) -> list[Path]:
    """Metrics JSONL files of a run: `run_dir` itself if it is a file, else `*metrics*.jsonl`
    directly in the run directory (checkpoint subfolders are not searched)."""
    p = Path(run_dir)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"Run directory {p} does not exist.")
    files = sorted(f for f in p.glob("*.jsonl") if "metric" in f.name.lower())
    if not files:
        raise FileNotFoundError(
            f"No metrics file in {p}: expected a `*metrics*.jsonl` written by `d1 sft`/`d1 grpo`."
        )
    return files


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def numeric_series(
    rows: Sequence[Mapping[str, Any]],
) -> tuple[str, dict[str, tuple[list[float], list[float]]]]:
    """Numeric series per key: {key: (xs, ys)}, with the x key's name.

    Rows without a key (or with a non-finite value) are skipped for that key only, so rows
    logged at different frequencies (train vs eval) can share a file.
    """
    x_key = next((k for k in X_KEYS if any(k in r for r in rows)), "row")
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, r in enumerate(rows):
        x = r.get(x_key, i) if x_key != "row" else i
        if not _is_number(x):
            continue
        for k, v in r.items():
            if k in SKIP_KEYS or not _is_number(v) or re.search(SKIP_PATTERN, k.lower()):
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(float(x))
            ys.append(float(v))
    return x_key, series


def group_keys(keys: Iterable[str]) -> dict[str, list[str]]:
    """Assign each metric key to a figure group (see GROUPS); unmatched keys get their own."""
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        low = key.lower()
        for stem, _title, pattern, _log in GROUPS:
            if re.search(pattern, low):
                groups.setdefault(stem, []).append(key)
                break
        else:
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_") or "metric"
            groups.setdefault(stem, []).append(key)
    order = [g[0] for g in GROUPS]
    return dict(sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))


def moving_average(ys: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_group(
    path: Path,
    title: str,
    x_key: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    log_y: bool = False,
) -> Path:
    """One PNG with every series of a group; noisy series (> 20 points) get a smoothed line."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        for key, (xs, ys) in series.items():
            if len(xs) > 20:
                (line,) = ax.plot(xs, ys, alpha=0.3, linewidth=1)
                w = max(2, len(xs) // 20)
                ax.plot(xs, moving_average(ys, w), color=line.get_color(), label=f"{key} (avg {w})")
            else:
                ax.plot(xs, ys, marker="o", markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel(x_key)
        if log_y and all(min(ys) > 0 for _, ys in series.values()):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _fmt(v: float) -> str:
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}"
    return f"{v:.3e}"


def metrics_table(series: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> str:
    """Markdown table: metric, points, first, last, min, max, mean of the last 10 %."""
    lines = [
        "| metric | points | first | last | min | max | mean of last 10 % |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in sorted(series):
        _, ys = series[key]
        tail = ys[-max(1, len(ys) // 10) :]
        lines.append(
            f"| {key} | {len(ys)} | {_fmt(ys[0])} | {_fmt(ys[-1])} | {_fmt(min(ys))} | "
            f"{_fmt(max(ys))} | {_fmt(sum(tail) / len(tail))} |"
        )
    return "\n".join(lines)


def _sample_completions(run_dir: Path, limit: int = 3) -> str:
    """The last few logged samples (`*sample*.jsonl` / `completions.jsonl` in the run folder)."""
    files = sorted([*run_dir.glob("*sample*.jsonl"), *run_dir.glob("completions.jsonl")])
    if not files:
        return ""
    lines = [ln for ln in files[-1].read_text(encoding="utf-8").splitlines() if ln.strip()]
    rows = [json.loads(ln) for ln in lines[-limit:]]
    out = [f"## Sample completions (last {len(rows)} of `{files[-1].name}`)", ""]
    for r in rows:
        short = {k: v for k, v in r.items() if not isinstance(v, str) or len(v) < 60}
        long = {k: v for k, v in r.items() if isinstance(v, str) and len(v) >= 60}
        out.append(
            "- " + ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in short.items())
        )
        for k, v in long.items():
            out += ["", f"  {k}:", "", "```text", v.strip()[:1500], "```"]
        out.append("")
    return "\n".join(out) + "\n"


def write_report(
    run_dir: str | Path, out_dir: str | Path | None = None, title: str | None = None
) -> ReportResult:
    """Write PNG curves and `report.md` for a run (or a single metrics file).

    Args:
        run_dir: the run directory (holding `*metrics*.jsonl`) or a metrics file.
        out_dir: where to write; defaults to `<run_dir>/report`.
        title: the markdown title; defaults to the run directory's name.
    """
    run_path = Path(run_dir)
    files = find_metrics_files(run_path)
    base = run_path if run_path.is_dir() else run_path.parent
    out = Path(out_dir) if out_dir is not None else base / "report"
    out.mkdir(parents=True, exist_ok=True)

    md = [f"# {title or 'Run report: ' + base.name}", ""]
    result = ReportResult(markdown=out / "report.md")
    for f in files:
        rows = load_metrics(f)
        result.n_rows += len(rows)
        x_key, series = numeric_series(rows)
        prefix = "" if len(files) == 1 else f"{f.stem}_"
        md += [f"## `{f.name}`: {len(rows)} rows, x axis `{x_key}`", ""]
        if not series:
            md += ["No numeric metrics found.", ""]
            continue
        titles = {stem: (t, log) for stem, t, _, log in GROUPS}
        for stem, keys in group_keys(series).items():
            title_, log_y = titles.get(stem, (stem, False))
            png = plot_group(
                out / f"{prefix}{stem}.png",
                title_,
                x_key,
                {k: series[k] for k in keys},
                log_y=log_y,
            )
            result.figures[f"{prefix}{stem}"] = png
            md += [f"![{stem}]({png.name})", ""]
        md += [metrics_table(series), ""]

    for extra in ("eval/summary.md", "selection.md"):
        p = base / extra
        if p.is_file():
            md += [f"## {extra}", "", p.read_text(encoding="utf-8").strip(), ""]
    samples = _sample_completions(base)
    if samples:
        md.append(samples)
    result.markdown.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    return result
