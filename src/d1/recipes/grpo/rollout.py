"""Rollouts for diffu-GRPO (docs/method.md §4): prompts, G sampled completions each, task rewards.

One generation batch is a list of (task, example) prompts, possibly from several tasks (a
multi-task mixture, docs/method.md §5). Each prompt is repeated G (`num_generations`) times, contiguously,
so rows `[g*G, (g+1)*G)` form prompt g's group; all rows are left-padded with an attention
mask and sampled with `d1.core.sampling` (the policy in eval mode, no gradient, inside
`d1.recipes.grpo.generation.generation_context`, one `torch.Generator` per sampler call). Completions
are decoded, scored by their own task's reward components (kept separately for logging), and
summed into the total reward; the task's evaluation scorer gives each completion's correctness
(the logged accuracy).

Every reward component and scorer call on one completion runs under a wall-clock limit
(`grpo.reward_timeout_s`, `d1.tasks.timeout.time_limit`): a call cut short scores 0 and is
counted in `Rollout.reward_timeouts` (logged as `reward/timeouts`), so one pathological
completion cannot stall the step. Components a task declares `self_bounded` (the code sandbox)
are called on the whole batch instead.

`PromptSampler` draws the prompts: a deterministic, resumable stream over one or several tasks'
training sets (mixture weights), each task reshuffled every epoch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from d1.core.sampling import SamplerConfig, SamplingStats, decode_completions, left_pad, sample
from d1.recipes.grpo.generation import generation_context
from d1.recipes.grpo.loss import completion_mask
from d1.tasks.base import Example, Task, render_prompt
from d1.tasks.timeout import REWARD_TIMEOUT_S, call_with_time_limit
from d1.training.data import derive_seed

__all__ = [
    "PromptItem",
    "PromptSampler",
    "Rollout",
    "encode_items",
    "generate_rollouts",
    "score_completions",
    "score_correctness",
]


@dataclass
class PromptItem:
    """One prompt of a generation batch: its task (by name and object) and example."""

    task_name: str
    task: Task
    example: Example


class PromptSampler:
    """Deterministic, resumable prompt stream over one or more tasks (mixture weights).

    Draw i picks task t with probability proportional to its weight (from a `random.Random`
    seeded by (seed, i)), then the next example of t's stream; t's stream walks a fresh
    permutation of its examples every epoch (seeded by (seed, t, epoch)). The state is two
    counters, so `state_dict()` / `load_state_dict()` resume exactly.
    """

    def __init__(
        self,
        pools: Sequence[tuple[str, Task, Sequence[Example], float]],
        seed: int,
    ) -> None:
        if not pools:
            raise ValueError("PromptSampler needs at least one task with examples.")
        names = [p[0] for p in pools]
        if len(set(names)) != len(names):
            raise ValueError(f"Task names in a mixture must be unique; got {names}.")
        for name, _, examples, weight in pools:
            if not examples:
                raise ValueError(f"Task {name!r} has no training examples.")
            if not (weight > 0 and math.isfinite(weight)):
                raise ValueError(f"Task {name!r}: mixture weight must be > 0; got {weight}.")
        self.pools = [(n, t, list(e), float(w)) for n, t, e, w in pools]
        self.seed = int(seed)
        total = sum(p[3] for p in self.pools)
        self._cum = []
        acc = 0.0
        for p in self.pools:
            acc += p[3] / total
            self._cum.append(acc)
        self.draws = 0
        self.taken = [0] * len(self.pools)
        self._perm_cache: dict[tuple[int, int], list[int]] = {}

    def _permutation(self, t: int, epoch: int) -> list[int]:
        key = (t, epoch)
        if key not in self._perm_cache:
            order = list(range(len(self.pools[t][2])))
            random.Random(
                derive_seed(self.seed, "grpo-prompt-order", self.pools[t][0], epoch)
            ).shuffle(order)
            self._perm_cache = {key: order}  # one epoch per task is all we ever need
        return self._perm_cache[key]

    def _choose_task(self, i: int) -> int:
        if len(self.pools) == 1:
            return 0
        u = random.Random(derive_seed(self.seed, "grpo-task-choice", i)).random()
        return next((t for t, c in enumerate(self._cum) if u < c), len(self.pools) - 1)

    def next_items(self, n: int) -> list[PromptItem]:
        """The next `n` prompts of the stream."""
        items = []
        for _ in range(n):
            t = self._choose_task(self.draws)
            name, task, examples, _ = self.pools[t]
            j = self.taken[t]
            epoch, pos = divmod(j, len(examples))
            items.append(PromptItem(name, task, examples[self._permutation(t, epoch)[pos]]))
            self.taken[t] += 1
            self.draws += 1
        return items

    def epochs(self) -> dict[str, float]:
        """Epochs consumed so far per task (examples taken / pool size)."""
        return {p[0]: self.taken[t] / len(p[2]) for t, p in enumerate(self.pools)}

    def state_dict(self) -> dict[str, Any]:
        return {"draws": self.draws, "taken": list(self.taken), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["seed"]) != self.seed or len(state["taken"]) != len(self.pools):
            raise ValueError(
                "The prompt sampler state does not match this run (different seed or tasks)."
            )
        self.draws = int(state["draws"])
        self.taken = [int(x) for x in state["taken"]]


@dataclass
class Rollout:
    """One scored generation batch (N = prompts x G rows, grouped contiguously).

    Attributes:
        prompt_ids, prompt_mask: [N, P] left-padded prompts and their attention mask.
        completion_ids: [N, C] sampled completions.
        completion_mask: [N, C] bool, tokens up to and including the first EOS.
        prompts: the N prompt strings; completions: the N decoded completions.
        items: the N `PromptItem`s (task and example per row).
        rewards: [N] float32 total reward (sum of the row's task's components).
        rewards_per_func: "task/component" -> [N] float32, NaN on rows of other tasks.
        num_generations: G.
        truncated_prompts: prompts cut to `max_prompt_length` (counted once per prompt).
        correct: [N] float32, the task's evaluation score of each completion (None when not
            computed).
        reward_timeouts: reward-component and scorer calls cut short by the time limit (each
            scored 0).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    prompts: list[str]
    completions: list[str]
    items: list[PromptItem]
    rewards: torch.Tensor
    rewards_per_func: dict[str, torch.Tensor] = field(default_factory=dict)
    num_generations: int = 1
    truncated_prompts: int = 0
    correct: torch.Tensor | None = None
    reward_timeouts: int = 0

    def __len__(self) -> int:
        return int(self.prompt_ids.shape[0])


def encode_items(
    tokenizer: Any,
    items: Sequence[PromptItem],
    *,
    max_prompt_length: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[str], torch.Tensor, torch.Tensor, int]:
    """Render (chat template + task prompt) and left-pad prompts.

    A prompt longer than `max_prompt_length` tokens keeps its last `max_prompt_length` tokens,
    as d1 / TRL do (`prompt_ids[:, -max_prompt_length:]`); how many were cut is returned.

    Returns:
        (prompt strings, prompt_ids [n, P], attention mask [n, P], number truncated).
    """
    texts = [render_prompt(tokenizer, it.task, it.example) for it in items]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    truncated = 0
    if max_prompt_length is not None:
        cut = []
        for ids in encoded:
            if len(ids) > max_prompt_length:
                truncated += 1
                ids = ids[-max_prompt_length:]
            cut.append(ids)
        encoded = cut
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    ids, attn = left_pad(encoded, int(pad_id if pad_id is not None else 0), device)
    return texts, ids, attn, truncated


def _call_per_completion(
    fn: Any, comps: Sequence[str], exs: Sequence[Example], timeout_s: float | None
) -> tuple[list[float], int]:
    """`fn` on one completion at a time, each call under the time limit (0.0 when cut)."""
    values, timeouts = [], 0
    for c, ex in zip(comps, exs, strict=True):
        out, timed_out = call_with_time_limit(fn, [c], [ex], seconds=timeout_s, default=[0.0])
        timeouts += timed_out
        values.extend(out)
    return values, timeouts


def score_completions(
    completions: Sequence[str],
    items: Sequence[PromptItem],
    *,
    timeout_s: float | None = REWARD_TIMEOUT_S,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Score each completion with its own task's reward components (docs/method.md §5), each call on one
    completion limited to `timeout_s` seconds (None: no limit; module doc).

    Returns:
        (total rewards [N] float32, "task/component" -> [N] float32 with NaN on other tasks'
        rows, number of calls cut short).
    """
    n = len(completions)
    if len(items) != n:
        raise ValueError(f"{n} completions but {len(items)} prompt items.")
    total = torch.zeros(n, dtype=torch.float32)
    per_func: dict[str, torch.Tensor] = {}
    by_task: dict[str, list[int]] = {}
    timeouts = 0
    for i, it in enumerate(items):
        by_task.setdefault(it.task_name, []).append(i)
    for name, rows in by_task.items():
        task = items[rows[0]].task
        comps = [completions[i] for i in rows]
        exs = [items[i].example for i in rows]
        index = torch.tensor(rows, dtype=torch.long)
        for comp_name, fn in task.reward_functions().items():
            if comp_name in task.self_bounded:
                values = fn(comps, exs)
            else:
                values, cut = _call_per_completion(fn, comps, exs, timeout_s)
                timeouts += cut
            if len(values) != len(rows):
                raise ValueError(
                    f"Reward {name}/{comp_name} returned {len(values)} values for "
                    f"{len(rows)} completions."
                )
            vals = torch.tensor([float(v) for v in values], dtype=torch.float32)
            if torch.isnan(vals).any():
                raise ValueError(f"Reward {name}/{comp_name} returned NaN.")
            key = f"{name}/{comp_name}"
            column = per_func.setdefault(key, torch.full((n,), float("nan")))
            column[index] = vals
            total[index] += vals
    return total, per_func, timeouts


def score_correctness(
    completions: Sequence[str],
    items: Sequence[PromptItem],
    *,
    timeout_s: float | None = REWARD_TIMEOUT_S,
) -> tuple[torch.Tensor, int]:
    """Each completion's evaluation score (`Task.score`, cut to 0 after `timeout_s` seconds)
    and the number of calls cut short."""
    values, timeouts = [], 0
    for c, it in zip(completions, items, strict=True):
        score = it.task.score_within(c, it.example, timeout_s)
        timeouts += bool(score.details.get("timeout"))
        values.append(float(score.correct))
    return torch.tensor(values, dtype=torch.float32), timeouts


@torch.no_grad()
def generate_rollouts(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[PromptItem],
    *,
    num_generations: int,
    sampler: SamplerConfig,
    mask_id: int,
    eos_id: int | None,
    generator: torch.Generator | None,
    generation_batch_size: int | None = None,
    max_prompt_length: int | None = None,
    logit_shift: bool = False,
    device: torch.device | str | None = None,
    stats: SamplingStats | None = None,
    call_generator: Callable[[int], torch.Generator] | None = None,
    reward_timeout_s: float | None = REWARD_TIMEOUT_S,
    on_progress: Callable[[str], None] | None = None,
) -> Rollout:
    """Sample `num_generations` completions per prompt and score them (docs/method.md §4).

    Args:
        model: the policy, plain or as prepared by accelerate (sampled inside
            `generation_context`, in eval mode, its mode restored afterwards; collective under
            FSDP / ZeRO-3).
        tokenizer: the model's tokenizer (chat template applied through `render_prompt`).
        items: the prompts of this generation batch (each with its task).
        num_generations: G completions per prompt.
        sampler: sampler settings (d1 rollouts: `SamplerConfig.for_rollouts()`: 256 tokens,
            block 32, 128 steps, temperature 0.9).
        mask_id, eos_id: the model's mask and EOS ids (the completion mask ends at EOS).
        generator: sampling noise (on the model's device), shared by all sampler calls.
        generation_batch_size: sequences sampled per call (None: all N at once).
        max_prompt_length: prompts are left-truncated to this many tokens (d1: 200).
        logit_shift: True for Dream-style models.
        device: where the tensors go (default: the model's device).
        stats: optional `SamplingStats` that receives the sampler's work (compute accounting).
        call_generator: instead of `generator`, `call_generator(first_row)` gives the noise
            generator of the sampler call whose first row is `first_row` of this batch. The
            trainer keys it by the row's index in the generation batch of all processes, so a
            call's noise does not depend on the process count (as long as calls hold the same
            rows: `generation_batch_size` dividing each process's share).
        reward_timeout_s: wall-clock limit of each reward / scorer call on one completion
            (None: none); a call cut short scores 0 and is counted (module doc).
        on_progress: called with a short description ("sampling 1/2, block 3/8") after every
            sampler step and before scoring, for progress bars.
    """
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1; got {num_generations}.")
    if device is None:
        device = next(model.parameters()).device
    rows = [it for it in items for _ in range(num_generations)]
    unique_texts, unique_ids, unique_mask, truncated = encode_items(
        tokenizer, items, max_prompt_length=max_prompt_length, device=device
    )
    texts = [t for t in unique_texts for _ in range(num_generations)]
    prompt_ids = unique_ids.repeat_interleave(num_generations, dim=0)
    prompt_mask = unique_mask.repeat_interleave(num_generations, dim=0)
    if generator is not None and call_generator is not None:
        raise ValueError("Pass either generator or call_generator, not both.")
    n = prompt_ids.shape[0]
    step = n if not generation_batch_size else int(generation_batch_size)
    with generation_context(model) as policy:
        was_training = policy.training
        policy.eval()
        try:
            outs = []
            calls, blocks = -(-n // step), sampler.num_blocks
            for start in range(0, n, step):
                sl = slice(start, start + step)
                trace = None
                if on_progress is not None:
                    where = f"sampling {start // step + 1}/{calls}, block"

                    def trace(_step: int, block: int, _x: torch.Tensor, where=where) -> None:
                        on_progress(f"{where} {block + 1}/{blocks}")

                out = sample(
                    policy,
                    prompt_ids[sl],
                    prompt_mask[sl],
                    config=sampler,
                    mask_id=mask_id,
                    generator=call_generator(start) if call_generator else generator,
                    logit_shift=logit_shift,
                    stats=stats,
                    eos_id=eos_id,
                    trace=trace,
                )
                outs.append(out[:, prompt_ids.shape[1] :])
            completion_ids = torch.cat(outs, dim=0)
        finally:
            policy.train(was_training)
    comp_mask = completion_mask(completion_ids, eos_id)
    completions = decode_completions(tokenizer, completion_ids)
    if on_progress is not None:
        on_progress(f"scoring {len(completions)} completions")
    rewards, per_func, timeouts = score_completions(completions, rows, timeout_s=reward_timeout_s)
    correct, score_timeouts = score_correctness(completions, rows, timeout_s=reward_timeout_s)
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=comp_mask,
        prompts=texts,
        completions=completions,
        items=rows,
        rewards=rewards.to(device),
        rewards_per_func={k: v.to(device) for k, v in per_func.items()},
        num_generations=num_generations,
        truncated_prompts=truncated,
        correct=correct.to(device),
        reward_timeouts=timeouts + score_timeouts,
    )
