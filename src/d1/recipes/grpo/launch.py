"""Checks of a diffu-GRPO launch that need no model: run before anything loads or samples.

`accelerate launch` describes the launch in the environment (process count, FSDP or DeepSpeed
and its ZeRO stage); `LaunchPlan.from_env()` reads it, `check_launch` refuses the combinations
that would fail later (after minutes of loading, or at the first rollout) or silently do
something else, each with one line naming the problem and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from d1.config import ConfigError
from d1.core.models.loading import check_4bit_available
from d1.recipes.grpo.config import GRPOConfig
from d1.training.optim import check_optimizer_available

__all__ = ["LaunchPlan", "check_launch"]


@dataclass(frozen=True)
class LaunchPlan:
    """What the launcher asked for.

    Attributes:
        num_processes: the world size.
        backend: "ddp" (plain data parallel, also one process), "fsdp" or "deepspeed".
        zero_stage: DeepSpeed's ZeRO stage (0 unless DeepSpeed).
        cuda: whether this process sees a CUDA GPU (`torch.cuda.is_available()`).
    """

    num_processes: int = 1
    backend: str = "ddp"
    zero_stage: int = 0
    cuda: bool = False

    @classmethod
    def from_env(cls) -> LaunchPlan:
        """The plan `accelerate launch` / `torchrun` put in this process's environment."""
        env = os.environ
        backend, stage = "ddp", 0
        if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            backend, stage = "deepspeed", int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0") or 0)
        elif env.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
            backend = "fsdp"
        return cls(
            num_processes=int(env.get("WORLD_SIZE", "1") or 1),
            backend=backend,
            zero_stage=stage,
            cuda=torch.cuda.is_available(),
        )


def check_launch(cfg: GRPOConfig, plan: LaunchPlan) -> None:
    """Raise a one-line `ConfigError` / `ImportError` / `RuntimeError` for a launch that cannot
    work, before any model is loaded or any rollout is sampled.

    - the number of processes must split the global batch into whole micro-batches and whole
      prompt groups per process (`GRPOConfig.gradient_accumulation_steps`);
    - `model.load_in_4bit` needs CUDA and bitsandbytes, and plain data parallel (4-bit weights
      are not sharded by FSDP or ZeRO-3 here); so does an 8-bit `optim.optimizer` (CUDA and
      bitsandbytes);
    - FSDP and DeepSpeed need GPUs: without one d1 runs CPU processes as DDP over gloo, which
      would silently ignore the sharding that was asked for;
    - ZeRO-3 with `grpo.beta > 0` needs a reference that is the training model with its LoRA
      adapter disabled. Under full fine-tuning (`lora: null`) there is no adapter to disable:
      the reference would be a second, frozen copy of the weights, which ZeRO-3 cannot provide
      (its weights are partitioned across processes as they load, so the copy would hold
      shards, and a whole copy on every GPU would defeat ZeRO-3).
    """
    cfg.gradient_accumulation_steps(plan.num_processes)
    zero3 = plan.backend == "deepspeed" and plan.zero_stage == 3
    sharded = plan.backend == "fsdp" or zero3
    if cfg.model.load_in_4bit:
        check_4bit_available()
        if sharded:
            raise ConfigError(
                f"model.load_in_4bit cannot be combined with {_name(plan)} here (4-bit weights "
                "are not sharded): launch with configs/accelerate/multi_gpu_ddp.yaml (the "
                "paper's QLoRA setting) or set model.load_in_4bit=false."
            )
    check_optimizer_available(cfg.optim.optimizer)
    if plan.backend in ("fsdp", "deepspeed") and not plan.cuda:
        raise RuntimeError(
            f"The accelerate config asks for {_name(plan)}, which needs GPUs, and this process "
            "sees none (on CPUs d1 runs DDP over gloo): launch with "
            "configs/accelerate/cpu_2proc.yaml."
        )
    if zero3 and cfg.grpo.beta > 0 and cfg.lora is None:
        raise ConfigError(
            "DeepSpeed ZeRO-3 with grpo.beta > 0 under full fine-tuning (lora: null) has no "
            "LoRA adapter to disable for the reference policy, and ZeRO-3 cannot hold the "
            "frozen copy it would need: use a lora section, grpo.beta=0, or FSDP "
            "(configs/accelerate/fsdp.yaml; the frozen copy is then replicated per GPU)."
        )


def _name(plan: LaunchPlan) -> str:
    return "FSDP" if plan.backend == "fsdp" else f"DeepSpeed ZeRO-{plan.zero_stage}"
