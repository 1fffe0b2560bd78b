"""Evaluation that agrees with training: a checkpoint is evaluated (and `d1 select`ed, and
`d1 generate`d from) with the tasks, task options, completion length and sampler block it was
trained with; a tiny model or a CPU gets a short length; every default is announced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from d1.cli import app
from d1.recipes.evaluation.defaults import machine_defaults, run_config_path, run_defaults


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_defaults_of_a_grpo_and_an_sft_run(tmp_path: Path) -> None:
    grpo = tmp_path / "grpo"
    _write(
        grpo / "config.yaml",
        {
            "grpo": {"sampler": {"gen_length": 64, "block_length": 32, "temperature": 0.9}},
            "tasks": [
                {"name": "sudoku", "options": {"prompt_style": "compact"}},
                {"name": "countdown", "options": {}},
            ],
        },
    )
    ckpt = grpo / "checkpoints" / "checkpoint-10"
    ckpt.mkdir(parents=True)
    assert run_config_path(ckpt) == grpo / "config.yaml"  # the run's, two levels up
    d = run_defaults(ckpt).values
    assert d == {
        "tasks": ["sudoku", "countdown"],
        "task_options": {"sudoku": {"prompt_style": "compact"}},
        "gen_lengths": [64],
        "sampler.block_length": 32,
    }  # not the rollout temperature: evaluation stays greedy
    sft = _write(
        tmp_path / "sft" / "config.yaml",
        {
            "data": {"format": "task", "task": "addition", "task_options": {"digits": 3}},
            "eval_generation": {"sampler": {"gen_length": 40, "block_length": 40}},
        },
    ).parent
    assert run_defaults(sft).values == {
        "tasks": ["addition"],
        "task_options": {"addition": {"digits": 3}},
        "gen_lengths": [40],
        "sampler.block_length": 40,
    }
    # Not a d1 run: nothing.
    assert run_defaults(tmp_path).values == {} and run_defaults("tiny").values == {}
    _write(tmp_path / "s1k" / "config.yaml", {"data": {"format": "s1k"}})
    assert run_defaults(tmp_path / "s1k").values == {}


def test_machine_defaults() -> None:
    assert machine_defaults("tiny-xs", None).values == {"gen_lengths": [64]}
    assert machine_defaults("some/hub-model", "cpu").values == {"gen_lengths": [128]}
    assert machine_defaults("some/hub-model", "cuda").values == {}


def test_eval_on_a_tiny_model_says_which_defaults_it_used(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["eval", "--model", "tiny-xs", "--tasks", "sudoku", "--print-config"]
    )
    assert res.exit_code == 0, res.output
    assert "Defaults from a built-in tiny model" in res.output and "gen_lengths=[64]" in res.output
    cfg = yaml.safe_load(res.output[res.output.index("model:") :])
    assert cfg["gen_lengths"] == [64]
    # An explicit choice wins and no default is announced.
    args = "eval --model tiny-xs --tasks sudoku --gen-lengths 32 --print-config"
    res = CliRunner().invoke(app, args.split())
    assert "Defaults from" not in res.output and "- 32" in res.output


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    """A 2-step masked-SFT run of tiny-xs-base on Sudoku with compact prompts (the run the
    issue describes: training on compact prompts, evaluation defaulting to long ones)."""
    from d1.recipes.sft import train_sft

    out = tmp_path_factory.mktemp("sft")
    return train_sft(
        "configs/sft/tiny_sudoku.yaml",
        [
            "model.name_or_path=tiny-xs-base",
            f"train.output_dir={out}",
            "train.run_name=compact",
            "train.max_steps=2",
            "train.save_steps=1",
            "train.eval_steps=null",
            "train.report_to=[none]",
            "train.progress=off",
            "train.num_threads=1",
            "train.per_device_batch_size=4",
            "global_batch_size=4",
            "eval_generation.sampler={gen_length: 32, block_length: 32, steps: 16}",
            "data.task_options.train_size=64",
            "data.validation_size=8",
        ],
    )


def test_eval_select_generate_use_the_run_settings(sft_run: Path, tmp_path: Path) -> None:
    ckpt = sorted((sft_run / "checkpoints").glob("checkpoint-*"))[-1]
    runner = CliRunner()
    out = tmp_path / "ev"
    res = runner.invoke(
        app, ["eval", "--model", str(ckpt), "--limit", "3", "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert "Defaults from settings the model was trained with" in res.output
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["tasks"] == ["sudoku"]
    assert saved["task_options"]["sudoku"]["prompt_style"] == "compact"
    # The run's eval_generation sampler: length 32, block 32 (steps: d1's gen_length / 2).
    assert saved["gen_lengths"] == [32] and saved["sampler"]["block_length"] == 32
    rows = [json.loads(x) for x in (out / "generations" / "sudoku_len32_seed0.jsonl").open()]
    # Compact prompts, no chat template (a -base model): the bare 16-digit puzzle.
    assert all(len(r["prompt"].strip()) <= 40 and "<|" not in r["prompt"] for r in rows)
    # `d1 score` on the eval's own file, with no options, gives the recorded correctness.
    gen_file = out / "generations" / "sudoku_len32_seed0.jsonl"
    scored_file = tmp_path / "scored.jsonl"
    scored = runner.invoke(app, ["score", str(gen_file), "--out", str(scored_file)])
    assert scored.exit_code == 0, scored.output
    rescored = [json.loads(x) for x in scored_file.open()]
    assert [r["correct"] for r in rescored] == [r["correct"] for r in rows]
    assert len(rescored) == 3

    sel = runner.invoke(app, ["select", str(sft_run), "--limit", "2", "--no-progress"])
    assert sel.exit_code == 0, sel.output
    assert "--tasks sudoku --gen-lengths 32" in sel.output  # the suggested test command
    chosen = json.loads((sft_run / "selection.json").read_text())
    assert chosen["split"] == "validation"

    gen = runner.invoke(app, ["generate", "--model", str(ckpt), "--prompt", "1234"])
    assert gen.exit_code == 0, gen.output
