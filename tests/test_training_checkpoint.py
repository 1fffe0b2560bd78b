"""Checkpoint safety: SIGKILL in the middle of a save leaves the previous checkpoint and the
`latest` pointer intact, and the run resumes from it; manager bookkeeping in isolation."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from accelerate import PartialState
from safetensors.torch import load_file

from d1.sft import train_sft
from d1.training.checkpoint import CheckpointManager, TrainState

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
