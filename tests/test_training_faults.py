"""Faults a real run meets: a non-finite loss or gradient (stop / skip), damaged checkpoints
(manifest check, fallback for resume_from=auto, a clear error for an explicit path), and
best.json that never holds NaN."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from accelerate import PartialState
from safetensors.torch import load_file

import d1.sft.trainer as sft_trainer
from d1.sft import train_sft
from d1.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    TrainState,
    verify_checkpoint,
)
from d1.training.run import NonFiniteError


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def sft_overrides(tmp_path: Path, **extra) -> list[str]:
    """Full fine-tuning of tiny-xs on 6 train / 2 held-out rows, batch 2: a checkpoint (and
    an eval loss for best.json) every step."""
    data = tmp_path / "pr.jsonl"
    if not data.exists():
        data.write_text(
            "".join(
                json.dumps({"prompt": f"q{i}", "response": f"r{i % 5}"}) + "\n" for i in range(8)
            )
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
        "train.max_steps": 4,
        "train.save_steps": 1,
        "train.eval_steps": 1,
        "train.save_total_limit": "null",
        "train.logging_steps": 1,
        "train.output_dir": str(tmp_path / "runs"),
        "train.report_to": "none",
        "train.num_threads": 1,
        "optim.learning_rate": 1e-2,
    }
    cfg.update(extra)
    return [f"{k}={v}" for k, v in cfg.items()]


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
        train_sft(None, sft_overrides(tmp_path))
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
    run_dir = train_sft(None, sft_overrides(tmp_path, **{"train.on_nonfinite": "skip"}))
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
        train_sft(None, sft_overrides(tmp_path, **over))
    root = tmp_path / "runs" / "sft" / "checkpoints"
    assert (root / "latest").read_text().strip() == "checkpoint-3"


def test_nonfinite_config_is_validated():
    from d1.config import ConfigError, load_config
    from d1.sft import SFTConfig

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
    run_dir = train_sft(None, sft_overrides(tmp))
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
        train_sft(None, sft_overrides(tmp_path, **{"train.resume_from": str(ckpt)}))
    assert "train.resume_from=auto" in str(err.value)
    # auto: a warning naming what is wrong, then checkpoint 3; re-running step 4 from it
    # reproduces the original checkpoint 4 exactly.
    with caplog.at_level("WARNING", logger="d1.training.run"):
        train_sft(None, sft_overrides(tmp_path, **{"train.resume_from": "auto"}))
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
        train_sft(None, sft_overrides(tmp_path, **{"train.resume_from": "auto"}))
    assert "resuming from checkpoint-3" in caplog.text
    assert (run_dir / "checkpoints" / "checkpoint-4" / "manifest.json").is_file()


def test_corrupt_optimizer_without_manifest_names_the_file(finished_run, tmp_path):
    run_dir = _damaged_copy(finished_run, tmp_path, "corrupt optimizer", manifest=False)
    ckpt = run_dir / "checkpoints" / "checkpoint-4"
    with pytest.raises(CheckpointError, match=r"optimizer\.pt cannot be read \(Unpickling"):
        train_sft(None, sft_overrides(tmp_path, **{"train.resume_from": str(ckpt)}))


def test_auto_resume_with_no_complete_checkpoint_is_an_error(finished_run, tmp_path):
    run_dir = _damaged_copy(finished_run, tmp_path, "missing file")
    for step in (1, 2, 3):
        (run_dir / "checkpoints" / f"checkpoint-{step}" / "scheduler.pt").unlink()
    with pytest.raises(CheckpointError, match="no complete checkpoint") as err:
        train_sft(None, sft_overrides(tmp_path, **{"train.resume_from": "auto"}))
    assert "checkpoint-1: scheduler.pt is missing" in str(err.value)
    assert "train.overwrite=true" in str(err.value)


def test_explicit_resume_from_a_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "nope").mkdir()
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        train_sft(None, sft_overrides(tmp_path, **{"train.resume_from": str(tmp_path / "nope")}))
    with pytest.raises(CheckpointError, match="is not a folder"):
        train_sft(None, sft_overrides(tmp_path, **{"train.resume_from": str(tmp_path / "x")}))
