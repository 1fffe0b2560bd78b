"""The `d1` command line: help, and `d1 grpo`'s config handling (d1 sft's lives in test_sft_cli)."""

from __future__ import annotations

from typer.testing import CliRunner

from d1.cli import app


def test_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("generate", "sft", "grpo", "merge", "eval", "select", "score", "data", "report"):
        assert name in result.output


def test_grpo_print_config_and_keyed_errors():
    runner = CliRunner()
    ok = runner.invoke(
        app,
        ["grpo", "--config", "configs/grpo/tiny-sudoku.yaml", "--print-config", "grpo.beta=0.0"],
    )
    assert ok.exit_code == 0, ok.output
    assert "beta: 0.0" in ok.output
    bad = runner.invoke(
        app, ["grpo", "--config", "configs/grpo/tiny-sudoku.yaml", "grpo.epsilonn=0.3"]
    )
    assert bad.exit_code == 2
    assert "grpo.epsilonn" in bad.output and "grpo.epsilon" in bad.output
