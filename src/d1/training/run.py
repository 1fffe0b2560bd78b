"""`TrainingRun`: the machinery of one training run, shared by the SFT and diffu-GRPO trainers.

A trainer builds a `TrainingRun` (accelerator, run folder, model, tracker, checkpoints), calls
`setup_optimization(total_steps)` once it knows its step count, `resume()`, then loops:

    for j, micro_batch in enumerate(micro_batches):        # gradient accumulation
        with run.accumulation(last=j == n - 1):
            run.backward(loss(micro_batch) / n)
    stats = run.optimizer_step()                           # clip, step, schedule, zero grad
    run.log({...}); run.save(metric=...) when due

and finally `run.finish()`, all inside `with run:`. `optimizer_step(loss=...)` checks the
step's loss and gradient norm: a non-finite one stops the run (`NonFiniteError`, nothing saved
after it) or skips the update (`train.on_nonfinite`). `resume()` verifies the checkpoint
first (`d1.training.checkpoint.verify_checkpoint`). Everything d1 draws flows from
`train.seed` through named `torch.Generator`s registered with `run.generator(name)` (saved and
restored with checkpoints) or through keyed generators (`d1.training.data.keyed_generator`).
Only ops that take no generator (dropout, e.g. LoRA's) use torch's global RNG: `with run:`
forks it (`torch.random.fork_rng`) and seeds the fork from `train.seed`, so those draws are
reproducible too and the caller's global RNG is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from d1.config import config_to_dict, save_config
from d1.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    TrainState,
    describe_saved,
    load_checkpoint,
    required_files,
    verify_checkpoint,
    write_checkpoint,
)
from d1.training.config import LoraConfig, ModelConfig, OptimConfig, TrainingConfig
from d1.training.data import derive_seed
from d1.training.optim import build_optimizer, build_scheduler, clip_grad_norm
from d1.training.runtime import (
    load_for_training,
    make_accelerator,
    prepare_run_dir,
    save_base_for_adapter,
)
from d1.training.tracking import METRICS_FILE, SAMPLES_FILE, ProgressBar, Tracker, rewind_jsonl

__all__ = ["NonFiniteError", "TrainingRun"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class NonFiniteError(RuntimeError):
    """An optimizer step with a NaN / inf loss or gradient norm stopped the run."""


class StateParticipant(Protocol):
    """Trainer state that a checkpoint must hold besides the toolkit's (weights, optimizer,
    schedule, RNG, counters): e.g. diffu-GRPO's prompt stream and in-flight generation batch.

    `state_dict()` returns small JSON-able values, merged into `trainer_state.json`'s `extra`
    (the participant's own keys); `load_state_dict(extra)` reads them back from a resumed
    checkpoint. `save_files(folder)` writes anything larger into the checkpoint folder being
    written (atomically, with the rest); `load_files(folder)` reads it on resume.
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, extra: dict[str, Any]) -> None: ...

    def save_files(self, folder: Path) -> None: ...

    def load_files(self, folder: Path) -> None: ...


class TrainingRun:
    """Accelerator, run folder, model, optimizer, schedule, checkpoints and tracking of a run.

    Args:
        config: the whole resolved run config (saved as `config.yaml` and in checkpoints).
        train, optim, model_cfg, lora: its shared sections.
        command: the default run-folder name ("sft", "grpo").

    Attributes:
        accelerator, run_dir, state (`TrainState`), loaded (`d1.core.models.LoadedModel`), model
        (prepared / wrapped after `setup_optimization`), tokenizer, spec, optimizer, scheduler,
        checkpoints (`CheckpointManager`), tracker (`Tracker`), total_steps.
    """

    def __init__(
        self,
        config: Any,
        *,
        train: TrainingConfig,
        optim: OptimConfig,
        model_cfg: ModelConfig,
        lora: LoraConfig | None,
        command: str,
    ):
        self.config = config
        self.train_cfg = train
        self.optim_cfg = optim
        self.accelerator = make_accelerator(train)
        self.is_main = self.accelerator.is_main_process
        self._check_nonfinite_mode()
        self.run_dir = prepare_run_dir(train, command, self.accelerator)
        self.state = TrainState()
        self.generators: dict[str, torch.Generator] = {}
        self.loaded = load_for_training(
            model_cfg, lora, seed=train.seed, device=self.accelerator.device
        )
        self.model: torch.nn.Module = self.loaded.model
        self.tokenizer = self.loaded.tokenizer
        self.spec = self.loaded.spec
        if self.is_main:
            save_config(config, self.run_dir / "config.yaml")
            save_base_for_adapter(self.model, self.tokenizer, self.run_dir, model_cfg.name_or_path)
        self.accelerator.wait_for_everyone()
        self.checkpoints = CheckpointManager(
            self.run_dir / "checkpoints",
            self.accelerator,
            keep_last=train.save_total_limit,
            metric_name=train.metric_for_best,
            greater_is_better=train.greater_is_better,
        )
        self.checkpoints.remove_stale()
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.total_steps = 0
        self.tracker: Tracker | None = None
        self.progress: ProgressBar | None = None
        self._last_saved_step: int | None = None
        self.resumed_from: Path | None = None
        self._t_log = time.perf_counter()
        self._tokens_at_log = 0
        self._scope: contextlib.ExitStack | None = None
        # Trainer state beyond the toolkit's (`add_state`): saved with every checkpoint.
        self.participants: list[StateParticipant] = []

    # -- the global-RNG scope
    def __enter__(self) -> TrainingRun:
        """Fork torch's global RNG (CPU and this process's GPU) and seed it from the run."""
        stack = contextlib.ExitStack()
        device = self.accelerator.device
        stack.enter_context(
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
        )
        seed = derive_seed(self.train_cfg.seed, "global-rng", self.accelerator.process_index)
        torch.random.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        self._scope = stack
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
        if self._scope is not None:
            self._scope.close()
            self._scope = None

    # -- setup
    def generator(self, name: str, device: str | torch.device = "cpu") -> torch.Generator:
        """A named generator seeded by (train.seed, name); its state is checkpointed."""
        if name not in self.generators:
            self.generators[name] = torch.Generator(device=device).manual_seed(
                derive_seed(self.train_cfg.seed, name)
            )
        return self.generators[name]

    def setup_optimization(self, total_steps: int, *loaders: Any) -> tuple[Any, ...]:
        """Build AdamW + schedule for `total_steps`; prepare model, optimizer and extra objects
        (e.g. evaluation loaders) with accelerate. Returns the prepared extra objects."""
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
        self.total_steps = total_steps
        optimizer = build_optimizer(self.model, self.optim_cfg)
        self.scheduler = build_scheduler(optimizer, self.optim_cfg, total_steps)
        prepared = self.accelerator.prepare(self.model, optimizer, *loaders)
        self.model, self.optimizer = prepared[0], prepared[1]
        return tuple(prepared[2:])

    def check_accumulation(self, steps: int) -> None:
        """Refuse gradient accumulation where the toolkit's explicit accumulation is wrong:
        DeepSpeed steps its optimizer inside `backward` (accelerate's gradient-accumulation
        counter stays at 1 here), so it needs one micro-batch per optimizer step."""
        from accelerate.utils import DistributedType

        if steps > 1 and self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            raise ValueError(
                f"DeepSpeed runs need gradient_accumulation_steps == 1 (got {steps}): raise "
                "train.per_device_batch_size or the number of processes, or use DDP / FSDP "
                "(configs/accelerate/multi_gpu_ddp.yaml, fsdp.yaml) for accumulation."
            )

    def _check_nonfinite_mode(self) -> None:
        from accelerate.utils import DistributedType

        if (
            self.train_cfg.on_nonfinite == "skip"
            and self.accelerator.distributed_type == DistributedType.DEEPSPEED
        ):
            raise ValueError(
                "train.on_nonfinite=skip cannot work under DeepSpeed (its engine steps the "
                "optimizer inside backward, before the check); use train.on_nonfinite=stop."
            )

    def _main_decides(self, fn: Callable[[], T]) -> T:
        """`fn()` on the main process (e.g. reading and hashing checkpoint files once), its
        result sent to every process so that all make the same choice."""
        result = fn() if self.is_main else None
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            box = [result]
            broadcast_object_list(box, from_process=0)
            result = box[0]
        return result  # type: ignore[return-value]

    def resume(self) -> bool:
        """Restore the checkpoint `train.resume_from` names, after verifying it.

        "auto": the newest complete checkpoint of the run folder (damaged ones are skipped
        with a warning; none at all: a fresh start); a path: that checkpoint, and a damaged
        one is a `CheckpointError` naming the file.
        """
        which = self.train_cfg.resume_from
        if which is None:
            return False
        required = required_files(
            self.accelerator,
            self.model,
            optimizer=self.optimizer is not None,
            scheduler=self.scheduler is not None,
        )
        if which == "auto":
            path, skipped = self._main_decides(lambda: self.checkpoints.newest_complete(required))
            for bad, problem in skipped if self.is_main else ():
                then = f"resuming from {path.name} instead" if path else "no earlier one is usable"
                logger.warning("Checkpoint %s is damaged: %s; %s.", bad, problem, then)
            if path is None and skipped:
                found = "; ".join(f"{p.name}: {m}" for p, m in skipped)
                raise CheckpointError(
                    f"train.resume_from=auto: no complete checkpoint in {self.checkpoints.root} "
                    f"({found}). Resume from a checkpoint copied from elsewhere with "
                    "train.resume_from=PATH, or start over with train.overwrite=true (deletes "
                    "these checkpoints)."
                )
            if path is None:
                logger.info(
                    "resume_from=auto: no checkpoint yet in %s; starting fresh.", self.run_dir
                )
                return False
            if skipped:  # the run continues from here: `latest` names what it continues
                self.checkpoints.point_latest(path)
        else:
            path = Path(which)
            problem = self._main_decides(lambda: verify_checkpoint(path, required=required))
            if problem is not None:
                raise CheckpointError(
                    f"train.resume_from={which}: {problem}. Pass another checkpoint folder, or "
                    "train.resume_from=auto to use the run's newest complete checkpoint."
                )
        self.state = load_checkpoint(
            path,
            accelerator=self.accelerator,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            generators=self.generators,
        )
        self._last_saved_step = self.state.step
        self.resumed_from = path
        for participant in self.participants:
            participant.load_state_dict(self.state.extra)
            participant.load_files(path)
        logger.info("Resumed from %s at step %d.", path, self.state.step)
        return True

    def start_tracking(self) -> None:
        """Open the tracker and the progress bar (after `resume`, so the bar starts right).

        The logs then hold every step once: rows after the restored step (logged before an
        interruption, logged again now) are dropped; a fresh start drops the rows of an
        earlier attempt that left no checkpoint.
        """
        resumed = self.resumed_from is not None
        if self.is_main:
            keep = self.state.step if resumed else None
            for name in (METRICS_FILE, SAMPLES_FILE):
                dropped = rewind_jsonl(self.run_dir / name, keep)
                if dropped:
                    logger.warning(
                        "%s: dropped %d rows %s (they are logged again).",
                        name,
                        dropped,
                        f"after step {keep}" if resumed else "of an earlier attempt",
                    )
        self.tracker = Tracker(
            self.run_dir,
            self.train_cfg.report_to,
            enabled=self.is_main,
            config=config_to_dict(self.config),
            run_name=self.run_dir.name,
            wandb_project=self.train_cfg.wandb_project,
            purge_step=self.state.step + 1 if resumed else 0,
        )
        self.progress = ProgressBar(
            self.total_steps,
            start=self.state.step,
            mode=self.train_cfg.progress,
            enabled=self.is_main,
        )
        self._t_log = time.perf_counter()
        self._tokens_at_log = self.state.tokens_seen

    # -- the step
    @contextlib.contextmanager
    def accumulation(self, *, last: bool) -> Iterator[None]:
        """Context for one micro-batch: gradients are only all-reduced on the `last` one."""
        if last or self.accelerator.num_processes == 1:
            yield
        else:
            with self.accelerator.no_sync(self.model):
                yield

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def optimizer_step(self, loss: torch.Tensor | float | None = None) -> dict[str, float]:
        """Clip, check, step the optimizer and the schedule, zero the gradients;
        `state.step += 1`.

        `loss` (this process's loss of the step; a tensor or a float) and the gradient norm
        are checked together with the one host sync the step already makes (reading the
        norm). If either is NaN / inf: `train.on_nonfinite=stop` raises `NonFiniteError`
        before anything changes; "skip" drops the update (weights and optimizer moments as
        they were; the step counter and the schedule advance), counts it and raises once
        `train.max_nonfinite_skips` steps in a row were skipped.

        Returns `{"grad_norm", "lr", "skipped"}` (the lr used by this step; skipped 0 / 1).
        """
        acc = self.accelerator
        norm = clip_grad_norm(acc, self.model, self.optim_cfg.max_grad_norm)
        values = [norm.detach().float().reshape(()).to(acc.device)] if norm is not None else []
        if loss is not None:
            total = torch.as_tensor(loss, dtype=torch.float32, device=acc.device).detach()
            if acc.num_processes > 1:  # NaN anywhere reaches every process: all decide alike
                total = acc.reduce(total.reshape(()), reduction="sum")
            values.append(total.reshape(()))
        read = torch.stack(values).tolist() if values else []
        grad_norm = read.pop(0) if norm is not None else float("nan")  # DeepSpeed: unknown
        bad = []
        if read and not math.isfinite(read[0]):
            bad.append(f"loss ({read[0]})")
        # Under fp16 the gradient scaler itself skips steps whose gradients overflowed.
        if norm is not None and acc.scaler is None and not math.isfinite(grad_norm):
            bad.append(f"gradient norm ({grad_norm})")
        lr = float(self.scheduler.get_last_lr()[0])
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            self._nonfinite(" and ".join(bad))
            if acc.scaler is not None:
                acc.scaler.update()  # closes the scaler's step (its unscale_ was called)
            self.scheduler.step()
            self.state.step += 1
            return {"grad_norm": grad_norm, "lr": lr, "skipped": 1.0}
        self.state.nonfinite_consecutive = 0
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        return {"grad_norm": grad_norm, "lr": lr, "skipped": 0.0}

    def nonfinite_metrics(self) -> dict[str, float]:
        """`{"train/nonfinite_skipped": count}` when steps may be skipped, else nothing."""
        if self.train_cfg.on_nonfinite != "skip":
            return {}
        return {"train/nonfinite_skipped": self.state.nonfinite_skipped}

    def _nonfinite(self, what: str) -> None:
        """Count a skipped step, or raise `NonFiniteError` (stop mode, or too many skips)."""
        cfg, state = self.train_cfg, self.state
        step = state.step + 1
        if cfg.on_nonfinite == "skip":
            if state.nonfinite_consecutive < cfg.max_nonfinite_skips:
                state.nonfinite_skipped += 1
                state.nonfinite_consecutive += 1
                logger.warning(
                    "Non-finite %s at optimizer step %d: update skipped (%d skipped so far, "
                    "train.on_nonfinite=skip).",
                    what,
                    step,
                    state.nonfinite_skipped,
                )
                return
            reason = (
                f"non-finite {what} at optimizer step {step} after "
                f"{state.nonfinite_consecutive} skipped steps in a row "
                f"(train.max_nonfinite_skips={cfg.max_nonfinite_skips})"
            )
        else:
            reason = f"non-finite {what} at optimizer step {step} (train.on_nonfinite=stop)"
        saved = describe_saved(self.checkpoints.root)
        causes = [f"a learning rate too high (optim.learning_rate={self.optim_cfg.learning_rate})"]
        causes.append("bad training data (empty or corrupt rows, a reward that returns NaN)")
        if self.accelerator.mixed_precision == "fp16":
            causes.append("fp16 overflow (use train.mixed_precision=bf16 or no)")
        raise NonFiniteError(
            f"Training stopped: {reason}. Nothing was saved after it; last complete "
            f"checkpoint: {saved}. Likely causes: {', '.join(causes)}. Fix: lower "
            "optim.learning_rate or fix the data, then resume with train.resume_from=auto; "
            "or set train.on_nonfinite=skip to skip such steps."
        )

    # -- logging, evaluation, saving
    def due(self, every: int | None) -> bool:
        """True when `every` divides the current step, or at the last step."""
        step = self.state.step
        return step >= self.total_steps or (every is not None and step % every == 0)

    def mean_across_processes(self, value: float | torch.Tensor) -> float:
        t = torch.as_tensor(value, dtype=torch.float32, device=self.accelerator.device)
        return float(self.accelerator.reduce(t, reduction="mean"))

    def throughput(self) -> float:
        """Training tokens per second since the previous call."""
        now = time.perf_counter()
        tokens = self.state.tokens_seen - self._tokens_at_log
        rate = tokens / max(now - self._t_log, 1e-9)
        self._t_log, self._tokens_at_log = now, self.state.tokens_seen
        return rate

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.tracker is not None:
            self.tracker.log(metrics, self.state.step if step is None else step)

    def update_progress(self, **info: float) -> None:
        """Move the bar to the current step (every step); values are shown when given."""
        if self.progress is not None:
            self.progress.update(self.state.step, **info)

    @contextlib.contextmanager
    def phase(self, text: str) -> Iterator[Callable[[str], None]]:
        """Name a long part of a step on the progress bar ("eval", "rollout"); yields a
        function that refines the name while it runs ("rollout, block 3/8")."""

        def show(detail: str) -> None:
            if self.progress is not None:
                self.progress.phase(detail)

        show(text)
        try:
            yield show
        finally:
            show("train")

    def add_state(self, participant: StateParticipant) -> None:
        """Save `participant` with every checkpoint and restore it on `resume` (see
        `StateParticipant`). Add participants before calling `resume`."""
        self.participants.append(participant)

    def save(self, metric: float | None = None) -> Path:
        """Write a checkpoint of the current step (collective); tracks the best by `metric`."""
        for participant in self.participants:
            self.state.extra.update(participant.state_dict())

        def write(tmp: Path) -> None:
            write_checkpoint(
                tmp,
                accelerator=self.accelerator,
                model=self.model,
                tokenizer=self.tokenizer,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                state=self.state,
                generators=self.generators,
                config=self.config,
            )
            for participant in self.participants:
                participant.save_files(tmp)

        path = self.checkpoints.save(self.state.step, write, metric=metric, state=self.state)
        self._last_saved_step = self.state.step
        return path

    def finish(self) -> Path:
        """Save the final step (if not saved yet), close tracking; returns the run folder."""
        if self._last_saved_step != self.state.step:
            self.save()
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
        self.accelerator.wait_for_everyone()
        return self.run_dir

    def unwrapped_model(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)
