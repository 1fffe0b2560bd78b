"""Cost of one diffu-GRPO optimizer step (SPEC 4) on a built-in tiny model, for mu = 1, 4, 12.

For each number of inner iterations mu, runs whole generation batches (rollout, old log-probs
for k >= 1, then mu policy steps with the KL reference) and reports seconds per optimizer step
split into

- rollout: sampling + reward scoring, amortised over the mu steps that reuse it;
- old log-probs: the no-grad forward passes for k >= 1 (chunked), amortised likewise;
- forward: current + reference log-probs of one policy step (the one-step estimator);
- backward: backpropagation of one policy step;

plus the peak memory of each configuration (CUDA: `max_memory_allocated`; CPU: the peak RSS of a
fresh worker process per configuration). With `--d1-old` each configuration also measures the
reference code's way of computing the old log-probs (all mu masks in one giant forward), whose
memory grows with mu; ours does not.

    .venv/bin/python benchmarks/grpo_step.py                 # table for mu = 1, 4, 12 (CPU: ~2 min)
    .venv/bin/python benchmarks/grpo_step.py --quick         # smoke run
    .venv/bin/python benchmarks/grpo_step.py --demo          # SFT then diffu-GRPO, reward curve

`--demo` is the long version of the end-to-end test: briefly SFT the tiny model on a generated
toy task, then diffu-GRPO, printing the reward per generation batch.

Rollouts with the fast sampler (`d1.sampling.fast`: `--sampler fast`, `--cache`, `--threshold`)
replace the reference sampler in every configuration. `--compare` runs each mu twice, reference
rollouts then fast ones (same prompts, G, mu and seeds), and prints the step time split into
rollout and update (old log-probs + forward + backward) with the fast rollouts' speed-up, e.g.
with rollouts that dominate the step (d1's rollouts: gen 256, steps = gen / 2):

    .venv/bin/python benchmarks/grpo_step.py --threads 1 --compare --cache dual \
        --gen-length 256 --steps 128 --mus 1 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from d1.grpo.advantages import compute_advantages
from d1.grpo.rollout import PromptItem, generate_rollouts
from d1.grpo.update import ComputeCounter, Reference, UpdateSettings, policy_step
from d1.grpo.update import prepare_policy_batch as prepare
from d1.likelihood import estimate_logps
from d1.models import make_tiny_model
from d1.sampling import SamplerConfig
from d1.tasks.base import Example, RewardFn, Score, Task


class Echo(Task):
    """Toy generated task: prompt a digit d, answer "ddd"; reward = share of the 3 right."""

    name = "echo"

    def load(self, split="train", *, path=None, limit=None, seed=0):
        out = [Example(f"{split}{i}", str(i * 7 % 10), str(i * 7 % 10) * 3) for i in range(200)]
        for ex in out:
            ex.response = ex.answer
        return out[:limit] if limit else out

    def user_message(self, example: Example) -> str:
        return example.question

    def match(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        return [
            sum(a == b for a, b in zip(c[:3], ex.answer, strict=False)) / 3
            for c, ex in zip(completions, examples, strict=True)
        ]

    def reward_functions(self) -> dict[str, RewardFn]:
        return {"match": self.match}

    def score(self, completion: str, example: Example) -> Score:
        return Score(correct=float(completion.strip() == example.answer), parsed=completion)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sudoku_items(n: int) -> list[PromptItem]:
    from d1.tasks import get_task

    task = get_task("sudoku", prompt_style="compact", demo_reasoning=False, train_size=n)
    return [PromptItem("sudoku", task, ex) for ex in task.load("train", limit=n)]


def worker(args: argparse.Namespace) -> dict[str, float]:
    """One configuration (one mu) in this process; returns seconds and peak memory."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, tok = make_tiny_model(args.model, seed=0)
    model = model.float().to(device).train()
    ref_model = make_tiny_model(args.model, seed=0)[0].float().to(device).eval()
    reference = Reference(model, frozen=ref_model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    mu, g = args.mu, args.num_generations
    sampler = SamplerConfig(
        gen_length=args.gen_length,
        block_length=args.block_length,
        steps=args.steps,
        temperature=0.9,
        name=args.sampler,
        cache=args.cache if args.sampler == "fast" else None,
        threshold=args.threshold if args.sampler == "fast" else None,
    )
    settings = UpdateSettings(
        num_iterations=mu,
        micro_batch_size=args.micro_batch,
        num_generations=g,
        mask_id=tok.mask_token_id,
        seed=0,
        beta=0.04,
    )
    # One extra, untimed generation batch first: warm-up (allocator, kernels, thread pools).
    items = _sudoku_items(args.prompts * (args.batches + 1))
    per_batch = []  # seconds per optimizer step of each timed generation batch, by phase
    d1_old_peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for b in range(args.batches + 1):
        timed = b > 0
        totals = dict.fromkeys(("rollout", "old_logps", "forward", "backward"), 0.0)
        _sync(device)
        t0 = time.perf_counter()
        gen = torch.Generator(device=device).manual_seed(b)
        rollout = generate_rollouts(
            model,
            tok,
            items[b * args.prompts : (b + 1) * args.prompts],
            num_generations=g,
            sampler=sampler,
            mask_id=tok.mask_token_id,
            eos_id=tok.eos_token_id,
            generator=gen,
            generation_batch_size=args.micro_batch,
            device=device,
        )
        adv = compute_advantages(rollout.rewards, g)
        _sync(device)
        t1 = time.perf_counter()
        batch = prepare(
            model,
            prompt_ids=rollout.prompt_ids,
            prompt_mask=rollout.prompt_mask,
            completion_ids=rollout.completion_ids,
            completion_mask=rollout.completion_mask,
            advantages=adv.advantages.to(device),
            settings=settings,
            generation_batch=b,
            counter=ComputeCounter(),
        )
        _sync(device)
        t2 = time.perf_counter()
        if timed:
            totals["rollout"] += t1 - t0
            totals["old_logps"] += t2 - t1
        model.train()
        for k in range(mu):
            spent = {"backward": 0.0}

            def backward(loss: torch.Tensor, spent=spent) -> None:
                _sync(device)
                tb = time.perf_counter()
                loss.backward()
                _sync(device)
                spent["backward"] += time.perf_counter() - tb

            _sync(device)
            ts = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            policy_step(model, batch, k, settings=settings, backward=backward, reference=reference)
            opt.step()
            _sync(device)
            total = time.perf_counter() - ts
            if timed:
                totals["backward"] += spent["backward"]
                totals["forward"] += total - spent["backward"]
        if timed:
            per_batch.append({f"{k}_s": v / mu for k, v in totals.items()})
            per_batch[-1]["step_s"] = sum(totals.values()) / mu
        if args.d1_old and b == 0 and mu > 1:
            # The reference code: old log-probs of all mu masks in ONE forward of mu x batch.
            # CUDA: its own peak; CPU: it raises this worker's peak RSS.
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            with torch.no_grad():
                estimate_logps(
                    model,
                    batch.prompt_ids.repeat(mu, 1),
                    batch.prompt_mask.repeat(mu, 1),
                    batch.completion_ids.repeat(mu, 1),
                    mask_id=tok.mask_token_id,
                    prompt_noise=torch.cat(batch.prompt_masks),
                )
            if device.type == "cuda":
                d1_old_peak = torch.cuda.max_memory_allocated(device) / 2**20
    # Medians over the timed generation batches (the machine may be shared).
    out = {k: statistics.median(b[k] for b in per_batch) for k in per_batch[0]}
    out["completions_per_batch"] = args.prompts * g
    if device.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        if d1_old_peak is not None:
            out["d1_old_peak_mib"] = d1_old_peak
    else:
        out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_config(
    args: argparse.Namespace, mu: int, d1_old: bool = False, sampler: str | None = None
) -> dict[str, float]:
    """Run `worker` in a fresh process (clean peak-memory numbers); `sampler` overrides
    `args.sampler` (the fast sampler's cache and threshold come from `args`)."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--mu",
        str(mu),
        "--model",
        args.model,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--prompts",
        str(args.prompts),
        "--num-generations",
        str(args.num_generations),
        "--micro-batch",
        str(args.micro_batch),
        "--batches",
        str(args.batches),
        "--gen-length",
        str(args.gen_length),
        "--block-length",
        str(args.block_length),
        "--steps",
        str(args.steps),
        "--sampler",
        sampler or args.sampler,
        "--cache",
        args.cache,
    ]
    if args.threshold is not None:
        cmd += ["--threshold", str(args.threshold)]
    if d1_old:
        cmd.append("--d1-old")
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker failed (mu={mu}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _setup(args: argparse.Namespace) -> str:
    return (
        f"{args.model} on {args.device} ({args.threads} threads): {args.prompts} prompts x G "
        f"{args.num_generations}, micro-batch {args.micro_batch}, gen {args.gen_length} / block "
        f"{args.block_length} / {args.steps} steps, temperature 0.9, beta 0.04"
    )


def _fast_label(args: argparse.Namespace) -> str:
    threshold = "" if args.threshold is None else f", threshold {args.threshold}"
    return f"fast ({args.cache} cache{threshold})"


def compare_table(args: argparse.Namespace) -> None:
    """Optimizer-step time with reference vs fast rollouts, per mu (same prompts and seeds)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"diffu-GRPO step, reference vs fast rollouts: {_setup(args)}")
    for col in ("mu", "rollouts", "rollout s", "update s", "step s", "speed-up"):
        t.add_column(col, justify="right")
    for mu in args.mus:
        base = None
        for sampler in ("reference", "fast"):
            r = run_config(args, mu, sampler=sampler)
            update = r["old_logps_s"] + r["forward_s"] + r["backward_s"]
            base = base or r["step_s"]
            row = (
                str(mu),
                "reference" if sampler == "reference" else _fast_label(args),
                f"{r['rollout_s']:.3f}",
                f"{update:.3f}",
                f"{r['step_s']:.3f}",
                f"{base / r['step_s']:.2f}x",
            )
            t.add_row(*row)
            print(" | ".join(row), flush=True)  # progress, the table comes at the end
        t.add_section()
    Console(width=160).print(t)
    print(
        "Seconds per optimizer step, medians over --batches generation batches after a warm-up "
        "batch; rollout time is amortised over the mu steps that reuse it."
    )


def table(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = []
    for mu in args.mus:
        rows.append((mu, run_config(args, mu)))
        if args.d1_old and mu > 1:
            rows.append((f"{mu} (+d1 old)", run_config(args, mu, d1_old=True)))
    mem_label = "peak MiB (GPU)" if args.device.startswith("cuda") else "peak RSS MiB"
    rollouts = "" if args.sampler == "reference" else f", {_fast_label(args)} rollouts"
    t = Table(title=f"diffu-GRPO optimizer step, {_setup(args)}{rollouts}")
    for col in (
        "mu",
        "s / step",
        "rollout",
        "old logps",
        "forward",
        "backward",
        mem_label,
        "d1-style old MiB",
    ):
        t.add_column(col, justify="right")
    for mu, r in rows:
        t.add_row(
            str(mu),
            f"{r['step_s']:.3f}",
            f"{r['rollout_s']:.3f}",
            f"{r['old_logps_s']:.3f}",
            f"{r['forward_s']:.3f}",
            f"{r['backward_s']:.3f}",
            f"{r['peak_mib']:.0f}",
            f"{r['d1_old_peak_mib']:.0f}" if "d1_old_peak_mib" in r else "-",
        )
    Console(width=160).print(t)
    print(
        "Seconds are per optimizer step (medians over the timed generation batches); rollout and "
        "old log-probs are paid once per generation batch and amortised over its mu steps."
    )


def demo(args: argparse.Namespace) -> None:
    """SFT a tiny model briefly on the toy task, then diffu-GRPO; print the reward curve."""
    import d1.tasks
    from d1.grpo.trainer import train_grpo
    from d1.sft.trainer import train_sft

    sys.modules.setdefault("grpo_step_bench", sys.modules[__name__])
    d1.tasks.register_task("echo", "grpo_step_bench:Echo")
    out = Path(args.out or tempfile.mkdtemp(prefix="d1-grpo-demo-"))
    common = [
        "model.name_or_path=tiny-xs",
        "lora=null",
        "global_batch_size=null",
        f"train.output_dir={out}",
        "train.report_to=[none]",
        f"train.num_threads={args.threads}",
        "train.overwrite=true",
        "train.progress='off'",
    ]
    t0 = time.perf_counter()
    sft_dir = train_sft(
        None,
        [
            *common,
            "train.run_name=sft",
            "train.per_device_batch_size=16",
            "train.max_steps=25",
            "train.eval_steps=null",
            "train.save_steps=null",
            "train.metric_for_best=null",
            "optim.learning_rate=3e-3",
            "optim.lr_scheduler=constant",
            "data.format=task",
            "data.task=echo",
            "data.max_length=48",
            "data.pad_to=longest",
            "data.validation_size=8",
        ],
    )
    t1 = time.perf_counter()
    result = train_grpo(
        None,
        [
            *common,
            f"model.name_or_path={sft_dir / 'checkpoints' / 'checkpoint-25'}",
            "model.load_in_4bit=false",
            "train.run_name=grpo",
            "train.per_device_batch_size=16",
            "train.gradient_accumulation_steps=2",
            f"train.max_steps={args.demo_steps}",
            "train.save_steps=null",
            f"train.seed={args.seed}",
            "grpo.num_generations=4",
            "grpo.num_iterations=2",
            "grpo.sampler.gen_length=8",
            "grpo.sampler.block_length=8",
            "grpo.sampler.steps=4",
            "grpo.sampler.temperature=1.0",
            "grpo.beta=0.0",
            "grpo.epsilon=0.2",
            "optim.learning_rate=1e-3",
            "optim.max_grad_norm=1.0",
            "tasks=[{name: echo}]",
        ],
    )
    t2 = time.perf_counter()
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    rewards = [(r["step"], r["train/reward"]) for r in rows if "train/reward" in r]
    print(f"SFT {t1 - t0:.1f} s, diffu-GRPO {t2 - t1:.1f} s ({args.demo_steps} steps); run {out}")
    width = 10
    for i in range(0, len(rewards), width):
        chunk = rewards[i : i + width]
        mean = sum(r for _, r in chunk) / len(chunk)
        print(f"steps {chunk[0][0]:4d}-{chunk[-1][0]:4d}: mean reward {mean:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run (small, mu 1 and 4)")
    p.add_argument("--demo", action="store_true", help="SFT then diffu-GRPO reward curve")
    p.add_argument("--demo-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="run folder for --demo (default: a temp dir)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mu", type=int, default=4, help=argparse.SUPPRESS)
    p.add_argument("--mus", type=int, nargs="+", default=[1, 4, 12])
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=6)
    p.add_argument("--micro-batch", type=int, default=6)
    p.add_argument("--batches", type=int, default=2, help="generation batches per configuration")
    p.add_argument("--gen-length", type=int, default=64)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--d1-old", action="store_true", help="also measure d1's giant old-logp pass")
    p.add_argument("--sampler", default="reference", choices=["reference", "fast"])
    p.add_argument("--cache", default="dual", choices=["none", "prefix", "dual"], help="fast")
    p.add_argument("--threshold", type=float, default=None, help="fast: parallel decoding")
    p.add_argument("--compare", action="store_true", help="reference vs fast rollouts per mu")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.demo:
        demo(args)
        return
    if args.quick:
        args.model, args.mus, args.prompts, args.batches = "tiny-xs", [1, 4], 2, 1
        args.gen_length, args.block_length, args.steps = 32, 32, 8
    compare_table(args) if args.compare else table(args)


if __name__ == "__main__":
    main()
