"""Checkpoint safety and run faults: SIGKILL in the middle of a save leaves the previous
checkpoint and the `latest` pointer intact, and the run resumes from it; manager bookkeeping;
Ctrl-C says what is saved; a non-finite loss or gradient stops (or skips) without saving NaN;
damaged checkpoints are caught by their manifest (or by loading) before a resume."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import PartialState
from safetensors.torch import load_file

import d1.recipes.sft.trainer as sft_trainer
from d1.recipes.sft import train_sft
from d1.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    TrainState,
    verify_checkpoint,
)
from d1.training.run import NonFiniteError

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
from d1.recipes.sft import train_sft
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
    from d1.recipes.sft import SFTConfig

    cfg = load_config(SFTConfig, None, [f"train.output_dir={tmp_path}", "train.run_name=r"])
    argv = ["sft", "train.resume_from=/old/checkpoint-3", "train.max_steps=9"]
    msg = _interrupted_message(cfg, "sft", argv)
    assert f"no checkpoint yet in {tmp_path / 'r' / 'checkpoints'}" in msg
    assert msg.endswith("Resume with: d1 sft train.max_steps=9 train.resume_from=auto")
    assert "nothing was saved" in _interrupted_message(None, "sft", argv)


# ----------------------------------------------------------------------------- faults


def fault_overrides(tmp_path: Path, **extra) -> list[str]:
    """`sft_overrides` with a checkpoint, an eval loss (for best.json) and a log row at every
    one of 4 steps, all checkpoints kept, lr 1e-2."""
    cfg = {
        "train.max_steps": 4,
        "train.eval_steps": 1,
        "train.logging_steps": 1,
        "train.save_total_limit": "null",
        "optim.learning_rate": 1e-2,
    }
    cfg.update(extra)
    return sft_overrides(tmp_path, **cfg)


def rows(run_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


def strict_json(path: Path):
    """Parse as strict JSON: NaN / Infinity (which Python's json accepts) are an error."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def nan_at_step(monkeypatch):
    """`nan_at_step(*steps)`: the training loss of those optimizer steps (1-based; one
    micro-batch per step here) becomes NaN, as bad data would make it."""

    def install(*steps: int) -> None:
        original = sft_trainer.sft_batch_loss
        calls = {"train": 0}

        def patched(model, batch, **kw):
            out = original(model, batch, **kw)
            if kw["key"] != "eval":
                calls["train"] += 1
                if calls["train"] in steps:
                    out.loss = out.loss * float("nan")
            return out

        monkeypatch.setattr(sft_trainer, "sft_batch_loss", patched)

    return install


# ----------------------------------------------------------------------------- non-finite


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, nan_at_step):
    nan_at_step(3)
    with pytest.raises(NonFiniteError) as err:
        train_sft(None, fault_overrides(tmp_path))
    msg = str(err.value)
    assert msg.startswith("Training stopped: non-finite loss (nan)") and "optimizer step 3" in msg
    assert "learning rate" in msg and "data" in msg and "train.on_nonfinite=skip" in msg
    root = tmp_path / "runs" / "sft" / "checkpoints"
    assert f"{root / 'checkpoint-2'} (step 2)" in msg
    # Nothing after step 2 was written; the pointer and best.json are those of step 2's save.
    assert sorted(p.name for p in root.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (root / "latest").read_text().strip() == "checkpoint-2"
    best = strict_json(root / "best.json")
    assert best["checkpoint"] in ("checkpoint-1", "checkpoint-2") and math.isfinite(best["value"])
    assert verify_checkpoint(root / "checkpoint-2") is None
    weights = load_file(root / "checkpoint-2" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert max(r["step"] for r in rows(tmp_path / "runs" / "sft")) == 2


def test_nonfinite_skip_leaves_weights_and_optimizer_unchanged(tmp_path, nan_at_step):
    nan_at_step(3)
    run_dir = train_sft(None, fault_overrides(tmp_path, **{"train.on_nonfinite": "skip"}))
    root = run_dir / "checkpoints"
    w2, w3, w4 = (load_file(root / f"checkpoint-{s}" / "model.safetensors") for s in (2, 3, 4))
    assert all(torch.equal(w2[k], w3[k]) for k in w2)  # the bad step changed nothing
    assert any(not torch.equal(w3[k], w4[k]) for k in w3)  # and training went on after it
    o2, o3 = (torch.load(root / f"checkpoint-{s}" / "optimizer.pt") for s in (2, 3))
    for i, st in o2["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(st[key], o3["state"][i][key]), key
    state = json.loads((root / "checkpoint-4" / "trainer_state.json").read_text())
    assert (state["step"], state["nonfinite_skipped"], state["nonfinite_consecutive"]) == (4, 1, 0)
    train_rows = {r["step"]: r for r in rows(run_dir) if "train/lr" in r}
    assert [train_rows[s]["train/nonfinite_skipped"] for s in (1, 2, 3, 4)] == [0, 0, 1, 1]
    assert "train/loss" not in train_rows[3]  # the skipped step's NaN is not averaged in
    assert math.isfinite(train_rows[4]["train/loss"])
    # The schedule still advanced through the skipped step (linear decay over 4 steps).
    assert [train_rows[s]["train/lr"] for s in (1, 2, 3, 4)] == pytest.approx(
        [1e-2, 7.5e-3, 5e-3, 2.5e-3]
    )


def test_nonfinite_skip_stops_after_max_consecutive_skips(tmp_path, nan_at_step):
    nan_at_step(2, 3, 4)
    over = {"train.on_nonfinite": "skip", "train.max_nonfinite_skips": 2}
    with pytest.raises(NonFiniteError, match=r"at optimizer step 4 after 2 skipped steps"):
        train_sft(None, fault_overrides(tmp_path, **over))
    root = tmp_path / "runs" / "sft" / "checkpoints"
    assert (root / "latest").read_text().strip() == "checkpoint-3"


def test_nonfinite_config_is_validated():
    from d1.config import ConfigError, load_config
    from d1.recipes.sft import SFTConfig

    with pytest.raises(ConfigError, match="on_nonfinite"):
        load_config(SFTConfig, None, ["train.on_nonfinite=ignore"])
    with pytest.raises(ConfigError, match="max_nonfinite_skips"):
        load_config(SFTConfig, None, ["train.max_nonfinite_skips=0"])
    cfg = load_config(SFTConfig, None, ["train.on_nonfinite=skip", "train.max_nonfinite_skips=3"])
    assert (cfg.train.on_nonfinite, cfg.train.max_nonfinite_skips) == ("skip", 3)
    assert load_config(SFTConfig, None).train.on_nonfinite == "stop"


def test_best_json_never_holds_a_nonfinite_metric(tmp_path):
    state_obj = PartialState(cpu=True)

    class Acc:
        is_main_process = True
        process_index = state_obj.process_index

        def wait_for_everyone(self):
            pass

    mgr = CheckpointManager(tmp_path, Acc(), metric_name="eval/loss")
    state = TrainState()

    def write(folder: Path) -> None:
        (folder / "trainer_state.json").write_text(state.to_json())

    assert not mgr.is_better(float("nan"), None) and not mgr.is_better(float("-inf"), 5.0)
    for step, metric in [(1, float("nan")), (2, 2.0), (3, float("-inf")), (4, 1.5), (5, 1.7)]:
        state.step = step
        mgr.save(step, write, metric=metric, state=state)
        if (tmp_path / "best.json").exists():
            strict_json(tmp_path / "best.json")
    assert mgr.best() == {
        "checkpoint": "checkpoint-4",
        "metric": "eval/loss",
        "value": 1.5,
        "step": 4,
    }
    assert (state.best_metric, state.best_checkpoint) == (1.5, "checkpoint-4")


# ----------------------------------------------------------------------------- damage


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 4-step run with a checkpoint per step (all with manifests)."""
    tmp = tmp_path_factory.mktemp("finished")
    threads = torch.get_num_threads()
    run_dir = train_sft(None, fault_overrides(tmp))
    torch.set_num_threads(threads)
    return tmp, run_dir


def test_manifest_records_every_file(finished_run):
    _, run_dir = finished_run
    ckpt = run_dir / "checkpoints" / "checkpoint-4"
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["step"] == 4 and manifest["format"] == 1
    on_disk = {
        p.relative_to(ckpt).as_posix()
        for p in ckpt.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert set(manifest["files"]) == on_disk
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"} <= on_disk
    for rel, info in manifest["files"].items():
        data = (ckpt / rel).read_bytes()
        assert info == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify_checkpoint(ckpt) is None


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the sha256 sees it
    path.write_bytes(bytes(data))


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage" * 100)


DAMAGE = {
    "truncated safetensors": ("model.safetensors", _truncate, "model.safetensors is damaged: "),
    "corrupt optimizer": ("optimizer.pt", _garbage, "optimizer.pt is damaged: "),
    "flipped byte": ("model.safetensors", _flip_byte, "model.safetensors is damaged: its sha256"),
    "missing file": ("scheduler.pt", Path.unlink, "scheduler.pt is missing"),
    "garbage manifest": ("manifest.json", _garbage, "manifest.json is not valid JSON"),
}


def _damaged_copy(finished_run, tmp_path: Path, kind: str, *, manifest: bool = True) -> Path:
    """A copy of the finished run whose last checkpoint (4) has `kind` damage."""
    src_tmp, run_dir = finished_run
    shutil.copy(src_tmp / "pr.jsonl", tmp_path / "pr.jsonl")
    dest = tmp_path / "runs" / "sft"
    shutil.copytree(run_dir, dest)
    ckpt = dest / "checkpoints" / "checkpoint-4"
    if not manifest:
        for p in (dest / "checkpoints").glob("checkpoint-*/manifest.json"):
            p.unlink()
    name, damage, _ = DAMAGE[kind]
    damage(ckpt / name)
    return dest


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_auto_resume_falls_back_from_a_damaged_checkpoint(finished_run, tmp_path, kind, caplog):
    run_dir = _damaged_copy(finished_run, tmp_path, kind)
    ckpt = run_dir / "checkpoints" / "checkpoint-4"
    assert DAMAGE[kind][2] in verify_checkpoint(ckpt)
    # The explicit path: a clear error naming the file, no fallback.
    with pytest.raises(CheckpointError, match=DAMAGE[kind][2]) as err:
        train_sft(None, fault_overrides(tmp_path, **{"train.resume_from": str(ckpt)}))
    assert "train.resume_from=auto" in str(err.value)
    # auto: a warning naming what is wrong, then checkpoint 3; re-running step 4 from it
    # reproduces the original checkpoint 4 exactly.
    with caplog.at_level("WARNING", logger="d1.training.run"):
        train_sft(None, fault_overrides(tmp_path, **{"train.resume_from": "auto"}))
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "checkpoint-4 is damaged" in warning and DAMAGE[kind][2] in warning
    assert "resuming from checkpoint-3" in warning
    assert verify_checkpoint(ckpt) is None
    original = finished_run[1] / "checkpoints" / "checkpoint-4"
    for name in ("model.safetensors", "optimizer.pt"):
        assert (ckpt / name).read_bytes() == (original / name).read_bytes(), name
    assert [r["step"] for r in rows(run_dir) if "train/loss" in r] == [1, 2, 3, 4]


def test_old_checkpoints_without_manifest_are_verified_by_loading(finished_run, tmp_path, caplog):
    run_dir = _damaged_copy(finished_run, tmp_path, "truncated safetensors", manifest=False)
    ckpt = run_dir / "checkpoints" / "checkpoint-4"
    problem = verify_checkpoint(ckpt)
    assert problem.startswith("model.safetensors cannot be read (SafetensorError")
    assert verify_checkpoint(run_dir / "checkpoints" / "checkpoint-3") is None
    with caplog.at_level("WARNING", logger="d1.training.run"):
        train_sft(None, fault_overrides(tmp_path, **{"train.resume_from": "auto"}))
    assert "resuming from checkpoint-3" in caplog.text
    assert (run_dir / "checkpoints" / "checkpoint-4" / "manifest.json").is_file()


def test_corrupt_optimizer_without_manifest_names_the_file(finished_run, tmp_path):
    run_dir = _damaged_copy(finished_run, tmp_path, "corrupt optimizer", manifest=False)
    ckpt = run_dir / "checkpoints" / "checkpoint-4"
    with pytest.raises(CheckpointError, match=r"optimizer\.pt cannot be read \(Unpickling"):
        train_sft(None, fault_overrides(tmp_path, **{"train.resume_from": str(ckpt)}))


def test_auto_resume_with_no_complete_checkpoint_is_an_error(finished_run, tmp_path):
    run_dir = _damaged_copy(finished_run, tmp_path, "missing file")
    for step in (1, 2, 3):
        (run_dir / "checkpoints" / f"checkpoint-{step}" / "scheduler.pt").unlink()
    with pytest.raises(CheckpointError, match="no complete checkpoint") as err:
        train_sft(None, fault_overrides(tmp_path, **{"train.resume_from": "auto"}))
    assert "checkpoint-1: scheduler.pt is missing" in str(err.value)
    assert "train.overwrite=true" in str(err.value)


def test_explicit_resume_from_a_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "nope").mkdir()
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        train_sft(None, fault_overrides(tmp_path, **{"train.resume_from": str(tmp_path / "nope")}))
    with pytest.raises(CheckpointError, match="is not a folder"):
        train_sft(None, fault_overrides(tmp_path, **{"train.resume_from": str(tmp_path / "x")}))
