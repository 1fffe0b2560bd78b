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
- `config.yaml`, the resolved run config;
- `manifest.json`, written last: every other file's size and sha256.

Atomicity: everything is written into `.tmp-checkpoint-{step}` in the same parent, each file and
the folder are fsynced, then the folder is renamed into place (`os.replace`) and the `latest`
pointer file is replaced atomically. A process killed at any moment (SIGKILL included) leaves
the previous checkpoint and pointer intact; stale `.tmp-*` folders are removed on the next start.

Damage after the fact (a disk filling up, a copy cut short, a file overwritten) is caught by
`verify_checkpoint` before a resume: with a manifest, every listed file must exist with its
size and sha256 (sha256 rather than a cheaper checksum: any change is caught, `sha256sum` can
check a file by hand, and at ~0.7 GB/s on one loaded core it costs seconds for a LoRA
checkpoint, against minutes to write a full 8B one); without one (older checkpoints), by
loading each file (safetensors headers, torch pickles, JSON). `resume_from=auto` falls back to
the newest complete checkpoint with a warning; an explicit path that fails is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import pickle
import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from d1.config import atomic_write_text, save_config

__all__ = [
    "CHECKPOINT_PREFIX",
    "CheckpointError",
    "CheckpointManager",
    "TrainState",
    "describe_saved",
    "fsync_tree",
    "load_checkpoint",
    "load_model_weights",
    "newest_complete_checkpoint",
    "required_files",
    "verify_checkpoint",
    "write_checkpoint",
    "write_manifest",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-"
LATEST_FILE = "latest"
BEST_FILE = "best.json"
STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from (damaged, incomplete, not a checkpoint)."""


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
        nonfinite_skipped: optimizer steps skipped for a non-finite loss / gradient norm.
        nonfinite_consecutive: how many of the most recent steps were skipped in a row.
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
    nonfinite_skipped: int = 0
    nonfinite_consecutive: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
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


def required_files(
    accelerator: Any, model: torch.nn.Module, *, optimizer: bool, scheduler: bool
) -> list[tuple[str, ...]]:
    """The files (each: alternatives) `load_checkpoint` reads on the main process, for
    `verify_checkpoint(required=...)`."""
    if _is_sharded(accelerator):
        files: list[tuple[str, ...]] = [("accelerate_state",)]
    elif _is_peft(accelerator.unwrap_model(model)):
        files = [("adapter_model.safetensors",)]
    else:
        files = [("model.safetensors", "model.safetensors.index.json")]
    if optimizer and not _is_sharded(accelerator):
        files.append(("optimizer.pt",))
    if scheduler:
        files.append(("scheduler.pt",))
    return [*files, ("rng_state_0.pt",)]


def save_model_weights(accelerator: Any, model: torch.nn.Module, path: Path) -> None:
    """Adapter (PEFT) or full weights in safetensors; collective: call on every process."""
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model) if _is_sharded(accelerator) else None
    if accelerator.is_main_process:
        kwargs: dict[str, Any] = {"safe_serialization": True}
        if state_dict is not None:
            kwargs["state_dict"] = state_dict
        unwrapped.save_pretrained(str(path), **kwargs)


def _resume_hint() -> str:
    return (
        "Resume from another checkpoint (train.resume_from=PATH, or train.resume_from=auto for "
        "the newest complete one)."
    )


def _damaged(file: Path, error: BaseException) -> CheckpointError:
    what = (
        "is missing" if not file.exists() else f"cannot be read ({type(error).__name__}: {error})"
    )
    return CheckpointError(f"{file} {what}. {_resume_hint()}")


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(file)
    except (OSError, SafetensorError) as e:
        raise _damaged(file, e) from e


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Load weights saved by `save_model_weights` into an identically built model (strict).

    Raises:
        CheckpointError: a weights file is missing or cannot be read (named).
    """
    path = Path(path)
    if _is_peft(model):
        from peft import set_peft_model_state_dict

        weights = _load_safetensors(path / "adapter_model.safetensors")
        result = set_peft_model_state_dict(model, weights)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"Adapter checkpoint {path} has unexpected keys: {unexpected[:5]}")
        return
    index = path / "model.safetensors.index.json"
    if index.is_file():
        from transformers.modeling_utils import load_sharded_checkpoint

        load_sharded_checkpoint(model, str(path), strict=True)
        return
    model.load_state_dict(_load_safetensors(path / "model.safetensors"), strict=True)


# ----------------------------------------------------------------------------- manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)


def write_manifest(folder: str | Path, step: int) -> Path:
    """Record every file of `folder` (size, sha256) in `folder/manifest.json`, atomically.
    Call it last, once every process has written its files."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in _files(folder)
    }
    text = json.dumps({"format": MANIFEST_FORMAT, "step": step, "files": files}, indent=1)
    path = folder / MANIFEST_FILE
    atomic_write_text(path, text + "\n")
    return path


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """The manifest's file table; raises ValueError saying what is wrong with it."""
    try:
        data = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{MANIFEST_FILE} is not valid JSON ({e})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
        for v in files.values()
    ):
        raise ValueError(f"{MANIFEST_FILE} is malformed (no file table of sizes and sha256)")
    return files


def _try_load(path: Path) -> None:
    """Load one file the way a resume reads it (no manifest to check it against)."""
    name = path.name
    if name.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:  # validates the header and the length
            f.keys()
    elif name.endswith(".pt"):
        torch.load(path, map_location="cpu", weights_only=False)
    elif name.endswith(".json"):
        json.loads(path.read_text(encoding="utf-8"))


def verify_checkpoint(
    path: str | Path, *, required: Sequence[Sequence[str]] = (), deep: bool = True
) -> str | None:
    """What is wrong with checkpoint folder `path`, or None if it looks complete.

    Args:
        required: files (paths relative to `path`) a resume will read; each entry lists
            alternatives, one of which must exist (e.g. ("model.safetensors",
            "model.safetensors.index.json")).
        deep: check contents (sha256 with a manifest; else load every file); False checks
            only presence and sizes (fast, e.g. for a message on Ctrl-C).
    """
    path = Path(path)
    if not path.is_dir():
        return f"{path} is not a folder"
    if not (path / STATE_FILE).is_file():
        return f"{path} is not a checkpoint (no {STATE_FILE})"
    for options in required:
        if not any((path / name).exists() for name in options):
            return f"{' or '.join(options)} is missing"
    if (path / MANIFEST_FILE).is_file():
        try:
            files = _read_manifest(path)
        except ValueError as e:
            return str(e)
        for rel, info in files.items():
            p = path / rel
            if not p.is_file():
                return f"{rel} is missing (listed in {MANIFEST_FILE})"
            size = p.stat().st_size
            if size != info["size"]:
                return f"{rel} is damaged: {size} bytes, {MANIFEST_FILE} says {info['size']}"
            if deep and _sha256(p) != info["sha256"]:
                return f"{rel} is damaged: its sha256 differs from {MANIFEST_FILE}'s"
        return None
    if deep:  # an older checkpoint without a manifest: verify by loading
        for p in _files(path):
            try:
                _try_load(p)
            except Exception as e:  # any failure to read means damage
                rel = p.relative_to(path).as_posix()
                return f"{rel} cannot be read ({type(e).__name__}: {e})"
    return None


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
    """Restore model, optimizer, scheduler, RNG states and generators; return the TrainState.

    Raises:
        CheckpointError: naming the file that cannot be read (`verify_checkpoint` first
            catches most damage without touching the model).
    """
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no {STATE_FILE}).")
    rng_file = path / f"rng_state_{accelerator.process_index}.pt"
    if not rng_file.is_file():
        raise FileNotFoundError(
            f"{rng_file} is missing: the checkpoint was written by fewer processes; resume "
            "with the same number of processes."
        )

    def read(name: str, fn: Callable[[], Any]) -> Any:
        """Read one file; a failure to read it (not a mismatch in applying it) names it."""
        try:
            return fn()
        except (OSError, EOFError, pickle.UnpicklingError, RuntimeError, ValueError) as e:
            raise _damaged(path / name, e) from e

    state = read(STATE_FILE, lambda: TrainState.from_json((path / STATE_FILE).read_text("utf-8")))
    if _is_sharded(accelerator):
        accelerator.load_state(str(path / "accelerate_state"))
    else:
        load_model_weights(accelerator.unwrap_model(model), path)
        if optimizer is not None:
            saved = read(
                "optimizer.pt",
                lambda: torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False),
            )
            optimizer.load_state_dict(saved)
    if scheduler is not None:
        saved = read("scheduler.pt", lambda: torch.load(path / "scheduler.pt", weights_only=False))
        scheduler.load_state_dict(saved)
    rng = read(rng_file.name, lambda: torch.load(rng_file, weights_only=False))
    _set_rng_state(rng, generators or {})
    return state


# ----------------------------------------------------------------------------- manager


def _step_of(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX) :])


def _checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX):
            suffix = p.name[len(CHECKPOINT_PREFIX) :]
            if suffix.isdigit():
                found.append((int(suffix), p))
    return [p for _, p in sorted(found)]


def _latest(root: Path) -> Path | None:
    pointer = root / LATEST_FILE
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    if not (name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX) :].isdigit()):
        return None  # a damaged pointer: `_candidates` then goes by step numbers
    target = root / name
    return target if (target / STATE_FILE).is_file() else None


def _candidates(root: Path) -> list[Path]:
    """The `latest` pointer's checkpoint, then older ones by decreasing step. (Folders with
    higher steps than the pointer's come from a run that was later resumed from an earlier
    step: that history was abandoned.)"""
    ckpts = _checkpoints(root)
    latest = _latest(root)
    if latest is None:
        return ckpts[::-1]
    step = _step_of(latest)
    return [latest] + [p for p in ckpts[::-1] if _step_of(p) < step]


def newest_complete_checkpoint(
    root: str | Path, required: Sequence[Sequence[str]] = (), *, deep: bool = True
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint under `root` that `verify_checkpoint` passes (the `latest`
    pointer's, else older ones by decreasing step), and the problems of the ones skipped
    before it (each `(folder, what is wrong)`)."""
    skipped: list[tuple[Path, str]] = []
    for path in _candidates(Path(root)):
        problem = verify_checkpoint(path, required=required, deep=deep)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def describe_saved(root: str | Path) -> str:
    """One phrase for messages: the newest complete checkpoint under `root` with its step
    (checked quickly: presence and sizes), or that there is none yet."""
    path, _ = newest_complete_checkpoint(root, deep=False)
    if path is None:
        return f"no checkpoint yet in {root}"
    return f"{path} (step {_step_of(path)})"


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
        """Checkpoint folders (renamed into place, so completely written), oldest first."""
        return _checkpoints(self.root)

    def latest(self) -> Path | None:
        """The checkpoint the `latest` pointer names (None if there is none)."""
        return _latest(self.root)

    def candidates(self) -> list[Path]:
        """Checkpoints a resume may use, best first (see `newest_complete_checkpoint`)."""
        return _candidates(self.root)

    def newest_complete(
        self, required: Sequence[Sequence[str]] = (), *, deep: bool = True
    ) -> tuple[Path | None, list[tuple[Path, str]]]:
        """`newest_complete_checkpoint` of this manager's folder."""
        return newest_complete_checkpoint(self.root, required, deep=deep)

    def best(self) -> dict[str, Any] | None:
        """`{"checkpoint", "metric", "value", "step"}` of the best checkpoint, if tracked."""
        p = self.root / BEST_FILE
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def point_latest(self, path: Path) -> None:
        """Make the `latest` pointer name checkpoint `path` (main process; atomic)."""
        if self.accelerator.is_main_process:
            atomic_write_text(self.root / LATEST_FILE, path.name + "\n")

    def is_better(self, value: float, than: float | None) -> bool:
        """Whether `value` beats `than`; a non-finite value never does (NaN is no best)."""
        if not math.isfinite(value):
            return False
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
            write_manifest(tmp, step)  # last: every process's files are in place
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
                            "value": float(metric),  # type: ignore[arg-type]
                            "step": step,
                        },
                        allow_nan=False,  # strict JSON (is_better refuses NaN and inf)
                    )
                    + "\n",
                )
            best = self.best()
            self._prune({best["checkpoint"]} if best else set())
            _fsync_path(self.root)
        acc.wait_for_everyone()
        return final
