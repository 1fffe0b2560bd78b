"""`train_sft`: masked SFT (docs/method.md §3) on the shared training toolkit.

Per micro-batch: each sequence's response is masked by LLaDA's forward process (`t ~ U(0, 1)`,
mask probability `(1 - eps) t + eps`) with noise drawn from a generator keyed by (seed, epoch,
example), the model predicts the masked tokens from one forward pass, and `masked_sft_loss`
weights each masked token's cross-entropy by 1/p and normalises by the response length.
With `semi_ar_fraction` > 0 that share of rows is masked block-wise instead
(`d1.core.masking.blockwise_forward_process`), the states LLaDA's block sampler visits.

Evaluation (every `train.eval_steps` and at the end): the same loss on the held-out split with
a fixed, evenly spaced t grid (held-out example i of n gets `t = i / (n - 1)`, as d1's
`torch.linspace(0, 1, n)`) and fixed masks, so eval losses are comparable across steps; the
checkpoint with the lowest `eval/loss` is tracked as the best. Optionally, greedy-decoding
accuracy on held-out task examples (`eval_generation`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from d1.config import ConfigError, config_or_load
from d1.core.masking import blockwise_forward_process, forward_process
from d1.core.models.forward import model_logits
from d1.recipes.sft.config import SFTConfig
from d1.recipes.sft.data import SFTCollator, SFTData, build_sft_data
from d1.recipes.sft.loss import SFTLoss, masked_sft_loss
from d1.training.data import (
    ListDataset,
    StepSchedule,
    iterate_micro_batches,
    keyed_generator,
    loader_generator,
    prepare_train_loader,
)
from d1.training.run import TrainingRun
from d1.training.tracking import SAMPLES_FILE

__all__ = ["eval_time_grid", "resolve_accumulation", "sft_batch_loss", "train_sft"]

logger = logging.getLogger(__name__)


def sft_batch_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    mask_id: int,
    eps: float,
    seed: int,
    key: object,
    logit_shift: bool = False,
    t: torch.Tensor | None = None,
    semi_ar_fraction: float = 0.0,
    block_length: int = 32,
) -> SFTLoss:
    """Forward process + one forward pass + `masked_sft_loss` for a collated batch.

    Each row's noise comes from `keyed_generator(seed, key, row's dataset index)`, so a row is
    masked the same way whatever batch or process it lands in (`key` = e.g. ("train", epoch)).

    Args:
        t: optional [B] fixed times (evaluation grid); None draws `t ~ U(0, 1)` per row.
        semi_ar_fraction: share of rows masked by `blockwise_forward_process` (blocks of
            `block_length`) instead of LLaDA's uniform process; 0 (the paper) draws exactly
            as before. Rows with a fixed `t` (evaluation) always use the uniform process.
    """
    ids = batch["input_ids"]
    resp = batch["response_mask"]
    mixed = semi_ar_fraction > 0.0 and t is None
    noisy, masked, p_mask = [], [], []
    for b in range(ids.shape[0]):
        gen = keyed_generator(seed, key, int(batch["index"][b]))
        row_ids, row_resp = ids[b : b + 1], resp[b : b + 1]
        if mixed and float(torch.rand(1, generator=gen)) < semi_ar_fraction:
            sample = blockwise_forward_process(
                row_ids,
                row_resp,
                mask_id=mask_id,
                block_length=block_length,
                generator=gen,
                eps=eps,
            )
        else:
            sample = forward_process(
                row_ids,
                row_resp,
                mask_id=mask_id,
                generator=gen,
                eps=eps,
                t=None if t is None else t[b : b + 1],
            )
        noisy.append(sample.noisy_ids)
        masked.append(sample.is_masked)
        # Mixed batches carry per-token probabilities ([1, L] rows) for both processes.
        p_row = sample.p_mask
        p_mask.append(p_row[:, None].expand_as(row_ids) if mixed and p_row.dim() == 1 else p_row)
    logits = model_logits(
        model, torch.cat(noisy), batch.get("attention_mask"), logit_shift=logit_shift
    )
    return masked_sft_loss(logits, ids, torch.cat(masked), torch.cat(p_mask), resp)


def eval_time_grid(indices: torch.Tensor, n: int) -> torch.Tensor:
    """Held-out example i of n gets t = i / (n - 1) (evenly spaced on [0, 1], d1's linspace)."""
    return indices.float() / max(n - 1, 1)


def resolve_accumulation(cfg: SFTConfig, num_processes: int) -> int:
    """Gradient-accumulation steps: from `global_batch_size` when set, else the config's."""
    if cfg.global_batch_size is None:
        return cfg.train.gradient_accumulation_steps
    per_step = cfg.train.per_device_batch_size * num_processes
    if cfg.global_batch_size % per_step:
        raise ConfigError(
            f"config key 'global_batch_size': {cfg.global_batch_size} is not a multiple of "
            f"per_device_batch_size x processes = {cfg.train.per_device_batch_size} x "
            f"{num_processes}; change global_batch_size or the launch."
        )
    return cfg.global_batch_size // per_step


@torch.no_grad()
def evaluate_loss(
    run: TrainingRun, loader: DataLoader, cfg: SFTConfig, num_val: int
) -> dict[str, float]:
    """Mean eval loss (and unweighted masked CE) over the held-out split, fixed t grid/masks."""
    model = run.model
    was_training = model.training
    model.eval()
    per_seq, unweighted = [], []
    for batch in loader:
        t = eval_time_grid(batch["index"], num_val)
        with run.accelerator.autocast():
            out = sft_batch_loss(
                model,
                batch,
                mask_id=run.spec.mask_token_id,
                eps=cfg.eps,
                seed=cfg.train.seed,
                key="eval",
                logit_shift=run.spec.logit_shift,
                t=t,
            )
        per_seq.append(run.accelerator.gather_for_metrics(out.per_sequence.float()))
        unweighted.append(run.accelerator.gather_for_metrics(out.unweighted.float()))
    model.train(was_training)
    return {
        "eval/loss": float(torch.cat(per_seq).mean()),
        "eval/masked_ce": float(torch.cat(unweighted).mean()),
    }


@torch.no_grad()
def evaluate_generation(run: TrainingRun, data: SFTData, cfg: SFTConfig) -> dict[str, float]:
    """Decoding accuracy on the first held-out task examples (main process decodes), with
    `eval_generation.sampler` (greedy by default; sampled noise is keyed by the step)."""
    from d1.core.sampling import generate_text
    from d1.training.data import keyed_generator

    gen_cfg = cfg.eval_generation
    assert gen_cfg is not None and data.task is not None
    metrics: dict[str, float] = {}
    if run.is_main:
        model = run.unwrapped_model()
        was_training = model.training
        model.eval()
        exs = data.validation_examples[: gen_cfg.num_examples]
        prompts = data.validation_prompts[: gen_cfg.num_examples]
        completions: list[str] = []
        device = next(model.parameters()).device
        gen = keyed_generator(cfg.train.seed, "sft-eval-generation", run.state.step, device=device)
        for i in range(0, len(prompts), gen_cfg.batch_size):
            with run.accelerator.autocast():
                completions += generate_text(
                    model,
                    run.tokenizer,
                    prompts[i : i + gen_cfg.batch_size],
                    config=gen_cfg.sampler,
                    mask_id=run.spec.mask_token_id,
                    generator=gen,
                    logit_shift=run.spec.logit_shift,
                )
        model.train(was_training)
        scores = [data.task.score(c, ex) for c, ex in zip(completions, exs, strict=True)]
        metrics = {f"eval/{k}": float(v) for k, v in data.task.aggregate(scores).items()}
        with (run.run_dir / SAMPLES_FILE).open("a", encoding="utf-8") as f:
            for c, ex, s in list(zip(completions, exs, scores, strict=True))[
                : gen_cfg.num_samples_logged
            ]:
                row = {"step": run.state.step, "id": ex.id, "completion": c, "correct": s.correct}
                f.write(json.dumps(row) + "\n")
    run.accelerator.wait_for_everyone()
    return metrics


def train_sft(
    config: SFTConfig | str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Path:
    """Run masked SFT; returns the run folder (checkpoints, metrics.jsonl, config.yaml).

    Args:
        config: an `SFTConfig`, or a YAML path (None: the defaults) read with `overrides`.
        overrides: `key=value` strings (only with a path / None).
    """
    cfg = config_or_load(SFTConfig, config, overrides)
    run = TrainingRun(
        cfg, train=cfg.train, optim=cfg.optim, model_cfg=cfg.model, lora=cfg.lora, command="sft"
    )
    with run:
        return _run_sft(run, cfg)


def _run_sft(run: TrainingRun, cfg: SFTConfig) -> Path:
    """The SFT loop inside the run's RNG scope (see `train_sft`)."""
    acc = run.accelerator
    tcfg = cfg.train
    grad_accum = resolve_accumulation(cfg, acc.num_processes)
    run.check_accumulation(grad_accum)

    data = build_sft_data(cfg.data, run.tokenizer, seed=tcfg.seed)
    collator = SFTCollator(run.spec.eos_token_id, cfg.data.max_length, cfg.data.pad_to)
    schedule = StepSchedule(
        num_examples=len(data.train),
        per_device_batch_size=tcfg.per_device_batch_size,
        gradient_accumulation_steps=grad_accum,
        num_processes=acc.num_processes,
    )
    schedule.check()
    total_steps = schedule.total_steps(tcfg.num_epochs, tcfg.max_steps)
    if run.is_main:
        logger.info(
            "SFT: %d train / %d held-out examples (dropped as too long: %d / %d); global batch "
            "%d = %d per device x %d accumulation x %d processes; %d steps per epoch, %d steps.",
            len(data.train),
            len(data.validation),
            len(data.report_train.dropped_ids),
            len(data.report_validation.dropped_ids),
            schedule.global_batch,
            tcfg.per_device_batch_size,
            grad_accum,
            acc.num_processes,
            schedule.steps_per_epoch,
            total_steps,
        )
    train_loader = prepare_train_loader(
        ListDataset(data.train),
        collator,
        batch_size=tcfg.per_device_batch_size,
        seed=tcfg.seed,
        accelerator=acc,
    )
    eval_loader = DataLoader(
        ListDataset(data.validation),
        batch_size=tcfg.per_device_batch_size,
        shuffle=False,
        collate_fn=collator,
        generator=loader_generator(tcfg.seed),
    )
    (eval_loader,) = run.setup_optimization(total_steps, eval_loader)
    run.state.global_batch = schedule.global_batch
    run.state.num_examples = len(data.train)
    if run.resume() and (
        run.state.global_batch != schedule.global_batch or run.state.num_examples != len(data.train)
    ):
        raise ValueError(
            "The checkpoint was trained with a different global batch or training set "
            f"(global batch {run.state.global_batch}, {run.state.num_examples} examples; now "
            f"{schedule.global_batch}, {len(data.train)}): it cannot be resumed exactly."
        )
    run.start_tracking()

    def evaluate() -> dict[str, float]:
        with run.phase(f"eval loss (step {run.state.step})") as show:
            metrics = evaluate_loss(run, eval_loader, cfg, len(data.validation))
            if cfg.eval_generation is not None:
                show(f"eval generation (step {run.state.step})")
                metrics.update(evaluate_generation(run, data, cfg))
        return metrics

    if run.state.step == 0:
        run.log(evaluate(), step=0)  # the untrained model's held-out loss

    micro = iterate_micro_batches(
        train_loader,
        acc,
        start_epoch=run.state.epoch,
        start_micro_batch=run.state.micro_batch,
        micro_batches_per_epoch=schedule.micro_batches_per_epoch,
    )
    model = run.model
    model.train()
    window: list[SFTLoss] = []
    step_losses: list[SFTLoss] = []
    while run.state.step < total_steps:
        for j in range(grad_accum):
            epoch, k, batch = next(micro)
            with run.accumulation(last=j == grad_accum - 1):
                out = sft_batch_loss(
                    model,
                    batch,
                    mask_id=run.spec.mask_token_id,
                    eps=cfg.eps,
                    seed=tcfg.seed,
                    key=("train", epoch),
                    logit_shift=run.spec.logit_shift,
                    semi_ar_fraction=cfg.semi_ar_fraction,
                    block_length=cfg.semi_ar_block_length,
                )
                run.backward(out.loss / grad_accum)
            step_losses.append(
                SFTLoss(
                    out.loss.detach(), out.per_sequence.detach(), out.unweighted, out.num_masked
                )
            )
            run.state.tokens_seen += batch["input_ids"].numel() * acc.num_processes
        stats = run.optimizer_step(loss=torch.stack([w.loss for w in step_losses]).sum())
        if not stats["skipped"]:  # a skipped step's NaN stays out of the logged means
            window += step_losses
        step_losses = []
        run.state.examples_seen += schedule.global_batch
        run.state.epoch, run.state.micro_batch = (
            (epoch + 1, 0) if k + 1 == schedule.micro_batches_per_epoch else (epoch, k + 1)
        )

        run.update_progress()  # the bar moves every step; values change at logging steps
        if run.due(tcfg.logging_steps):
            logged: dict[str, float] = {}
            if window:  # empty when every step since the last log was skipped
                logged["train/loss"] = run.mean_across_processes(
                    torch.stack([w.loss for w in window]).mean()
                )
                logged["train/masked_ce"] = run.mean_across_processes(
                    torch.stack([w.unweighted.mean() for w in window]).mean()
                )
            tok_s = run.throughput()
            logged.update(
                {
                    "train/lr": stats["lr"],
                    "train/grad_norm": stats["grad_norm"],
                    "train/epoch": run.state.step / schedule.steps_per_epoch,
                    "train/tokens_per_s": tok_s,
                    "train/examples_seen": run.state.examples_seen,
                    **run.nonfinite_metrics(),
                }
            )
            run.log(logged)
            run.update_progress(
                loss=logged.get("train/loss", math.nan), lr=stats["lr"], tok_s=tok_s
            )
            window.clear()

        metric = None
        if run.due(tcfg.eval_steps):
            metrics = evaluate()
            run.log(metrics)
            if tcfg.metric_for_best is not None:
                metric = metrics.get(tcfg.metric_for_best)
        improved = metric is not None and run.checkpoints.is_better(metric, run.state.best_metric)
        if run.due(tcfg.save_steps) or improved:
            run.save(metric=metric)
    return run.finish()
