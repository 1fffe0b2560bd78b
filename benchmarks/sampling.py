"""LLaDA's reference sampler vs fast sampling (Fast-dLLM): tokens/s and accuracy.

Modes (`d1.core.sampling`: `SamplerConfig(name=..., cache=..., threshold=...)`):
  reference  LLaDA's sampler (`d1.core.sampling.reference`), one full forward per step
  prefix     block KV cache, prefix only (the block and the suffix are recomputed)
  dual       block KV cache, prefix and suffix (the block only is recomputed)
  threshold  confidence-threshold parallel decoding, no cache
  both       dual cache + threshold

Every mode uses d1's evaluation settings (block 32, steps = gen_length / 2, temperature 0).
tokens/s = generated positions (batch x gen_length) per second of sampling; "calls" = model
forwards per batch (the threshold modes adapt it); "speed-up" is against the reference in the
same run. Timings are medians of `--repeats` runs (after a warm-up when more than one), with
`--threads` intra-op threads (1 is fastest for tiny models on a busy CPU). The machine may be
shared with other jobs: numbers are noisy (often 25 %, more under load).

Speed only, random prompts, a built-in or saved model (an untrained model is never confident,
so threshold decoding commits one token per step there: twice the reference's steps); on CUDA
when available (`--device`, `--dtype`):

    .venv/bin/python benchmarks/sampling.py                     # tiny, gen 128 / 256, batch 1 / 8
    .venv/bin/python benchmarks/sampling.py --quick             # smoke run (seconds)
    .venv/bin/python benchmarks/sampling.py --model tiny --gen-lengths 128,256,512

Cache speed at LLaDA-8B's shape (`--model llada-8b-random`: LLaDAConfig's defaults, random
N(0, 0.02) weights, nothing downloaded; `--layers` shrinks it for a smoke run). On a GPU:

    python benchmarks/sampling.py --model llada-8b-random --dtype bfloat16 \
        --gen-lengths 128,256,512 --batch-sizes 1,8 --modes reference,prefix,dual

Accuracy too, on a task checkpoint, e.g. after `d1 sft --config configs/sft/tiny_sudoku.yaml`
(the task options must match the ones it was trained with; Sudoku's accuracy is d1's cell
accuracy):

    .venv/bin/python benchmarks/sampling.py \
        --model runs/tiny_sudoku/checkpoints/checkpoint-400 --task sudoku \
        --task-options '{"prompt_style": "compact", "demo_reasoning": false, "blanks": [4, 8]}' \
        --split test --limit 256 --gen-lengths 128,256

Accuracy rows also give "partial" (the task's graded credit, `graded_credit`, if it has one)
and "same": the share of completions identical to the reference's.
`--profile MODE` prints the top operators of one call of that mode (where the time goes).

A model that writes long, checkable answers, trainable on this CPU in minutes: `--train DIR`
runs masked SFT (`d1.recipes.sft.train_sft`, full fine-tuning) of a built-in tiny model
(`--train-model`, default `tiny-xs-base`; `--train-lr`, default 1e-3) on `--train-task`:
`addition` (default: 6-digit sums answered with a fixed-width column trace, 135 tokens;
accuracy = the sum is right) or `repeat_word` (`RepeatWord` below: "Repeat: qwmfkzpa" -> the
word 16 times, 162 tokens). A second call with more `--train-steps` continues the run; it
prints the checkpoint with the lowest held-out loss. Then evaluate it on the same task:

    .venv/bin/python benchmarks/sampling.py --train /tmp/long --train-model tiny-base \
        --train-steps 3000
    .venv/bin/python benchmarks/sampling.py \
        --model /tmp/long/addition/checkpoints/checkpoint-3000 --task addition \
        --task-options '{"prompt_style": "trace", "digits": 6}' --limit 512 \
        --gen-lengths 256,512
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

from d1.core.models import load_model
from d1.core.models.loading import resolve_dtype
from d1.core.sampling import SamplerConfig, sample
from d1.tasks.base import Example, RewardFn, Score, Task

MODES = ("reference", "prefix", "dual", "threshold", "both")


class RepeatWord(Task):
    """Benchmark task with long, checkable answers: write a random 8-letter word 16 times.

    Prompt "Repeat: qwmfkzpa", response "<answer>\nqwmfkzpa qwmfkzpa ... qwmfkzpa\n</answer>":
    162 tokens with the tiny models' character tokenizer, so gen length 256 holds the answer
    and 128 cuts it off. Correct = the closed answer is exactly the 16 copies;
    `details["partial"]` = the share of the demonstration's 162 characters that the completion
    has right in place (graded credit, also for a cut-off or malformed answer). Words are drawn
    from (seed, split); validation and test never share a word with train.
    """

    name = "repeat_word"
    copies = 16

    def __init__(self, train_size: int = 8000, validation_size: int = 64, test_size: int = 256):
        self.sizes = {"train": train_size, "validation": validation_size, "test": test_size}

    def _words(self, split: str, seed: int) -> list[str]:
        rng = random.Random(f"repeat_word:{seed}:{split}")
        seen = set() if split == "train" else set(self._words("train", seed))
        out: list[str] = []
        while len(out) < self.sizes[split]:
            word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))
            if word not in seen:
                seen.add(word)
                out.append(word)
        return out

    def load(self, split="train", *, path=None, limit=None, seed=0) -> list[Example]:
        if split not in self.sizes:
            raise ValueError(f"Unknown split {split!r}; choose train, validation or test.")
        examples = []
        for i, word in enumerate(self._words(split, seed)[:limit]):
            gold = " ".join([word] * self.copies)
            ex_id = f"repeat_word/{seed}/{split}/{i}"
            response = f"<answer>\n{gold}\n</answer>"
            examples.append(Example(ex_id, f"Repeat: {word}", gold, {}, response))
        return examples

    def user_message(self, example: Example) -> str:
        return example.question

    def score(self, completion: str, example: Example) -> Score:
        answer = completion.split("<answer>", 1)[1] if "<answer>" in completion else ""
        closed = "</answer>" in answer
        parsed = answer.split("</answer>", 1)[0].strip()
        correct = float(closed and parsed.split() == example.answer.split())
        gold = example.response or ""
        right = sum(a == b for a, b in zip(completion, gold, strict=False))
        return Score(correct, parsed if closed else None, {"partial": right / len(gold)})

    def reward_functions(self) -> dict[str, RewardFn]:
        def correct(completions, examples) -> list[float]:
            return [self.score(c, e).correct for c, e in zip(completions, examples, strict=True)]

        return {"correct": correct}


def register_repeat_word() -> None:
    """Make "repeat_word" a registered task (for `train_sft` and `--task repeat_word`)."""
    import d1.tasks

    sys.modules.setdefault("sampling_bench", sys.modules[__name__])
    d1.tasks.register_task("repeat_word", "sampling_bench:RepeatWord")


# Long-answer tasks `--train` can teach a tiny model: (task, task options, SFT max_length).
# `addition` "trace" at 6 digits: "394731+472894=" answered with a 7-line fixed-width column
# trace and the sum (135 tokens), and `repeat_word` (one word 16 times, 162 tokens) fit gen
# length 256; `addition-4` (4 digits, 109 tokens) fits gen length 128.
TRAIN_TASKS: dict[str, tuple[str, dict[str, Any], int]] = {
    "addition": ("addition", {"prompt_style": "trace", "digits": 6}, 272),
    "addition-4": ("addition", {"prompt_style": "trace", "digits": 4}, 140),
    "repeat_word": ("repeat_word", {}, 320),
}


def train_long_answer_model(
    out: str,
    steps: int,
    model: str = "tiny-xs-base",
    lr: float = 1e-3,
    task: str = "addition",
    batch_size: int = 16,
    semi_ar_fraction: float = 0.5,
) -> Path:
    """Masked SFT of a built-in tiny LLaDA on a long-answer task (`TRAIN_TASKS`; full
    fine-tuning, CPU) into `out/<task>`; resumes from the run folder's latest checkpoint, so
    more `steps` continue an earlier run.

    Rows are padded with EOS to `max_length` (the paper's SFT padding), so the model has been
    trained on every position a gen-256 sample fills. `semi_ar_fraction` of the rows are
    masked block-wise (blocks of 32, `d1.core.masking.blockwise_forward_process`): with the uniform
    process alone the tiny models learn the task but fail under block sampling from the
    second block on (a clean prefix and a run of masks, a state uniform masking never shows).
    `model` may also be a checkpoint folder to continue from. Defaults that learn on one CPU thread:
    a "-base" model (no chat template around the prompt) and lr 1e-3; `tiny` with the chat
    template at 3e-3 stayed at a held-out CE of ~0.97 on repeat_word."""
    from d1.recipes.sft.trainer import train_sft

    if task not in TRAIN_TASKS:
        raise ValueError(f"Unknown --train-task {task!r}; choose from {', '.join(TRAIN_TASKS)}.")
    register_repeat_word()
    name, options, max_length = TRAIN_TASKS[task]
    every = max(1, steps // 4)
    return train_sft(
        None,
        [
            f"model.name_or_path={model}",
            "lora=null",
            "data.format=task",
            f"data.task={name}",
            f"data.task_options={json.dumps(options)}",
            f"data.max_length={max_length}",
            "data.validation_size=64",
            f"global_batch_size={batch_size}",
            f"train.per_device_batch_size={batch_size}",
            f"train.max_steps={steps}",
            f"train.eval_steps={every}",
            f"train.save_steps={every}",
            "train.save_total_limit=1",
            "train.logging_steps=20",
            f"train.output_dir={out}",
            f"train.run_name={task}",
            "train.resume_from=auto",
            "train.report_to=[none]",
            f"train.num_threads={torch.get_num_threads()}",
            f"optim.learning_rate={lr}",
            "optim.lr_scheduler=constant_with_warmup",
            "optim.warmup_steps=20",
            "optim.weight_decay=0.0",
            "eval_generation=null",
            f"semi_ar_fraction={semi_ar_fraction}",
            "semi_ar_block_length=32",
        ],
    )


def mode_config(mode: str, gen_length: int, threshold: float) -> SamplerConfig:
    """d1's evaluation sampler (block 32, steps = gen_length / 2, greedy) in one of `MODES`;
    "threshold@0.95" / "both@0.99" override `threshold` for that mode."""
    mode, _, own = mode.partition("@")
    if own:
        if mode not in ("threshold", "both"):
            raise ValueError(f"Only threshold and both take @THRESHOLD; got {mode!r}.")
        threshold = float(own)
    base = SamplerConfig.for_eval(gen_length, block_length=min(32, gen_length))
    settings: dict[str, dict[str, Any]] = {
        "reference": {},
        "prefix": {"name": "fast", "cache": "prefix"},
        "dual": {"name": "fast", "cache": "dual"},
        "threshold": {"name": "fast", "cache": "none", "threshold": threshold},
        "both": {"name": "fast", "cache": "dual", "threshold": threshold},
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], Any], repeats: int, device: torch.device = torch.device("cpu")
) -> tuple[float, Any]:
    """Median seconds of `fn()` over `repeats` runs (after one warm-up run when `repeats` > 1),
    and its last result; CUDA work is waited for before each clock reading."""
    result = fn() if repeats > 1 else None
    times = []
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], result


def random_llada(device: torch.device, dtype: torch.dtype, layers: int | None = None) -> Any:
    """A LLaDA-8B-shaped model (`LLaDAConfig` defaults) with random N(0, 0.02) weights, built
    on the meta device, cast there, and materialised in `dtype` on `device` (no 32 GB float32
    detour), with a `spec` carrying LLaDA's mask id: cache speed only, its confidences mean
    nothing."""
    from types import SimpleNamespace

    from d1.core.models.configuration_llada import LLaDAConfig
    from d1.core.models.modeling_llada import LLaDAModelLM
    from d1.core.models.tiny import init_weights_

    config = LLaDAConfig(**({"n_layers": layers} if layers else {}))
    with torch.device("meta"):
        model = LLaDAModelLM(config).to(dtype)
    model.to_empty(device=device)
    init_weights_(model, torch.Generator(device=device).manual_seed(0), std=config.init_std)
    spec = SimpleNamespace(mask_token_id=config.mask_token_id)
    return SimpleNamespace(model=model.eval(), spec=spec, tokenizer=None)


def random_prompts(
    batch: int, length: int, vocab: int, mask_id: int, generator: torch.Generator
) -> torch.Tensor:
    """[batch, length] ordinary token ids (the tiny tokenizer's specials are < 7), never the
    mask token (a masked prompt position would be decoded too)."""
    ids = torch.randint(7, vocab, (batch, length), generator=generator)
    return ids.masked_fill(ids == mask_id, 7)


def _add_row(table: Table, row: tuple[str, ...]) -> None:
    """Add a row, and print it at once as progress (the table comes at the end)."""
    table.add_row(*row)
    print(" | ".join(row), flush=True)


def speed_table(args: argparse.Namespace, loaded: Any, modes: list[str]) -> Table:
    """tokens/s of every mode on random prompts (one left-padded row per batch)."""
    model, mask_id = loaded.model, loaded.spec.mask_token_id
    vocab = model.config.vocab_size
    table = Table(title=_title(args, loaded, "random prompts"))
    for col in ("gen", "batch", "mode", "calls", "s / batch", "tokens / s", "speed-up"):
        table.add_column(col, justify="right")
    g = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    for gen_length in args.gen_lengths:
        for batch in args.batch_sizes:
            ids = random_prompts(batch, args.prompt_length, vocab, mask_id, g).to(device)
            attn = torch.ones_like(ids)
            attn[0, : args.prompt_length // 2] = 0  # one left-padded row, as in real batches
            base = None
            for mode in modes:
                config = mode_config(mode, gen_length, args.threshold)
                counter = CallCounter(model)

                run = partial(sample, model, ids, attn, config=config, mask_id=mask_id)
                secs, _ = timed(run, args.repeats, device)
                calls = counter.calls / (max(1, args.repeats) + (args.repeats > 1))
                counter.close()
                base = secs if mode == "reference" else base
                row = (
                    str(gen_length),
                    str(batch),
                    mode,
                    f"{calls:.0f}",
                    f"{secs:.3f}",
                    f"{batch * gen_length / secs:,.0f}",
                    f"{base / secs:.1f}x" if base else "",
                )
                _add_row(table, row)
            table.add_section()
    return table


def graded_credit(score: Score) -> float:
    """A completion's graded credit where its task gives one (`repeat_word`: "partial",
    `addition`: "digits", the share of the answer's digits in place), else its correctness."""
    for key in ("partial", "digits"):
        if key in score.details:
            return float(score.details[key])
    return float(score.correct)


def accuracy_table(args: argparse.Namespace, loaded: Any, modes: list[str]) -> Table:
    """Accuracy, tokens/s and agreement with the reference on a task's examples."""
    from d1.recipes.evaluation.runner import generate_completions
    from d1.tasks import get_task, render_prompt

    model, tokenizer, mask_id = loaded.model, loaded.tokenizer, loaded.spec.mask_token_id
    task = get_task(args.task, **json.loads(args.task_options or "{}"))
    examples = task.load(args.split, limit=args.limit, seed=args.data_seed)
    prompts = [render_prompt(tokenizer, task, ex) for ex in examples]
    table = Table(title=_title(args, loaded, f"{args.task} {args.split}, n = {len(examples)}"))
    cols = (
        "gen",
        "mode",
        "accuracy",
        "partial",
        "same",
        "calls / batch",
        "s",
        "tokens / s",
        "speed-up",
    )
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
            credit = sum(graded_credit(s) for s in scores) / len(scores)
            if mode == "reference":
                ref_texts, base = texts, secs
            same = ""
            if ref_texts is not None:
                agree = sum(a == b for a, b in zip(texts, ref_texts, strict=True))
                same = f"{100.0 * agree / len(texts):.1f}%"
            row = (
                str(gen_length),
                mode,
                f"{accuracy:.1f}",
                f"{100.0 * credit:.1f}",
                same,
                f"{calls:.0f}",
                f"{secs:.1f}",
                f"{len(prompts) * gen_length / secs:,.0f}",
                f"{base / secs:.1f}x" if base else "",
            )
            _add_row(table, row)
        table.add_section()
    return table


def profile_mode(args: argparse.Namespace, loaded: Any, mode: str) -> None:
    """Top operators (self CPU time) of one batch in `mode` at the first gen length, then one
    forward's time against its length (the intercept is the per-call overhead that a cached
    32-position chunk cannot avoid)."""
    from torch.profiler import profile

    model, mask_id = loaded.model, loaded.spec.mask_token_id
    gen_length, batch = args.gen_lengths[0], args.batch_sizes[0]
    vocab, device = model.config.vocab_size, next(model.parameters()).device
    ids = random_prompts(batch, args.prompt_length, vocab, mask_id, torch.Generator()).to(device)
    config = mode_config(mode, gen_length, args.threshold)
    sample(model, ids, config=config, mask_id=mask_id)  # warm-up
    with profile() as prof:
        sample(model, ids, config=config, mask_id=mask_id)
    print(f"Profile: {mode}, gen {gen_length}, batch {batch}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    print(f"One forward (no cache), batch {batch}, median of 5:")
    with torch.no_grad():
        for length in (32, 64, 128, args.prompt_length + gen_length):
            chunk = torch.full((batch, length), 7, device=device)
            secs, _ = timed(partial(model, input_ids=chunk), 5, device)
            print(f"  {length:4d} positions: {1000 * secs:7.2f} ms")


def _title(args: argparse.Namespace, loaded: Any, what: str) -> str:
    n_params = sum(p.numel() for p in loaded.model.parameters()) / 1e6
    first = next(loaded.model.parameters())
    if first.device.type == "cuda":
        where = torch.cuda.get_device_name(first.device)
    else:
        where = f"cpu {torch.get_num_threads()} thread(s)"
    return (
        f"Fast sampling vs reference: {args.model} ({n_params:.2f}M params, {first.dtype}), "
        f"{what}, {where}, block 32, steps = gen/2, greedy, threshold {args.threshold}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="tiny", help="built-in tiny name, checkpoint, or llada-8b-random"
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, help="e.g. bfloat16 (default: the model's)")
    parser.add_argument("--layers", type=int, default=None, help="llada-8b-random: n_layers")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny-xs, short, 1 rep")
    parser.add_argument("--gen-lengths", default="128,256")
    parser.add_argument("--batch-sizes", default="1,8", help="speed table only")
    parser.add_argument("--batch-size", type=int, default=16, help="accuracy table batches")
    parser.add_argument("--prompt-length", type=int, default=64, help="speed table only")
    parser.add_argument("--modes", default=",".join(MODES), help="also threshold@T, both@T")
    parser.add_argument("--threshold", type=float, default=0.9, help="Fast-dLLM: 0.9")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (> 1: + a warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--task", default=None, help="accuracy on this task's examples")
    parser.add_argument("--task-options", default=None, help="JSON options of the task")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--profile", default=None, help="print an operator profile of a mode")
    parser.add_argument("--train", default=None, help="SFT a long-answer model into this folder")
    parser.add_argument("--train-task", default="addition", choices=sorted(TRAIN_TASKS))
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument(
        "--train-semi-ar", type=float, default=0.5, help="share of block-wise masked rows"
    )
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument(
        "--train-model", default="tiny-xs-base", help="built-in tiny name or checkpoint to continue"
    )
    parser.add_argument("--train-lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_repeat_word()
    if args.train:
        run_dir = train_long_answer_model(
            args.train,
            args.train_steps,
            args.train_model,
            args.train_lr,
            args.train_task,
            args.train_batch_size,
            args.train_semi_ar,
        )
        best = json.loads((Path(run_dir) / "checkpoints" / "best.json").read_text())
        print(f"Trained: {run_dir}; lowest held-out loss: checkpoints/{best['checkpoint']}.")
        return
    args.gen_lengths = [int(v) for v in args.gen_lengths.split(",")]
    args.batch_sizes = [int(v) for v in args.batch_sizes.split(",")]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    if args.quick:
        args.model, args.gen_lengths, args.batch_sizes = "tiny-xs", [32, 64], [1, 2]
        args.repeats, args.prompt_length = 1, 16
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.model == "llada-8b-random":
        if args.task:
            raise SystemExit("--model llada-8b-random has no tokenizer: use it without --task.")
        dtype = resolve_dtype(args.dtype)
        dtype = dtype if isinstance(dtype, torch.dtype) else torch.float32
        loaded = random_llada(device, dtype, args.layers)
    else:
        loaded = load_model(args.model, device=device, dtype=args.dtype)
    loaded.model.eval()
    console = Console(width=150)
    if args.profile:
        profile_mode(args, loaded, args.profile)
        return
    if args.task:
        console.print(accuracy_table(args, loaded, modes))
    else:
        console.print(speed_table(args, loaded, modes))


if __name__ == "__main__":
    main()
