"""RL comparison of the policy objectives on the demo's addition task (`d1 demo`'s recipe).

Per seed: the demo's data (`d1.recipes.demo.make_data`), masked SFT from scratch on easy problems (one
SFT checkpoint per seed, shared by every objective), then one RL run per objective from that
checkpoint on hard problems with the same prompts, G, mu, steps and seeds (so the same number
of generations), and a greedy evaluation of each final checkpoint on the same held-out hard
test set. Writes a JSON of all numbers, a reward-curve PNG and the markdown table.

    .venv/bin/python benchmarks/objectives_rl.py --out bench_out/objectives_rl \
        --seeds 0 1 2 --grpo-steps 400 --workers 2

Options not given keep `d1 demo`'s defaults (`d1.recipes.demo.DemoConfig`), e.g. beta 0 (no
reference: `wd1` needs none, the others then have no KL term either).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from d1.recipes.evaluation.stats import format_mean_std

OBJECTIVES: dict[str, dict[str, Any]] = {
    "d1": {},
    "coupled": {"full_mask_pass": False},
    "mc_elbo": {"n": 4},
    "wd1": {},
}


def _rewards(run_dir: Path) -> list[tuple[int, float]]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "train/reward" in row:
            out.append((int(row["step"]), float(row["train/reward"])))
    return out


def run_seed(args: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers.utils import logging as hf_logging

    from d1.recipes.demo import (
        DemoConfig,
        _final_checkpoint,
        _task,
        evaluate_checkpoint,
        grpo_config,
        sft_config,
    )
    from d1.recipes.grpo.trainer import train_grpo
    from d1.recipes.sft import train_sft

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    cfg: DemoConfig = args["cfg"]
    seed: int = args["seed"]
    data = {k: Path(v) for k, v in args["data"].items()}
    seed_dir = Path(cfg.out) / f"seed{seed}"
    result: dict[str, Any] = {"seed": seed, "objectives": {}}
    t = time.perf_counter()
    sft_ckpt_file = seed_dir / "sft_checkpoint.txt"
    if sft_ckpt_file.is_file():
        sft_ckpt = Path(sft_ckpt_file.read_text().strip())
    else:
        sft_run = Path(train_sft(sft_config(cfg, seed, seed_dir, data)))
        sft_ckpt = _final_checkpoint(sft_run)
        sft_ckpt_file.write_text(str(sft_ckpt))
    result["sft_checkpoint"] = str(sft_ckpt)
    result["sft_s"] = time.perf_counter() - t
    test = _task(cfg).load("test", path=str(data["test"]))
    t = time.perf_counter()
    result["sft_accuracy"] = evaluate_checkpoint(
        cfg, str(sft_ckpt), seed, test, seed_dir / "eval" / "sft"
    )["accuracy"]
    for name in args["objectives"]:
        done = seed_dir / f"result-{name}.json"  # a finished objective is not re-run
        if done.is_file():
            result["objectives"][name] = json.loads(done.read_text())
            continue
        t = time.perf_counter()
        gcfg = grpo_config(cfg, seed, seed_dir, data, sft_ckpt)
        gcfg.train.run_name = f"grpo-{name}"
        gcfg.grpo = dataclasses.replace(
            gcfg.grpo, objective=name, objective_options=dict(OBJECTIVES[name])
        )
        try:
            res = train_grpo(gcfg)
        except Exception as e:  # a diverged run is a result: record it, go on
            run_dir = seed_dir / f"grpo-{name}"
            result["objectives"][name] = {"diverged": str(e).split(".")[0], "accuracy": None}
            result["objectives"][name]["rewards"] = (
                _rewards(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
            )
            print(f"seed {seed} {name}: {e}", flush=True)
            continue
        ckpt = res.last_checkpoint or _final_checkpoint(Path(res.run_dir))
        rl_s = time.perf_counter() - t
        acc = evaluate_checkpoint(cfg, str(ckpt), seed, test, seed_dir / "eval" / name)
        compute = json.loads((Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()[-1])
        result["objectives"][name] = {
            "accuracy": acc["accuracy"],
            "rewards": _rewards(Path(res.run_dir)),
            "rl_s": rl_s,
            "generations": compute.get("compute/generations"),
            "forward_passes": compute.get("compute/forward_passes"),
            "backward_passes": compute.get("compute/backward_passes"),
        }
        done.write_text(json.dumps(result["objectives"][name]))
        print(f"seed {seed} {name}: accuracy {acc['accuracy']:.4f} ({rl_s:.0f} s)", flush=True)
    return result


def write_report(results: list[dict[str, Any]], out: Path, command: str, cfg: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in OBJECTIVES if all(n in r["objectives"] for r in results)]
    seeds = [r["seed"] for r in results]
    sft_seeds = ", ".join(f"{100 * r['sft_accuracy']:.1f}" for r in results)
    lines = [
        f"Hard-test accuracy (% of {cfg.test_size} held-out hard addition problems, greedy, final "
        f"checkpoint), mean ± std over seeds {', '.join(map(str, seeds))}; every objective "
        f"starts from the same SFT checkpoint per seed and sees the same number of "
        f"generations ({cfg.grpo_steps // cfg.num_iterations} generation batches x "
        f"{cfg.grpo_prompts} prompts x {cfg.num_generations}).",
        "",
        "| objective | options | hard-test accuracy | last-10 mean rollout reward | per seed "
        "| forward / backward passes (per seed) | RL wall (s, mean) |",
        "|---|---|---|---|---|---|---|",
        f"| SFT only | | {format_mean_std([r['sft_accuracy'] for r in results])} | | {sft_seeds} | | |",
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        bad = [r["seed"] for r in results if r["objectives"][name].get("accuracy") is None]
        if bad:
            lines.append(
                f"| {name} | {json.dumps(OBJECTIVES[name])} | diverged (seeds {bad}) | | | | |"
            )
            continue
        accs = [r["objectives"][name]["accuracy"] for r in results]
        last = [
            statistics.mean(v for _, v in r["objectives"][name]["rewards"][-10:]) for r in results
        ]
        o = results[0]["objectives"][name]
        lines.append(
            f"| {name} | {json.dumps(OBJECTIVES[name]) if OBJECTIVES[name] else ''} | "
            f"**{format_mean_std(accs)}** | {statistics.mean(last):.3f} ± "
            f"{statistics.stdev(last) if len(last) > 1 else 0.0:.3f} | "
            f"{', '.join(f'{100 * a:.1f}' for a in accs)} | {o['forward_passes']} / "
            f"{o['backward_passes']} | "
            f"{statistics.mean(r['objectives'][name]['rl_s'] for r in results):.0f} |"
        )
        curves = [r["objectives"][name]["rewards"] for r in results]
        steps = [s for s, _ in curves[0]]
        mean = [statistics.mean(c[i][1] for c in curves) for i in range(len(steps))]
        ax.plot(steps, mean, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("rollout reward (mean over seeds)")
    ax.set_title("RL on hard addition problems, per objective")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "objectives_rl_reward.png", dpi=120)
    plt.close(fig)
    lines += ["", f"Command: `{command}`", ""]
    text = "\n".join(lines)
    (out / "objectives_rl.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_out/objectives_rl")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--objectives", nargs="+", default=list(OBJECTIVES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sft-steps", type=int, default=None)
    ap.add_argument("--grpo-steps", type=int, default=None)
    ap.add_argument("--test-size", type=int, default=None)
    args = ap.parse_args()

    from d1.recipes.demo import DemoConfig, make_data

    kw: dict[str, Any] = {"out": args.out, "seeds": args.seeds, "progress": False}
    for key in ("sft_steps", "grpo_steps", "test_size"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    cfg = DemoConfig(**kw)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = make_data(cfg, out / "data")
    jobs = [
        {
            "cfg": cfg,
            "seed": s,
            "data": {k: str(v) for k, v in data.items()},
            "objectives": args.objectives,
        }
        for s in args.seeds
    ]
    t = time.perf_counter()
    if args.workers <= 1:
        results = [run_seed(j) for j in jobs]
    else:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            results = pool.map(run_seed, jobs)
    (out / "objectives_rl.json").write_text(json.dumps(results, indent=1))

    command = " ".join(
        [f"OMP_NUM_THREADS={t}" for t in [os.environ.get("OMP_NUM_THREADS")] if t]
        + [".venv/bin/python", *sys.argv]
    )  # the thread setting the run really had
    print(write_report(results, out, command, cfg))
    print(f"wall {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
