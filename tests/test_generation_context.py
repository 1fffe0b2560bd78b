"""The generation context: rollouts, old and reference log-probs see whole parameters under
every training wrapper.

- Real wrappers on two CPU processes (gloo, `torchrun`): DDP, FSDP1 FULL_SHARD and FSDP2, full
  fine-tuning and LoRA (tests/generation_context_worker.py). The same worker checks DeepSpeed
  ZeRO-3 when deepspeed is installed (`... generation_context_worker.py zero3`; not a d1
  dependency, so not run here).
- Fake wrappers in one process record that the context asks for the gather (DeepSpeed ZeRO-3
  `GatheredParameters` with its hooks off and back on, FSDP1 `summon_full_params`, FSDP2
  `unshard`/`reshard`), and that every no-grad pass of diffu-GRPO enters it, the LoRA
  reference (adapter disabled) included.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import d1.recipes.grpo.generation as generation
from d1.core.models import LoraSettings, apply_lora
from d1.core.sampling import SamplerConfig
from d1.recipes.grpo.generation import generation_context, parallel_kind, unwrap_parallel
from d1.recipes.grpo.rollout import PromptItem, generate_rollouts
from d1.recipes.grpo.update import Reference, UpdateSettings, policy_step, prepare_policy_batch
from d1.tasks.base import Example
from distributed_helpers import free_port

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
def test_real_ddp_fsdp1_fsdp2_on_two_cpu_processes() -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(TESTS / "generation_context_worker.py"),
            "ddp",
            "fsdp1",
            "fsdp2",
        ],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ok = sorted(line for line in proc.stdout.splitlines() if line.startswith("OK "))
    cases = [f"OK {b} {m}" for b in ("ddp", "fsdp1", "fsdp2") for m in ("full", "lora")]
    assert ok == sorted(cases)


# ----------------------------------------------------------------------------- fakes


class Log:
    def __init__(self) -> None:
        self.events: list[str] = []


class FakeHook:
    def __init__(self, log: Log, name: str) -> None:
        self.log, self.name = log, name

    def remove(self) -> None:
        self.log.events.append(f"remove {self.name}")


class FakeCoordinator:
    def __init__(self, log: Log) -> None:
        self.log = log

    def is_invalid_trace(self) -> bool:
        return False

    def _invalidate_trace(self) -> None:
        self.log.events.append("invalidate trace")


class FakeOffload:
    """DeepSpeed's ZeRO-3 parameter offload: owns the fetch/release hooks."""

    def __init__(self, module: torch.nn.Module, log: Log) -> None:
        self.module, self.log = module, log
        self.forward_hooks = [FakeHook(log, "forward")]
        self.backward_hooks = [FakeHook(log, "backward")]
        self.param_coordinator = FakeCoordinator(log)

    def _register_deepspeed_module(self, module: torch.nn.Module) -> None:
        assert module is self.module
        self.log.events.append("register hooks")
        self.forward_hooks = [FakeHook(self.log, "forward")]
        self.backward_hooks = [FakeHook(self.log, "backward")]


class FakeEngine(torch.nn.Module):
    """Quacks like a DeepSpeed engine (`zero_optimization_stage`, `module`, `optimizer`)."""

    def __init__(self, module: torch.nn.Module, stage: int, log: Log) -> None:
        super().__init__()
        self.module = module
        self.stage = stage
        self.optimizer = types.SimpleNamespace(parameter_offload=FakeOffload(module, log))

    def zero_optimization_stage(self) -> int:
        return self.stage

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


@pytest.fixture
def fake_deepspeed(monkeypatch):
    """A `deepspeed` module whose `zero.GatheredParameters` records what it gathers."""
    log = Log()

    @contextlib.contextmanager
    def gathered(params, modifier_rank=None):
        log.events.append(f"gather {len(list(params))} modifier_rank={modifier_rank}")
        try:
            yield
        finally:
            log.events.append("release")

    fake = types.ModuleType("deepspeed")
    fake.zero = types.SimpleNamespace(GatheredParameters=gathered)
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    return log


def _lora(tiny_model_factory) -> torch.nn.Module:
    torch.manual_seed(0)
    return apply_lora(tiny_model_factory("tiny-xs", 0), LoraSettings(r=2, alpha=4, dropout=0.0))


def test_zero3_gathers_every_parameter_with_hooks_off(tiny_model_factory, fake_deepspeed):
    inner = tiny_model_factory("tiny-xs", 0)
    engine = FakeEngine(inner, 3, fake_deepspeed)
    assert parallel_kind(engine) == "zero3" and unwrap_parallel(engine) is inner
    n = len(list(inner.parameters()))
    with generation_context(engine) as model:
        assert model is inner
        assert fake_deepspeed.events == [
            f"gather {n} modifier_rank=None",
            "remove forward",
            "remove backward",
        ]
        assert engine.optimizer.parameter_offload.forward_hooks == []
    assert fake_deepspeed.events[3:] == ["invalidate trace", "register hooks", "release"]
    assert engine.optimizer.parameter_offload.forward_hooks  # back on for training


def test_zero3_hooks_come_back_when_generation_fails(tiny_model_factory, fake_deepspeed):
    engine = FakeEngine(tiny_model_factory("tiny-xs", 0), 3, fake_deepspeed)
    with pytest.raises(RuntimeError, match="boom"), generation_context(engine):
        raise RuntimeError("boom")
    assert fake_deepspeed.events[-2:] == ["register hooks", "release"]


def test_zero2_and_plain_gather_nothing(tiny_model_factory, fake_deepspeed):
    inner = tiny_model_factory("tiny-xs", 0)
    for model, kind in ((FakeEngine(inner, 2, fake_deepspeed), "deepspeed"), (inner, "single")):
        assert parallel_kind(model) == kind
        with generation_context(model) as got:
            assert got is inner
    assert fake_deepspeed.events == []


def test_fsdp1_summons_the_root_and_fsdp2_unshards_it(monkeypatch, tiny_model_factory):
    log = Log()
    inner = tiny_model_factory("tiny-xs", 0)

    class FakeFSDP1(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        @staticmethod
        @contextlib.contextmanager
        def summon_full_params(module, recurse=True, writeback=True):
            log.events.append(f"summon recurse={recurse} writeback={writeback}")
            yield
            log.events.append("summon exit")

    class FakeFSDP2(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.inner = module

        def unshard(self):
            log.events.append("unshard")

        def reshard(self):
            log.events.append("reshard")

    monkeypatch.setattr(generation, "_fsdp1_class", lambda: FakeFSDP1)
    monkeypatch.setattr(generation, "_fsdp2_class", lambda: FakeFSDP2)
    one = FakeFSDP1(inner)
    assert parallel_kind(one) == "fsdp1"
    with generation_context(one) as got:
        assert got is inner and log.events == ["summon recurse=False writeback=False"]
    two = FakeFSDP2(inner)
    assert parallel_kind(two) == "fsdp2"
    with generation_context(two) as got:
        assert got is two  # FSDP2 does not wrap: the root itself
    assert log.events[1:] == ["summon exit", "unshard", "reshard"]


def test_every_no_grad_pass_enters_the_context(tiny_model_factory, tokenizer, fake_deepspeed):
    """Under (fake) ZeRO-3 with LoRA: the rollout, the old log-probs (mu = 2) and the
    reference (adapter disabled) each gather; the training forward does not."""
    from toy_tasks import Echo

    model = _lora(tiny_model_factory)
    engine = FakeEngine(model, 3, fake_deepspeed)
    items = [PromptItem("echo", Echo(), Example(f"e{i}", str(i), "")) for i in range(2)]
    rollout = generate_rollouts(
        engine,
        tokenizer,
        items,
        num_generations=2,
        sampler=SamplerConfig(gen_length=4, block_length=4, steps=2, temperature=1.0),
        mask_id=tokenizer.mask_token_id,
        eos_id=tokenizer.eos_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    gathers = lambda: sum(e.startswith("gather") for e in fake_deepspeed.events)  # noqa: E731
    assert gathers() == 1
    settings = UpdateSettings(
        num_iterations=2,
        micro_batch_size=2,
        num_generations=2,
        mask_id=tokenizer.mask_token_id,
        beta=0.04,
    )
    batch = prepare_policy_batch(
        engine,
        prompt_ids=rollout.prompt_ids,
        prompt_mask=rollout.prompt_mask,
        completion_ids=rollout.completion_ids,
        completion_mask=rollout.completion_mask,
        advantages=torch.tensor([1.0, -1.0, 0.5, -0.5]),
        settings=settings,
        generation_batch=0,
    )
    assert gathers() == 2
    reference = Reference(engine)  # LoRA: the adapter of the wrapped model is disabled
    policy_step(
        engine,
        batch,
        1,
        settings=settings,
        backward=lambda loss: loss.backward(),
        reference=reference,
    )
    assert gathers() == 4  # one reference pass per micro-batch (2 of 2 rows)
    assert any(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_reference_outside_lora_needs_a_frozen_copy(tiny_model_factory):
    engine = FakeEngine(tiny_model_factory("tiny-xs", 0), 3, Log())
    with pytest.raises(ValueError, match="frozen copy"):
        Reference(engine)
