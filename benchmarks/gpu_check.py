"""What works on this GPU and what it costs, at LLaDA-8B's shape with random weights.

One command, one table, each row measured in isolation (memory freed between rows; a failure or
an out-of-memory is reported in its row and the next row runs):

1. bf16 forward at 4,096 tokens (no grad);
2. reference vs fast sampler tokens/s at gen 256, block 32, 128 steps, batch 1 and 8 (greedy,
   64-token prompts): `SamplerConfig(name="fast", cache="dual")` on the fixed schedule, and
   with `threshold=0.95` (random weights never reach the threshold, so that row is threshold
   decoding's worst case, one token per call; a trained model commits several);
3. one diffu-GRPO optimizer step, full fine-tuning: float32 master weights, bf16 autocast,
   gradient checkpointing, bitsandbytes' 8-bit AdamW when bitsandbytes is installed (else
   torch's AdamW), the frozen bf16 reference copy, G 6 completions of a 200-token prompt,
   gen 256 (128 steps, temperature 0.9), mu 2, beta 0.04: seconds per optimizer step (rollout
   and old / reference log-probs amortised over mu, as in training) and peak GPU memory;
4. the same step with LoRA r 128 (alpha 64, dropout 0.05) on a 4-bit NF4 base (the paper's
   QLoRA; needs bitsandbytes), the reference being the adapter disabled;
5. one masked-SFT step at 4,096 tokens (512 prompt + 3,584 response) with LoRA r 128 (alpha
   256) on a bf16 base, gradient checkpointing: seconds, tokens/s and peak memory.

The model is `LLaDAConfig()`'s official 8B shape, built on the meta device and materialised in
its dtype on the GPU (`benchmarks/sampling.py --model llada-8b-random`); every row goes through
d1's own code (`generation_context`, `sample`, `prepare_policy_batch`, `policy_step`,
`build_optimizer`, `sft_batch_loss`). Random weights cost what trained ones cost, but say
nothing about quality. "peak GB" is `max_memory_allocated` over the measured step(s), resident
weights, reference and optimizer states included. Budget on an H100/H200-class card: a few
minutes (target < 8).

    .venv/bin/python benchmarks/gpu_check.py           # on the GPU (cuda:0)
    .venv/bin/python benchmarks/gpu_check.py --tiny    # the same rows, built-in tiny model, CPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.util
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from d1.core.models import LoraSettings, apply_lora, make_tiny_model
from d1.core.sampling import SamplerConfig, sample
from d1.recipes.grpo.advantages import compute_advantages
from d1.recipes.grpo.generation import generation_context
from d1.recipes.grpo.loss import completion_mask
from d1.recipes.grpo.update import Reference, UpdateSettings, policy_step, prepare_policy_batch
from d1.recipes.sft.trainer import sft_batch_loss
from d1.training.config import OptimConfig
from d1.training.optim import build_optimizer
from d1.training.runtime import enable_gradient_checkpointing
from sampling import random_llada, random_prompts, timed

COLUMNS = ("check", "status", "seconds", "tokens/s", "peak GB", "details")


@dataclass(frozen=True)
class Shape:
    """The sizes of every row (`GPU`: the issue's; `TINY`: seconds on a CPU)."""

    model: str
    forward_tokens: int = 4096
    sampler_prompt: int = 64
    gen_length: int = 256
    block_length: int = 32
    steps: int = 128
    sampler_batches: tuple[int, ...] = (1, 8)
    grpo_prompt: int = 200
    num_generations: int = 6
    num_iterations: int = 2
    grpo_lora: tuple[int, int] = (128, 64)  # r, alpha
    sft_prompt: int = 512
    sft_tokens: int = 4096
    sft_lora: tuple[int, int] = (128, 256)
    repeats: int = 3


GPU = Shape("llada-8b-random")
TINY = Shape(
    "tiny-xs",
    forward_tokens=512,
    sampler_prompt=16,
    gen_length=32,
    steps=16,
    grpo_prompt=16,
    grpo_lora=(8, 16),
    sft_prompt=64,
    sft_tokens=512,
    sft_lora=(8, 16),
    repeats=1,
)


@dataclass
class Built:
    """A model to measure and the ids it needs."""

    model: torch.nn.Module
    mask_id: int
    eos_id: int
    vocab: int


def build(shape: Shape, device: torch.device, dtype: torch.dtype) -> Built:
    if shape.model == "llada-8b-random":
        loaded = random_llada(device, dtype)
        config = loaded.model.config
        return Built(loaded.model, config.mask_token_id, config.eos_token_id, config.vocab_size)
    model, tokenizer = make_tiny_model(shape.model, seed=0)
    model = model.to(device=device, dtype=dtype).eval()
    return Built(model, tokenizer.mask_token_id, tokenizer.eos_token_id, len(tokenizer))


def have(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def secs(seconds: float) -> str:
    """Seconds to three significant digits (a tiny CPU row must not round to 0.0)."""
    return f"{seconds:.3g}"


def peak_gb(device: torch.device) -> str:
    if device.type != "cuda":
        return "-"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}"


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast as training uses it on a GPU (CPU runs are float32, as d1's trainer)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# ----------------------------------------------------------------------------- rows


def forward_row(shape: Shape, device: torch.device) -> dict[str, str]:
    built = build(shape, device, torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    ids = random_prompts(1, shape.forward_tokens, built.vocab, built.mask_id, gen).to(device)
    with torch.no_grad():
        seconds, _ = timed(lambda: built.model(input_ids=ids).logits, shape.repeats, device)
    return {
        "seconds": secs(seconds),
        "tokens/s": f"{shape.forward_tokens / seconds:,.0f}",
        "peak GB": peak_gb(device),
        "details": f"batch 1 x {shape.forward_tokens}, bf16 weights",
    }


def sampler_configs(shape: Shape) -> dict[str, SamplerConfig]:
    """The reference sampler and the fast one: dual KV cache on the fixed schedule, and with
    threshold decoding (0.95). With random weights no confidence reaches the threshold, so
    "fast+threshold" commits one token per step: its worst case, gen_length calls."""
    base = {
        "gen_length": shape.gen_length,
        "block_length": shape.block_length,
        "steps": shape.steps,
    }
    return {
        "reference": SamplerConfig(**base),
        "fast dual": SamplerConfig(**base, name="fast", cache="dual"),
        "fast dual+threshold 0.95": SamplerConfig(
            **base, name="fast", cache="dual", threshold=0.95
        ),
    }


def sampler_rows(shape: Shape, device: torch.device) -> list[tuple[str, Callable]]:
    """One row per (batch, sampler); they share one bf16 model, built by the first row."""
    state: dict[str, Any] = {}

    def row(batch: int, name: str, config: SamplerConfig) -> Callable[[], dict[str, str]]:
        def run() -> dict[str, str]:
            if "built" not in state:
                state["built"] = build(shape, device, torch.bfloat16)
            built = state["built"]
            gen = torch.Generator().manual_seed(batch)
            prompts = random_prompts(
                batch, shape.sampler_prompt, built.vocab, built.mask_id, gen
            ).to(device)
            calls = []
            handle = built.model.register_forward_hook(lambda *_: calls.append(1))
            try:
                seconds, _ = timed(
                    lambda: sample(built.model, prompts, config=config, mask_id=built.mask_id),
                    1,
                    device,
                )
            finally:
                handle.remove()
            rate = batch * shape.gen_length / seconds
            if name == "reference":
                state[batch] = rate
            speedup = f", {rate / state[batch]:.1f}x reference" if batch in state else ""
            return {
                "seconds": secs(seconds),
                "tokens/s": f"{rate:,.1f}",
                "peak GB": peak_gb(device),
                "details": f"{len(calls)} model calls{speedup}",
            }

        return run

    rows = []
    for batch in shape.sampler_batches:
        for name, config in sampler_configs(shape).items():
            label = f"sampler {name}, gen {shape.gen_length}, batch {batch}"
            rows.append((label, row(batch, name, config)))
    rows.append(("", lambda: state.clear()))  # frees the shared model (not a table row)
    return rows


def grpo_step(
    built: Built,
    reference: Reference,
    optimizer: torch.optim.Optimizer,
    shape: Shape,
    device: torch.device,
    amp: bool,
) -> dict[str, float]:
    """One generation batch (G rollouts of one prompt, old and reference log-probs) and its mu optimizer
    steps, timed by phase, as d1's trainer runs them."""
    model, g = built.model, shape.num_generations
    gen = torch.Generator().manual_seed(0)
    prompt = random_prompts(1, shape.grpo_prompt, built.vocab, built.mask_id, gen)
    prompt = prompt.repeat(g, 1).to(device)
    attn = torch.ones_like(prompt)
    rollout_cfg = SamplerConfig(
        gen_length=shape.gen_length,
        block_length=shape.block_length,
        steps=shape.steps,
        temperature=0.9,
    )
    noise = torch.Generator(device=device).manual_seed(0)
    t0 = clock(device)
    with autocast(device, amp), generation_context(model) as policy:
        policy.eval()
        out = sample(
            policy, prompt, attn, config=rollout_cfg, mask_id=built.mask_id, generator=noise
        )
        policy.train()
    completions = out[:, prompt.shape[1] :]
    t1 = clock(device)
    settings = UpdateSettings(
        num_iterations=shape.num_iterations,
        micro_batch_size=g,
        num_generations=g,
        mask_id=built.mask_id,
        beta=0.04,
    )
    adv = compute_advantages(torch.rand(g, generator=gen), g)
    with autocast(device, amp):
        batch = prepare_policy_batch(
            model,
            prompt_ids=prompt,
            prompt_mask=attn,
            completion_ids=completions,
            completion_mask=completion_mask(completions, built.eos_id),
            advantages=adv.advantages.to(device),
            settings=settings,
            generation_batch=0,
            reference=reference,  # old and reference log-probs of every k, once per batch
        )
    t2 = clock(device)
    params = [p for p in model.parameters() if p.requires_grad]
    updates = []
    for k in range(shape.num_iterations):
        start = clock(device)
        with autocast(device, amp):
            policy_step(
                model,
                batch,
                k,
                settings=settings,
                backward=lambda loss: loss.backward(),
                reference=reference,
            )
        torch.nn.utils.clip_grad_norm_(params, 0.2)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        updates.append(clock(device) - start)
    return {"rollout": t1 - t0, "old": t2 - t1, "update": updates[-1]}  # "old": old + reference


def grpo_cells(times: dict[str, float], shape: Shape, device: torch.device, note: str) -> dict:
    mu = shape.num_iterations
    step = (times["rollout"] + times["old"]) / mu + times["update"]
    rollout_rate = shape.num_generations * shape.gen_length / times["rollout"]
    return {
        "seconds": secs(step),
        "tokens/s": f"{rollout_rate:,.0f} (rollout)",
        "peak GB": peak_gb(device),
        "details": (
            f"rollout {secs(times['rollout'])} s + old / ref log-probs {secs(times['old'])} s per "
            f"{mu} steps, update {secs(times['update'])} s; {note}"
        ),
    }


def eight_bit_optimizer(device: torch.device) -> str:
    return "adamw_8bit" if have("bitsandbytes") and device.type == "cuda" else "adamw"


def grpo_full_row(shape: Shape, device: torch.device) -> dict[str, str]:
    amp = device.type == "cuda"
    built = build(shape, device, torch.float32)  # master weights; bf16 autocast computes
    enable_gradient_checkpointing(built.model)
    built.model.train()
    frozen = copy.deepcopy(built.model).eval().requires_grad_(False)
    if amp:
        frozen = frozen.to(torch.bfloat16)  # as the trainer: it only runs under bf16 autocast
    name = eight_bit_optimizer(device)
    optimizer = build_optimizer(built.model, OptimConfig(optimizer=name, learning_rate=3e-6))
    reference = Reference(built.model, frozen)
    free(device)  # peak memory of the step (weights, reference, optimizer included)
    times = grpo_step(built, reference, optimizer, shape, device, amp)
    precision = "bf16" if amp else "float32"
    return grpo_cells(times, shape, device, f"optimizer {name}, frozen {precision} reference")


def quantize_blocks_nf4(model: torch.nn.Module, device: torch.device) -> int:
    """Replace every linear layer of the transformer blocks by bitsandbytes' NF4 `Linear4bit`
    (double quantisation, bf16 compute), as `load_in_4bit` does; embeddings and the output
    head stay bf16. Returns the number of layers quantised."""
    import bitsandbytes as bnb

    count = 0
    for block in model.model.transformer.blocks:
        for name, child in list(block.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=torch.bfloat16,
                compress_statistics=True,
                quant_type="nf4",
                device="meta",
            )
            layer.weight = bnb.nn.Params4bit(
                child.weight.data,
                requires_grad=False,
                compress_statistics=True,
                quant_type="nf4",
            ).to(device)
            setattr(block, name, layer)
            count += 1
    return count


def grpo_qlora_row(shape: Shape, device: torch.device) -> dict[str, str]:
    if not have("bitsandbytes"):
        return {"status": "skipped: bitsandbytes is not installed (pip install bitsandbytes)"}
    amp = device.type == "cuda"
    built = build(shape, device, torch.bfloat16)
    layers = quantize_blocks_nf4(built.model, device)
    r, alpha = shape.grpo_lora
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        built.model = apply_lora(built.model, LoraSettings(r=r, alpha=alpha, dropout=0.05))
    enable_gradient_checkpointing(built.model)
    built.model.train()
    optimizer = build_optimizer(built.model, OptimConfig(learning_rate=3e-6))
    reference = Reference(built.model)
    free(device)  # peak memory of the step (weights and optimizer included)
    times = grpo_step(built, reference, optimizer, shape, device, amp)
    return grpo_cells(
        times, shape, device, f"{layers} NF4 layers, LoRA r {r}, reference = adapter disabled"
    )


def sft_row(shape: Shape, device: torch.device) -> dict[str, str]:
    amp = device.type == "cuda"
    built = build(shape, device, torch.bfloat16 if amp else torch.float32)
    r, alpha = shape.sft_lora
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = apply_lora(built.model, LoraSettings(r=r, alpha=alpha, dropout=0.05))
    enable_gradient_checkpointing(model)
    model.train()
    optimizer = build_optimizer(model, OptimConfig(learning_rate=1e-5))
    gen = torch.Generator().manual_seed(0)
    ids = random_prompts(1, shape.sft_tokens, built.vocab, built.mask_id, gen).to(device)
    response = torch.zeros_like(ids, dtype=torch.bool)
    response[:, shape.sft_prompt :] = True
    batch = {"input_ids": ids, "response_mask": response, "index": torch.tensor([0])}
    seconds = math.nan
    free(device)  # peak memory of the steps (weights and optimizer included)
    for step in range(2):  # the second step is timed (the first warms up kernels)
        start = clock(device)
        with autocast(device, amp):
            loss = sft_batch_loss(model, batch, mask_id=built.mask_id, eps=1e-3, seed=0, key=step)
            loss.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = clock(device) - start
    return {
        "seconds": secs(seconds),
        "tokens/s": f"{shape.sft_tokens / seconds:,.0f}",
        "peak GB": peak_gb(device),
        "details": f"LoRA r {r} on a {'bf16' if amp else 'float32'} base, batch 1",
    }


# ----------------------------------------------------------------------------- driver


def describe_error(err: BaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return f"out of memory: {first[:160]}"
    return f"failed: {type(err).__name__}: {first[:160]}"


def run_rows(
    rows: list[tuple[str, Callable[[], Any]]], device: torch.device, console: Console
) -> Table:
    """Run each row in isolation: an exception fills its row, memory is freed after each."""
    table = Table(*COLUMNS, title=None)
    for label, fn in rows:
        free(device)
        start = time.perf_counter()
        try:
            cells = fn() or {}
        except Exception as err:
            cells = {"status": describe_error(err)}
        if not label:
            continue
        cells.setdefault("status", "ok")
        row = [label, *(cells.get(c, "-") for c in COLUMNS[1:])]
        table.add_row(*row)
        console.print(" | ".join(row) + f"   [{time.perf_counter() - start:.0f} s]")
    free(device)
    return table


def header(shape: Shape, device: torch.device) -> str:
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    versions = [f"torch {torch.__version__}"]
    if device.type == "cuda":
        versions.append(f"CUDA {torch.version.cuda}")
    for package in ("bitsandbytes", "deepspeed", "peft", "transformers"):
        if have(package):
            module = __import__(package)
            versions.append(f"{package} {getattr(module, '__version__', '?')}")
        else:
            versions.append(f"no {package}")
    return f"{shape.model} on {device} ({card or 'cpu'}); " + ", ".join(versions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="built-in tiny model on the CPU")
    parser.add_argument("--device", default=None, help="default: cuda:0 (cpu with --tiny)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (--tiny)")
    args = parser.parse_args()
    shape = TINY if args.tiny else GPU
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda:0"))
    torch.set_num_threads(args.threads)
    console = Console(width=200)
    console.print(header(shape, device))
    t0 = time.perf_counter()
    if device.type == "cuda" and not torch.cuda.is_available():
        table = Table(*COLUMNS)
        table.add_row("every row", "skipped: no CUDA device is visible (use --tiny on a CPU)")
        console.print(table)
        return
    rows: list[tuple[str, Callable[[], Any]]] = [
        (f"bf16 forward, {shape.forward_tokens} tokens", lambda: forward_row(shape, device)),
        *sampler_rows(shape, device),
        (
            f"diffu-GRPO step, full FT (G {shape.num_generations}, gen {shape.gen_length}, "
            f"mu {shape.num_iterations})",
            lambda: grpo_full_row(shape, device),
        ),
        (
            f"diffu-GRPO step, LoRA r {shape.grpo_lora[0]} on NF4 4-bit",
            lambda: grpo_qlora_row(shape, device),
        ),
        (
            f"masked SFT step, {shape.sft_tokens} tokens, LoRA r {shape.sft_lora[0]}",
            lambda: sft_row(shape, device),
        ),
    ]
    table = run_rows(rows, device, console)
    table.title = header(shape, device)
    console.print(table)
    console.print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
