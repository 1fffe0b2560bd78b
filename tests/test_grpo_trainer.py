"""diffu-GRPO config, reference policy, exact resume and an end-to-end run (docs/method.md §4)."""

from __future__ import annotations

import copy
import json
import signal
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from d1.config import ConfigError, load_config
from d1.recipes.grpo.config import GRPOConfig
from toy_tasks import TOY_TASKS

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "grpo"


def _tiny_overrides(out: Path, **extra: str) -> list[str]:
    base = {
        "model.name_or_path": "tiny-xs",
        "model.load_in_4bit": "false",
        "lora": "null",
        "global_batch_size": "null",
        "train.per_device_batch_size": "8",
        "train.gradient_accumulation_steps": "2",
        "train.max_steps": "6",
        "train.num_threads": "1",
        "train.output_dir": str(out),
        "train.report_to": "[none]",
        "train.save_steps": "null",
        "train.progress": "'off'",
        "grpo.num_generations": "4",
        "grpo.num_iterations": "2",
        "grpo.sampler.gen_length": "8",
        "grpo.sampler.block_length": "8",
        "grpo.sampler.steps": "4",
        "grpo.sampler.temperature": "1.0",
        "grpo.log_completions_steps": "2",
        "optim.learning_rate": "1e-3",
        "optim.max_grad_norm": "1.0",
        "tasks": "[{name: echo}]",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


# ----------------------------------------------------------------------------- config


def test_paper_defaults() -> None:
    cfg = GRPOConfig()
    g = cfg.grpo
    assert (g.num_generations, g.num_iterations, g.p_mask_prompt) == (6, 12, 0.15)
    assert (g.epsilon, g.beta, g.sampler.temperature, g.scale_rewards) == (0.5, 0.04, 0.9, "none")
    assert (g.sampler.gen_length, g.sampler.block_length, g.sampler.num_steps) == (256, 32, 128)
    # d1's schedule, decoded with the dual block cache (RL default, RESULTS_rl_throughput.md).
    assert (g.sampler.name, g.sampler.cache_mode, g.sampler.threshold) == ("fast", "dual", None)
    assert g.max_prompt_length == 200
    o = cfg.optim
    assert (o.learning_rate, o.adam_beta1, o.adam_beta2, o.weight_decay) == (3e-6, 0.9, 0.99, 0.1)
    assert (o.max_grad_norm, o.lr_scheduler) == (0.2, "constant_with_warmup")
    assert cfg.lora is not None and (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (
        128,
        64,
        0.05,
    )
    assert cfg.model.load_in_4bit
    # 96 completions = 16 prompts x 6 per step: 16 micro-batches on 1 GPU, 2 on 8 (d1).
    assert cfg.gradient_accumulation_steps(1) == 16 and cfg.gradient_accumulation_steps(8) == 2


def test_partial_overrides_keep_paper_defaults() -> None:
    cfg = load_config(GRPOConfig, None, ["optim.learning_rate=1e-5", "train.max_steps=10"])
    assert cfg.optim.learning_rate == 1e-5
    assert cfg.optim.adam_beta2 == 0.99 and cfg.optim.max_grad_norm == 0.2
    assert cfg.train.per_device_batch_size == 6 and cfg.train.max_steps == 10


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="global_batch_size"):
        load_config(GRPOConfig, None, ["global_batch_size=100"])
    with pytest.raises(ConfigError, match="load_in_4bit"):
        load_config(GRPOConfig, None, ["lora=null"])
    with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
        load_config(
            GRPOConfig,
            None,
            ["global_batch_size=null", "train.per_device_batch_size=4", "grpo.num_generations=6"],
        )
    with pytest.raises(ConfigError, match=r"'grpo\.sampler\.steps'.*multiple of the number"):
        load_config(GRPOConfig, None, ["grpo.sampler.steps=100"])
    with pytest.raises(ConfigError, match="tasks"):
        load_config(GRPOConfig, None, ["tasks=[{name: nope}]"])


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(GRPOConfig, path)
    assert cfg.tasks and cfg.train.max_steps
    if not path.name.startswith("tiny"):
        # Paper configs: 96 completions per optimizer step, d1's mu per task.
        assert cfg.global_batch_size == 96 and cfg.grpo.num_generations == 6
        mu = 8 if path.stem in ("countdown", "sudoku") else 12
        assert cfg.grpo.num_iterations == mu


# ----------------------------------------------------------------------------- reference


def test_lora_reference_is_the_base_model(tiny_model_factory) -> None:
    from d1.core.likelihood import estimate_logps
    from d1.core.models import LoraSettings, apply_lora
    from d1.recipes.grpo.update import Reference

    base = tiny_model_factory("tiny-xs", 1)
    original = copy.deepcopy(base)
    model = apply_lora(base, LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # a trained adapter: the policy now differs from the base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, 60, (3, 6), generator=g)
    comp = torch.randint(10, 60, (3, 4), generator=g)
    noise = torch.zeros_like(prompt, dtype=torch.bool)
    mask_id = original.config.mask_token_id
    kw = {"mask_id": mask_id, "prompt_noise": noise}
    model.train()
    ref = Reference(model)
    with torch.no_grad(), ref.policy() as ref_model:
        ref_lp = estimate_logps(ref_model, prompt, None, comp, **kw)
    assert model.training  # mode restored
    with torch.no_grad():
        base_lp = estimate_logps(original, prompt, None, comp, **kw)
        policy_lp = estimate_logps(model.eval(), prompt, None, comp, **kw)
    torch.testing.assert_close(ref_lp, base_lp, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(policy_lp, base_lp, atol=1e-3)


# ----------------------------------------------------------------------------- the loop


def _metrics(run_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


def test_lora_run_logs_and_resumes_exactly(tmp_path: Path, echo_task) -> None:
    """Save inside a generation batch (mu = 2, step 3), resume: identical weights and metrics."""
    from safetensors.torch import load_file

    from d1.recipes.grpo.trainer import train_grpo

    lora = [
        "lora={r: 4, alpha: 8, dropout: 0.1}",
        "grpo.beta=0.04",
        "train.save_steps=3",
    ]
    first = train_grpo(None, _tiny_overrides(tmp_path, **{"train.run_name": "a"}) + lora)
    ckpts = first.run_dir / "checkpoints"
    assert (ckpts / "checkpoint-3" / "grpo_batch_0.pt").is_file()  # mid generation batch
    final_a = load_file(ckpts / "checkpoint-6" / "adapter_model.safetensors")
    rows_a = _metrics(first.run_dir)
    assert [r["step"] for r in rows_a] == [1, 2, 3, 4, 5, 6]
    row = rows_a[0]
    for key in (
        "train/loss",
        "train/kl",
        "train/clip_ratio/region",
        "train/ratio/mean",
        "train/reward",
        "train/rewards/echo/match",
        "train/reward/echo",
        "train/accuracy/echo",
        "train/reward/timeouts",
        "train/completion_length",
        "train/advantage/zero_std_group_fraction",
        "train/advantage/nonzero_fraction",
        "train/lr",
        "compute/generations",
        "compute/forward_passes",
        "compute/backward_passes",
        "compute/forward_tokens",
    ):
        assert key in row, key
    assert row["train/reward/timeouts"] == 0.0
    assert row["train/ratio/min"] == 1.0 == row["train/ratio/max"]  # k = 0: old = current
    assert "train/reward" not in rows_a[1]  # rollouts only every mu = 2 steps
    assert rows_a[-1]["compute/generations"] == 3 * 16
    # Compute accounting: mu = 2 -> one old pass per generation batch; a ref pass per step.
    assert rows_a[-1]["compute/old_forward_passes"] == 3 * 16
    assert rows_a[-1]["compute/ref_forward_passes"] == 6 * 16
    assert rows_a[-1]["compute/backward_passes"] == 6 * 16
    samples = (first.run_dir / "samples.jsonl").read_text().splitlines()
    assert samples and {"completion", "reward", "rewards", "advantage"} <= set(
        json.loads(samples[0])
    )

    resumed = train_grpo(
        None,
        _tiny_overrides(tmp_path, **{"train.run_name": "a"})
        + lora
        + [f"train.resume_from={ckpts / 'checkpoint-3'}"],
    )
    assert resumed.step == 6
    final_b = load_file(ckpts / "checkpoint-6" / "adapter_model.safetensors")
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key
    # The rows of steps 4-6 were dropped on resume and logged again: each step once.
    rows_b = _metrics(resumed.run_dir)
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4, 5, 6]
    assert rows_b[:3] == rows_a[:3]
    for ra, rb in zip(rows_a[3:], rows_b[3:], strict=True):
        for key in ("train/loss", "train/kl", "train/grad_norm", "compute/forward_passes"):
            assert ra[key] == rb[key], key


def test_full_finetune_mu1_with_kl_and_a_task_mixture(tmp_path: Path, echo_task, monkeypatch):
    """mu = 1 with beta > 0 (the reference crashed there), frozen-copy reference, two tasks."""
    import d1.tasks
    from d1.recipes.grpo.trainer import train_grpo

    monkeypatch.setitem(d1.tasks._REGISTRY, "letter", TOY_TASKS["letter"])
    result = train_grpo(
        None,
        _tiny_overrides(
            tmp_path,
            **{
                "train.run_name": "mu1",
                "train.max_steps": "3",
                "grpo.num_iterations": "1",
                "grpo.beta": "0.04",
                "optim.warmup_ratio": "0.0",
                "tasks": "[{name: echo, weight: 1}, {name: letter, weight: 1}]",
            },
        ),
    )
    rows = _metrics(result.run_dir)
    assert len(rows) == 3
    for row in rows:
        assert "train/reward" in row  # mu = 1: a generation batch every step
        assert row["train/ratio/min"] == 1.0 == row["train/ratio/max"]
        assert row["train/kl"] >= 0.0
    assert rows[0]["train/kl"] == pytest.approx(0.0, abs=1e-6)  # policy = reference at step 0
    assert rows[0]["train/grad_norm"] > 0.0
    assert rows[-1]["train/kl"] > 0.0  # the policy moved away from the frozen reference
    assert rows[-1]["compute/old_forward_passes"] == 0  # mu = 1: old log-probs = current
    assert rows[-1]["compute/ref_forward_passes"] == 3 * 16
    keys = set().union(*rows)
    assert {"train/reward/echo", "train/reward/letter", "train/rewards/letter/match"} <= keys


@pytest.mark.slow
def test_sft_then_grpo_raises_reward(tmp_path: Path, echo_task) -> None:
    """Briefly SFT a tiny model on a generated task, then diffu-GRPO: the mean reward rises.

    The long version lives in benchmarks/grpo_step.py (--demo).
    """
    from d1.recipes.grpo.trainer import train_grpo
    from d1.recipes.sft.trainer import train_sft

    sft_dir = train_sft(
        None,
        [
            "model.name_or_path=tiny-xs",
            "lora=null",
            "global_batch_size=null",
            "train.per_device_batch_size=16",
            "train.max_steps=25",
            f"train.output_dir={tmp_path}",
            "train.run_name=sft",
            "train.report_to=[none]",
            "train.num_threads=1",
            "train.eval_steps=null",
            "train.save_steps=null",
            "train.metric_for_best=null",
            "train.progress='off'",
            "optim.learning_rate=3e-3",
            "optim.lr_scheduler=constant",
            "data.format=task",
            "data.task=echo",
            "data.max_length=48",
            "data.pad_to=longest",
            "data.validation_size=8",
        ],
    )
    start = sft_dir / "checkpoints" / "checkpoint-25"
    result = train_grpo(
        None,
        _tiny_overrides(
            tmp_path,
            **{
                "model.name_or_path": str(start),
                "train.run_name": "grpo",
                "train.per_device_batch_size": "16",
                "train.max_steps": "60",
                "grpo.beta": "0.0",
                "grpo.epsilon": "0.2",
                "train.seed": "1",
            },
        ),
    )
    rewards = [r["train/reward"] for r in _metrics(result.run_dir) if "train/reward" in r]
    assert len(rewards) == 30
    early, late = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert late > early + 0.08, (early, late, rewards)
    nonzero = [
        r["train/advantage/nonzero_fraction"]
        for r in _metrics(result.run_dir)
        if "train/reward" in r
    ]
    assert max(nonzero) > 0.3  # the rollouts do carry a learning signal


# The child runs diffu-GRPO and, once step `kill_after` is logged (after the checkpoint of step
# 3, inside a generation batch), announces itself and sleeps until killed.
GRPO_CHILD = r"""
import sys, time
from pathlib import Path
from typing import ClassVar
import d1.training.tracking as tracking

marker, kill_after = Path(sys.argv[1]), int(sys.argv[2])
original = tracking.Tracker.log

def log_then_hang(self, metrics, step):
    original(self, metrics, step)
    if step == kill_after:
        marker.write_text("logged")
        time.sleep(600)

tracking.Tracker.log = log_then_hang
from d1.recipes.grpo.trainer import train_grpo
train_grpo(None, sys.argv[3:])
"""


def _addition_overrides(out: Path, run_name: str, **extra: str) -> list[str]:
    """Tiny diffu-GRPO on 2-digit addition (compact prompts): the random tiny model's digits
    reward is small but non-zero and varies within groups, so advantages and hence updates
    depend on the sampled rollouts. LoRA with dropout, KL, mu = 2, a checkpoint every 3 steps
    (3: inside a generation batch), 8 steps."""
    cfg = {
        "train.run_name": run_name,
        "lora": "{r: 4, alpha: 8, dropout: 0.1}",
        "train.max_steps": "8",
        "train.save_steps": "3",
        "grpo.beta": "0.04",
        "grpo.log_completions_steps": "1",
        "tasks": "[{name: addition, options: {prompt_style: compact, digits: 2, train_size: 200}}]",
    }
    cfg.update(extra)
    return _tiny_overrides(out, **cfg)


def _steady(rows: list[dict]) -> list[dict]:
    """Metric rows without wall-clock fields (they differ between runs)."""
    return [
        {
            k: v
            for k, v in r.items()
            if k != "time" and k != "train/tokens_per_s" and not k.startswith("time/")
        }
        for r in rows
    ]


def test_grpo_killed_and_resumed_equals_an_uninterrupted_run(tmp_path, interrupt_child, caplog):
    from d1.recipes.grpo.trainer import train_grpo

    marker = tmp_path / "logged"
    args = [str(marker), "5", *_addition_overrides(tmp_path, "b")]
    rc, _ = interrupt_child(GRPO_CHILD, args, marker)
    assert rc == -signal.SIGKILL
    killed = tmp_path / "b"
    assert [r["step"] for r in _metrics(killed)] == [1, 2, 3, 4, 5]
    assert (killed / "checkpoints" / "latest").read_text().strip() == "checkpoint-3"
    assert (killed / "checkpoints" / "checkpoint-3" / "grpo_batch_0.pt").is_file()  # 3 % 2 = 1

    with caplog.at_level("INFO", logger="d1.training.run"):
        resumed = train_grpo(
            None, _addition_overrides(tmp_path, "b", **{"train.resume_from": "auto"})
        )
    assert f"Resumed from {killed / 'checkpoints' / 'checkpoint-3'} at step 3." in caplog.text
    straight = train_grpo(None, _addition_overrides(tmp_path, "a"))
    assert resumed.step == straight.step == 8

    rows_a, rows_b = (
        _metrics(straight.run_dir),
        _metrics(killed),
    )
    assert [r["step"] for r in rows_b] == list(range(1, 9))  # each step once
    assert _steady(rows_b) == _steady(rows_a)
    # The rollouts carried a real, varying signal: non-zero rewards and advantages.
    rollout_rows = [r for r in rows_a if "train/reward" in r]
    assert len(rollout_rows) == 4
    for r in rollout_rows:
        assert r["train/rewards/addition/digits"] > 0 and r["train/reward_std"] > 0
        assert r["train/advantage/nonzero_fraction"] > 0
    samples_a = _metrics(straight.run_dir, "samples.jsonl")
    assert samples_a and samples_a == _metrics(killed, "samples.jsonl")
    for name in ("adapter_model.safetensors", "optimizer.pt"):
        a = (straight.run_dir / "checkpoints" / "checkpoint-8" / name).read_bytes()
        assert a == (killed / "checkpoints" / "checkpoint-8" / name).read_bytes(), name


# ----------------------------------------------------------------------------- progress


class RecordingBar:
    """Stands in for `ProgressBar` in a run: records every position, value and phase."""

    made: ClassVar[list[RecordingBar]] = []

    def __init__(self, total: int, **kwargs) -> None:
        self.total, self.active, self.events = total, True, []
        RecordingBar.made.append(self)

    def update(self, step: int, **info: float) -> None:
        self.events.append(("update", step, dict(info)))

    def phase(self, text: str | None) -> None:
        self.events.append(("phase", text))

    def close(self) -> None:
        pass


def test_progress_moves_every_step_names_rollouts_and_shows_reward(
    tmp_path: Path, echo_task, monkeypatch
) -> None:
    """The bar moves on every optimizer step (not only when logging), says which sampler call
    and block a rollout is at, and shows the reward and accuracy of the latest rollouts."""
    import d1.training.run as run_module
    from d1.recipes.grpo.trainer import train_grpo

    RecordingBar.made.clear()
    monkeypatch.setattr(run_module, "ProgressBar", RecordingBar)
    overrides = _tiny_overrides(
        tmp_path,
        **{
            "train.max_steps": "4",
            "train.logging_steps": "2",
            "grpo.sampler.block_length": "4",
            "grpo.generation_batch_size": "4",
        },
    )
    result = train_grpo(None, overrides)
    [bar] = RecordingBar.made
    steps = [e[1] for e in bar.events if e[0] == "update"]
    assert sorted(set(steps)) == [1, 2, 3, 4]  # every step, before any logging
    phases = [e[1] for e in bar.events if e[0] == "phase"]
    # 4 prompts x G 4 = 16 completions in calls of 4, gen 8 in blocks of 4: 2 blocks per call.
    for call in range(1, 5):
        for block in (1, 2):
            assert f"rollout: sampling {call}/4, block {block}/2" in phases
    assert "rollout: scoring 16 completions" in phases and "old / reference log-probs" in phases
    assert phases[-1] == "train"  # every phase ends back on the bar's own name
    shown = [e[2] for e in bar.events if e[0] == "update" and e[2]]
    assert shown and all({"reward", "accuracy", "loss", "lr"} <= set(v) for v in shown)
    logged = [r for r in _metrics(result.run_dir) if "train/reward" in r]
    assert shown[0]["reward"] == logged[0]["train/reward"]
