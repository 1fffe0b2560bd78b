"""Fast sampling (Fast-dLLM) vs LLaDA's reference sampler: tokens/s and accuracy.

Modes (SPEC 2 "Faster samplers"; `d1.sampling_fast`):
  reference  `d1.sampling.generate`, one full forward per step
  prefix     block KV cache, prefix only (the block and the suffix are recomputed)
  dual       block KV cache, prefix and suffix (the block only is recomputed)
  threshold  confidence-threshold parallel decoding, no cache
  both       dual cache + threshold

Every mode uses d1's evaluation settings (block 32, steps = gen_length / 2, temperature 0).
tokens/s = generated positions (batch x gen_length) per second of sampling; "calls" = model
forwards per batch (the threshold modes adapt it); "speed-up" is against the reference in the
same run. Timings are medians after a warm-up, with `--threads` intra-op threads (1 is fastest
for tiny models on a busy CPU). The machine may be shared: numbers are noisy (~25 %).

Speed only, random prompts, a built-in or saved model (an untrained model is rarely confident,
so threshold decoding rarely commits more than one token per step there):

    .venv/bin/python benchmarks/sampling_fast.py --model tiny --gen-lengths 128,256,512

Accuracy too, on a task checkpoint (e.g. from `d1 sft --config configs/sft/tiny_countdown.yaml`;
the task options must match the ones it was trained with):

    .venv/bin/python benchmarks/sampling_fast.py --model runs/tiny_countdown/checkpoints/best \\
        --task countdown --task-options '{"prompt_style": "compact", "source": "generated",
        "max_number": 20, "max_target": 30}' --split test --limit 256 --gen-lengths 128,256

Accuracy rows also give "same": the share of completions identical to the reference's.
`--profile MODE` prints the top operators of one call of that mode (where the time goes).

A model that writes long answers, trainable on this CPU in minutes: `--train DIR` runs masked
SFT (`d1.sft.train_sft`) of the built-in tiny model on `spell_digits` (below: spell a 6-20 digit
number in words, after a reasoning line that lists the digits; answers of 60-200 characters whose
word boundaries depend on the earlier words), then evaluate it with `--task spell_digits`:

    .venv/bin/python benchmarks/sampling_fast.py --train /tmp/spell --train-steps 800
    .venv/bin/python benchmarks/sampling_fast.py --model /tmp/spell/spell_digits/checkpoints/best \
        --task spell_digits --limit 256 --gen-lengths 128,256,512
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from d1.models import load_model
from d1.sampling import SamplerConfig, sample
from d1.tasks.base import Example, RewardFn, Score, Task

MODES = ("reference", "prefix", "dual", "threshold", "both")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class SpellDigits(Task):
    """Benchmark task with long solver-written answers: spell a number's digits in words.

    Prompt "Spell: 4091", response "<reasoning>\n4 0 9 1\n</reasoning>\n<answer>\nfour zero
    nine one\n</answer>". Correct = the answer text equals the gold words exactly; `details`
    has the share of words right. Splits are generated from (seed, split) and never share a
    number with the train split.
    """

    name = "spell_digits"

    def __init__(
        self,
        min_digits: int = 6,
        max_digits: int = 20,
        train_size: int = 8000,
        validation_size: int = 64,
        test_size: int = 512,
    ) -> None:
        self.digits = (min_digits, max_digits)
        self.sizes = {"train": train_size, "validation": validation_size, "test": test_size}

    def _numbers(self, split: str, n: int, seed: int, exclude: set[str]) -> list[str]:
        rng = random.Random(f"spell_digits:{seed}:{split}")
        out: list[str] = []
        seen = set(exclude)
        while len(out) < n:
            k = rng.randint(*self.digits)
            number = "".join(rng.choice("0123456789") for _ in range(k))
            if number not in seen:
                seen.add(number)
                out.append(number)
        return out

    def load(self, split="train", *, path=None, limit=None, seed=0) -> list[Example]:
        if split not in self.sizes:
            raise ValueError(f"Unknown split {split!r}; choose train, validation or test.")
        exclude = (
            set()
            if split == "train"
            else set(self._numbers("train", self.sizes["train"], seed, set()))
        )
        n = self.sizes[split] if limit is None else min(limit, self.sizes[split])
        examples = []
        for i, number in enumerate(self._numbers(split, n, seed, exclude)):
            words = " ".join(DIGIT_WORDS[int(d)] for d in number)
            response = (
                f"<reasoning>\n{' '.join(number)}\n</reasoning>\n<answer>\n{words}\n</answer>"
            )
            examples.append(
                Example(f"spell_digits/{seed}/{split}/{i}", f"Spell: {number}", words, {}, response)
            )
        return examples

    def user_message(self, example: Example) -> str:
        return example.question

    @staticmethod
    def _answer(completion: str) -> str | None:
        if "<answer>" not in completion:
            return None
        return completion.rsplit("<answer>", 1)[1].split("</answer>", 1)[0].strip()

    def score(self, completion: str, example: Example) -> Score:
        parsed = self._answer(completion)
        gold = example.answer.split()
        words = (parsed or "").split()
        right = sum(a == b for a, b in zip(words, gold, strict=False))
        return Score(float(parsed == example.answer), parsed, {"word_accuracy": right / len(gold)})

    def reward_functions(self) -> dict[str, RewardFn]:
        def correct(completions, examples) -> list[float]:
            return [self.score(c, e).correct for c, e in zip(completions, examples, strict=True)]

        return {"correct": correct}


def _register_spell_digits() -> None:
    """Make "spell_digits" a registered task (for `train_sft` and `--task spell_digits`)."""
    import d1.tasks

    sys.modules.setdefault("sampling_fast_bench", sys.modules[__name__])
    d1.tasks.register_task("spell_digits", "sampling_fast_bench:SpellDigits")


def train_spell_model(out: str, steps: int) -> Path:
    """Masked SFT of the built-in tiny LLaDA on `spell_digits` (full fine-tuning, CPU).

    Resumes from the run folder's latest checkpoint when there is one, so a second call with
    more steps continues training.
    """
    from d1.sft.trainer import train_sft

    _register_spell_digits()
    run_dir = train_sft(
        None,
        [
            "model.name_or_path=tiny",
            "lora=null",
            "data.format=task",
            "data.task=spell_digits",
            "data.task_options={train_size: 8000, validation_size: 16}",
            "data.max_length=256",
            "data.validation_size=64",
            "global_batch_size=16",
            "train.per_device_batch_size=16",
            f"train.max_steps={steps}",
            f"train.eval_steps={max(1, steps // 4)}",
            f"train.save_steps={max(1, steps // 4)}",
            "train.save_total_limit=1",
            "train.logging_steps=20",
            f"train.output_dir={out}",
            "train.run_name=spell_digits",
            "train.resume_from=auto",  # a larger --train-steps continues an earlier run
            "train.report_to=none",
            f"train.num_threads={torch.get_num_threads()}",
            "optim.learning_rate=3e-3",
            "optim.lr_scheduler=constant_with_warmup",
            "optim.warmup_steps=20",
            "optim.weight_decay=0.0",
            "optim.max_grad_norm=1.0",
            "eval_generation.num_examples=16",
            "eval_generation.gen_length=256",
            "eval_generation.block_length=32",
            "eval_generation.steps=128",
            "eval_generation.batch_size=16",
        ],
    )
    return Path(run_dir)


def mode_config(mode: str, gen_length: int, threshold: float) -> SamplerConfig:
    """d1's evaluation sampler (block 32, steps = gen_length / 2, greedy) in one of `MODES`."""
    base = SamplerConfig.for_eval(gen_length, block_length=min(32, gen_length))
    settings: dict[str, dict[str, Any]] = {
        "reference": {},
        "prefix": {"sampler": "fast", "cache": "prefix"},
        "dual": {"sampler": "fast", "cache": "dual"},
        "threshold": {"sampler": "fast", "cache": "none", "threshold": threshold},
        "both": {"sampler": "fast", "cache": "dual", "threshold": threshold},
    }
    if mode not in settings:
        raise ValueError(f"Unknown mode {mode!r}; choose from {', '.join(MODES)}.")
    return replace(base, **settings[mode])


class CallCounter:
    """Counts a model's forward calls (a forward hook), to report calls per batch."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        self._handle.remove()


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of `fn()` over `repeats` runs after one warm-up, and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], result


def speed_table(args: argparse.Namespace, loaded: Any, modes: list[str]) -> Table:
    """tokens/s of every mode on random prompts (one left-padded row per batch)."""
    model, mask_id = loaded.model, loaded.spec.mask_token_id
    vocab = model.config.vocab_size
    table = Table(title=_title(args, loaded, "random prompts"))
    for col in ("gen", "batch", "mode", "calls", "s / call", "tokens / s", "speed-up"):
        table.add_column(col, justify="right")
    g = torch.Generator().manual_seed(0)
    for gen_length in args.gen_lengths:
        for batch in args.batch_sizes:
            ids = torch.randint(7, vocab, (batch, args.prompt_length), generator=g)
            attn = torch.ones_like(ids)
            attn[0, : args.prompt_length // 2] = 0  # one left-padded row, as in real batches
            base = None
            for mode in modes:
                config = mode_config(mode, gen_length, args.threshold)
                counter = CallCounter(model)

                run = partial(sample, model, ids, attn, config=config, mask_id=mask_id)
                secs, _ = timed(run, args.repeats)
                calls = counter.calls / (args.repeats + 1)
                counter.close()
                base = secs if mode == "reference" else base
                table.add_row(
                    str(gen_length),
                    str(batch),
                    mode,
                    f"{calls:.0f}",
                    f"{secs:.3f}",
                    f"{batch * gen_length / secs:,.0f}",
                    f"{base / secs:.1f}x" if base else "",
                )
            table.add_section()
    return table


def accuracy_table(args: argparse.Namespace, loaded: Any, modes: list[str]) -> Table:
    """Accuracy, tokens/s and agreement with the reference on a task's examples."""
    from d1.evaluation.runner import generate_completions
    from d1.tasks import get_task, render_prompt

    model, tokenizer, mask_id = loaded.model, loaded.tokenizer, loaded.spec.mask_token_id
    task = get_task(args.task, **json.loads(args.task_options or "{}"))
    examples = task.load(args.split, limit=args.limit, seed=args.data_seed)
    prompts = [render_prompt(tokenizer, task, ex) for ex in examples]
    table = Table(title=_title(args, loaded, f"{args.task} {args.split}, n = {len(examples)}"))
    cols = ("gen", "mode", "accuracy", "same", "calls / batch", "s", "tokens / s", "speed-up")
    for col in cols:
        table.add_column(col, justify="right")
    for gen_length in args.gen_lengths:
        ref_texts, base = None, None
        for mode in modes:
            config = mode_config(mode, gen_length, args.threshold)
            counter = CallCounter(model)
            start = time.perf_counter()
            texts, _ = generate_completions(
                model,
                tokenizer,
                prompts,
                sampler_config=config,
                mask_id=mask_id,
                batch_size=args.batch_size,
            )
            secs = time.perf_counter() - start
            batches = -(-len(prompts) // args.batch_size)
            calls = counter.calls / batches
            counter.close()
            scores = [task.score(t, ex) for t, ex in zip(texts, examples, strict=True)]
            accuracy = 100.0 * sum(float(s.correct) for s in scores) / len(scores)
            if mode == "reference":
                ref_texts, base = texts, secs
            same = ""
            if ref_texts is not None:
                agree = sum(a == b for a, b in zip(texts, ref_texts, strict=True))
                same = f"{100.0 * agree / len(texts):.1f}%"
            table.add_row(
                str(gen_length),
                mode,
                f"{accuracy:.1f}",
                same,
                f"{calls:.0f}",
                f"{secs:.1f}",
                f"{len(prompts) * gen_length / secs:,.0f}",
                f"{base / secs:.1f}x" if base else "",
            )
        table.add_section()
    return table


def profile_mode(args: argparse.Namespace, loaded: Any, mode: str) -> None:
    """Top operators (self CPU time) of one batch in `mode` at the first gen length."""
    from torch.profiler import profile

    model, mask_id = loaded.model, loaded.spec.mask_token_id
    gen_length = args.gen_lengths[0]
    ids = torch.randint(7, model.config.vocab_size, (args.batch_sizes[0], args.prompt_length))
    config = mode_config(mode, gen_length, args.threshold)
    sample(model, ids, config=config, mask_id=mask_id)  # warm-up
    with profile() as prof:
        sample(model, ids, config=config, mask_id=mask_id)
    print(f"Profile: {mode}, gen {gen_length}, batch {args.batch_sizes[0]}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def _title(args: argparse.Namespace, loaded: Any, what: str) -> str:
    n_params = sum(p.numel() for p in loaded.model.parameters()) / 1e6
    return (
        f"Fast sampling vs reference: {args.model} ({n_params:.2f}M params), {what}, "
        f"cpu {torch.get_num_threads()} thread(s), block 32, steps = gen/2, greedy, "
        f"threshold {args.threshold}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="built-in tiny name or checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gen-lengths", default="128,256")
    parser.add_argument("--batch-sizes", default="1,8", help="speed table only")
    parser.add_argument("--batch-size", type=int, default=16, help="accuracy table batches")
    parser.add_argument("--prompt-length", type=int, default=64, help="speed table only")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--threshold", type=float, default=0.9, help="Fast-dLLM: 0.9")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--task", default=None, help="accuracy on this task's examples")
    parser.add_argument("--task-options", default=None, help="JSON options of the task")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--profile", default=None, help="print an operator profile of a mode")
    parser.add_argument("--train", default=None, help="SFT a spell_digits model into this folder")
    parser.add_argument("--train-steps", type=int, default=800)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _register_spell_digits()
    if args.train:
        run_dir = train_spell_model(args.train, args.train_steps)
        print(f"Trained: {run_dir} (checkpoints/best is the lowest held-out loss).")
        return
    args.gen_lengths = [int(v) for v in args.gen_lengths.split(",")]
    args.batch_sizes = [int(v) for v in args.batch_sizes.split(",")]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    loaded = load_model(args.model, device=args.device)
    loaded.model.eval()
    console = Console()
    if args.profile:
        profile_mode(args, loaded, args.profile)
        return
    if args.task:
        console.print(accuracy_table(args, loaded, modes))
    else:
        console.print(speed_table(args, loaded, modes))


if __name__ == "__main__":
    main()
