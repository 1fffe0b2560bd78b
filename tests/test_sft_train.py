"""End to end: a short masked SFT of the tiny model on generated Sudoku lowers the held-out
loss and beats the untrained model's greedy accuracy (logged by `eval_generation`)."""

from __future__ import annotations

import json

import pytest
import torch

from d1.recipes.sft import train_sft


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_tiny_sft_on_sudoku_learns(tmp_path):
    run_dir = train_sft(
        None,
        [
            "model.name_or_path=tiny-xs",
            "lora=null",
            "data.format=task",
            "data.task=sudoku",
            "data.task_options={prompt_style: compact, demo_reasoning: false, "
            "train_size: 2600, validation_size: 1}",
            "data.max_length=104",
            "data.validation_size=32",
            "global_batch_size=16",
            "train.per_device_batch_size=16",
            "train.max_steps=160",
            "train.eval_steps=null",
            "train.logging_steps=20",
            f"train.output_dir={tmp_path}",
            "train.report_to=none",
            "train.num_threads=1",
            "optim.learning_rate=5e-3",
            "optim.lr_scheduler=constant_with_warmup",
            "optim.warmup_steps=10",
            "optim.weight_decay=0.0",
            "eval_generation.num_examples=32",
            "eval_generation.sampler.gen_length=64",
            "eval_generation.sampler.block_length=64",
            "eval_generation.sampler.steps=32",
            "eval_generation.batch_size=32",
        ],
    )
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/loss" in r]
    first, last = evals[0], evals[-1]
    assert (first["step"], last["step"]) == (0, 160)
    assert last["eval/loss"] < 0.5 * first["eval/loss"]
    # Greedy cell accuracy on held-out puzzles: untrained ~0, trained clearly above.
    assert last["eval/accuracy"] > first["eval/accuracy"] + 0.1
    samples = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {0, 160}
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert best["checkpoint"] == "checkpoint-160"
