"""Crash-safe checkpoints that resume a run exactly.

A checkpoint folder `checkpoint-{step}` holds:
- the trained weights in safetensors: the LoRA adapter (`adapter_model.safetensors` +
  `adapter_config.json`) or the full model (`model.safetensors` + `config.json`), loadable with
  `from_pretrained` / `PeftModel.from_pretrained`;
- the tokenizer;
- `optimizer.pt`, `scheduler.pt` (under FSDP/DeepSpeed, accelerate's sharded `accelerate_state/`);
- `rng_state_{rank}.pt` per process: Python, NumPy, torch CPU and CUDA global states and every
  named `torch.Generator` of the run;
- `trainer_state.json` (`TrainState`: step, epoch, data position, counters, best metric);
- `config.yaml`, the resolved run config.

Atomicity: everything is written into `.tmp-checkpoint-{step}` in the same parent, each file and
the folder are fsynced, then the folder is renamed into place (`os.replace`) and the `latest`
pointer file is replaced atomically. A process killed at any moment (SIGKILL included) leaves
the previous checkpoint and pointer intact; stale `.tmp-*` folders are removed on the next start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from d1.config import atomic_write_text, save_config

__all__ = [
    "CHECKPOINT_PREFIX",
    "CheckpointManager",
    "TrainState",
    "fsync_tree",
    "load_checkpoint",
    "load_model_weights",
    "write_checkpoint",
]

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-"
LATEST_FILE = "latest"
BEST_FILE = "best.json"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainState:
    """Loop position and counters, saved in every checkpoint.

    Attributes:
        step: optimizer steps done.
        epoch: current epoch.
        micro_batch: micro-batches of `epoch` each process has consumed.
        examples_seen: training examples consumed (all processes).
        tokens_seen: tokens processed in training forward passes (all processes).
        global_batch: examples per optimizer step (checked on resume).
        num_examples: training-set size (checked on resume).
        best_metric: best value of the tracked metric so far.
        best_checkpoint: folder name of the best checkpoint.
        extra: trainer-specific counters (e.g. diffu-GRPO's generations).
    """

    step: int = 0
    epoch: int = 0
    micro_batch: int = 0
    examples_seen: int = 0
    tokens_seen: int = 0
    global_batch: int = 0
    num_examples: int = 0
    best_metric: float | None = None
    best_checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ----------------------------------------------------------------------------- fs helpers


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (then `root` itself)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def _save_torch(obj: Any, path: Path) -> None:
    """torch.save (one place to hook for crash tests)."""
    torch.save(obj, path)


# ----------------------------------------------------------------------------- RNG


def _rng_state(generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", {})
    missing = set(generators) - set(saved)
    if missing:
        raise ValueError(f"The checkpoint holds no state for generator(s) {sorted(missing)}.")
    for name, g in generators.items():
        g.set_state(saved[name])


# ----------------------------------------------------------------------------- model weights


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _is_sharded(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def save_model_weights(accelerator: Any, model: torch.nn.Module, path: Path) -> None:
    """Adapter (PEFT) or full weights in safetensors; collective: call on every process."""
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model) if _is_sharded(accelerator) else None
    if accelerator.is_main_process:
        kwargs: dict[str, Any] = {"safe_serialization": True}
        if state_dict is not None:
            kwargs["state_dict"] = state_dict
        unwrapped.save_pretrained(str(path), **kwargs)


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Load weights saved by `save_model_weights` into an identically built model (strict)."""
    from safetensors.torch import load_file

    path = Path(path)
    if _is_peft(model):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"Adapter checkpoint {path} has unexpected keys: {unexpected[:5]}")
        return
    index = path / "model.safetensors.index.json"
    if index.is_file():
        from transformers.modeling_utils import load_sharded_checkpoint

        load_sharded_checkpoint(model, str(path), strict=True)
        return
    model.load_state_dict(load_file(path / "model.safetensors"), strict=True)


# ----------------------------------------------------------------------------- write / load


def write_checkpoint(
    path: Path,
    *,
    accelerator: Any,
    model: torch.nn.Module,
    tokenizer: Any | None,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    state: TrainState,
    generators: Mapping[str, torch.Generator] | None = None,
    config: Any | None = None,
) -> None:
    """Write one checkpoint's contents into the (existing) folder `path`. Collective."""
    path = Path(path)
    generators = generators or {}
    save_model_weights(accelerator, model, path)
    if _is_sharded(accelerator):
        # Sharded model/optimizer states: accelerate writes (and later reads) every shard.
        accelerator.save_state(str(path / "accelerate_state"))
    elif accelerator.is_main_process and optimizer is not None:
        _save_torch(optimizer.state_dict(), path / "optimizer.pt")
    if accelerator.is_main_process and scheduler is not None:
        _save_torch(scheduler.state_dict(), path / "scheduler.pt")
    _save_torch(_rng_state(generators), path / f"rng_state_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        if tokenizer is not None:
            tokenizer.save_pretrained(str(path))
        if config is not None:
            save_config(config, path / "config.yaml")
        (path / STATE_FILE).write_text(state.to_json(), encoding="utf-8")


def load_checkpoint(
    path: str | Path,
    *,
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    generators: Mapping[str, torch.Generator] | None = None,
) -> TrainState:
    """Restore model, optimizer, scheduler, RNG states and generators; return the TrainState."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no {STATE_FILE}).")
    if _is_sharded(accelerator):
        accelerator.load_state(str(path / "accelerate_state"))
    else:
        load_model_weights(accelerator.unwrap_model(model), path)
        if optimizer is not None:
            optimizer.load_state_dict(
                torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
            )
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng_file = path / f"rng_state_{accelerator.process_index}.pt"
    if not rng_file.is_file():
        raise FileNotFoundError(
            f"{rng_file} is missing: the checkpoint was written by fewer processes; resume "
            "with the same number of processes."
        )
    try:
        rng = torch.load(rng_file, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError) as e:
        raise ValueError(f"Cannot read {rng_file}: {e}") from e
    _set_rng_state(rng, generators or {})
    return TrainState.from_json((path / STATE_FILE).read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- manager


class CheckpointManager:
    """Atomic checkpoint folders under `root`, a `latest` pointer, keep-last-N and the best.

    Args:
        root: the checkpoints folder (created).
        accelerator: the run's Accelerator (only the main process touches the file system
            outside per-process files; all processes must call `save`).
        keep_last: keep at most this many most recent checkpoints (None: all); the best
            checkpoint is never deleted.
        metric_name: the metric that ranks checkpoints (None: no best tracking).
        greater_is_better: direction of `metric_name`.
    """

    def __init__(
        self,
        root: str | Path,
        accelerator: Any,
        *,
        keep_last: int | None = None,
        metric_name: str | None = None,
        greater_is_better: bool = False,
    ):
        self.root = Path(root)
        self.accelerator = accelerator
        self.keep_last = keep_last
        self.metric_name = metric_name
        self.greater_is_better = greater_is_better
        if accelerator.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()

    # -- queries
    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX):
                suffix = p.name[len(CHECKPOINT_PREFIX) :]
                if suffix.isdigit():
                    found.append((int(suffix), p))
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """The checkpoint the `latest` pointer names (None if there is none)."""
        pointer = self.root / LATEST_FILE
        if not pointer.is_file():
            return None
        target = self.root / pointer.read_text(encoding="utf-8").strip()
        return target if (target / STATE_FILE).is_file() else None

    def best(self) -> dict[str, Any] | None:
        """`{"checkpoint", "metric", "value", "step"}` of the best checkpoint, if tracked."""
        p = self.root / BEST_FILE
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def is_better(self, value: float, than: float | None) -> bool:
        if than is None:
            return True
        return value > than if self.greater_is_better else value < than

    # -- maintenance
    def remove_stale(self) -> list[Path]:
        """Delete leftover temp folders of interrupted saves (main process)."""
        removed: list[Path] = []
        if self.accelerator.is_main_process and self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith(TMP_PREFIX):
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                    removed.append(p)
        self.accelerator.wait_for_everyone()
        return removed

    def _prune(self, keep: set[str]) -> None:
        if self.keep_last is None:
            return
        ckpts = self.checkpoints()
        recent = {p.name for p in ckpts[-self.keep_last :]}
        for p in ckpts:
            if p.name not in recent and p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)

    # -- saving
    def save(
        self,
        step: int,
        write: Callable[[Path], None],
        *,
        metric: float | None = None,
        state: TrainState | None = None,
    ) -> Path:
        """Atomically create `checkpoint-{step}` with `write(tmp_folder)`; collective.

        With `metric` and a tracked `metric_name`, updates `best.json` (and `state`'s best
        fields, before `write` runs, so the saved state already knows) when it improves.
        """
        acc = self.accelerator
        name = f"{CHECKPOINT_PREFIX}{step}"
        final = self.root / name
        tmp = self.root / f"{TMP_PREFIX}{name}"
        previous = state.best_metric if state is not None else (self.best() or {}).get("value")
        new_best = (
            self.metric_name is not None and metric is not None and self.is_better(metric, previous)
        )
        if new_best and state is not None:
            state.best_metric = float(metric)  # type: ignore[arg-type]
            state.best_checkpoint = name
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        write(tmp)
        acc.wait_for_everyone()
        if acc.is_main_process:
            fsync_tree(tmp)
            if final.exists():  # re-saving a step (e.g. after a resume): swap out the old one
                old = self.root / f"{TMP_PREFIX}old-{name}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_path(self.root)
            atomic_write_text(self.root / LATEST_FILE, name + "\n")
            if new_best:
                atomic_write_text(
                    self.root / BEST_FILE,
                    json.dumps(
                        {
                            "checkpoint": name,
                            "metric": self.metric_name,
                            "value": metric,
                            "step": step,
                        }
                    )
                    + "\n",
                )
            best = self.best()
            self._prune({best["checkpoint"]} if best else set())
            _fsync_path(self.root)
        acc.wait_for_everyone()
        return final
