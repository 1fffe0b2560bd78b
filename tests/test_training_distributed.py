"""Two CPU processes through `accelerate launch` (gloo) train exactly like one process with
the same global batch: same examples, same masks (keyed by example), averaged gradients."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from d1.recipes.sft import train_sft
from distributed_helpers import launch_two

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def common(tmp_path: Path, data: Path) -> list[str]:
    return [
        "model.name_or_path=tiny-xs",
        "data.format=prompt_response",
        f"data.path={data}",
        "data.max_length=40",
        "data.validation_size=4",
        "data.system_prompt=false",
        "lora=null",
        "global_batch_size=2",
        "train.max_steps=2",
        "train.eval_steps=null",
        "train.logging_steps=1",
        f"train.output_dir={tmp_path}",
        "train.report_to=none",
        "train.num_threads=1",
        "optim.learning_rate=1e-2",
    ]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    data = tmp_path / "pr.jsonl"
    rows = [{"prompt": f"q{i:02d}", "response": f"ans {i * 7 % 13}!"} for i in range(24)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = launch_two(
        "-m",
        "d1.cli",
        "sft",
        *common(tmp_path, data),
        "train.run_name=two",
        "train.per_device_batch_size=1",
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    one = train_sft(
        None, [*common(tmp_path, data), "train.run_name=one", "train.per_device_batch_size=2"]
    )

    two = tmp_path / "two"
    ckpt_two, ckpt_one = two / "checkpoints" / "checkpoint-2", one / "checkpoints" / "checkpoint-2"
    # Each process saved its own RNG state; only the main process logged.
    assert (ckpt_two / "rng_state_0.pt").is_file() and (ckpt_two / "rng_state_1.pt").is_file()
    rows_two = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    rows_one = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one]
    for a, b in zip(rows_two, rows_one, strict=True):
        for key in ("train/loss", "train/grad_norm", "eval/loss"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    # The parameters after two optimizer steps agree (up to float reduction order).
    wa, wb = load_file(ckpt_two / "model.safetensors"), load_file(ckpt_one / "model.safetensors")
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5)


# Under `accelerate launch`: optionally make process 1's loss at optimizer step 3 NaN while its
# gradients stay finite (a NaN constant added), so only the loss check can see it, on one rank.
NAN_ON_RANK_1 = r"""
import sys
import d1.recipes.sft.trainer as trainer

if sys.argv[1] == "inject":
    from accelerate import PartialState

    original, calls = trainer.sft_batch_loss, [0]

    def patched(model, batch, **kw):
        out = original(model, batch, **kw)
        if kw["key"] != "eval":
            calls[0] += 1
            if calls[0] == 3 and PartialState().process_index == 1:
                out.loss = out.loss + float("nan")
        return out

    trainer.sft_batch_loss = patched
from d1.cli import app
sys.argv = ["d1", "sft", *sys.argv[2:]]
app()
"""


@pytest.mark.slow
def test_two_processes_stop_together_on_one_ranks_nan_then_resume(tmp_path):
    """A NaN loss on one process stops both (no hang, no checkpoint after it); the verified
    resume (chosen on the main process, sent to the other) continues from the last one."""
    data = tmp_path / "pr.jsonl"
    rows = [{"prompt": f"q{i:02d}", "response": f"ans {i * 7 % 13}!"} for i in range(24)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = tmp_path / "child.py"
    script.write_text(NAN_ON_RANK_1)
    over = [
        *common(tmp_path, data),
        "train.run_name=nan",
        "train.per_device_batch_size=1",
        "train.max_steps=4",
        "train.save_steps=1",
    ]

    def launch(mode: str, *extra: str) -> subprocess.CompletedProcess:
        return launch_two(str(script), mode, *over, *extra)

    first = launch("inject")
    assert first.returncode != 0
    assert "non-finite loss (nan) at optimizer step 3" in first.stderr, first.stderr[-4000:]
    root = tmp_path / "nan" / "checkpoints"
    assert sorted(p.name for p in root.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (root / "latest").read_text().strip() == "checkpoint-2"

    second = launch("clean", "train.resume_from=auto")
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"Resumed from {root / 'checkpoint-2'} at step 2" in second.stderr
    logged = [json.loads(x) for x in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "train/loss" in r] == [1, 2, 3, 4]  # each step once
    assert [r["step"] for r in logged if "eval/loss" in r] == [0, 4]
