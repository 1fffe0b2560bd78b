"""Smoke tests of the benchmark scripts: they run end to end and print their tables (their
numbers are measurements, never asserted here)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(script: str, *args: str) -> str:
    """stdout of `benchmarks/<script> ARGS` (default `--quick`; wide, so rich tables are not
    cut; one torch thread)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *(args or ("--quick",))],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"},
    ).stdout


def test_sampling_benchmark_quick_prints_every_mode() -> None:
    out = _run("sampling.py")
    rows = [line for line in out.splitlines() if line.count("|") == 6]  # progress rows
    modes = [row.split("|")[2].strip() for row in rows]
    # 2 gen lengths x 2 batch sizes, each with the five modes, the reference first.
    assert modes == ["reference", "prefix", "dual", "threshold", "both"] * 4
    assert all(row.split("|")[6].strip() == "1.0x" for row in rows[::5])


def test_sampling_benchmark_modes_are_the_documented_samplers() -> None:
    bench = _load("sampling.py")
    ref = bench.mode_config("reference", 256, 0.9)
    assert (ref.name, ref.gen_length, ref.block_length, ref.num_steps, ref.temperature) == (
        "reference",
        256,
        32,
        128,
        0.0,
    )
    both = bench.mode_config("both", 256, 0.9)
    assert (both.name, both.cache, both.threshold) == ("fast", "dual", 0.9)
    assert bench.mode_config("threshold", 128, 0.8).cache == "none"
    assert bench.mode_config("both@0.95", 256, 0.9).threshold == 0.95
    with pytest.raises(ValueError, match="@THRESHOLD"):
        bench.mode_config("dual@0.9", 256, 0.9)


def test_repeat_word_scoring_by_hand() -> None:
    task = _load("sampling.py").RepeatWord(train_size=4, validation_size=2, test_size=2)
    ex = task.load("test")[0]
    assert not set(ex.question.split()[1:]) & {e.question.split()[1] for e in task.load("train")}
    assert task.score(ex.response, ex).correct == 1.0
    assert task.score(ex.response, ex).details["partial"] == 1.0
    cut = ex.response[:81]  # half the characters, answer never closed
    assert task.score(cut, ex).correct == 0.0
    assert task.score(cut, ex).details["partial"] == 81 / 162


def test_graded_credit_reads_each_tasks_partial_score() -> None:
    from d1.tasks import get_task
    from d1.tasks.base import Score

    bench = _load("sampling.py")
    task = get_task("addition", prompt_style="trace", digits=3, test_size=1)
    ex = task.load("test")[0]
    wrong_units = ex.answer[:-1] + str((int(ex.answer[-1]) + 1) % 10)
    assert bench.graded_credit(task.score(f"<answer>{wrong_units}</answer>", ex)) == 0.75
    assert bench.graded_credit(Score(1.0, "x", {})) == 1.0


def test_random_prompts_never_hold_the_mask_token() -> None:
    import torch

    bench = _load("sampling.py")
    ids = bench.random_prompts(64, 32, 12, 9, torch.Generator().manual_seed(0))
    assert ids.shape == (64, 32) and int(ids.min()) >= 7 and int(ids.max()) < 12
    assert not (ids == 9).any() and (ids == 8).any() and (ids == 10).any()


def test_gpu_check_tiny_runs_every_row() -> None:
    """`gpu_check.py --tiny`: the GPU script's rows on the tiny model on the CPU, each measured
    (the 4-bit row says it needs bitsandbytes where that is not installed)."""
    out = _run("gpu_check.py", "--tiny")
    rows = [line.split(" | ") for line in out.splitlines() if line.count(" | ") == 5]
    checks = [row[0] for row in rows]
    assert checks == [
        "bf16 forward, 512 tokens",
        *(
            f"sampler {mode}, gen 32, batch {batch}"
            for batch in (1, 8)
            for mode in ("reference", "fast dual", "fast dual+threshold 0.95")
        ),
        "diffu-GRPO step, full FT (G 6, gen 32, mu 2)",
        "diffu-GRPO step, LoRA r 8 on NF4 4-bit",
        "masked SFT step, 512 tokens, LoRA r 8",
    ]
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    for check, status, seconds, *_ in rows:
        if "NF4" in check and not has_bnb:
            assert status == "skipped: bitsandbytes is not installed (pip install bitsandbytes)"
        else:
            assert status == "ok", (check, status)
            assert float(seconds) > 0


def test_gpu_check_rows_are_isolated(capsys) -> None:
    """A failing or out-of-memory row fills its own row; the next row still runs."""
    import torch

    bench = _load("gpu_check.py")

    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def broken():
        raise ValueError("bad shape\nsecond line")

    table = bench.run_rows(
        [("a", oom), ("b", broken), ("c", lambda: {"seconds": "1.0"})],
        torch.device("cpu"),
        bench.Console(width=200),
    )
    statuses = table.columns[1]._cells
    assert statuses == [
        "out of memory: CUDA out of memory. Tried to allocate 20.00 GiB",
        "failed: ValueError: bad shape",
        "ok",
    ]
    assert table.columns[2]._cells == ["-", "-", "1.0"]


def test_rewards_benchmark_quick_prints_every_task_and_function() -> None:
    out = _run("rewards.py")
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if "│" in line]
    rows = [r for r in rows if r and r[0] not in ("", "task")]
    pairs = {(r[0], r[1]) for r in rows}
    for task, fn in [
        ("gsm8k", "correctness"),
        ("gsm8k/d1_compat", "score"),
        ("math500", "score"),
        ("countdown", "countdown"),
        ("sudoku", "score"),
        ("addition", "digits"),
    ]:
        assert (task, fn) in pairs, (task, fn, sorted(pairs))
    for r in rows:  # worst, median and normal median are numbers of seconds (or "> cap")
        assert all(v.startswith(">") or float(v) >= 0 for v in (r[2], r[4], r[5])), r


@pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")
def test_sandbox_benchmark_quick_prints_every_row() -> None:
    out = _run("sandbox.py", "--quick", "--rounds", "1", "--single-runs", "1")
    for row in ("single run (s)", "pytest file (s)", "HumanEval 20, run_many (s)"):
        line = next(line for line in out.splitlines() if row in line)
        assert "/" not in line  # every job passed: no "(k/n ... passed ...)" note


def test_model_fastpaths_switches_each_path_off_with_the_same_tokens() -> None:
    """`model_fastpaths.py`: every variant runs (each restores the computation a speed path
    replaced) and gives the tokens of the current code."""
    out = _run("model_fastpaths.py", "--repeats", "1")
    rows = [
        ln.split("|")[1:-1] for ln in out.splitlines() if ln.startswith("| ") and "|---" not in ln
    ]
    rows = [[c.strip() for c in r] for r in rows[1:]]  # without the header
    variants = ["all", "no RoPE table", "full logits", "Gumbel temporaries"]
    assert [(r[0], r[1]) for r in rows] == [
        (s, v) for s in ("reference", "fast, dual cache") for v in variants
    ]
    assert all(r[-1] == "True" for r in rows)


def test_estimator_and_objective_benchmarks_run_small(tmp_path) -> None:
    """`estimators.py` and `objectives_rl.py` end to end at toy sizes: every estimator row and
    every objective row of their tables is printed, with the command that made them."""
    out = _run(
        "estimators.py",
        *("--out", str(tmp_path / "est"), "--sft-steps", "5", "--prompts", "2"),
        *("--generations", "2", "--repeats", "2", "--budgets", "1", "2", "--ref-draws", "4"),
    )
    for name in ("d1", "coupled", "mc_elbo"):
        assert any(ln.startswith(f"| {name}") for ln in out.splitlines()), name
    assert "OMP_NUM_THREADS=1 .venv/bin/python" in out
    out = _run(
        "objectives_rl.py",
        *("--out", str(tmp_path / "orl"), "--seeds", "0", "--objectives", "d1", "wd1"),
        *("--workers", "1", "--sft-steps", "5", "--grpo-steps", "2", "--test-size", "8"),
    )
    rows = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert any("SFT only" in ln for ln in rows)
    for name in ("d1", "wd1"):
        assert any(ln.startswith(f"| {name}") for ln in rows), name
