"""`train_grpo(config)`: the diffu-GRPO training loop (docs/method.md §4) on the shared training toolkit.

Per generation batch g (every `num_iterations` optimizer steps):

1. draw the next prompts (`PromptSampler`; one or several tasks), G rollouts each, scored by
   the tasks' reward components (`rollout.generate_rollouts`);
2. advantages `r - mean(group)` (`advantages.compute_advantages`) over the rewards of all
   processes;
3. the objective's noise (d1: a prompt mask) for every inner iteration k, the old policy's
   log-probs for k >= 1 and the reference's for every k (`update.prepare_policy_batch`:
   before any update, without gradient, in chunks; `grpo.objective` picks the objective).

Several processes: the prompts of a generation batch are drawn once for all and process r takes
its contiguous share; every random draw is keyed by a row's index in that global batch (sampler
noise per sampler call, prompt masks per completion), advantages and loss weights are computed
over the global batch, and gradients are averaged, so W processes compute what one process with
the same global batch computes (up to float reduction order; LoRA dropout, the one draw from
torch's global RNG, differs per process). Rollouts and every no-grad log-prob pass run inside
`generation.generation_context`, which makes sharded (FSDP / ZeRO-3) parameters whole.

Then optimizer step s = g * mu + k runs inner iteration k over the whole generation batch in
micro-batches (`update.policy_step`), clips the gradient norm and steps AdamW and the schedule.

Logged every `logging_steps` to `metrics.jsonl` (+ TensorBoard / W&B): loss, KL, clip fractions,
ratio statistics, gradient norm, learning rate, seconds per phase, compute so far (generations,
forward and backward passes, tokens); with each new generation batch: reward mean/std overall,
per task and per reward component, accuracy per task (the task's evaluation scorer), completion
length, zero-std group fraction and the share of non-zero advantages (healthy: 0.9-1.0).
Sample completions with their rewards go to `samples.jsonl` every `log_completions_steps`.

The loop is `GRPORecipe`: setup, then the named phases `rollout` (1-2), `prepare` (3), `update`
(one inner iteration) and `log_samples`, and the recipe is the run's checkpoint participant
(`state_dict` / `load_state_dict`, `save_files` / `load_files` for the in-flight batch, which
`PolicyBatch.save` / `PolicyBatch.load` persist).

Checkpoints (`checkpoints/checkpoint-{step}`) hold the adapter or full weights, optimizer,
schedule, RNG states, the prompt stream's position, the compute counters and, mid generation
batch, the batch itself (`grpo_batch_{rank}.pt`), so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from d1.config import ConfigError, config_or_load
from d1.core.sampling import SamplingStats
from d1.recipes.grpo.advantages import AdvantageResult, compute_advantages
from d1.recipes.grpo.config import GRPOConfig
from d1.recipes.grpo.launch import LaunchPlan, check_launch
from d1.recipes.grpo.loss import LossStats, token_weights
from d1.recipes.grpo.rollout import PromptSampler, Rollout, generate_rollouts, score_correctness
from d1.recipes.grpo.update import (
    ComputeCounter,
    PolicyBatch,
    Reference,
    UpdateSettings,
    policy_step,
    prepare_policy_batch,
)
from d1.training.data import keyed_generator
from d1.training.run import TrainingRun
from d1.training.tracking import SAMPLES_FILE

__all__ = ["GRPORecipe", "GRPOResult", "train_grpo"]

logger = logging.getLogger(__name__)

BATCH_FILE = "grpo_batch_{rank}.pt"


@dataclass
class GRPOResult:
    """What a finished (or resumed and finished) run returns."""

    run_dir: Path
    step: int
    last_checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    compute: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------- setup


def _load_tasks(cfg: GRPOConfig) -> list[tuple[str, Any, list, float]]:
    from d1.tasks import get_task

    pools = []
    for spec in cfg.tasks:
        task = get_task(spec.name, **spec.options)
        examples = task.load(spec.split, path=spec.path, limit=spec.limit, seed=cfg.train.seed)
        if not examples:
            raise ConfigError(f"task {spec.name!r} has no {spec.split!r} examples.")
        pools.append((spec.name.lower(), task, examples, spec.weight))
    return pools


# ----------------------------------------------------------------------------- metrics


def _rollout_metrics(
    rollout: Rollout,
    rewards: torch.Tensor,
    adv: AdvantageResult,
    row_offset: int,
    accelerator: Any,
    eos_id: int | None,
    task_names: list[str],
    reward_keys: list[str],
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Reward / accuracy / length / advantage statistics of a generation batch (all processes).

    `rewards` and `adv` are already the whole generation batch's (all processes); this
    process's rows start at `row_offset`. `task_names` and `reward_keys` ("task/component") are
    the run's, identical on every process, so every process makes the same collective calls
    whatever tasks its own prompts came from.
    """
    ids = rollout.completion_ids
    no_eos = (
        ~(ids == eos_id).any(dim=1)
        if eos_id is not None
        else torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    )
    lengths = accelerator.gather(rollout.completion_mask.sum(1).float())
    metrics: dict[str, float] = {
        "reward": float(rewards.mean()),
        "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "reward_group_std": float(adv.group_std.float().mean()),
        "completion_length": float(lengths.mean()),
        "completion_length_max": float(lengths.max()),
        "completion_no_eos_fraction": float(accelerator.gather(no_eos.float()).mean()),
        "advantage/zero_std_group_fraction": adv.zero_std_fraction,
        "advantage/nonzero_fraction": adv.nonzero_fraction,
        "reward/timeouts": float(
            accelerator.gather(
                torch.tensor([float(rollout.reward_timeouts)], device=rewards.device)
            ).sum()
        ),
        "prompts_truncated": float(
            accelerator.gather(
                torch.tensor([float(rollout.truncated_prompts)], device=rewards.device)
            ).sum()
        ),
    }
    n = len(rollout)
    for key in reward_keys:
        column = rollout.rewards_per_func.get(key)
        if column is None:
            column = torch.full((n,), float("nan"), device=rewards.device)
        col = accelerator.gather(column.float())
        valid = col[~torch.isnan(col)]
        if valid.numel():
            metrics[f"rewards/{key}"] = float(valid.mean())
            metrics[f"rewards/{key}_std"] = float(valid.std()) if valid.numel() > 1 else 0.0
    # Per task: total reward and the evaluation scorer's accuracy.
    if rollout.correct is not None:
        correct = rollout.correct.float().to(rewards.device)
    else:
        correct, _ = score_correctness(rollout.completions, rollout.items)
        correct = correct.to(rewards.device)
    task_ids = torch.tensor(
        [task_names.index(it.task_name) for it in rollout.items], device=rewards.device
    )
    all_correct = accelerator.gather(correct)
    all_task = accelerator.gather(task_ids)
    all_rewards = rewards
    metrics["accuracy"] = float(all_correct.mean())
    for t, name in enumerate(task_names):
        sel = all_task == t
        if sel.any():
            metrics[f"reward/{name}"] = float(all_rewards[sel].mean())
            if int(sel.sum()) > 1:
                metrics[f"reward/{name}_std"] = float(all_rewards[sel].std())
            metrics[f"accuracy/{name}"] = float(all_correct[sel].mean())
    samples = []
    for i, (c, it) in enumerate(zip(rollout.completions, rollout.items, strict=True)):
        samples.append(
            {
                "task": it.task_name,
                "example_id": it.example.id,
                "prompt": rollout.prompts[i],
                "completion": c,
                "reward": float(rollout.rewards[i]),
                "rewards": {
                    k.split("/", 1)[1]: float(v[i])
                    for k, v in rollout.rewards_per_func.items()
                    if not math.isnan(float(v[i]))
                },
                "advantage": float(adv.advantages[row_offset + i]),
                "correct": float(correct[i]),
            }
        )
    return metrics, samples


def _peak_memory_gb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


# ----------------------------------------------------------------------------- the loop


def train_grpo(
    config: GRPOConfig | str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> GRPOResult:
    """Run diffu-GRPO (docs/method.md §4); see the module docstring.

    Args:
        config: a `GRPOConfig`, or a YAML path (None: the paper defaults) read with `overrides`.
        overrides: `key=value` strings (only with a path / None).

    Returns:
        A `GRPOResult` (run folder, final step, last checkpoint, last logged metrics, compute).
    """
    cfg = config_or_load(GRPOConfig, config, overrides)
    # The launch first (process count, backend, 4-bit), then the tasks: both fail before a
    # model is loaded.
    check_launch(cfg, LaunchPlan.from_env())
    pools = _load_tasks(cfg)
    run = TrainingRun(
        cfg, train=cfg.train, optim=cfg.optim, model_cfg=cfg.model, lora=cfg.lora, command="grpo"
    )
    with run:  # the run's global-RNG scope (LoRA dropout), restored on exit
        return _run_grpo(run, cfg, pools)


def _run_grpo(run: TrainingRun, cfg: GRPOConfig, pools: list) -> GRPOResult:
    """The diffu-GRPO loop inside the run's RNG scope (see `train_grpo`)."""
    return GRPORecipe(run, cfg, pools).train()


class GRPORecipe:
    """diffu-GRPO as named phases over a `TrainingRun` (torchtune's recipe shape).

    - `__init__` (setup): the reference policy, the update settings, the prompt stream, the
      compute counter; registers itself as the run's checkpoint participant.
    - `rollout(g)`: G completions per prompt of generation batch g, scored; advantages and loss
      weights over the whole batch of every process.
    - `prepare(rollout, g)`: the objective's noise for every inner iteration and the old /
      reference log-probs (`update.prepare_policy_batch`).
    - `update(k)`: one inner iteration over the batch, the gradient step.
    - `log(...)`: metrics, samples and the progress bar.
    - checkpoint participant (`state_dict` / `load_state_dict` / `save_files` / `load_files`):
      the prompt stream's position, the compute counters and, mid generation batch, the batch.
    - `train()`: the loop.
    """

    def __init__(self, run: TrainingRun, cfg: GRPOConfig, pools: list) -> None:
        self.run, self.cfg = run, cfg
        gcfg, tcfg = cfg.grpo, cfg.train
        acc = run.accelerator
        self.acc, self.device = acc, acc.device
        self.world, self.rank = acc.num_processes, acc.process_index
        ga = cfg.gradient_accumulation_steps(self.world)
        run.check_accumulation(ga)
        per_device = tcfg.per_device_batch_size
        self.ga, self.per_device = ga, per_device
        self.g_size = gcfg.num_generations
        self.prompts_per_process = per_device * ga // self.g_size
        self.mu = gcfg.num_iterations
        self.max_steps = int(tcfg.max_steps or 0)

        frozen = None
        if cfg.lora is None and gcfg.beta > 0:
            # Full fine-tuning: the reference is a frozen copy of the initial policy.
            frozen = copy.deepcopy(run.model).eval().requires_grad_(False)
            if self.device.type == "cuda" and acc.mixed_precision == "bf16":
                frozen = frozen.to(torch.bfloat16)  # it only ever runs under bf16 autocast
        run.setup_optimization(self.max_steps)
        self.model = run.model  # as prepared; no-grad passes unwrap it in `generation_context`
        self.reference = Reference(self.model, frozen) if gcfg.beta > 0 else None

        self.settings = UpdateSettings(
            num_iterations=self.mu,
            micro_batch_size=per_device,
            num_generations=self.g_size,
            mask_id=run.spec.mask_token_id,
            seed=tcfg.seed,
            p_mask=gcfg.p_mask_prompt,
            random_masking=gcfg.random_masking,
            epsilon=gcfg.epsilon,
            epsilon_high=gcfg.epsilon_high,
            beta=gcfg.beta,
            aggregation=gcfg.loss_aggregation,
            estimator=gcfg.estimator,
            logit_shift=run.spec.logit_shift,
            logprob_chunk_size=gcfg.logprob_chunk_size,
            row_offset=self.rank * per_device * ga,  # this process's first row in the batch
            objective=gcfg.objective,
            objective_options=dict(gcfg.objective_options),
        )
        self.rows = slice(self.settings.row_offset, self.settings.row_offset + per_device * ga)
        self.prompt_sampler = PromptSampler(pools, seed=tcfg.seed)
        self.task_names = [p[0] for p in pools]
        self.reward_keys = [
            f"{name}/{comp}" for name, task, _, _ in pools for comp in task.reward_functions()
        ]
        self.counter = ComputeCounter()
        self.global_batch = per_device * ga * self.world
        run.state.global_batch = self.global_batch
        run.state.num_examples = sum(len(p[2]) for p in pools)
        self.batch: PolicyBatch | None = None
        self.batch_name = BATCH_FILE.format(rank=self.rank)
        run.add_state(self)

    # ---- checkpoint participant
    def state_dict(self) -> dict[str, Any]:
        return {
            "prompt_sampler": self.prompt_sampler.state_dict(),
            "compute": self.counter.as_dict(),
        }

    def load_state_dict(self, extra: dict[str, Any]) -> None:
        if self.run.state.global_batch != self.global_batch:
            raise ValueError(
                f"The checkpoint was trained with {self.run.state.global_batch} completions per "
                f"step; this run has {self.global_batch}: it cannot be resumed exactly."
            )
        self.prompt_sampler.load_state_dict(extra["prompt_sampler"])
        self.counter.load(extra.get("compute", {}))

    def save_files(self, folder: Path) -> None:
        if self.batch is not None and self.run.state.step % self.mu:
            self.batch.save(folder / self.batch_name)

    def load_files(self, folder: Path) -> None:
        if self.run.state.step % self.mu == 0:
            return
        path = folder / self.batch_name
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} was saved inside a generation batch but holds no {self.batch_name}."
            )
        self.batch = PolicyBatch.load(path, self.settings, self.device)

    # ---- phases
    def _rollout_noise(self, gen_index: int) -> Any:
        # Keyed by the global row where each sampler call starts, not by the process.
        return lambda start: keyed_generator(
            self.cfg.train.seed,
            "grpo-rollout",
            gen_index,
            self.settings.row_offset + start,
            device=self.device,
        )

    def rollout(self, gen_index: int) -> tuple[Rollout, torch.Tensor, AdvantageResult, Any]:
        """Generation batch `gen_index`: prompts, rollouts, rewards of every process, advantages
        and this process's loss weights."""
        run, acc, gcfg = self.run, self.acc, self.cfg.grpo
        items = self.prompt_sampler.next_items(self.prompts_per_process * self.world)
        mine = slice(
            self.rank * self.prompts_per_process, (self.rank + 1) * self.prompts_per_process
        )
        sampling = SamplingStats()
        bar = run.progress is not None and run.progress.active
        with acc.autocast(), run.phase("rollout") as show:
            rollout = generate_rollouts(
                self.model,
                run.tokenizer,
                items[mine],
                num_generations=self.g_size,
                sampler=gcfg.sampler,
                mask_id=run.spec.mask_token_id,
                eos_id=run.spec.eos_token_id,
                generator=None,
                call_generator=self._rollout_noise(gen_index),
                generation_batch_size=gcfg.generation_batch_size or self.per_device,
                max_prompt_length=gcfg.max_prompt_length,
                logit_shift=run.spec.logit_shift,
                device=self.device,
                stats=sampling,
                reward_timeout_s=gcfg.reward_timeout_s,
                on_progress=(lambda text: show(f"rollout: {text}")) if bar else None,
            )
        # Advantages and loss weights over the whole generation batch (every process's rows,
        # in process order); this process keeps its own rows. Weights are scaled by the process
        # count because the gradients are averaged across processes.
        all_rewards = acc.gather(rollout.rewards.float())
        adv = compute_advantages(all_rewards, self.g_size, gcfg.scale_rewards)
        weights = (
            token_weights(
                acc.gather(rollout.completion_mask.float()),
                aggregation=gcfg.loss_aggregation,
                num_generations=self.g_size,
            )[self.rows]
            * self.world
        )
        self.counter.generations += len(rollout)
        self.counter.generation_batches += 1
        self.counter.add_sampling(sampling)
        return rollout, all_rewards, adv, weights

    def prepare(
        self, rollout: Rollout, adv: AdvantageResult, weights: torch.Tensor, gen_index: int
    ) -> PolicyBatch:
        """The noise of every inner iteration and the old / reference log-probs (no gradient)."""
        with self.acc.autocast(), self.run.phase("old / reference log-probs"):
            batch = prepare_policy_batch(
                self.model,
                prompt_ids=rollout.prompt_ids,
                prompt_mask=rollout.prompt_mask,
                completion_ids=rollout.completion_ids,
                completion_mask=rollout.completion_mask,
                advantages=adv.advantages[self.rows].to(self.device),
                settings=self.settings,
                generation_batch=gen_index,
                counter=self.counter,
                weights=weights.to(self.device),
                reference=self.reference,
            )
        self.model.train()
        return batch

    def update(self, k: int) -> tuple[LossStats, dict[str, Any]]:
        """Inner iteration k over the generation batch, then the optimizer step."""
        run = self.run
        assert self.batch is not None
        tokens_before = self.counter.forward_tokens
        with self.acc.autocast():
            stats = policy_step(
                self.model,
                self.batch,
                k,
                settings=self.settings,
                backward=run.backward,
                reference=self.reference,
                counter=self.counter,
                accumulate=lambda last: run.accumulation(last=last),
            )
        opt = run.optimizer_step(loss=stats.totals.get("loss", 0.0))
        self.counter.optimizer_steps += 1
        run.state.tokens_seen += (self.counter.forward_tokens - tokens_before) * self.world
        run.state.examples_seen = self.counter.generations * self.world
        run.state.epoch = int(max(self.prompt_sampler.epochs().values()))
        return stats, opt

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        """Sample completions to `samples.jsonl` every `log_completions_steps`."""
        gcfg, run = self.cfg.grpo, self.run
        every = gcfg.log_completions_steps
        last = int(run.state.extra.get("last_sample_log", -(10**9)))
        if every and step - last >= every:
            run.state.extra["last_sample_log"] = step
            if run.is_main:
                with (run.run_dir / SAMPLES_FILE).open("a", encoding="utf-8") as f:
                    for sample in samples[: gcfg.num_completions_to_log]:
                        f.write(json.dumps({"step": step, **sample}) + "\n")

    def _announce(self) -> None:
        if self.run.is_main:
            logger.info(
                "diffu-GRPO: %d prompts x %d completions per generation batch (%d per optimizer "
                "step = %d per device x %d accumulation x %d processes), %d inner iterations, "
                "%d steps; rollouts: %s.",
                self.prompts_per_process * self.world,
                self.g_size,
                self.global_batch,
                self.per_device,
                self.ga,
                self.world,
                self.mu,
                self.max_steps,
                self.cfg.grpo.sampler.describe(),
            )

    # ---- the loop
    def train(self) -> GRPOResult:
        run, acc, tcfg = self.run, self.acc, self.cfg.train
        run.resume()  # restores this recipe's state too (a participant)
        self._announce()
        run.start_tracking()
        pending: dict[str, float] = {}
        shown: dict[str, float] = {}  # the latest reward / accuracy, next to the progress bar
        last_metrics: dict[str, float] = {}
        timing = dict.fromkeys(("rollout", "logps", "update"), 0.0)  # logps: old + reference
        t_window, window_steps = time.perf_counter(), 0
        self.model.train()
        while run.state.step < self.max_steps:
            step = run.state.step
            k, gen_index = step % self.mu, step // self.mu
            if k == 0:
                t0 = time.perf_counter()
                rollout, all_rewards, adv, weights = self.rollout(gen_index)
                t1 = time.perf_counter()
                timing["rollout"] += t1 - t0
                self.batch = self.prepare(rollout, adv, weights, gen_index)
                timing["logps"] += time.perf_counter() - t1
                metrics, samples = _rollout_metrics(
                    rollout,
                    all_rewards,
                    adv,
                    self.settings.row_offset,
                    acc,
                    run.spec.eos_token_id,
                    self.task_names,
                    self.reward_keys,
                )
                pending.update(metrics)
                self.log_samples(step, samples)

            t2 = time.perf_counter()
            stats, opt = self.update(k)
            timing["update"] += time.perf_counter() - t2
            window_steps += 1
            run.update_progress()  # the bar moves every step; values change at logging steps
            if run.due(tcfg.logging_steps):
                now = time.perf_counter()
                logged = {
                    "train/loss": run.mean_across_processes(stats.totals.get("loss", 0.0)),
                    **{f"train/{key}": v for key, v in _merge_loss_stats(stats, acc).items()},
                    "train/grad_norm": opt["grad_norm"],
                    "train/lr": opt["lr"],
                    **run.nonfinite_metrics(),
                    "train/inner_iteration": k,
                    "train/generation_batch": gen_index,
                    "train/epoch": max(self.prompt_sampler.epochs().values()),
                    "train/tokens_per_s": run.throughput(),
                    "time/seconds_per_step": (now - t_window) / window_steps,
                    # Per optimizer step; rollout and old log-probs amortised over the window.
                    **{f"time/{key}_seconds": v / window_steps for key, v in timing.items()},
                    **{
                        f"compute/{key}": v
                        for key, v in _all_processes(self.counter, self.world).items()
                    },
                    **{f"train/{key}": v for key, v in pending.items()},
                }
                peak = _peak_memory_gb(self.device)
                if peak is not None:
                    logged["memory/peak_gb"] = peak
                t_window, window_steps = now, 0
                pending = {}
                timing = dict.fromkeys(timing, 0.0)
                run.log(logged)
                last_metrics = logged
                # The reward and accuracy of the latest generation batch tell RL progress; the
                # clipped loss hovers near 0 by construction (advantages are centred).
                shown.update(
                    {
                        name: logged[key]
                        for name, key in (
                            ("reward", "train/reward"),
                            ("accuracy", "train/accuracy"),
                        )
                        if key in logged
                    }
                )
                run.update_progress(**shown, loss=logged["train/loss"], lr=opt["lr"])
            if tcfg.save_steps and run.due(tcfg.save_steps) and run.state.step < self.max_steps:
                run.save()
        run_dir = run.finish()
        return GRPOResult(
            run_dir=run_dir,
            step=run.state.step,
            last_checkpoint=run.checkpoints.latest(),
            metrics=last_metrics,
            compute=_all_processes(self.counter, self.world),
        )


def _all_processes(counter: ComputeCounter, world: int) -> dict[str, int]:
    """The compute of all processes: work counts (every process does the same amount) times the
    process count; generation batches and optimizer steps are shared, counted once."""
    shared = ("generation_batches", "optimizer_steps")
    return {k: v if k in shared else v * world for k, v in counter.as_dict().items()}


def _merge_loss_stats(stats: LossStats, acc: Any) -> dict[str, float]:
    """Token-weighted loss statistics over all processes (sums reduced, extremes gathered)."""
    if acc.num_processes == 1:
        return stats.summary()
    device = acc.device
    merged = LossStats()
    for key in ("tokens", "kl", "clip_low", "clip_high", "clip_region", "ratio"):
        if key != "tokens" and key not in stats.totals:  # a ratio-free objective (wd1)
            continue  # (the same keys on every process: one objective for all)
        t = torch.tensor([stats.totals.get(key, 0.0)], device=device, dtype=torch.float64)
        merged.totals[key] = float(acc.reduce(t, reduction="sum"))
    if "ratio_min" not in stats.totals:
        return merged.summary()
    ext = torch.tensor(
        [stats.totals.get("ratio_min", math.inf), -stats.totals.get("ratio_max", -math.inf)],
        device=device,
        dtype=torch.float64,
    )
    ext = acc.gather(ext).view(-1, 2)
    merged.totals["ratio_min"] = float(ext[:, 0].min())
    merged.totals["ratio_max"] = float(-ext[:, 1].min())
    return merged.summary()
