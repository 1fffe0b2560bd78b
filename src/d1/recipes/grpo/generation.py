"""One generation context for every no-grad pass of diffu-GRPO, whatever wraps the policy.

Rollouts (128 sampler steps), the old policy's log-probs and the reference's log-probs run on
the policy *outside* its training wrapper, without gradient. Under plain DDP that is just the
inner module. Under FSDP FULL_SHARD or DeepSpeed ZeRO-3 the inner module holds parameter
*shards*, so calling it directly fails or computes garbage; `generation_context` makes the
parameters whole for the duration and yields a module that is safe to call (TRL's
`unwrap_model_for_generation` solves the same problem):

- DDP, DeepSpeed ZeRO-0/1/2, one process: the unwrapped module, nothing gathered (every
  process holds all parameters).
- FSDP1 (`FullyShardedDataParallel`): `summon_full_params(recurse=False, writeback=False)` makes
  the root unit's parameters (embeddings, output head, final norm: whatever the auto-wrap policy
  left outside the wrapped blocks) whole; each wrapped block still gathers its own parameters
  in its forward and frees them after, so peak memory stays one block above the shards. The
  inner module is yielded.
- FSDP2 (`fully_shard`): the root module's `unshard()` (its own parameter group), then
  `reshard()`; sub-modules with their own `fully_shard` gather in their forward hooks. The root
  module itself is yielded (FSDP2 does not wrap). The root is settled first, as its first
  forward would (the fast sampler's KV cache calls the inner model, bypassing the root).
- DeepSpeed ZeRO-3: `deepspeed.zero.GatheredParameters` over all parameters, with ZeRO-3's
  per-module fetch/release hooks taken off for the duration (otherwise the first forward would
  release what was gathered and every later sampler step would gather layer by layer again) and
  put back on exit, as TRL does. The engine's inner module is yielded.

The LoRA reference (adapter disabled) goes through the same context (`d1.recipes.grpo.update.Reference`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

__all__ = ["generation_context", "parallel_kind", "unwrap_parallel"]

logger = logging.getLogger(__name__)

PARALLEL_KINDS = ("single", "ddp", "fsdp1", "fsdp2", "deepspeed", "zero3")


def _is_deepspeed_engine(model: torch.nn.Module) -> bool:
    # Duck-typed, so that deepspeed stays an optional dependency (and a fake engine can test it).
    return callable(getattr(model, "zero_optimization_stage", None)) and isinstance(
        getattr(model, "module", None), torch.nn.Module
    )


def _fsdp1_class() -> type | None:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch built without distributed support
        return None
    return FullyShardedDataParallel


def _fsdp2_class() -> type | None:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return None
    return FSDPModule


def parallel_kind(model: torch.nn.Module) -> str:
    """How `model` is wrapped for training: one of `PARALLEL_KINDS`.

    "single" (no wrapper), "ddp" (`DistributedDataParallel`), "fsdp1"
    (`FullyShardedDataParallel`), "fsdp2" (a `fully_shard`-ed module), "deepspeed" (a DeepSpeed
    engine at ZeRO stage 0-2) or "zero3".
    """
    if _is_deepspeed_engine(model):
        return "zero3" if int(model.zero_optimization_stage()) == 3 else "deepspeed"
    fsdp1 = _fsdp1_class()
    if fsdp1 is not None and isinstance(model, fsdp1):
        return "fsdp1"
    fsdp2 = _fsdp2_class()
    if fsdp2 is not None and isinstance(model, fsdp2):
        return "fsdp2"
    if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return "ddp"
    return "single"


def unwrap_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP / FSDP1 / DeepSpeed wrappers (FSDP2 modules are their own)."""
    for _ in range(8):
        if parallel_kind(model) in ("ddp", "fsdp1", "deepspeed", "zero3"):
            model = model.module
        else:
            break
    return model


def _zero3_offload(engine: torch.nn.Module):
    """The engine's ZeRO-3 parameter-offload object (it owns the fetch/release hooks), if any."""
    optimizer = getattr(engine, "optimizer", None)
    if optimizer is None:
        return None
    return getattr(optimizer, "parameter_offload", optimizer)


def _remove_zero3_hooks(engine: torch.nn.Module) -> bool:
    offload = _zero3_offload(engine)
    needed = ("forward_hooks", "backward_hooks", "_register_deepspeed_module", "module")
    if offload is None or not all(hasattr(offload, name) for name in needed):
        return False
    for param in offload.module.parameters(recurse=True):
        active = getattr(param, "ds_active_sub_modules", None)
        if active is not None:
            active.clear()
    for hook in [*offload.forward_hooks, *offload.backward_hooks]:
        hook.remove()
    offload.forward_hooks, offload.backward_hooks = [], []
    return True


def _restore_zero3_hooks(engine: torch.nn.Module) -> None:
    offload = _zero3_offload(engine)
    coordinator = getattr(offload, "param_coordinator", None)
    if coordinator is not None and not coordinator.is_invalid_trace():
        # The recorded fetch order saw the generation passes, not the training forward.
        coordinator._invalidate_trace()
    offload._register_deepspeed_module(offload.module)


@contextlib.contextmanager
def _zero3_gathered(engine: torch.nn.Module) -> Iterator[torch.nn.Module]:
    import deepspeed

    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        removed = _remove_zero3_hooks(engine)
        if not removed:
            logger.warning(
                "This DeepSpeed version's ZeRO-3 hooks could not be taken off: generation "
                "stays correct but gathers parameters layer by layer at every sampler step."
            )
        try:
            yield engine.module
        finally:
            if removed:
                _restore_zero3_hooks(engine)


@contextlib.contextmanager
def generation_context(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Yield the policy with whole parameters for no-grad passes (see the module docstring).

    Args:
        model: the training model as prepared by accelerate (DDP / FSDP1 / FSDP2 / DeepSpeed
            engine) or a plain module.

    Use it for sampling and log-probs without gradient only: the parameters inside are
    gathered copies (FSDP1 `writeback=False`), so changes made to them are not kept, and the
    training forward/backward must run on `model` itself, outside the context. Every process
    must enter it (the gathers are collective).
    """
    kind = parallel_kind(model)
    if kind == "fsdp1":
        fsdp = _fsdp1_class()
        assert fsdp is not None
        with fsdp.summon_full_params(model, recurse=False, writeback=False):
            yield model.module
    elif kind == "fsdp2":
        # FSDP2 picks its root at the first forward through a sharded module. The fast sampler
        # calls the inner LLaDA model directly (its KV cache), which would make the first block
        # a root of its own (an error at the next root forward): settle the root first.
        state = getattr(model, "_get_fsdp_state", None)
        if callable(state) and hasattr(state(), "_lazy_init"):
            state()._lazy_init()
        model.unshard()
        try:
            yield model
        finally:
            model.reshard()
    elif kind == "zero3":
        with _zero3_gathered(model) as inner:
            yield inner
    else:
        yield unwrap_parallel(model)
