"""Training reports: PNG curves and a markdown summary from a run's metrics JSONL (docs/method.md §7).

`write_report(run_dir)` reads the metrics JSON Lines file a trainer writes (one object per
logged step; nested objects are flattened with "/"), groups the numeric series it finds into
figures (reward per component, accuracy, KL, completion length, clip fraction, loss, learning
rate, gradient norm, compute, time, then anything else numeric), draws each figure with
matplotlib's Agg backend (no display needed) with labelled axes, one colour per series and a
log y axis for quantities that span decades (`GROUPS`), leaves out series that never change,
and writes `report.md` with a table of first / last / min / max per metric, the figures, and
(when present) the run's evaluation summary and sample completions.
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


@dataclass(frozen=True)
class Group:
    """A figure: the series whose lower-cased key matches `pattern` (first match wins).

    `scale` is the y axis: "log" for quantities that may span decades (gradient norm,
    importance ratio, KL, cumulative counts: log as soon as their positive values span
    `LOG_SPAN`, linear while they stay within a decade, where log ticks say little), "linear",
    or "auto" (log when all values are positive and span more than `AUTO_LOG_SPAN`).
    """

    stem: str
    title: str
    pattern: str
    ylabel: str
    scale: str = "linear"


LOG_SPAN = 10.0
AUTO_LOG_SPAN = 1000.0
GROUPS: tuple[Group, ...] = (
    Group(
        "reward_spread",
        "Reward spread (std)",
        r"rewards?([/_.].*)?_std$|reward_group_std",
        "standard deviation of the reward",
    ),
    Group(
        "reward_timeouts",
        "Reward calls cut short by the time limit",
        r"(^|/)reward/timeouts$",
        "calls per generation batch",
    ),
    Group(
        "reward",
        "Reward (total and per component)",
        r"(^|/)rewards?([/_.]|$)",
        "reward per completion",
    ),
    Group("accuracy", "Accuracy", r"acc(uracy)?|solved|correct", "fraction correct"),
    Group(
        "kl",
        "KL to the reference policy",
        r"(^|[/_.])kl([/_.]|$)",
        "KL per token (nats, k3 estimate)",
        "log",
    ),
    Group(
        "completion_length",
        "Completion length",
        r"length|(^|[/_.])len([/_.]|$)",
        "tokens",
    ),
    Group("clip_fraction", "Clip fraction", r"clip", "fraction of tokens clipped"),
    Group("ratio", "Importance ratio", r"(^|/)ratio/", "ratio π / π_old (per token)", "log"),
    Group("loss", "Loss", r"loss|masked_ce|(^|/)ce$", "loss (nats per token)"),
    Group("lr", "Learning rate", r"(^|[/_.])lr([/_.]|$)|learning_rate", "learning rate"),
    Group(
        "grad_norm",
        "Gradient norm",
        r"grad_?norm",
        "global L2 norm (before clipping)",
        "log",
    ),
    Group("advantage", "Advantages", r"advantage", "fraction of completions / groups"),
    Group(
        "compute_tokens",
        "Compute so far: tokens",
        r"^compute/.*tokens",
        "tokens (cumulative)",
        "log",
    ),
    Group(
        "compute",
        "Compute so far: passes and counts",
        r"^compute/",
        "count (cumulative)",
        "log",
    ),
    Group("throughput", "Throughput", r"tokens_per_s", "tokens per second", "auto"),
    Group("time", "Time per step", r"^time/|seconds", "seconds", "auto"),
)
# x-axis labels (with units) of the known x keys.
X_LABELS: dict[str, str] = {
    "step": "optimizer step",
    "global_step": "optimizer step",
    "optimizer_step": "optimizer step",
    "iteration": "iteration",
    "row": "logged row",
}


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
        for group in GROUPS:
            if re.search(group.pattern, low):
                groups.setdefault(group.stem, []).append(key)
                break
        else:
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_") or "metric"
            groups.setdefault(stem, []).append(key)
    order = [g.stem for g in GROUPS]
    return dict(sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))


def group_spec(stem: str, keys: Sequence[str] = ()) -> Group:
    """The Group of a figure stem; a metric of its own gets its key as the y label."""
    for group in GROUPS:
        if group.stem == stem:
            return group
    label = keys[0] if len(keys) == 1 else stem
    return Group(stem, label, "", label, "auto")


def is_constant(ys: Sequence[float]) -> bool:
    """True when a series never changes (nothing to plot; the table still lists it)."""
    return len(ys) > 0 and max(ys) - min(ys) <= 1e-12 * max(1.0, abs(max(ys)))


def moving_average(ys: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def plan_figures(series: Series) -> tuple[dict[str, tuple[Group, Series]], list[str]]:
    """The figures of a run ({stem: (group, its series)}) and the constant series left out."""
    constant = sorted(k for k, (_, ys) in series.items() if is_constant(ys))
    varying = {k: v for k, v in series.items() if k not in constant}
    figures = {
        stem: (group_spec(stem, keys), {k: varying[k] for k in keys})
        for stem, keys in group_keys(varying).items()
    }
    return figures, constant


def series_colors(n: int) -> list[Any]:
    """`n` distinct colours (matplotlib's 10-colour cycle repeats from the 11th series)."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    return [matplotlib.colormaps["turbo"](i / (n - 1)) for i in range(n)]


def _use_log(scale: str, series: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> bool:
    values = [y for _, ys in series.values() for y in ys]
    positive = [y for y in values if y > 0]
    if scale == "log":  # non-positive points (a KL of exactly 0 at step 1) are left out
        return bool(positive) and max(positive) / min(positive) >= LOG_SPAN
    if scale == "auto":
        return (
            bool(values)
            and len(positive) == len(values)
            and (max(positive) / min(positive) > AUTO_LOG_SPAN)
        )
    return False


def make_figure(
    group: Group,
    x_key: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
) -> Any:
    """A matplotlib Figure of a group's series: labelled axes, one colour per series, log y
    where the group asks; noisy series (> 20 points) get a smoothed line in the same colour."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for (key, (xs, ys)), color in zip(series.items(), series_colors(len(series)), strict=True):
        if len(xs) > 20:
            ax.plot(xs, ys, alpha=0.3, linewidth=1, color=color)
            w = max(2, len(xs) // 20)
            ax.plot(xs, moving_average(ys, w), color=color, label=f"{key} (avg {w})")
        else:
            ax.plot(xs, ys, marker="o", markersize=3, color=color, label=key)
    ax.set_title(group.title)
    ax.set_xlabel(X_LABELS.get(x_key, x_key))
    ax.set_ylabel(group.ylabel)
    if _use_log(group.scale, series):
        ax.set_yscale("log", nonpositive="mask")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_group(
    path: Path,
    group: Group,
    x_key: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
) -> Path:
    """Write `make_figure`'s PNG to `path`."""
    import matplotlib.pyplot as plt

    fig = make_figure(group, x_key, series)
    try:
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
        figures, constant = plan_figures(series)
        for stem, (group, members) in figures.items():
            png = plot_group(out / f"{prefix}{stem}.png", group, x_key, members)
            result.figures[f"{prefix}{stem}"] = png
            md += [f"![{stem}]({png.name})", ""]
        if constant:
            md += ["Constant (not plotted): " + ", ".join(f"`{k}`" for k in constant) + ".", ""]
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
