"""Bad launches of diffu-GRPO fail with one clear line before anything loads or samples."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from d1.config import ConfigError, load_config
from d1.recipes.grpo.config import GRPOConfig
from d1.recipes.grpo.launch import LaunchPlan, check_launch

ACCELERATE_ENV = (
    "WORLD_SIZE",
    "ACCELERATE_USE_DEEPSPEED",
    "ACCELERATE_DEEPSPEED_ZERO_STAGE",
    "ACCELERATE_USE_FSDP",
)


def cfg(*overrides: str) -> GRPOConfig:
    return load_config(GRPOConfig, None, list(overrides))


def bf16_lora() -> GRPOConfig:
    return cfg("model.load_in_4bit=false", "train.max_steps=10")


@pytest.fixture
def bitsandbytes_installed(monkeypatch):
    """Pretend bitsandbytes is installed (the 4-bit check only looks for it)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "bitsandbytes" else real(name, *a),
    )


@pytest.fixture
def clean_env(monkeypatch):
    for key in ACCELERATE_ENV:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_plan_from_the_accelerate_environment(clean_env) -> None:
    assert LaunchPlan.from_env() == LaunchPlan(1, "ddp", 0, torch.cuda.is_available())
    clean_env.setenv("WORLD_SIZE", "8")
    clean_env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    clean_env.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    plan = LaunchPlan.from_env()
    assert (plan.num_processes, plan.backend, plan.zero_stage) == (8, "deepspeed", 3)
    clean_env.delenv("ACCELERATE_USE_DEEPSPEED")
    clean_env.setenv("ACCELERATE_USE_FSDP", "true")
    assert LaunchPlan.from_env().backend == "fsdp"


def test_world_size_must_divide_the_global_batch() -> None:
    # 96 completions, 6 per micro-batch: 1, 2, 4, 8 or 16 processes; not 5 or 3 x ... .
    for world in (1, 2, 4, 8, 16):
        check_launch(bf16_lora(), LaunchPlan(num_processes=world))
    with pytest.raises(ConfigError, match=r"6 x 5 = 30: launch a number of processes"):
        check_launch(bf16_lora(), LaunchPlan(num_processes=5))
    # 12 completions in micro-batches of 2 on 3 processes: 4 each, not whole groups of G = 6.
    small = cfg(
        "model.load_in_4bit=false",
        "train.max_steps=1",
        "global_batch_size=12",
        "train.per_device_batch_size=2",
    )
    check_launch(small, LaunchPlan(num_processes=2))
    with pytest.raises(ConfigError, match=r"4 completions, not whole groups"):
        check_launch(small, LaunchPlan(num_processes=3))


def test_4bit_needs_bitsandbytes(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        check_launch(cfg("train.max_steps=10"), LaunchPlan(cuda=True))


def test_4bit_needs_cuda(monkeypatch, bitsandbytes_installed) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        check_launch(cfg("train.max_steps=10"), LaunchPlan())


def test_4bit_is_data_parallel_only(monkeypatch, bitsandbytes_installed) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    qlora = cfg("train.max_steps=10")
    check_launch(qlora, LaunchPlan(num_processes=8, cuda=True))  # the paper's setting
    check_launch(qlora, LaunchPlan(num_processes=8, backend="deepspeed", zero_stage=2, cuda=True))
    for plan in (
        LaunchPlan(num_processes=8, backend="fsdp", cuda=True),
        LaunchPlan(num_processes=8, backend="deepspeed", zero_stage=3, cuda=True),
    ):
        with pytest.raises(ConfigError, match=r"multi_gpu_ddp\.yaml"):
            check_launch(qlora, plan)


def test_sharding_on_cpus_is_refused_not_ignored() -> None:
    for plan in (
        LaunchPlan(num_processes=2, backend="fsdp"),
        LaunchPlan(num_processes=2, backend="deepspeed", zero_stage=3),
    ):
        with pytest.raises(RuntimeError, match=r"cpu_2proc\.yaml"):
            check_launch(bf16_lora(), plan)


def test_zero3_reference_needs_a_lora_adapter_to_disable() -> None:
    zero3 = LaunchPlan(num_processes=8, backend="deepspeed", zero_stage=3, cuda=True)
    full = cfg("model.load_in_4bit=false", "lora=null", "train.max_steps=10")
    with pytest.raises(ConfigError, match="no LoRA adapter to disable"):
        check_launch(full, zero3)
    # Fine: LoRA (reference = adapter disabled), no KL term, or FSDP (a replicated copy).
    check_launch(bf16_lora(), zero3)
    check_launch(
        cfg("model.load_in_4bit=false", "lora=null", "grpo.beta=0", "train.max_steps=10"), zero3
    )
    check_launch(full, LaunchPlan(num_processes=8, backend="fsdp", cuda=True))


def test_train_grpo_checks_the_launch_before_loading(tmp_path: Path, clean_env) -> None:
    """Through the trainer: the error comes before the run folder exists (nothing loaded)."""
    from d1.recipes.grpo.trainer import train_grpo

    out = tmp_path / "runs"
    base = [
        "model.name_or_path=tiny-xs",
        "model.load_in_4bit=false",
        "train.max_steps=2",
        f"train.output_dir={out}",
        "tasks=[{name: addition}]",
    ]
    clean_env.setattr(torch.cuda, "is_available", lambda: False)
    clean_env.setenv("WORLD_SIZE", "5")
    with pytest.raises(ConfigError, match="launch a number of processes"):
        train_grpo(None, base)
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    clean_env.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(RuntimeError, match="needs GPUs"):
        train_grpo(None, base)
    clean_env.delenv("ACCELERATE_USE_DEEPSPEED")
    clean_env.setenv("WORLD_SIZE", "1")
    with pytest.raises((ImportError, RuntimeError), match="load_in_4bit"):
        train_grpo(None, [*base[:1], *base[2:]])  # the paper default: a 4-bit base
    assert not out.exists()


# ----------------------------------------------------------------------------- 8-bit AdamW


def test_8bit_optimizer_key_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"optim\.optimizer"):
        cfg("optim.optimizer=adamw_4bit", "train.max_steps=1")
    assert cfg("optim.optimizer=paged_adamw_8bit").optim.optimizer == "paged_adamw_8bit"


def test_8bit_optimizer_needs_bitsandbytes_and_cuda(monkeypatch) -> None:
    eight = cfg("model.load_in_4bit=false", "optim.optimizer=adamw_8bit", "train.max_steps=1")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"optim\.optimizer=adamw_8bit needs the bitsandbytes"):
        check_launch(eight, LaunchPlan(cuda=True))
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "bitsandbytes" else real(name, *a),
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        check_launch(eight, LaunchPlan())


def test_8bit_optimizer_is_bitsandbytes_with_our_groups(monkeypatch, bitsandbytes_installed):
    """The optimizer is bitsandbytes' class, over d1's two parameter groups with the config's
    hyper-parameters (a fake bitsandbytes records the call; the real one needs CUDA)."""
    import sys
    import types

    from d1.training.config import OptimConfig
    from d1.training.optim import build_optimizer

    made = {}

    def recorder(name):
        def make(groups, **kwargs):
            made.update(name=name, groups=groups, kwargs=kwargs)
            return name

        return make

    fake = types.ModuleType("bitsandbytes")
    fake.optim = types.SimpleNamespace(
        AdamW8bit=recorder("AdamW8bit"), PagedAdamW8bit=recorder("PagedAdamW8bit")
    )
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model = torch.nn.Linear(3, 2)
    for name, cls in (("adamw_8bit", "AdamW8bit"), ("paged_adamw_8bit", "PagedAdamW8bit")):
        opt_cfg = OptimConfig(optimizer=name, learning_rate=3e-6, adam_beta2=0.99, weight_decay=0.1)
        assert build_optimizer(model, opt_cfg) == cls
        assert made["kwargs"] == {"lr": 3e-6, "betas": (0.9, 0.99), "eps": 1e-8}
        decay, no_decay = made["groups"]
        assert decay["params"] == [model.weight] and decay["weight_decay"] == 0.1
        assert no_decay["params"] == [model.bias] and no_decay["weight_decay"] == 0.0
    assert isinstance(build_optimizer(model, OptimConfig()), torch.optim.AdamW)
