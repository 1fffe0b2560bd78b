"""Throughput of the LLaDA sampler (SPEC 2) on a built-in tiny model.

Prints tokens/s (generated tokens of the whole batch per second) for gen lengths 64 / 128 / 256
and batch sizes 1 / 8 with d1's evaluation settings (block 32, steps = gen_length / 2,
temperature 0), on CUDA when available. Timings exclude one warm-up run per shape.

    .venv/bin/python benchmarks/sampling.py            # full table
    .venv/bin/python benchmarks/sampling.py --quick    # smoke run (seconds, CPU)
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from d1.models import load_model
from d1.sampling import SamplerConfig, sample


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(
    model: torch.nn.Module,
    *,
    mask_id: int,
    vocab_size: int,
    config: SamplerConfig,
    batch_size: int,
    prompt_length: int,
    repeats: int,
    device: torch.device,
) -> float:
    """Seconds per `sample` call (median of `repeats`, after one warm-up)."""
    g = torch.Generator().manual_seed(0)
    # Ordinary (non-special) token ids as the prompt; the char tokenizer's specials are < 7.
    ids = torch.randint(7, vocab_size, (batch_size, prompt_length), generator=g).to(device)
    attn = torch.ones_like(ids)
    attn[0, : prompt_length // 2] = 0  # a left-padded row, as in real batches
    gen = torch.Generator(device=device).manual_seed(0)
    sample(model, ids, attn, config=config, mask_id=mask_id, generator=gen)  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        sample(model, ids, attn, config=config, mask_id=mask_id, generator=gen)
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="built-in tiny name or checkpoint")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, help="e.g. bfloat16 (default: the model's)")
    parser.add_argument("--gen-lengths", default="64,128,256")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny-xs, short lengths, 1 repeat")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU intra-op threads (1 is best on busy CPUs)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gen_lengths = [int(v) for v in args.gen_lengths.split(",")]
    batch_sizes = [int(v) for v in args.batch_sizes.split(",")]
    model_name, repeats, prompt_length = args.model, args.repeats, args.prompt_length
    if args.quick:
        model_name, gen_lengths, batch_sizes = "tiny-xs", [32, 64], [1, 2]
        repeats, prompt_length = 1, 16

    loaded = load_model(model_name, device=device, dtype=args.dtype)
    model = loaded.model.eval()
    vocab_size = model.config.vocab_size
    n_params = sum(p.numel() for p in model.parameters())

    console = Console()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu, {torch.get_num_threads()} thread(s)"
    table = Table(
        title=f"LLaDA sampler, {model_name} ({n_params / 1e6:.2f}M params) on {name}, "
        f"prompt {prompt_length}, block 32, steps = gen/2, T = {args.temperature}"
    )
    for col in ("gen length", "batch", "steps", "s / call", "ms / step", "tokens / s"):
        table.add_column(col, justify="right")
    for gen_length in gen_lengths:
        for batch_size in batch_sizes:
            config = SamplerConfig.for_eval(
                gen_length, block_length=min(32, gen_length), temperature=args.temperature
            )
            secs = bench_one(
                model,
                mask_id=loaded.spec.mask_token_id,
                vocab_size=vocab_size,
                config=config,
                batch_size=batch_size,
                prompt_length=prompt_length,
                repeats=repeats,
                device=device,
            )
            table.add_row(
                str(gen_length),
                str(batch_size),
                str(config.steps),
                f"{secs:.3f}",
                f"{1000 * secs / config.steps:.2f}",
                f"{batch_size * gen_length / secs:,.0f}",
            )
    console.print(table)


if __name__ == "__main__":
    main()
