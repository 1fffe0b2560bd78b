"""`d1 demo` (d1.recipes.demo): data design, summaries, and the quick run end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from d1.recipes.demo import DemoConfig, load_demo_config, make_data, summarize_demo
from d1.tasks.puzzles.addition import count_carries


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_data_easy_sft_hard_rl_disjoint_splits(tmp_path: Path) -> None:
    cfg = DemoConfig(sft_train_size=40, rl_train_size=20, validation_size=10, test_size=10)
    paths = make_data(cfg, tmp_path)
    sets = {k: _rows(p) for k, p in paths.items()}
    assert {k: len(v) for k, v in sets.items()} == {
        "sft_train": 40,
        "rl_train": 20,
        "validation": 10,
        "test": 10,
    }
    for r in sets["sft_train"]:
        a, b = map(int, r["question"].split("+"))
        assert count_carries((a, b)) <= 1
        assert r["response"] == r["answer"] == f"{a + b:04d}"  # answer-only demonstration
    for name in ("rl_train", "validation", "test"):
        assert "response" not in sets[name][0]  # no demonstrations for the hard sets
        assert all(
            2 <= count_carries(tuple(map(int, r["question"].split("+")))) <= 3 for r in sets[name]
        )
    _assert_disjoint({k: {r["question"] for r in v} for k, v in sets.items()})


def test_sudoku_data_easy_sft_hard_rl(tmp_path: Path) -> None:
    cfg = DemoConfig(
        task="sudoku",
        easy=[2, 3],
        hard=[8, 10],
        sft_train_size=40,
        rl_train_size=20,
        validation_size=10,
        test_size=10,
    )
    sets = {k: _rows(p) for k, p in make_data(cfg, tmp_path).items()}
    for r in sets["sft_train"]:
        assert 2 <= r["Puzzle"].count("0") <= 3
        assert r["response"] == f"<answer>\n{r['Solution']}\n</answer>"
    for name in ("rl_train", "validation", "test"):
        assert "response" not in sets[name][0]
        assert all(8 <= r["Puzzle"].count("0") <= 10 for r in sets[name])
    _assert_disjoint({k: {r["Puzzle"] for r in v} for k, v in sets.items()})


def _assert_disjoint(problems: dict[str, set[str]]) -> None:
    names = list(problems)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not problems[a] & problems[b], (a, b)


def test_summarize_demo_paired_difference_by_hand() -> None:
    scores = {
        0: {
            "base": {"accuracy": 0.25, "solved": 0.0},
            "sft": {"accuracy": 0.5, "solved": 0.1},
            "grpo": {"accuracy": 0.6, "solved": 0.2},
        },
        1: {
            "base": {"accuracy": 0.25, "solved": 0.0},
            "sft": {"accuracy": 0.4, "solved": 0.1},
            "grpo": {"accuracy": 0.56, "solved": 0.1},
        },
    }
    summary, diff = summarize_demo(scores, ["accuracy", "solved"])
    assert summary["sft"]["accuracy"].mean == pytest.approx(0.45)
    assert summary["sft"]["accuracy"].std == pytest.approx(math.sqrt(0.005))  # (0.05^2*2)/1
    # Paired differences 0.10 and 0.16: mean 0.13, std sqrt(0.0018) = 0.042426.
    assert diff["accuracy"].mean == pytest.approx(0.13)
    assert diff["accuracy"].std == pytest.approx(0.0424264, abs=1e-6)
    assert diff["accuracy"].ci_method == "t-seeds"


def test_load_demo_config_layers_and_errors(tmp_path: Path) -> None:
    from d1.config import ConfigError

    y = tmp_path / "d.yaml"
    y.write_text("grpo_steps: 7\neasy: [0, 0]\n")
    cfg = load_demo_config(path=y, overrides=["sft_steps=11"], seeds=[4, 5], out="x")
    assert (cfg.grpo_steps, cfg.sft_steps, cfg.easy, cfg.seeds, cfg.out) == (
        7,
        11,
        [0, 0],
        [4, 5],
        "x",
    )
    quick = load_demo_config(quick=True)
    assert quick.model == "tiny-xs-base" and quick.completion_length == 8
    assert (quick.rollout_steps, quick.evaluation_steps) == (4, 4)  # gen_length / 2, as d1
    with pytest.raises(ConfigError, match="grpo_step"):
        load_demo_config(overrides=["grpo_step=3"])
    with pytest.raises(ConfigError, match=r"hard.*carries"):
        load_demo_config(overrides=["hard=[2, 9]"])
    with pytest.raises(ConfigError, match=r"gen_length.*37"):
        load_demo_config(overrides=["task=sudoku", "easy=[2, 4]", "hard=[6, 8]", "gen_length=16"])
    with pytest.raises(ConfigError, match="task"):
        load_demo_config(overrides=["task=chess"])


def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from d1.cli import app

    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    rep = out / "report"
    summary = json.loads((rep / "summary.json").read_text())
    assert set(summary["scores"]["0"]) == {"base", "sft", "grpo"}
    for stage in ("base", "sft", "grpo"):
        assert 0.0 <= summary["scores"]["0"][stage]["accuracy"] <= 1.0
    md = (rep / "summary.md").read_text()
    assert "| SFT + diffu-GRPO (hard, rewards only) |" in md
    # --no-progress drops the narration, not the results and where they are.
    assert "SFT + diffu-GRPO (hard, rewards only)" in res.output
    assert f"Report: {rep / 'summary.md'}" in res.output.replace("\n", "")
    assert "[1/4]" not in res.output
    for name in ("configs/demo.yaml", "configs/sft_seed0.yaml", "configs/grpo_seed0.yaml"):
        assert (rep / name).is_file(), name
    for name in ("metrics/sft_seed0.jsonl", "metrics/grpo_seed0.jsonl"):
        assert (rep / name).stat().st_size > 0, name
    assert (rep / "sft_loss.png").is_file() and (rep / "grpo_reward.png").is_file()
    assert (rep / "curves" / "grpo_seed0" / "report.md").is_file()
    # Every stage was evaluated on the same test puzzles.
    ids = {
        stage: [
            json.loads(x)["id"]
            for x in (
                out / "seed0" / "eval" / stage / "generations" / "addition_len8_seed0.jsonl"
            ).open()
        ]
        for stage in ("base", "sft", "grpo")
    }
    assert ids["base"] == ids["sft"] == ids["grpo"] and len(ids["base"]) == 6


def test_parallel_seed_workers_match_one_process(tmp_path: Path) -> None:
    """Seeds run in spawned worker processes give exactly the scores of running them one
    after the other in this process (each seed's randomness is its own)."""
    from d1.recipes.demo import run_demo

    results = {
        workers: run_demo(
            DemoConfig.quick(
                seeds=[0, 1], workers=workers, out=str(tmp_path / f"w{workers}"), progress=False
            )
        )
        for workers in (1, 2)
    }

    def plain(scores: dict) -> dict:
        return {
            s: {st: {m: v for m, v in ms.items() if m != "_per_example"} for st, ms in d.items()}
            for s, d in scores.items()
        }

    assert plain(results[1].scores) == plain(results[2].scores)
    assert set(results[2].scores) == {0, 1}
    from d1.recipes.demo import _seed_progress

    # What the progress bars read: 3 SFT steps, 2 RL steps, 3 stages evaluated.
    assert _seed_progress(tmp_path / "w2" / "seed1") == (3, 2, 3)


def test_shipped_demo_configs_load() -> None:
    root = Path(__file__).resolve().parent.parent / "configs" / "demo"
    files = sorted(root.glob("*.yaml"))
    assert files
    for f in files:
        cfg = load_demo_config(path=f)
        cfg.validate()
    assert load_demo_config(path=root / "sudoku.yaml").spec.name == "sudoku"
