"""Do fast rollouts learn the same? The demo's diffu-GRPO with reference vs fast rollout samplers.

The addition demo of `d1 demo` (`d1.recipes.demo`: masked SFT on easy problems, then diffu-GRPO with
rewards only on hard ones), run once per seed up to the SFT checkpoint, then diffu-GRPO from
that same checkpoint once per rollout setting (`grpo.sampler.*`), everything else the demo's
defaults. Per run it records the training reward of every optimizer step, the rollout time, and
the hard-test accuracy (the demo's greedy evaluation on its 512 held-out hard problems) of the
SFT checkpoint and of checkpoints every `--eval-every` RL steps. `--report` then writes the
table (mean ± std over seeds per setting and step) and the plot.

    .venv/bin/python benchmarks/rl_rollouts.py --out rl_rollouts_out            # 3 seeds
    .venv/bin/python benchmarks/rl_rollouts.py --out rl_rollouts_out --report   # table + plot

Settings are `name:key=value,...` over `SamplerConfig` fields, e.g. `fast-dual:name=fast,
cache=dual`; "reference" is the demo's own sampler. Runs are jobs of a process pool
(`--workers`), one torch thread each, so a run's numbers do not depend on what ran beside it
(its wall times do: say what else shared the machine).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

from d1.recipes.evaluation.stats import mean_spread

DEFAULT_SETTINGS = ("reference:name=reference", "fast-dual:name=fast,cache=dual")


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    """`label:key=value,...` -> (label, SamplerConfig overrides); values parsed as YAML."""
    import yaml

    label, _, rest = text.partition(":")
    fields: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        fields[key.strip()] = yaml.safe_load(value)
    return label, fields


def _demo_config(args: argparse.Namespace) -> Any:
    from d1.recipes.demo import DemoConfig

    base = DemoConfig.quick() if args.quick else DemoConfig()
    cfg = dataclasses.replace(
        base, seeds=list(args.seeds), out=str(args.out), threads=1, progress=False, workers=1
    )
    if args.grpo_steps is not None:
        cfg = dataclasses.replace(cfg, grpo_steps=args.grpo_steps)
    return cfg


def sft_job(args: argparse.Namespace, seed: int) -> str:
    """Masked SFT of one seed (skipped when its final checkpoint exists); returns the path."""
    import torch

    from d1.recipes.demo import _final_checkpoint, make_data, sft_config
    from d1.recipes.sft import train_sft

    torch.set_num_threads(1)
    cfg = _demo_config(args)
    data = make_data(cfg, Path(args.out) / "data")
    seed_dir = Path(args.out) / "sft" / f"seed{seed}"
    done = seed_dir / "sft" / "DONE"
    if done.exists():
        return done.read_text().strip()
    run = Path(train_sft(sft_config(cfg, seed, seed_dir, data)))
    ckpt = str(_final_checkpoint(run))
    done.write_text(ckpt)
    return ckpt


def rl_job(args: argparse.Namespace, seed: int, setting: str, sft_ckpt: str) -> dict[str, Any]:
    """diffu-GRPO of one (seed, rollout setting) from the seed's SFT checkpoint, then the
    hard-test accuracy of the SFT checkpoint and of every saved RL checkpoint."""
    import torch

    from d1.recipes.demo import _task, evaluate_checkpoint, grpo_config, make_data
    from d1.recipes.evaluation.select import find_checkpoints
    from d1.recipes.grpo.trainer import train_grpo

    torch.set_num_threads(1)
    label, fields = parse_setting(setting)
    cfg = _demo_config(args)
    data = make_data(cfg, Path(args.out) / "data")
    run_dir = Path(args.out) / label / f"seed{seed}"
    gcfg = grpo_config(cfg, seed, run_dir, data, Path(sft_ckpt))
    sampler = dataclasses.replace(gcfg.grpo.sampler, **fields)
    gcfg = dataclasses.replace(
        gcfg,
        grpo=dataclasses.replace(gcfg.grpo, sampler=sampler),
        train=dataclasses.replace(gcfg.train, save_steps=args.eval_every, save_total_limit=None),
    )
    t0 = time.perf_counter()
    res = train_grpo(gcfg)
    rl_s = time.perf_counter() - t0
    rows = [json.loads(x) for x in (Path(res.run_dir) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/reward" in r]
    test = _task(cfg).load("test", path=str(data["test"]))
    accuracy = {0: evaluate_checkpoint(cfg, sft_ckpt, seed, test, run_dir / "eval" / "sft")}
    for ckpt in find_checkpoints(Path(res.run_dir)):
        accuracy[ckpt.step] = evaluate_checkpoint(
            cfg, str(ckpt.path), seed, test, run_dir / "eval" / str(ckpt.step)
        )
    out = {
        "seed": seed,
        "setting": label,
        "sampler": sampler.describe(),
        "rl_seconds": rl_s,
        "reward": [[r["step"], r["train/reward"]] for r in train],
        "rollout_seconds": [r.get("time/rollout_seconds") for r in train],
        "seconds_per_step": [r.get("time/seconds_per_step") for r in train],
        "accuracy": {
            str(s): {k: v for k, v in m.items() if k != "_per_example"}
            for s, m in sorted(accuracy.items())
        },
    }
    (run_dir / "result.json").write_text(json.dumps(out, indent=1))
    return out


def run(args: argparse.Namespace) -> None:
    """SFT per seed, then every (seed, setting) RL run, `--workers` processes at a time."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        sft = {s: pool.submit(sft_job, args, s) for s in args.seeds}
        ckpts = {s: f.result() for s, f in sft.items()}
        print(f"SFT done: {ckpts}", flush=True)
        jobs = [
            pool.submit(rl_job, args, s, setting, ckpts[s])
            for s in args.seeds
            for setting in args.settings
        ]
        for f in cf.as_completed(jobs):
            r = f.result()
            last = max(r["accuracy"], key=int)
            print(
                f"{r['setting']} seed {r['seed']}: {r['rl_seconds']:.0f} s, accuracy "
                f"{r['accuracy']['0']['accuracy']:.3f} -> {r['accuracy'][last]['accuracy']:.3f}",
                flush=True,
            )


def time_rollouts(args: argparse.Namespace) -> None:
    """Seconds per rollout of each setting on each seed's SFT checkpoint (the demo's RL
    generation batch: its first `grpo_prompts` hard prompts x G), settings alternating,
    `--repeats` times; medians of wall and CPU seconds, and model calls per rollout."""
    import torch

    from d1.core.models import load_model
    from d1.core.sampling import SamplingStats, sample
    from d1.recipes.demo import _task, make_data
    from d1.recipes.grpo.rollout import PromptItem, encode_items

    torch.set_num_threads(1)
    cfg = _demo_config(args)
    data = make_data(cfg, Path(args.out) / "data")
    task = _task(cfg)
    examples = task.load("train", path=str(data["rl_train"]))[: cfg.grpo_prompts]
    items = [PromptItem(cfg.task, task, ex) for ex in examples]
    rows = []
    for seed in args.seeds:
        ckpt = (Path(args.out) / "sft" / f"seed{seed}" / "sft" / "DONE").read_text().strip()
        loaded = load_model(ckpt, dtype="float32")
        model, tok = loaded.model.eval(), loaded.tokenizer
        _, ids, attn, _ = encode_items(tok, items, max_prompt_length=64)
        ids = ids.repeat_interleave(cfg.num_generations, 0)
        attn = attn.repeat_interleave(cfg.num_generations, 0)
        base = dataclasses.replace(
            __import__("d1.recipes.demo", fromlist=["grpo_config"])
            .grpo_config(cfg, seed, Path(args.out) / "timing", data, Path(ckpt))
            .grpo.sampler
        )
        times: dict[str, list[tuple[float, float]]] = {}
        calls: dict[str, int] = {}
        for r in range(args.repeats + 1):
            for setting in args.settings:
                label, fields = parse_setting(setting)
                sampler = dataclasses.replace(base, **fields)
                stats = SamplingStats()
                w, c = time.perf_counter(), time.process_time()
                with torch.no_grad():
                    sample(
                        model,
                        ids,
                        attn,
                        config=sampler,
                        mask_id=loaded.spec.mask_token_id,
                        generator=torch.Generator().manual_seed(r),
                        stats=stats,
                        eos_id=loaded.spec.eos_token_id,
                    )
                if r > 0:  # repeat 0: warm-up
                    times.setdefault(label, []).append(
                        (time.perf_counter() - w, time.process_time() - c)
                    )
                    calls[label] = stats.model_calls
        ref_label = parse_setting(args.settings[0])[0]
        ref_w = statistics.median(t[0] for t in times[ref_label])
        ref_c = statistics.median(t[1] for t in times[ref_label])
        for label, ts in times.items():
            w = statistics.median(t[0] for t in ts)
            c = statistics.median(t[1] for t in ts)
            rows.append(
                f"| {seed} | {label} | {calls[label]} | {w:.4f} | {c:.4f} | {ref_w / w:.2f}x | "
                f"{ref_c / c:.2f}x |"
            )
    print(f"rollout of {len(items)} prompts x G {cfg.num_generations} (one sampler call)")
    print("| seed | setting | model calls | wall s | CPU s | vs first (wall) | vs first (CPU) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def report(args: argparse.Namespace) -> None:
    """Table (markdown, stdout and `report.md`) and plot (`rl_rollouts.png`) from the results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    results: dict[str, list[dict[str, Any]]] = {}
    for f in sorted(out.glob("*/seed*/result.json")):
        r = json.loads(f.read_text())
        results.setdefault(r["setting"], []).append(r)
    lines = []
    labels = sorted(results, key=lambda k: (k != args.baseline, k))
    steps = sorted({int(s) for rs in results.values() for r in rs for s in r["accuracy"]})
    window = args.reward_window
    lines.append(
        "| setting | sampler | seeds | "
        + " | ".join(f"hard-test exact % @ {s}" for s in steps)
        + f" | reward, last {window} steps | rollout s / step | RL wall s |"
    )
    lines.append("|" + "---|" * (6 + len(steps) - 3 + 3))
    for label in labels:
        rs = results[label]
        cells = []
        for s in steps:
            accs = [100 * r["accuracy"][str(s)]["accuracy"] for r in rs if str(s) in r["accuracy"]]
            m, sd = mean_spread(accs)
            cells.append(f"{m:.1f} ± {sd:.1f}")
        rew = [statistics.fmean(v for _, v in r["reward"][-window:]) for r in rs]
        roll = [statistics.fmean(x for x in r["rollout_seconds"] if x is not None) for r in rs]
        wall = [r["rl_seconds"] for r in rs]
        lines.append(
            f"| {label} | {rs[0]['sampler']} | {','.join(str(r['seed']) for r in rs)} | "
            + " | ".join(cells)
            + f" | {mean_spread(rew)[0]:.3f} ± {mean_spread(rew)[1]:.3f} | "
            f"{mean_spread(roll)[0]:.4f} | {mean_spread(wall)[0]:.0f} |"
        )
    # Paired per seed (every setting starts from the same SFT checkpoint): setting - first.
    first = labels[0] if args.baseline is None else args.baseline
    lines += [
        "",
        f"Paired per seed, setting - {first} (exact sums, points); 'within spread': "
        f"|mean difference| <= the {first} runs' std across seeds at that step.",
        "",
    ]
    lines.append(
        "| setting | " + " | ".join(f"@ {s}" for s in steps) + f" | reward, last {window} |"
    )
    lines.append("|" + "---|" * (len(steps) + 2))
    base_runs = {r["seed"]: r for r in results[first]}
    for label in labels:
        if label == first:
            continue
        cells = []
        for s in steps:
            diffs = [
                100
                * (
                    r["accuracy"][str(s)]["accuracy"]
                    - base_runs[r["seed"]]["accuracy"][str(s)]["accuracy"]
                )
                for r in results[label]
                if r["seed"] in base_runs and str(s) in r["accuracy"]
            ]
            spread = mean_spread([100 * r["accuracy"][str(s)]["accuracy"] for r in results[first]])[
                1
            ]
            m, sd = mean_spread(diffs)
            ok = "within" if abs(m) <= spread else "OUTSIDE"
            cells.append(f"{m:+.1f} ± {sd:.1f} ({ok})")
        rd = [
            statistics.fmean(v for _, v in r["reward"][-window:])
            - statistics.fmean(v for _, v in base_runs[r["seed"]]["reward"][-window:])
            for r in results[label]
        ]
        rspread = mean_spread(
            [statistics.fmean(v for _, v in r["reward"][-window:]) for r in results[first]]
        )[1]
        m, sd = mean_spread(rd)
        ok = "within" if abs(m) <= rspread else "OUTSIDE"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {m:+.3f} ± {sd:.3f} ({ok}) |")
    md = "\n".join(lines)
    print(md)
    (out / "report.md").write_text(md + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, label in enumerate(labels):
        rs = results[label]
        colour = f"C{i}"
        n = min(len(r["reward"]) for r in rs)
        xs = [r["reward"][j][0] for j in range(n) for r in rs[:1]]
        k = window
        smooth = []
        for r in rs:
            v = [x for _, x in r["reward"][:n]]
            smooth.append([statistics.fmean(v[max(0, j - k + 1) : j + 1]) for j in range(n)])
        mean = [statistics.fmean(c) for c in zip(*smooth, strict=True)]
        sd = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in zip(*smooth, strict=True)]
        axes[0].plot(xs, mean, color=colour, label=f"{label} ({len(rs)} seeds)")
        axes[0].fill_between(
            xs,
            [a - b for a, b in zip(mean, sd, strict=True)],
            [a + b for a, b in zip(mean, sd, strict=True)],
            color=colour,
            alpha=0.2,
        )
        acc_steps = [s for s in steps if all(str(s) in r["accuracy"] for r in rs)]
        accs = [[100 * r["accuracy"][str(s)]["accuracy"] for r in rs] for s in acc_steps]
        am = [statistics.fmean(a) for a in accs]
        asd = [statistics.stdev(a) if len(a) > 1 else 0.0 for a in accs]
        axes[1].errorbar(acc_steps, am, yerr=asd, color=colour, marker="o", capsize=3, label=label)
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel(f"training reward (mean of last {window} steps)")
    axes[0].set_title("reward: mean ± std over seeds")
    axes[1].set_xlabel("optimizer step (0 = SFT checkpoint)")
    axes[1].set_ylabel("hard-test exact sums (%)")
    axes[1].set_title("hard-test accuracy: mean ± std over seeds")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "rl_rollouts.png", dpi=110)
    print(f"plot: {out / 'rl_rollouts.png'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("rl_rollouts_out"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS))
    p.add_argument("--grpo-steps", type=int, default=None, help="default: the demo's (400)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reward-window", type=int, default=20)
    p.add_argument("--baseline", default="reference", help="--report: setting to compare with")
    p.add_argument("--quick", action="store_true", help="plumbing smoke run (no learning)")
    p.add_argument("--report", action="store_true", help="only write the table and plot")
    p.add_argument(
        "--time-rollouts", action="store_true", help="only time each setting's rollout sampler"
    )
    p.add_argument("--repeats", type=int, default=5, help="--time-rollouts repeats")
    args = p.parse_args()
    if args.time_rollouts:
        time_rollouts(args)
    else:
        report(args) if args.report else run(args)


if __name__ == "__main__":
    main()
