"""Ablations of diffu-GRPO on the demo's addition task (issue #17; docs/method.md §4).

Three of the paper's claims, tested at toy scale with `d1 demo`'s recipe (`d1.recipes.demo`):

1. prompt masking in the log-prob estimate: `grpo.p_mask_prompt` in {0, 0.15, 0.3, 0.5, 0.7}
   at fixed mu (the demo's 2) and a fixed number of generations;
2. inner iterations mu (`grpo.num_iterations`) in {1, 2, 4, 8, 12} at a fixed number of
   generations: every run sees the same generation batches, so its optimizer steps are
   batches x mu; reward vs generations is the paper's x-axis;
3. stages: base (random init), diffu-GRPO from the base (RL only), SFT only, SFT -> RL.

Per seed, the demo's data (`d1.recipes.demo.make_data`), one masked-SFT checkpoint (shared by every
cell of that seed, trained once), then one RL run per cell from it (or from the base model),
and a greedy evaluation of each final checkpoint on the same held-out hard test set. The
reference cell (p 0.15, mu 2, from SFT) is `d1 demo`'s own RL run and is shared by all three
ablations. Jobs (one SFT per seed, one RL run per seed and cell) run in `--workers` worker
processes with one torch thread each, so a cell's numbers do not depend on what ran beside it;
the parent draws one progress bar per run from the metrics files the workers write.

Resumable: a finished cell is a file `seed<k>/cells/<cell>.json` and is never re-run; an
interrupted run restarts from its beginning. `--report-only` writes the tables and PNGs from
whatever cells have finished (missing ones are listed).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablations.py --out bench_out/ablations

Options not given keep `d1 demo`'s defaults (`d1.recipes.demo.DemoConfig`): 200 generation batches of
16 prompts x G 8 per run (the demo's 400 steps at mu 2), lr 5e-4, epsilon 0.2, beta 0.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from d1.recipes.evaluation.stats import format_mean_std, mean_spread, t_interval

P_MASKS: tuple[float, ...] = (0.0, 0.15, 0.3, 0.5, 0.7)
MUS: tuple[int, ...] = (1, 2, 4, 8, 12)
REF_P, REF_MU = 0.15, 2  # the demo's (DemoConfig) values, shared by all three ablations
ABLATIONS: tuple[str, ...] = ("p_mask", "mu", "stages")
METRICS: dict[str, str] = {"accuracy": "exact sums", "digit_accuracy": "digits right"}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One RL run: from `init` ("sft" or "base") with prompt masking `p` and `mu` iterations."""

    init: str
    p: float
    mu: int

    @property
    def name(self) -> str:
        return f"{self.init}-p{self.p:g}-mu{self.mu}"


def cells_for(p_masks: tuple[float, ...], mus: tuple[int, ...], stages: bool = True) -> list[Cell]:
    """The unique RL runs of the three ablations, in the order they are scheduled: the shared
    reference first, then the stage comparison, then p_mask, then mu (the costliest: their
    optimizer steps grow with mu), so a sweep cut short still answers the most claims."""
    out = [Cell("sft", REF_P, REF_MU)] + ([Cell("base", REF_P, REF_MU)] if stages else [])
    out += [Cell("sft", p, REF_MU) for p in p_masks]
    out += [Cell("sft", REF_P, m) for m in mus]
    seen: set[Cell] = set()
    return [c for c in out if not (c in seen or seen.add(c))]  # type: ignore[func-returns-value]


def ablation_cells(p_masks: tuple[float, ...], mus: tuple[int, ...]) -> dict[str, list[Any]]:
    """Ablation -> [(x label, cell name)]; "base" and "sft" are evaluation-only cells."""
    return {
        "p_mask": [(p, Cell("sft", p, REF_MU).name) for p in p_masks],
        "mu": [(m, Cell("sft", REF_P, m).name) for m in mus],
        "stages": [
            ("base", "base"),
            ("RL only", Cell("base", REF_P, REF_MU).name),
            ("SFT only", "sft"),
            ("SFT -> RL", Cell("sft", REF_P, REF_MU).name),
        ],
    }


# ----------------------------------------------------------------------------- worker jobs


def _curve(metrics_file: Path) -> list[tuple[int, float]]:
    """(generations so far, rollout reward of that generation batch) per generation batch."""
    out = []
    for line in metrics_file.read_text().splitlines():
        row = json.loads(line)
        if "train/reward" in row:
            out.append((int(row.get("compute/generations", 0)), float(row["train/reward"])))
    return out


def _write_json(path: Path, payload: Any) -> None:
    """Atomic write: a cell file exists only once its run is complete (resume reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)


def _evaluate(cfg: Any, model: str, seed: int, data: dict[str, Path], out: Path) -> dict:
    from d1.recipes.demo import _task, evaluate_checkpoint

    test = _task(cfg).load("test", path=str(data["test"]))
    scores = evaluate_checkpoint(cfg, model, seed, test, out)
    return {m: float(scores[m]) for m in METRICS}


def _setup_worker(threads: int) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)


def sft_job(cfg: Any, seed: int, data: dict[str, Path]) -> dict[str, Any]:
    """Masked SFT of one seed (once: its checkpoint path is kept in `sft_checkpoint.txt`, the
    layout of `objectives_rl.py`) and the evaluation of the base model and the SFT checkpoint."""
    from d1.recipes.demo import _final_checkpoint, sft_config
    from d1.recipes.sft import train_sft

    _setup_worker(cfg.threads)
    seed_dir = Path(cfg.out) / f"seed{seed}"
    ckpt_file = seed_dir / "sft_checkpoint.txt"
    t = time.perf_counter()
    if not ckpt_file.is_file():
        run = Path(train_sft(sft_config(cfg, seed, seed_dir, data)))
        seed_dir.mkdir(parents=True, exist_ok=True)
        ckpt_file.write_text(str(_final_checkpoint(run)))
    sft_s = time.perf_counter() - t
    ckpt = ckpt_file.read_text().strip()
    for cell, model in (("base", cfg.model), ("sft", ckpt)):
        f = seed_dir / "cells" / f"{cell}.json"
        if not f.is_file():
            res = _evaluate(cfg, model, seed, data, seed_dir / "eval" / cell)
            _write_json(f, {**res, "sft_s": sft_s} if cell == "sft" else res)
    return {"seed": seed, "job": "sft"}


def rl_job(cfg: Any, seed: int, data: dict[str, Path], cell: Cell, batches: int) -> dict:
    """One RL run of `cell` for `batches` generation batches (steps = batches x mu), then the
    greedy evaluation of its final checkpoint; a diverged run is recorded, not raised."""
    from d1.recipes.demo import _final_checkpoint, grpo_config
    from d1.recipes.grpo.trainer import train_grpo
    from d1.training.run import NonFiniteError

    _setup_worker(cfg.threads)
    seed_dir = Path(cfg.out) / f"seed{seed}"
    init = cfg.model if cell.init == "base" else (seed_dir / "sft_checkpoint.txt").read_text()
    run_cfg = dataclasses.replace(
        cfg, p_mask_prompt=cell.p, num_iterations=cell.mu, grpo_steps=batches * cell.mu
    )
    gcfg = grpo_config(run_cfg, seed, seed_dir, data, Path(init.strip()))
    gcfg.train.run_name = cell.name
    t = time.perf_counter()
    payload: dict[str, Any] = {"cell": cell.name, "batches": batches, "steps": batches * cell.mu}
    try:
        res = train_grpo(gcfg)
    except NonFiniteError as e:  # a diverged run is a result (the paper's "unstable")
        f = seed_dir / cell.name / "metrics.jsonl"
        payload.update(
            diverged=str(e).split("\n")[0][:200],
            curve=_curve(f) if f.is_file() else [],
            **dict.fromkeys(METRICS),
        )
        _write_json(seed_dir / "cells" / f"{cell.name}.json", payload)
        return {"seed": seed, "job": cell.name}
    payload["rl_s"] = time.perf_counter() - t
    payload["curve"] = _curve(Path(res.run_dir) / "metrics.jsonl")
    payload["compute"] = res.compute
    ckpt = res.last_checkpoint or _final_checkpoint(Path(res.run_dir))
    payload.update(_evaluate(cfg, str(ckpt), seed, data, seed_dir / "eval" / cell.name))
    _write_json(seed_dir / "cells" / f"{cell.name}.json", payload)
    # The checkpoint is evaluated; keep the metrics, drop the weights (disk, not results).
    shutil.rmtree(Path(res.run_dir) / "checkpoints", ignore_errors=True)
    return {"seed": seed, "job": cell.name}


# ----------------------------------------------------------------------------- scheduling


def run_jobs(
    cfg: Any,
    data: dict[str, Path],
    cells: list[Cell],
    batches: int,
    workers: int,
    progress: bool,
) -> None:
    """Run every missing job, `workers` at a time; a seed's RL jobs wait for its SFT job. One
    progress bar per run, drawn from the step counts the workers write to their metrics."""
    from rich.console import Console

    from d1.recipes.demo import _last_step, run_bars, worker_pool

    out = Path(cfg.out)
    todo: list[tuple[int, Cell | None]] = [
        (s, None) for s in cfg.seeds if not (out / f"seed{s}" / "cells" / "sft.json").is_file()
    ]
    todo += [
        (s, c)
        for c in cells
        for s in cfg.seeds
        if not (out / f"seed{s}" / "cells" / f"{c.name}.json").is_file()
    ]
    if not todo:
        return
    console = Console(quiet=not progress)
    log = console if progress else Console()  # finished cells are printed even without bars
    running: dict[cf.Future, tuple[int, Cell | None, Any, Path]] = {}
    with (
        worker_pool(workers) as pool,
        run_bars(console, enabled=progress, refresh_per_second=1) as bar,
    ):
        while todo or running:
            sft_pending = {s for s, c in todo if c is None} | {
                s for s, c, _, _ in running.values() if c is None
            }
            while len(running) < max(1, workers):
                ready = [j for j in todo if j[1] is None or j[0] not in sft_pending]
                if not ready:
                    break
                seed, cell = ready[0]
                todo.remove((seed, cell))
                if cell is None:
                    fut = pool.submit(sft_job, cfg, seed, data)
                    label, total = f"seed {seed}  masked SFT", cfg.sft_steps
                    metrics = out / f"seed{seed}" / "sft" / "metrics.jsonl"
                else:
                    fut = pool.submit(rl_job, cfg, seed, data, cell, batches)
                    label, total = f"seed {seed}  RL {cell.name}", batches * cell.mu
                    metrics = out / f"seed{seed}" / cell.name / "metrics.jsonl"
                running[fut] = (seed, cell, bar.add_task(label, total=total), metrics)
            done, _ = cf.wait(list(running), timeout=1.0, return_when=cf.FIRST_COMPLETED)
            for _, _, task_id, metrics in running.values():
                if metrics.is_file():
                    bar.update(task_id, completed=_last_step(metrics))
            for fut in done:
                seed, cell, task_id, _ = running.pop(fut)
                fut.result()  # a worker's crash (not a diverged run) surfaces here
                bar.update(task_id, completed=bar.tasks[task_id].total)
                name = "sft" if cell is None else cell.name
                res = json.loads((out / f"seed{seed}" / "cells" / f"{name}.json").read_text())
                acc = res.get("accuracy")
                log.print(
                    f"seed {seed} {name}: exact sums "
                    + ("diverged" if acc is None else f"{100 * acc:.1f} %")
                )


# ----------------------------------------------------------------------------- report


def _smooth(curve: list[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """Trailing moving average of the rollout reward (one generation batch is 16 prompts: a
    single batch's reward is too noisy to say when a level is reached)."""
    out = []
    for i in range(len(curve)):
        part = curve[max(0, i - window + 1) : i + 1]
        out.append((curve[i][0], sum(v for _, v in part) / len(part)))
    return out


def _final_reward(curve: list[tuple[int, float]], window: int) -> float | None:
    return _smooth(curve, window)[-1][1] if curve else None


def _peak_drop(curve: list[tuple[int, float]], window: int) -> float | None:
    """Best smoothed reward minus the final one: how much a run lost after its peak (the
    paper's instability shows as collapse after a rise)."""
    if not curve:
        return None
    s = [v for _, v in _smooth(curve, window)]
    return max(s) - s[-1]


def _first_reaching(curve: list[tuple[int, float]], target: float, window: int) -> int | None:
    """Generations at which the moving-mean reward first reaches `target`; only full windows
    count (a partial window at the start is one or two batches' noise)."""
    for gens, v in _smooth(curve, window)[window - 1 :]:
        if v >= target:
            return gens
    return None


def load_cells(out: Path, seeds: list[int]) -> dict[str, dict[int, dict[str, Any]]]:
    """cell name -> seed -> the finished cell's record."""
    res: dict[str, dict[int, dict[str, Any]]] = {}
    for s in seeds:
        for f in sorted((out / f"seed{s}" / "cells").glob("*.json")):
            res.setdefault(f.stem, {})[s] = json.loads(f.read_text())
    return res


def _plot(
    path: Path,
    title: str,
    xlabel: str,
    rows: list[tuple[Any, str]],
    cells: dict[str, dict[int, dict[str, Any]]],
    window: int,
) -> None:
    """Left: smoothed rollout reward vs generations, mean over seeds with a min-max band;
    right: final hard-test accuracy vs the ablated value (per seed dots, mean ± std bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    xs, means, stds, labels = [], [], [], []
    for i, (x, name) in enumerate(rows):
        per_seed = cells.get(name, {})
        curves = [_smooth(r["curve"], window) for r in per_seed.values() if r.get("curve")]
        if curves:
            n = min(len(c) for c in curves)
            g = [curves[0][j][0] for j in range(n)]
            vals = [[c[j][1] for c in curves] for j in range(n)]
            m = [sum(v) / len(v) for v in vals]
            (line,) = ax1.plot(g, m, label=f"{x} ({len(curves)} seeds)")
            ax1.fill_between(
                g, [min(v) for v in vals], [max(v) for v in vals], color=line.get_color(), alpha=0.2
            )
        accs = [r["accuracy"] for r in per_seed.values() if r.get("accuracy") is not None]
        if accs:
            m, sd = mean_spread(accs)
            xs.append(i)
            means.append(100 * m)
            stds.append(100 * sd)
            ax2.scatter([i] * len(accs), [100 * a for a in accs], color="grey", s=12, zorder=3)
        labels.append(str(x))
    ax1.set_xlabel("generations (completions sampled)")
    ax1.set_ylabel(f"rollout reward (moving mean, {window} batches)")
    ax1.set_title("reward vs generations (band: min-max over seeds)")
    if ax1.lines:
        ax1.legend(fontsize=8)
    numeric = all(isinstance(x, int | float) for x, _ in rows)  # stages: categories, no line
    ax2.errorbar(xs, means, yerr=stds, fmt="o-" if numeric else "o", capsize=4, zorder=4)
    ax2.set_xticks(range(len(labels)), labels)
    ax2.set_xlabel(xlabel)
    ax2.set_ylabel("hard-test exact sums (%)")
    ax2.set_title("final checkpoint (mean ± std; dots: seeds)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    out: Path, cfg: Any, batches: int, grid: dict[str, list[Any]], command: str
) -> str:
    """Markdown tables (and one PNG per ablation) from the finished cells; missing cells are
    named, never filled in."""
    seeds = list(cfg.seeds)
    cells = load_cells(out, seeds)
    window = max(1, batches // 10)
    gens = batches * cfg.grpo_prompts * cfg.num_generations
    lines = [
        f"Hard-test accuracy: % of {cfg.test_size} held-out hard {cfg.digits}-digit additions "
        f"({cfg.hard[0]}-{cfg.hard[1]} carries), greedy, final checkpoint; mean ± std over the "
        f"seeds that finished (of {seeds}). Every RL run: {batches} generation batches x "
        f"{cfg.grpo_prompts} prompts x G {cfg.num_generations} = {gens} generations, "
        f"optimizer steps = batches x mu, learning rate {cfg.grpo_lr:g}. Final reward: mean rollout reward of the last "
        f"{window} generation batches; drop: best minus final moving-mean reward.",
        "",
    ]
    missing: list[str] = []
    titles = {
        "p_mask": ("Prompt masking p_mask (mu 2)", "p_mask_prompt"),
        "mu": ("Inner iterations mu (p_mask 0.15), same generations", "mu"),
        "stages": ("Stages: base, RL only, SFT only, SFT -> RL", "model"),
    }
    for ablation, rows in grid.items():
        title, xlabel = titles[ablation]
        lines += [
            f"### {title}",
            "",
            f"| {xlabel} | seeds done | exact sums | digits right | per seed (exact sums) "
            "| final reward | drop | RL wall (s, mean) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for x, name in rows:
            per = cells.get(name, {})
            missing += [f"{name} seed {s}" for s in seeds if s not in per]
            ok = {s: r for s, r in per.items() if r.get("accuracy") is not None}
            bad = sorted(s for s in per if s not in ok)
            fr = [_final_reward(r["curve"], window) for r in ok.values() if r.get("curve")]
            dr = [_peak_drop(r["curve"], window) for r in ok.values() if r.get("curve")]
            wall = [r["rl_s"] for r in ok.values() if "rl_s" in r]
            cols = [
                str(x),
                f"{len(ok)}/{len(seeds)}" + (f" (diverged: {bad})" if bad else ""),
                format_mean_std([r["accuracy"] for r in ok.values()]),
                format_mean_std([r["digit_accuracy"] for r in ok.values()]),
                ", ".join(f"{100 * ok[s]['accuracy']:.1f}" for s in sorted(ok)),
                format_mean_std([v for v in fr if v is not None], 1, 3) if fr else "",
                format_mean_std([v for v in dr if v is not None], 1, 3) if dr else "",
                f"{sum(wall) / len(wall):.0f}" if wall else "",
            ]
            lines.append("| " + " | ".join(cols) + " |")
        lines.append("")
        png = out / f"ablation_{ablation}.png"
        _plot(png, title, xlabel, rows, cells, window)
        lines += [f"![{ablation}]({png.name})", ""]
        lines += _paired(ablation, rows, cells, seeds, window)
    lines += [
        "Missing cells: " + (", ".join(missing) if missing else "none") + ".",
        "",
        f"Command: `{command}`",
        "",
    ]
    text = "\n".join(lines)
    (out / "ablations.md").write_text(text)
    return text


def _paired(
    ablation: str,
    rows: list[tuple[Any, str]],
    cells: dict[str, dict[int, dict[str, Any]]],
    seeds: list[int],
    window: int,
) -> list[str]:
    """The per-seed comparisons that decide each claim (paired: same seed, same SFT start)."""

    def acc(name: str, s: int) -> float | None:
        return cells.get(name, {}).get(s, {}).get("accuracy")

    def diff_row(label: str, a: str, b: str) -> str:
        d = [
            acc(a, s) - acc(b, s) for s in seeds if acc(a, s) is not None and acc(b, s) is not None
        ]  # type: ignore[operator]
        wins = sum(v > 0 for v in d), sum(v == 0 for v in d), sum(v < 0 for v in d)
        per = ", ".join(f"{100 * v:+.1f}" for v in d)
        lo, hi = t_interval(d) if len(d) > 1 else (math.nan, math.nan)
        ci = "–" if math.isnan(lo) else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"
        return (
            f"| {label} | {format_mean_std(d)} | {ci} | {per} | {wins[0]} / {wins[1]} / {wins[2]} |"
        )

    head = [
        "| comparison | mean ± std (points) | 95 % t interval | per seed | W / T / L |",
        "|---|---|---|---|---|",
    ]
    if ablation == "p_mask":
        base = rows[0][1]
        out = ["Paired per seed, exact-sums difference to p_mask 0:", "", *head]
        out += [diff_row(f"p {x} - p 0", name, base) for x, name in rows[1:]]
        return [*out, ""]
    if ablation == "stages":
        n = dict(rows)
        out = ["Paired per seed, exact-sums differences:", "", *head]
        out += [
            diff_row("SFT -> RL - RL only", n["SFT -> RL"], n["RL only"]),
            diff_row("RL only - base", n["RL only"], n["base"]),
            diff_row("SFT -> RL - SFT only", n["SFT -> RL"], n["SFT only"]),
        ]
        return [*out, ""]
    # mu: generations each mu needs to reach the reward mu 2 ends at (the paper's x-axis),
    # per seed (seeds' reward levels differ more than the mu values' do).
    ref = dict(rows).get(REF_MU)
    ref_cells = {s: r for s, r in cells.get(ref, {}).items() if r.get("curve")}
    if not ref_cells:
        return []
    target = {s: _final_reward(r["curve"], window) for s, r in ref_cells.items()}
    out = [
        f"Generations until the moving-mean rollout reward ({window} batches, full windows "
        f"only) first reaches the final moving-mean reward of mu {REF_MU} of the same seed "
        f"(targets: {', '.join(f'seed {s} {v:.3f}' for s, v in sorted(target.items()))}); "
        f"ratio = mu {REF_MU}'s generations / this mu's (> 1: fewer generations than mu "
        f"{REF_MU}); '-': not reached in {len(next(iter(ref_cells.values()))['curve'])} "
        "batches. Mean reward over the run: the area under the reward-vs-generations curve "
        "divided by the generations (higher: more reward earlier), mean ± std over seeds.",
        "",
        "| mu | generations per seed | reached | ratio to mu 2 per seed | mean reward over the run |",
        "|---|---|---|---|---|",
    ]
    ref_g = {
        s: _first_reaching(r["curve"], target[s], window)  # type: ignore[arg-type]
        for s, r in ref_cells.items()
    }
    for x, name in rows:
        per = {s: r for s, r in cells.get(name, {}).items() if r.get("curve") and s in target}
        g = {s: _first_reaching(r["curve"], target[s], window) for s, r in per.items()}  # type: ignore[arg-type]
        ratio = [f"{ref_g[s] / g[s]:.2f}" if g[s] and ref_g.get(s) else "-" for s in sorted(g)]
        auc = [sum(v for _, v in r["curve"]) / len(r["curve"]) for r in per.values()]
        out.append(
            f"| {x} | {', '.join(str(g[s]) if g[s] else '-' for s in sorted(g))} | "
            f"{sum(v is not None for v in g.values())}/{len(g)} | {', '.join(ratio)} | "
            f"{format_mean_std(auc, 1, 3)} |"
        )
    return [*out, ""]


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_out/ablations")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--batches", type=int, default=200, help="generation batches per RL run (demo: 200)"
    )
    ap.add_argument("--p-masks", type=float, nargs="+", default=list(P_MASKS))
    ap.add_argument("--mus", type=int, nargs="+", default=list(MUS))
    ap.add_argument(
        "--only",
        nargs="+",
        choices=ABLATIONS,
        default=list(ABLATIONS),
        help="run and report only these ablations (the reference cell is in all of them)",
    )
    ap.add_argument("--grpo-lr", type=float, default=None, help="RL learning rate (demo: 5e-4)")
    ap.add_argument("--sft-steps", type=int, default=None)
    ap.add_argument("--test-size", type=int, default=None)
    ap.add_argument("--report-only", action="store_true", help="tables from finished cells")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--quick", action="store_true", help="a tiny end-to-end run (plumbing, not learning)"
    )
    args = ap.parse_args(argv)

    from d1.recipes.demo import DemoConfig, make_data

    kw: dict[str, Any] = {"out": args.out, "seeds": args.seeds, "progress": False}
    p_masks, mus, batches = tuple(args.p_masks), tuple(args.mus), args.batches
    if args.quick:  # d1 demo's quick sizes; two seeds so the spread and the workers run
        quick = dataclasses.asdict(DemoConfig.quick())
        kw.update({k: quick[k] for k in quick if k not in ("out", "progress", "workers")})
        kw["seeds"] = args.seeds[:2] if args.seeds != [0, 1, 2] else [0, 1]
        p_masks, mus, batches = (0.0, REF_P), (1, REF_MU), 2
    p_masks = p_masks if "p_mask" in args.only else ()
    mus = mus if "mu" in args.only else ()
    for key in ("sft_steps", "test_size", "grpo_lr"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    cfg = DemoConfig(**kw)
    cfg.validate()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = {k: v for k, v in ablation_cells(p_masks, mus).items() if k in args.only}
    t = time.perf_counter()
    if not args.report_only:  # (the report alone never rewrites data a running sweep reads)
        data = make_data(cfg, out / "data")
        run_jobs(
            cfg,
            data,
            cells_for(p_masks, mus, "stages" in args.only),
            batches,
            args.workers,
            not args.no_progress,
        )
    given = sys.argv[1:] if argv is None else argv
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablations.py " + " ".join(
        a
        for a in given
        if a != "--report-only"  # the command that runs (or completes) it
    )
    (out / "config.json").write_text(
        json.dumps({"demo": dataclasses.asdict(cfg), "batches": batches}, indent=1)
    )
    print(write_report(out, cfg, batches, grid, command))
    print(f"wall {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
