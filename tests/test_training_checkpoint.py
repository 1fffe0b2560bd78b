"""Checkpoint safety: SIGKILL in the middle of a save leaves the previous checkpoint and the
`latest` pointer intact, and the run resumes from it; manager bookkeeping in isolation."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import PartialState
from safetensors.torch import load_file

from d1.sft import train_sft
from d1.training.checkpoint import CheckpointManager, TrainState, verify_checkpoint

# The child trains and, while writing checkpoint 2 (after its optimizer file, before the folder
# is complete), announces itself and sleeps until killed.
CHILD = r"""
import sys, time
from pathlib import Path
import d1.training.checkpoint as ck

marker = Path(sys.argv[1])
original = ck._save_torch

def save_and_hang(obj, path):
    original(obj, path)
    if ".tmp-checkpoint-2" in str(path) and path.name == "optimizer.pt":
        marker.write_text("saving")
        time.sleep(600)

ck._save_torch = save_and_hang
from d1.sft import train_sft
train_sft(None, sys.argv[2:])
"""


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def sft_overrides(tmp_path: Path, **extra) -> list[str]:
    data = tmp_path / "pr.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"q{i}", "response": f"r{i % 5}"}) + "\n" for i in range(8))
    )
    cfg = {
        "model.name_or_path": "tiny-xs",
        "data.format": "prompt_response",
        "data.path": str(data),
        "data.max_length": 36,
        "data.validation_size": 2,
        "data.system_prompt": False,
        "lora": "null",
        "global_batch_size": 2,
        "train.per_device_batch_size": 2,
        "train.max_steps": 3,
        "train.save_steps": 1,
        "train.eval_steps": "null",
        "train.output_dir": str(tmp_path / "runs"),
        "train.report_to": "none",
        "train.num_threads": 1,
    }
    cfg.update(extra)
    return [f"{k}={v}" for k, v in cfg.items()]


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path, interrupt_child):
    marker = tmp_path / "saving"
    rc, _ = interrupt_child(CHILD, [str(marker), *sft_overrides(tmp_path)], marker)
    assert rc == -signal.SIGKILL

    root = tmp_path / "runs" / "sft" / "checkpoints"
    # The half-written folder never replaced anything; the pointer still names checkpoint 1,
    # which is complete and loadable.
    assert (root / ".tmp-checkpoint-2" / "optimizer.pt").is_file()
    assert not (root / "checkpoint-2").exists()
    assert (root / "latest").read_text().strip() == "checkpoint-1"
    ckpt = root / "checkpoint-1"
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 1
    assert load_file(ckpt / "model.safetensors")
    torch.load(ckpt / "optimizer.pt", weights_only=False)

    # Resuming picks checkpoint 1, removes the debris and finishes the run.
    run_dir = train_sft(None, sft_overrides(tmp_path, **{"train.resume_from": "auto"}))
    assert not (root / ".tmp-checkpoint-2").exists()
    assert (root / "latest").read_text().strip() == "checkpoint-3"
    final = json.loads((root / "checkpoint-3" / "trainer_state.json").read_text())
    assert final["step"] == 3
    steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert 2 in steps and 3 in steps


def test_manager_best_latest_and_pruning(tmp_path):
    state_obj = PartialState(cpu=True)

    class Acc:  # the two collective calls the manager makes, on one process
        is_main_process = True
        process_index = state_obj.process_index

        def wait_for_everyone(self):
            pass

    mgr = CheckpointManager(tmp_path, Acc(), keep_last=1, metric_name="eval/loss")
    state = TrainState()

    def writer(step):
        def write(folder: Path) -> None:
            (folder / "trainer_state.json").write_text(json.dumps({"step": step}))

        return write

    for step, metric in [(1, 2.0), (2, 1.0), (3, 1.5), (4, None)]:
        state.step = step
        mgr.save(step, writer(step), metric=metric, state=state)
    assert mgr.latest() == tmp_path / "checkpoint-4"
    assert mgr.best() == {
        "checkpoint": "checkpoint-2",
        "metric": "eval/loss",
        "value": 1.0,
        "step": 2,
    }
    assert (state.best_metric, state.best_checkpoint) == (1.0, "checkpoint-2")
    # keep_last=1 keeps the newest and the best only.
    assert [p.name for p in mgr.checkpoints()] == ["checkpoint-2", "checkpoint-4"]
    (tmp_path / ".tmp-checkpoint-5").mkdir()
    assert mgr.remove_stale() == [tmp_path / ".tmp-checkpoint-5"]
    # Re-saving an existing step replaces it atomically.
    mgr.save(4, writer(44), state=state)
    assert json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())["step"] == 44


CLI = "import sys; from d1.cli import app; sys.argv = ['d1', *sys.argv[1:]]; app()"


def test_cli_learning_rate_too_high_stops_before_saving_nan(tmp_path):
    """The reported failure, for real: lr 1e6 diverges; the run stops non-zero naming the step
    and the cause, and the last checkpoint before the divergence stays good."""
    over = sft_overrides(
        tmp_path,
        **{"train.max_steps": 30, "train.eval_steps": 1, "optim.learning_rate": "1e6"},
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "sft", *over], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("Error: ")]
    m = re.search(r"non-finite (loss|gradient norm)\b.* at optimizer step (\d+)", line)
    assert m, line
    bad_step = int(m.group(2))
    assert "optim.learning_rate=1000000.0" in line and "train.on_nonfinite=skip" in line
    root = tmp_path / "runs" / "sft" / "checkpoints"
    last = root / f"checkpoint-{bad_step - 1}"
    assert f"last complete checkpoint: {last} (step {bad_step - 1})" in line
    assert (root / "latest").read_text().strip() == last.name
    assert not list(root.glob(f"checkpoint-{bad_step}")) and verify_checkpoint(last) is None
    assert all(torch.isfinite(t).all() for t in load_file(last / "model.safetensors").values())
    assert math.isfinite(json.loads((root / "best.json").read_text())["value"])


def test_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path, interrupt_child):
    over = sft_overrides(tmp_path, **{"train.max_steps": 100000, "train.progress": "off"})
    root = tmp_path / "runs" / "sft" / "checkpoints"
    rc, err = interrupt_child(CLI, ["sft", *over], root / "latest", signal.SIGINT)
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err
    m = re.search(
        r"Interrupted\. Last complete checkpoint: (\S+) \(step (\d+)\)\. Resume with: (.*)", err
    )
    assert m, err[-3000:]
    ckpt = Path(m.group(1))
    assert ckpt.parent == root and ckpt.name == f"checkpoint-{m.group(2)}"
    assert verify_checkpoint(ckpt) is None
    assert shlex.split(m.group(3)) == ["d1", "sft", *over, "train.resume_from=auto"]


def test_interrupt_message_before_any_checkpoint(tmp_path):
    from d1.cli import _interrupted_message
    from d1.config import load_config
    from d1.sft import SFTConfig

    cfg = load_config(SFTConfig, None, [f"train.output_dir={tmp_path}", "train.run_name=r"])
    argv = ["sft", "train.resume_from=/old/checkpoint-3", "train.max_steps=9"]
    msg = _interrupted_message(cfg, "sft", argv)
    assert f"no checkpoint yet in {tmp_path / 'r' / 'checkpoints'}" in msg
    assert msg.endswith("Resume with: d1 sft train.max_steps=9 train.resume_from=auto")
    assert "nothing was saved" in _interrupted_message(None, "sft", argv)


# The child runs diffu-GRPO and, once step `kill_after` is logged (after the checkpoint of step
# 3, inside a generation batch), announces itself and sleeps until killed.
GRPO_CHILD = r"""
import sys, time
from pathlib import Path
import d1.training.tracking as tracking

marker, kill_after = Path(sys.argv[1]), int(sys.argv[2])
original = tracking.Tracker.log

def log_then_hang(self, metrics, step):
    original(self, metrics, step)
    if step == kill_after:
        marker.write_text("logged")
        time.sleep(600)

tracking.Tracker.log = log_then_hang
from d1.grpo.trainer import train_grpo
train_grpo(None, sys.argv[3:])
"""


def grpo_overrides(tmp_path: Path, run_name: str, **extra) -> list[str]:
    """Tiny diffu-GRPO on 2-digit addition (compact prompts): the random tiny model's digits
    reward is small but non-zero and varies within groups, so advantages and hence updates
    depend on the sampled rollouts. mu = 2, a checkpoint every 3 steps (3: mid batch)."""
    cfg = {
        "model.name_or_path": "tiny-xs",
        "model.load_in_4bit": "false",
        "lora": "{r: 4, alpha: 8, dropout: 0.1}",
        "global_batch_size": "null",
        "train.per_device_batch_size": "8",
        "train.gradient_accumulation_steps": "2",
        "train.max_steps": "8",
        "train.num_threads": "1",
        "train.output_dir": str(tmp_path),
        "train.run_name": run_name,
        "train.report_to": "[none]",
        "train.save_steps": "3",
        "train.progress": "'off'",
        "grpo.num_generations": "4",
        "grpo.num_iterations": "2",
        "grpo.sampler.gen_length": "8",
        "grpo.sampler.block_length": "8",
        "grpo.sampler.steps": "4",
        "grpo.sampler.temperature": "1.0",
        "grpo.beta": "0.04",
        "grpo.log_completions_steps": "1",
        "optim.learning_rate": "1e-3",
        "tasks": "[{name: addition, options: {prompt_style: compact, digits: 2, train_size: 200}}]",
    }
    cfg.update(extra)
    return [f"{k}={v}" for k, v in cfg.items()]


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


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_grpo_killed_and_resumed_equals_an_uninterrupted_run(tmp_path, interrupt_child, caplog):
    from d1.grpo.trainer import train_grpo

    marker = tmp_path / "logged"
    args = [str(marker), "5", *grpo_overrides(tmp_path, "b")]
    rc, _ = interrupt_child(GRPO_CHILD, args, marker)
    assert rc == -signal.SIGKILL
    killed = tmp_path / "b"
    assert [r["step"] for r in _jsonl(killed / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert (killed / "checkpoints" / "latest").read_text().strip() == "checkpoint-3"
    assert (killed / "checkpoints" / "checkpoint-3" / "grpo_batch_0.pt").is_file()  # 3 % 2 = 1

    with caplog.at_level("INFO", logger="d1.training.run"):
        resumed = train_grpo(None, grpo_overrides(tmp_path, "b", **{"train.resume_from": "auto"}))
    assert f"Resumed from {killed / 'checkpoints' / 'checkpoint-3'} at step 3." in caplog.text
    straight = train_grpo(None, grpo_overrides(tmp_path, "a"))
    assert resumed.step == straight.step == 8

    rows_a, rows_b = _jsonl(straight.run_dir / "metrics.jsonl"), _jsonl(killed / "metrics.jsonl")
    assert [r["step"] for r in rows_b] == list(range(1, 9))  # each step once
    assert _steady(rows_b) == _steady(rows_a)
    # The rollouts carried a real, varying signal: non-zero rewards and advantages.
    rollout_rows = [r for r in rows_a if "train/reward" in r]
    assert len(rollout_rows) == 4
    for r in rollout_rows:
        assert r["train/rewards/addition/digits"] > 0 and r["train/reward_std"] > 0
        assert r["train/advantage/nonzero_fraction"] > 0
    samples_a = _jsonl(straight.run_dir / "samples.jsonl")
    assert samples_a and samples_a == _jsonl(killed / "samples.jsonl")
    for name in ("adapter_model.safetensors", "optimizer.pt"):
        a = (straight.run_dir / "checkpoints" / "checkpoint-8" / name).read_bytes()
        assert a == (killed / "checkpoints" / "checkpoint-8" / name).read_bytes(), name
