"""Evaluation defaults that agree with training and fit the machine.

A checkpoint written by `d1 sft` / `d1 grpo` carries its run config (`config.yaml`, also at the
top of the run folder). `run_defaults` reads what evaluating that model the way it was trained
needs: the tasks and their options (prompt style, generator settings), the completion length it
was trained for, and the sampler's block length and algorithm. The chat template (or its
absence, for `-base` models) travels with the checkpoint's tokenizer. `d1 eval`, `d1 select` and
`d1 generate` apply these under any eval config file, flag or KEY=VALUE, and say so.

`machine_defaults` sizes the generation lengths to the machine when nothing else chose them: a
built-in tiny model or a CPU gets one short length instead of d1's 128 / 256 / 512.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RUN_CONFIG", "Defaults", "machine_defaults", "run_config_path", "run_defaults"]

RUN_CONFIG = "config.yaml"
# Generation length on a CPU when no config chose one: tiny models answer in well under 64
# tokens; an 8B model on a CPU manages one short length at best.
TINY_GEN_LENGTH = 64
CPU_GEN_LENGTH = 128
# Sampler settings a run's sampler passes on to evaluation (not temperature / steps: d1's
# evaluation is greedy with steps = gen_length / 2).
_SAMPLER_KEYS = ("block_length", "name", "cache", "threshold", "early_exit")


@dataclass
class Defaults:
    """Dotted EvalConfig keys and values, and where they came from (for the message)."""

    values: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"{self.source}: {shown}" if self.values else ""


def run_config_path(model: str | Path) -> Path | None:
    """The d1 run config of a checkpoint or run folder (its own `config.yaml`, else the run
    folder's, two levels up from `checkpoints/checkpoint-N`); None when there is none."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return None
    for candidate in (path / RUN_CONFIG, path.parent.parent / RUN_CONFIG):
        if candidate.is_file() and (candidate.parent == path or path.parent.name == "checkpoints"):
            return candidate
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def run_defaults(model: str | Path) -> Defaults:
    """What evaluating `model` the way it was trained needs (empty when it is not a d1 run).

    From a diffu-GRPO run: its tasks and their options, the rollout length and the sampler's
    block length / algorithm. From a masked-SFT run on a task (`data.format: task`): that task
    and its options, and the length and block of its `eval_generation` sampler if it had one.
    """
    path = run_config_path(model)
    if path is None:
        return Defaults()
    cfg = _read(path)
    values: dict[str, Any] = {}
    sampler: dict[str, Any] = {}
    if isinstance(cfg.get("grpo"), dict):  # a diffu-GRPO run
        tasks = [t for t in cfg.get("tasks") or [] if isinstance(t, dict) and t.get("name")]
        if tasks:
            values["tasks"] = [str(t["name"]) for t in tasks]
            options = {str(t["name"]): t.get("options") or {} for t in tasks}
            values["task_options"] = {k: v for k, v in options.items() if v}
        sampler = cfg["grpo"].get("sampler") or {}
    elif isinstance(cfg.get("data"), dict) and cfg["data"].get("format") == "task":
        data = cfg["data"]
        if data.get("task"):
            values["tasks"] = [str(data["task"])]
            if data.get("task_options"):
                values["task_options"] = {str(data["task"]): data["task_options"]}
        gen = cfg.get("eval_generation")
        sampler = (gen.get("sampler") or {}) if isinstance(gen, dict) else {}
    if isinstance(sampler, dict):
        if isinstance(sampler.get("gen_length"), int):
            values["gen_lengths"] = [sampler["gen_length"]]
        for key in _SAMPLER_KEYS:
            if sampler.get(key) is not None:
                values[f"sampler.{key}"] = sampler[key]
    if not values.get("task_options"):
        values.pop("task_options", None)
    return Defaults(values, source=f"settings the model was trained with ({path})")


def machine_defaults(model: str, device: str | None) -> Defaults:
    """One short generation length for a built-in tiny model or a CPU (d1's 128 / 256 / 512
    take minutes per example there)."""
    from d1.core.models import TINY_CONFIGS

    if model in TINY_CONFIGS and not Path(model).is_dir():
        return Defaults(
            {"gen_lengths": [TINY_GEN_LENGTH]},
            source="a built-in tiny model (d1's protocol: 128, 256, 512; pass --gen-lengths)",
        )
    if (device or _default_device()) == "cpu":
        return Defaults(
            {"gen_lengths": [CPU_GEN_LENGTH]},
            source="a CPU (d1's protocol: 128, 256, 512 on a GPU; pass --gen-lengths)",
        )
    return Defaults()


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
