"""`d1 sft`: shipped configs load and validate; config errors exit cleanly naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from d1.cli import app
from d1.config import load_config
from d1.recipes.sft import SFTConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "sft").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate(path):
    cfg = load_config(SFTConfig, path)
    assert cfg.data.max_length > 0


def test_paper_config_matches_paper():
    cfg = load_config(SFTConfig, CONFIGS[0].parent / "llada8b_s1k.yaml")
    assert (cfg.lora.r, cfg.lora.alpha, cfg.optim.learning_rate) == (128, 256, 1e-5)
    assert (cfg.train.num_epochs, cfg.global_batch_size, cfg.data.max_length) == (20, 8, 4096)
    assert cfg.data.path == "simplescaling/s1K" and cfg.data.validation_fraction == 0.01


def test_print_config_and_errors(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "sft",
            "--config",
            str(CONFIGS[0].parent / "tiny_sudoku.yaml"),
            "--print-config",
            "train.max_steps=7",
        ],
    )
    assert ok.exit_code == 0, ok.output
    printed = yaml.safe_load(ok.output)
    assert printed["train"]["max_steps"] == 7 and printed["data"]["task"] == "sudoku"
    bad = runner.invoke(app, ["sft", "--print-config", "optim.lerning_rate=1e-5"])
    assert bad.exit_code == 2
    assert "optim.lerning_rate" in bad.output and "optim.learning_rate" in bad.output
