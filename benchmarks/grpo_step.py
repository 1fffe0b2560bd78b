"""Seconds per diffu-GRPO optimizer step (docs/method.md §4): d1's schedule ("faithful") vs the project's
defaults ("fast"), with the time split per phase, for mu = 4 and 12.

Modes (`--compare faithful,fast`, or one of them with `--mode`):

- **faithful** reproduces the official d1 trainer's schedule explicitly, with this project's
  model: rollouts with the reference sampler (one full forward per step, the fixed schedule);
  then, at rollout time, the old policy's log-probs for ALL mu prompt masks in one giant no-grad
  forward of mu x N rows (also for k = 0, where d1 computes and never needs them) and the
  reference policy's log-probs for all mu masks in a second giant forward; then mu optimizer
  steps, each one forward + backward of the current log-probs. Its update uses neither
  `d1.recipes.grpo.update` nor `d1.core.likelihood` nor the project's loss (its estimator and
  loss are written out below, d1's formulas), so changes there do not move the baseline; the
  rollout's completion mask (`d1.recipes.grpo.loss.completion_mask`) is shared by both modes. Step k uses mask k for
  every micro-batch (d1's trainer advanced the mask index per micro-batch, a bug that changes
  which masks are used, not the cost).
- **fast** is the project's path with its defaults: rollouts with `GRPOSection().sampler` (the
  RL sampler default, at the workload's gen / block / steps / temperature), then
  `prepare_policy_batch` and `policy_step` of `d1.recipes.grpo.update`: old log-probs for k >= 1 and
  reference log-probs for every k, computed once per generation batch in chunks, so an inner
  step is one forward and one backward.

Both use AdamW (betas 0.9 / 0.99, weight decay 0.1) and gradient clipping at 0.2 (d1's), the
same prompts, G, mu and seeds. Each (mode, mu) runs in a fresh worker process: one untimed
warm-up generation batch, then enough generation batches for `--opt-steps` optimizer steps.
Reported per optimizer step (means over all timed steps; rollout and no-grad log-probs are paid
once per generation batch and amortised over its mu steps):

    rollout | old (old log-probs) | ref (reference log-probs) | forward (current log-probs + loss)
    | backward | optimizer (clip + step + zero_grad)

wall seconds, and CPU seconds of the worker (steadier than wall time on a shared machine), plus
memory: the worker's peak RSS growth over the timed batches (CPU; CUDA: peak allocated) and the
largest logits tensor an old / reference log-prob forward returned (measured by a forward
hook): mu x N rows x all L positions for faithful, a chunk of rows x the completion's positions
for fast (bounded in mu).

Workloads:

- default: the built-in `tiny` LLaDA (random init), 4 Sudoku prompts x G 6, micro-batch 6,
  gen 64 / block 32 / 32 steps, temperature 0.9, beta 0.04, task rewards;
- `--workload w1`: W1 of the issue: a random LLaDA with d_model 64, 2 layers, 4 heads, MLP 96,
  vocabulary 300; 1 prompt of 27 random ids x G 6, gen 64 / block 32 / 32 steps, temperature
  0.9, beta 0.04, lr 1e-4, full fine-tuning; reward = share of even ids in the completion;
- `--model PATH_OR_NAME` and/or `--prompts FILE` (one prompt per line, or JSONL with a
  "prompt" / "question" field; chat template applied when the tokenizer has one): that model and
  those prompts with the share-of-even-ids reward.

    .venv/bin/python benchmarks/grpo_step.py --threads 1 --workload w1 --compare faithful,fast
    .venv/bin/python benchmarks/grpo_step.py --threads 1 --compare faithful,fast
    .venv/bin/python benchmarks/grpo_step.py --quick                   # smoke run
    .venv/bin/python benchmarks/grpo_step.py --demo                    # SFT then GRPO reward curve
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from d1.core.sampling import SamplerConfig, sample
from d1.recipes.grpo.advantages import compute_advantages
from d1.recipes.grpo.config import GRPOSection
from d1.recipes.grpo.loss import completion_mask
from d1.recipes.grpo.schedule import iteration_prompt_mask
from d1.recipes.grpo.update import ComputeCounter, Reference, UpdateSettings, policy_step
from d1.recipes.grpo.update import prepare_policy_batch as prepare
from d1.tasks.base import Example, RewardFn, Score, Task

PHASES = ("rollout", "old", "ref", "forward", "backward", "optimizer")
MODES = ("faithful", "fast")

# --------------------------------------------------------------------------- workloads

W1_SHAPE = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 96}
W1_VOCAB = 300  # ids 296..299: BOS, pad, EOS, mask
W1_PROMPT_LENGTH = 27


def w1_model(seed: int = 0) -> torch.nn.Module:
    """W1's model: a random LLaDA (d_model 64, 2 layers, 4 heads, MLP 96, vocabulary 300)."""
    from d1.core.models.configuration_llada import LLaDAConfig
    from d1.core.models.modeling_llada import LLaDAModelLM
    from d1.core.models.tiny import init_weights_

    config = LLaDAConfig(
        **W1_SHAPE,
        vocab_size=W1_VOCAB,
        embedding_size=W1_VOCAB,
        bos_token_id=W1_VOCAB - 4,
        pad_token_id=W1_VOCAB - 3,
        eos_token_id=W1_VOCAB - 2,
        mask_token_id=W1_VOCAB - 1,
        rope_theta=10000.0,
        max_sequence_length=2048,
        weight_tying=False,
        init_std=0.02,
        architectures=["LLaDAModelLM"],
    )
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    model.to_empty(device="cpu")
    init_weights_(model, torch.Generator().manual_seed(seed), std=config.init_std)
    return model


def even_share_reward(completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Share of even token ids among each completion's valid tokens (W1's toy reward)."""
    even = ((completion_ids % 2 == 0) & completion_mask).sum(1).float()
    return even / completion_mask.sum(1).clamp(min=1).float()


class Echo(Task):
    """Toy generated task for `--demo`: prompt a digit d, answer "ddd"; reward = share right."""

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


@dataclasses.dataclass
class Rollout:
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    rewards: torch.Tensor


@dataclasses.dataclass
class Workload:
    """What one benchmark run trains on (see the module docstring)."""

    name: str
    model: torch.nn.Module
    mask_id: int
    eos_id: int | None
    num_generations: int
    micro_batch: int
    gen_length: int
    block_length: int
    steps: int
    temperature: float
    lr: float
    beta: float
    rollout_fn: Callable[[torch.nn.Module, SamplerConfig, int, torch.Generator], Rollout]
    logit_shift: bool = False

    def sampler(self, base: SamplerConfig) -> SamplerConfig:
        """`base` (a mode's sampler) at this workload's schedule and temperature."""
        return dataclasses.replace(
            base,
            gen_length=self.gen_length,
            block_length=self.block_length,
            steps=self.steps,
            temperature=self.temperature,
        )


def _token_rollout(
    workload_ids: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    num_generations: int,
    generation_batch_size: int,
    mask_id: int,
    eos_id: int | None,
) -> Callable[[torch.nn.Module, SamplerConfig, int, torch.Generator], Rollout]:
    """Rollouts of token-id prompts (`workload_ids(b)` -> ids, mask of generation batch b)
    with the share-of-even-ids reward: sampling in eval mode without gradient, as the trainer."""

    def rollout(
        model: torch.nn.Module, sampler: SamplerConfig, b: int, gen: torch.Generator
    ) -> Rollout:
        ids, mask = workload_ids(b)
        ids = ids.repeat_interleave(num_generations, 0)
        mask = mask.repeat_interleave(num_generations, 0)
        model.eval()
        outs = []
        with torch.no_grad():
            for s in range(0, ids.shape[0], generation_batch_size):
                sl = slice(s, s + generation_batch_size)
                out = sample(
                    model,
                    ids[sl],
                    mask[sl],
                    config=sampler,
                    mask_id=mask_id,
                    generator=gen,
                    eos_id=eos_id,
                )
                outs.append(out[:, ids.shape[1] :])
        model.train()
        completion = torch.cat(outs)
        cmask = completion_mask(completion, eos_id)
        return Rollout(ids, mask, completion, cmask, even_share_reward(completion, cmask))

    return rollout


def _read_prompts(path: str) -> list[str]:
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if path.endswith(".jsonl"):
        rows = [json.loads(ln) for ln in lines]
        return [str(r.get("prompt", r.get("question"))) for r in rows]
    return lines


def _token_prompts(
    args: argparse.Namespace, model: torch.nn.Module, tok: Any, mask_id: int, eos_id: int | None
) -> tuple[Callable[[int], tuple[torch.Tensor, torch.Tensor]], str]:
    """(generation batch -> prompt ids and mask, workload name) for `--prompts FILE`, or random
    prompts of W1's length for a model without them."""
    if args.prompts is not None:
        from d1.core.sampling import encode_prompts

        texts = _read_prompts(args.prompts)
        if getattr(tok, "chat_template", None):
            texts = [
                tok.apply_chat_template(
                    [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
                )
                for t in texts
            ]

        def file_ids(b: int) -> tuple[torch.Tensor, torch.Tensor]:
            p = args.prompts_per_batch
            chosen = [texts[(b * p + i) % len(texts)] for i in range(p)]
            return encode_prompts(tok, chosen)

        ids_fn = file_ids
        name = f"{args.model}, prompts of {args.prompts}"
    else:
        special = {
            i for i in (mask_id, eos_id, getattr(tok, "pad_token_id", None)) if i is not None
        }
        vocab = int(model.config.vocab_size)

        def random_ids(b: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator().manual_seed(1000 + b)
            ids = torch.randint(0, vocab, (args.prompts_per_batch, W1_PROMPT_LENGTH), generator=g)
            for s in special:
                ids[ids == s] = (s + 1) % vocab if (s + 1) % vocab not in special else 0
            return ids, torch.ones_like(ids)

        ids_fn = random_ids
        name = f"{args.model}, random prompts of {W1_PROMPT_LENGTH} ids"
    return ids_fn, name


def build_workload(args: argparse.Namespace) -> Workload:
    """The workload of `args` (W1, the default Sudoku one, or `--model` / `--prompts`)."""
    g_common = {
        "num_generations": args.num_generations,
        "micro_batch": args.micro_batch,
        "gen_length": args.gen_length,
        "block_length": args.block_length,
        "steps": args.steps,
        "temperature": 0.9,
        "beta": args.beta,
    }
    if args.workload == "w1":
        model = w1_model()
        cfg = model.config

        def w1_ids(b: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator().manual_seed(1000 + b)
            ids = torch.randint(
                0, W1_VOCAB - 4, (args.prompts_per_batch, W1_PROMPT_LENGTH), generator=g
            )
            return ids, torch.ones_like(ids)

        fn = _token_rollout(
            w1_ids, args.num_generations, args.micro_batch, cfg.mask_token_id, cfg.eos_token_id
        )
        return Workload(
            "W1",
            model,
            cfg.mask_token_id,
            cfg.eos_token_id,
            lr=1e-4 if args.lr is None else args.lr,
            rollout_fn=fn,
            **g_common,
        )

    from d1.core.models import load_model

    loaded = load_model(args.model, dtype="float32", seed=0)
    model, tok, spec = loaded.model, loaded.tokenizer, loaded.spec
    mask_id, eos_id = spec.mask_token_id, spec.eos_token_id
    if args.prompts is None and args.model.startswith("tiny"):
        # The default workload: Sudoku prompts with the task's rewards, through the trainer's
        # own rollout function.
        from d1.recipes.grpo.rollout import PromptItem, generate_rollouts
        from d1.tasks import get_task

        n = args.prompts_per_batch * (args.max_batches + 1)
        task = get_task("sudoku", prompt_style="compact", demo_reasoning=False, train_size=n)
        items = [PromptItem("sudoku", task, ex) for ex in task.load("train", limit=n)]

        def sudoku(
            m: torch.nn.Module, sampler: SamplerConfig, b: int, gen: torch.Generator
        ) -> Rollout:
            p = args.prompts_per_batch
            r = generate_rollouts(
                m,
                tok,
                items[b * p : (b + 1) * p],
                num_generations=args.num_generations,
                sampler=sampler,
                mask_id=mask_id,
                eos_id=eos_id,
                generator=gen,
                generation_batch_size=args.micro_batch,
            )
            return Rollout(
                r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, r.rewards
            )

        fn, name = sudoku, f"{args.model}, Sudoku prompts"
    else:
        ids_fn, name = _token_prompts(args, model, tok, mask_id, eos_id)
        fn = _token_rollout(ids_fn, args.num_generations, args.micro_batch, mask_id, eos_id)
    return Workload(
        name,
        model,
        mask_id,
        eos_id,
        lr=1e-5 if args.lr is None else args.lr,
        rollout_fn=fn,
        logit_shift=spec.logit_shift,
        **g_common,
    )


# --------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Split:
    """Wall and CPU seconds per phase, accumulated (nested phases are subtracted by callers)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.wall = dict.fromkeys(PHASES, 0.0)
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self.enabled = True

    def now(self) -> tuple[float, float]:
        _sync(self.device)
        return time.perf_counter(), time.process_time()

    def add(
        self, phase: str, start: tuple[float, float], end: tuple[float, float] | None = None
    ) -> tuple[float, float]:
        end = end or self.now()
        if self.enabled:
            self.wall[phase] += end[0] - start[0]
            self.cpu[phase] += end[1] - start[1]
        return end[0] - start[0], end[1] - start[1]

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self.now()
        yield
        self.add(name, start)

    def snapshot(self, phase: str) -> tuple[float, float]:
        return self.wall[phase], self.cpu[phase]


class TimedReference(Reference):
    """`Reference` whose policy context counts as phase "ref" wherever `d1.recipes.grpo.update` opens
    it (once per generation batch: `prepare_policy_batch` precomputes them)."""

    def __init__(self, model: torch.nn.Module, frozen: torch.nn.Module, split: Split) -> None:
        super().__init__(model, frozen=frozen)
        self.split = split

    @contextlib.contextmanager
    def policy(self) -> Iterator[torch.nn.Module]:
        start = self.split.now()
        with super().policy() as m:
            yield m
        self.split.add("ref", start)


def _within(
    split: Split,
    phase: str,
    start: tuple[float, float],
    nested: Sequence[str],
    before: dict[str, tuple[float, float]],
) -> None:
    """Add the time since `start` to `phase`, minus what the `nested` phases got meanwhile."""
    end = split.now()
    wall, cpu = end[0] - start[0], end[1] - start[1]
    for n in nested:
        w, c = split.snapshot(n)
        wall -= w - before[n][0]
        cpu -= c - before[n][1]
    if split.enabled:
        split.wall[phase] += wall
        split.cpu[phase] += cpu


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class NoGradLogits:
    """The largest logits tensor a no-grad forward of the policy or the reference returned
    while `on` (the old / reference log-probs), measured by a forward hook: its rows and MiB."""

    def __init__(self, *models: torch.nn.Module) -> None:
        self.on = False
        self.rows = 0
        self.bytes = 0
        for m in models:
            m.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, out: Any) -> None:
        if not self.on or torch.is_grad_enabled():
            return
        logits = out.logits if hasattr(out, "logits") else out[0]
        size = logits.numel() * logits.element_size()
        if size > self.bytes:
            self.rows, self.bytes = int(logits.shape[0]), size

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        self.on = True
        try:
            yield
        finally:
            self.on = False


# --------------------------------------------------------------------------- d1's schedule


def d1_one_step_logps(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    prompt_noise: torch.Tensor,
    mask_id: int,
) -> torch.Tensor:
    """d1's one-step estimator, written out as its trainer does it: prompt tokens under
    `prompt_noise` and the whole completion masked, ONE forward over all positions, log-softmax
    of the completion positions' logits, gathered at the completion tokens ([B, C])."""
    p = prompt_ids.shape[1]
    x = torch.cat(
        [prompt_ids.masked_fill(prompt_noise, mask_id), torch.full_like(completion_ids, mask_id)], 1
    )
    kwargs = {}
    if not bool(prompt_mask.bool().all()):
        kwargs["attention_mask"] = torch.cat([prompt_mask, torch.ones_like(completion_ids)], 1)
    logits = model(input_ids=x, **kwargs).logits[:, p:]
    return torch.log_softmax(logits.float(), -1).gather(-1, completion_ids[..., None]).squeeze(-1)


def d1_loss(
    logps: torch.Tensor,
    old: torch.Tensor,
    ref: torch.Tensor | None,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    epsilon: float,
    beta: float,
) -> torch.Tensor:
    """d1's per-token clipped objective with the k3 KL (docs/method.md §4), summed with `weights`."""
    ratio = torch.exp(logps - old)
    a = advantages[:, None]
    per_token = -torch.min(ratio * a, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * a)
    if ref is not None and beta > 0:
        diff = ref - logps
        per_token = per_token + beta * (torch.exp(diff) - diff - 1)
    return (per_token * weights).sum()


# --------------------------------------------------------------------------- one run


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.1)


def _opt_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.2)
    opt.step()
    opt.zero_grad(set_to_none=True)


def fast_sampler(overrides: str | None) -> SamplerConfig:
    """The RL sampler default (`GRPOSection().sampler`), with `key=value,...` overrides."""
    base = GRPOSection().sampler
    if not overrides:
        return base
    import yaml

    fields = {}
    for part in overrides.split(","):
        key, _, value = part.partition("=")
        fields[key.strip()] = yaml.safe_load(value)
    return dataclasses.replace(base, **fields)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One (mode, mu) in this process: timed generation batches; per-step seconds and memory."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    w = build_workload(args)
    model = w.model.float().to(device).train()
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)  # full FT: a frozen copy
    opt = _optimizer(model, w.lr)
    mu, g, mode = args.mu, w.num_generations, args.mode
    sampler = w.sampler(
        SamplerConfig(name="reference") if mode == "faithful" else fast_sampler(args.fast_sampler)
    )
    split = Split(device)
    reference = TimedReference(model, ref_model, split)
    settings = UpdateSettings(
        num_iterations=mu,
        micro_batch_size=w.micro_batch,
        num_generations=g,
        mask_id=w.mask_id,
        seed=0,
        beta=w.beta,
        logit_shift=w.logit_shift,
        logprob_chunk_size=args.logprob_chunk,
    )
    batches = max(1, math.ceil(args.opt_steps / mu))
    nograd = NoGradLogits(model, ref_model)
    rss0 = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for b in range(batches + 1):
        split.enabled = b > 0  # generation batch 0: untimed warm-up
        if b == 1:
            _reset_peak_rss()
            rss0 = _rss_kib("VmRSS")
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        gen = torch.Generator(device=device).manual_seed(b)
        with split.phase("rollout"):
            r = w.rollout_fn(model, sampler, b, gen)
            adv = compute_advantages(r.rewards, g).advantages
        n = r.prompt_ids.shape[0]
        if mode == "faithful":
            masks = [
                iteration_prompt_mask(
                    r.prompt_ids,
                    r.prompt_mask,
                    0.15,
                    mask_id=w.mask_id,
                    run_seed=0,
                    generation_batch=b,
                    iteration=k,
                )
                for k in range(mu)
            ]
            giant = [t.repeat(mu, 1) for t in (r.prompt_ids, r.prompt_mask, r.completion_ids)]
            noise = torch.cat(masks)
            old_all = ref_all = None
            if mu > 1:
                with split.phase("old"), torch.no_grad(), nograd.counting():
                    model.eval()
                    old_all = d1_one_step_logps(model, *giant, noise, w.mask_id).view(mu, n, -1)
                    model.train()
            if w.beta > 0:
                with split.phase("ref"), torch.no_grad(), nograd.counting():
                    ref_all = d1_one_step_logps(ref_model, *giant, noise, w.mask_id).view(mu, n, -1)
            weights = r.completion_mask.float() / r.completion_mask.sum().clamp(min=1)
            for k in range(mu):
                for s in range(0, n, w.micro_batch):
                    sl = slice(s, s + w.micro_batch)
                    start, before = split.now(), {"backward": split.snapshot("backward")}
                    logps = d1_one_step_logps(
                        model,
                        r.prompt_ids[sl],
                        r.prompt_mask[sl],
                        r.completion_ids[sl],
                        masks[k][sl],
                        w.mask_id,
                    )
                    old = old_all[k][sl] if old_all is not None else logps.detach()
                    ref = ref_all[k][sl] if ref_all is not None else None
                    loss = d1_loss(logps, old, ref, adv[sl], weights[sl], 0.5, w.beta)
                    with split.phase("backward"):
                        loss.backward()
                    _within(split, "forward", start, ["backward"], before)
                with split.phase("optimizer"):
                    _opt_step(model, opt)
        else:
            start, before = split.now(), {"ref": split.snapshot("ref")}
            with nograd.counting():
                batch = prepare(
                    model,
                    prompt_ids=r.prompt_ids,
                    prompt_mask=r.prompt_mask,
                    completion_ids=r.completion_ids,
                    completion_mask=r.completion_mask,
                    advantages=adv,
                    settings=settings,
                    generation_batch=b,
                    counter=ComputeCounter(),
                    reference=reference,
                )
            _within(split, "old", start, ["ref"], before)

            def backward(loss: torch.Tensor) -> None:
                with split.phase("backward"):
                    loss.backward()

            for k in range(mu):
                start = split.now()
                before = {p: split.snapshot(p) for p in ("ref", "backward")}
                policy_step(
                    model, batch, k, settings=settings, backward=backward, reference=reference
                )
                _within(split, "forward", start, ["ref", "backward"], before)
                with split.phase("optimizer"):
                    _opt_step(model, opt)
    steps = batches * mu
    out: dict[str, Any] = {
        "mode": mode,
        "mu": mu,
        "steps": steps,
        "batches": batches,
        "completions": n,
        "sampler": sampler.describe(),
        "wall": {p: v / steps for p, v in split.wall.items()},
        "cpu": {p: v / steps for p, v in split.cpu.items()},
        "nograd_rows": nograd.rows,
        "nograd_logits_mib": nograd.bytes / 2**20,
        "mean_reward_last": float(r.rewards.mean()),
    }
    out["step_s"] = sum(out["wall"].values())
    out["step_cpu_s"] = sum(out["cpu"].values())
    if device.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        hwm = _rss_kib("VmHWM")
        out["peak_mib"] = (hwm or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
        if hwm is not None and rss0 is not None:
            out["peak_growth_mib"] = (hwm - rss0) / 1024
    return out


def _worker_cmd(args: argparse.Namespace, mode: str, mu: int) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--mu", str(mu)]
    for key in (
        "workload",
        "model",
        "prompts",
        "device",
        "threads",
        "prompts_per_batch",
        "num_generations",
        "micro_batch",
        "opt_steps",
        "gen_length",
        "block_length",
        "steps",
        "beta",
        "lr",
        "fast_sampler",
        "logprob_chunk",
    ):
        value = getattr(args, key)
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def run_config(args: argparse.Namespace, mode: str, mu: int) -> dict[str, Any]:
    """`worker` in a fresh process (clean memory numbers, no state shared between modes)."""
    res = subprocess.run(_worker_cmd(args, mode, mu), capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker failed ({mode}, mu={mu}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _setup(args: argparse.Namespace, w_name: str) -> str:
    return (
        f"{w_name} on {args.device} ({args.threads} thread(s)): {args.prompts_per_batch} "
        f"prompt(s) x G {args.num_generations}, micro-batch {args.micro_batch}, gen "
        f"{args.gen_length} / block {args.block_length} / {args.steps} steps, temperature 0.9, "
        f"beta {args.beta}, full fine-tuning"
    )


def compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each mode per mu (modes alternate, `--repeats` times); prints the table, returns rows."""
    from rich.console import Console
    from rich.table import Table

    modes = [m.strip() for m in args.compare.split(",")]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    w_name = {"w1": "W1 (random LLaDA d64 x 2 layers, vocab 300)"}.get(
        args.workload or "", args.model
    )
    if args.prompts:
        w_name += f", prompts of {args.prompts}"
    rows = []
    for mu in args.mus:
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for _ in range(args.repeats):
            for m in modes:
                r = run_config(args, m, mu)
                runs[m].append(r)
                print(
                    f"mu {mu} {m}: {r['step_s']:.4f} s / step (cpu {r['step_cpu_s']:.4f})",
                    flush=True,
                )
        for m in modes:
            rs = runs[m]
            best = dict(rs[0])
            for key in ("wall", "cpu"):
                best[key] = {p: statistics.median(r[key][p] for r in rs) for p in PHASES}
            best["step_s"] = statistics.median(r["step_s"] for r in rs)
            best["step_cpu_s"] = statistics.median(r["step_cpu_s"] for r in rs)
            rows.append(best)
    base = {r["mu"]: r for r in rows if r["mode"] == modes[0]}
    mem = "peak MiB (GPU)" if args.device.startswith("cuda") else "RSS growth MiB"
    # Phases and the bound in CPU seconds of the worker on a CPU (steadier than wall time on a
    # shared machine), in wall seconds on a GPU (the host's CPU time says little there).
    clock = "wall" if args.device.startswith("cuda") else "cpu"
    total = "step_s" if clock == "wall" else "step_cpu_s"
    t = Table(title=f"diffu-GRPO optimizer step, {' vs '.join(modes)}: {_setup(args, w_name)}")
    cols = [
        "mu",
        "mode",
        "s / step",
        "CPU s / step",
        *(f"{p} ({clock})" for p in PHASES),
        f"vs {modes[0]}",
        f"vs {modes[0]} (CPU)",
        f"rollout-free bound ({clock})",
        mem,
        "no-grad logits MiB",
    ]
    for c in cols:
        t.add_column(c, justify="right" if c != "mode" else "left")
    for r in rows:
        b = base[r["mu"]]
        no_rollout = r[total] - r[clock]["rollout"]
        t.add_row(
            str(r["mu"]),
            f"{r['mode']}: {r['sampler']}",
            f"{r['step_s']:.4f}",
            f"{r['step_cpu_s']:.4f}",
            *(f"{r[clock][p]:.4f}" for p in PHASES),
            f"{b['step_s'] / r['step_s']:.2f}x",
            f"{b['step_cpu_s'] / r['step_cpu_s']:.2f}x",
            f"{b[total] / no_rollout:.2f}x" if no_rollout > 0 else "-",
            f"{r.get('peak_growth_mib', r['peak_mib']):.1f}",
            f"{r['nograd_logits_mib']:.2f} ({r['nograd_rows']} rows)",
        )
    Console(width=250).print(t)
    print(
        "Seconds per optimizer step: means over "
        f"{args.opt_steps}+ timed optimizer steps after one warm-up generation batch (medians "
        f"of {args.repeats} repeat(s) per mode, modes alternating); rollout and no-grad "
        f"log-probs amortised over the mu steps of their generation batch; phases in {clock} "
        "seconds. 'rollout-free bound': the first mode's step over this mode's step without "
        "its rollout (the most a faster sampler alone could give). 'no-grad logits': the "
        "largest logits tensor an old / reference log-prob forward returned (measured): d1's "
        "giant batch grows with mu and holds every position, the project's chunks do not grow "
        "and hold the completion's positions only."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


def demo(args: argparse.Namespace) -> None:
    """SFT a tiny model briefly on the toy task, then diffu-GRPO; print the reward curve."""
    import d1.tasks
    from d1.recipes.grpo.trainer import train_grpo
    from d1.recipes.sft.trainer import train_sft

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
    p.add_argument("--compare", default="faithful,fast", help="modes to compare, in order")
    p.add_argument("--mode", choices=MODES, default=None, help="run one mode only")
    p.add_argument("--mus", type=int, nargs="+", default=[4, 12])
    p.add_argument("--workload", choices=["w1"], default=None, help="W1 preset (see above)")
    p.add_argument("--model", default="tiny", help="model folder, hub id or tiny name")
    p.add_argument("--prompts", default=None, help="prompt file (lines or JSONL)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prompts-per-batch", type=int, default=None, help="default 4 (W1: 1)")
    p.add_argument("--num-generations", type=int, default=6)
    p.add_argument("--micro-batch", type=int, default=6)
    p.add_argument("--opt-steps", type=int, default=24, help="timed optimizer steps (at least)")
    p.add_argument("--repeats", type=int, default=1, help="runs per (mode, mu), alternating")
    p.add_argument("--gen-length", type=int, default=64)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--lr", type=float, default=None, help="default 1e-5 (W1: 1e-4)")
    p.add_argument(
        "--fast-sampler",
        default=None,
        help="fast mode: overrides of the RL sampler default, key=value,...",
    )
    p.add_argument("--logprob-chunk", type=int, default=None, help="fast: rows per no-grad forward")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--quick", action="store_true", help="a smoke run (tiny-xs, short)")
    p.add_argument("--demo", action="store_true", help="SFT then diffu-GRPO reward curve")
    p.add_argument("--demo-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="run folder for --demo (default: a temp dir)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mu", type=int, default=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.prompts_per_batch is None:
        args.prompts_per_batch = 1 if args.workload == "w1" else 4
    if args.quick:
        args.model, args.mus, args.prompts_per_batch, args.opt_steps = "tiny-xs", [1, 4], 1, 4
        args.gen_length, args.block_length, args.steps = 32, 32, 8
    args.max_batches = max(1, math.ceil(args.opt_steps / min([args.mu, *args.mus])))
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.demo:
        demo(args)
        return
    if args.mode is not None:
        args.compare = args.mode
    compare(args)


if __name__ == "__main__":
    main()
