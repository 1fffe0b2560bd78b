"""Checkpoints: an interrupted + resumed run equals an uninterrupted one bit for bit (CPU);
keep-last-N / best / latest bookkeeping; a run folder is never clobbered by accident."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from d1.recipes.sft import train_sft
from d1.training.run import TrainingRun


@pytest.fixture(autouse=True)
def _restore_threads():
    # The trainer sets torch's thread count for its process; keep the suite's setting.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def data_file(tmp_path):
    rows = [{"prompt": f"q{i:02d}", "response": f"ans {i * 7 % 13}!"} for i in range(12)]
    path = tmp_path / "pr.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def overrides(tmp_path, data_file, **extra) -> list[str]:
    """10 train / 2 held-out examples, global batch 4 (2 per device x 2 accumulation): 2 steps
    per epoch, so 5 steps cross two epoch boundaries; LoRA with dropout uses the global RNG."""
    cfg = {
        "model.name_or_path": "tiny-xs",
        "data.format": "prompt_response",
        "data.path": str(data_file),
        "data.max_length": 40,
        "data.validation_size": 2,
        "data.system_prompt": False,
        "lora.r": 4,
        "lora.alpha": 8,
        "lora.dropout": 0.1,
        "global_batch_size": 4,
        "train.per_device_batch_size": 2,
        "train.max_steps": 5,
        "train.save_steps": 3,
        "train.eval_steps": 2,
        "train.logging_steps": 1,
        "train.save_total_limit": 2,
        "train.output_dir": str(tmp_path / "runs"),
        "train.report_to": "none",
        "train.num_threads": 1,
        "optim.learning_rate": 1e-2,
        "optim.warmup_steps": 1,
    }
    cfg.update(extra)
    return [f"{k}={v}" for k, v in cfg.items()]


def metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:  # wall-clock fields differ between runs
        r.pop("time")
        r.pop("train/tokens_per_s", None)
    return rows


class Stop(Exception):
    pass


def test_resume_is_bit_exact(tmp_path, data_file, monkeypatch):
    global_rng = torch.get_rng_state()
    straight = train_sft(None, overrides(tmp_path, data_file, **{"train.run_name": "a"}))
    # The run seeds a fork of the global RNG (for dropout) and leaves the caller's untouched.
    assert torch.equal(torch.get_rng_state(), global_rng)

    original_log = TrainingRun.log

    def log_then_crash(self, metrics, step=None):
        original_log(self, metrics, step)
        if "eval/loss" in metrics and self.state.step == 4:
            raise Stop  # after step 4's rows, before checkpoint 5: a kill between saves

    monkeypatch.setattr(TrainingRun, "log", log_then_crash)
    with pytest.raises(Stop):
        train_sft(None, overrides(tmp_path, data_file, **{"train.run_name": "b"}))
    monkeypatch.undo()
    interrupted = metrics(tmp_path / "runs" / "b")
    assert [r["step"] for r in interrupted if "train/loss" in r] == [1, 2, 3, 4]
    # Resumes from checkpoint 3: mid-epoch (epoch 1, one step in) and after accumulation.
    resumed = train_sft(
        None,
        overrides(tmp_path, data_file, **{"train.run_name": "b", "train.resume_from": "auto"}),
    )

    a = straight / "checkpoints" / "checkpoint-5"
    b = resumed / "checkpoints" / "checkpoint-5"
    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and len(wa) > 0
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    oa = torch.load(a / "optimizer.pt", weights_only=False)["state"]
    ob = torch.load(b / "optimizer.pt", weights_only=False)["state"]
    for i in oa:
        assert torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"])
    # The rows of step 4 logged before the kill were dropped on resume and logged again:
    # the log is the uninterrupted run's, each step once.
    assert metrics(resumed) == metrics(straight)
    after = [r for r in metrics(straight) if r["step"] > 3]
    assert any("train/loss" in r for r in after) and any("eval/loss" in r for r in after)
    assert [r["step"] for r in metrics(resumed) if "train/loss" in r] == [1, 2, 3, 4, 5]
    state = json.loads((b / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"], state["micro_batch"]) == (5, 2, 2)

    # Bookkeeping: the latest pointer, keep-last-2 plus the best checkpoint.
    root = straight / "checkpoints"
    assert (root / "latest").read_text().strip() == "checkpoint-5"
    best = json.loads((root / "best.json").read_text())
    assert best["metric"] == "eval/loss"
    kept = sorted(p.name for p in root.glob("checkpoint-*"))
    assert kept == sorted({"checkpoint-4", "checkpoint-5", best["checkpoint"]})
    eval_rows = [r for r in metrics(straight) if "eval/loss" in r and r["step"] > 0]
    assert best["value"] == min(r["eval/loss"] for r in eval_rows)
    assert (straight / "config.yaml").is_file() and (straight / "base_model").is_dir()

    # A finished run folder is not silently reused.
    with pytest.raises(FileExistsError, match="resume_from=auto"):
        train_sft(None, overrides(tmp_path, data_file, **{"train.run_name": "a"}))
