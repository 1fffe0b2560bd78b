"""Time per call of every task's rewards and scorer on adversarial and on normal completions.

The adversarial corpus (`d1.tasks.adversarial`: unbalanced and nested `\\boxed{` / `\\frac{`,
`(` x 1e5, huge numbers, `9**9**9**9`, exponent towers, unicode, NUL bytes, repeated tags, the
repetitive text of an untrained model, ~1 MB each) and a few well-formed completions go
through each reward component and the scorer of each built-in task (offline examples), one
completion per call. The table gives, per (task, function), the worst and median seconds over
the adversarial corpus (with the worst input's name) and the median over normal completions.
Every call runs under `d1.tasks.timeout.time_limit(--cap)`: a call cut short shows as "> cap".

    .venv/bin/python benchmarks/rewards.py             # full corpus, 1 MB inputs (~2 min CPU)
    .venv/bin/python benchmarks/rewards.py --quick     # 20 kB inputs, no code sandbox (seconds)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from rich.console import Console
from rich.table import Table

from d1.tasks.adversarial import (
    DEFAULT_SIZE,
    adversarial_completions,
    normal_completions,
    scoring_functions,
    task_cases,
)
from d1.tasks.timeout import call_with_time_limit


def time_calls(fn, example, texts: dict[str, str], cap: float) -> list[tuple[float, str, bool]]:
    """(seconds, input name, cut short) of `fn` on each text, slowest first."""
    out = []
    for name, text in texts.items():
        t0 = time.perf_counter()
        _, cut = call_with_time_limit(fn, text, example, seconds=cap, default=None)
        out.append((time.perf_counter() - t0, name, cut))
    return sorted(out, reverse=True)


def _fmt(seconds: float, cut: bool, cap: float) -> str:
    return f"> {cap:g}" if cut else f"{seconds:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 kB inputs, no code task")
    parser.add_argument("--size", type=int, default=None, help="characters per input")
    parser.add_argument("--cap", type=float, default=30.0, help="seconds before a call is cut")
    parser.add_argument("--tasks", default=None, help="comma-separated case names (default all)")
    args = parser.parse_args(argv)
    size = args.size or (20_000 if args.quick else DEFAULT_SIZE)
    adversarial = adversarial_completions(size)
    normal = normal_completions()
    cases = task_cases(code=not args.quick and sys.platform == "linux")
    if args.tasks:
        wanted = args.tasks.split(",")
        cases = {k: v for k, v in cases.items() if k in wanted}
    table = Table(
        title=f"Seconds per call ({len(adversarial)} adversarial inputs of ~{size:,} characters, "
        f"{len(normal)} normal completions)"
    )
    for col in ("task", "function", "adv. worst", "worst input", "adv. median", "normal median"):
        table.add_column(
            col, justify="left" if col in ("task", "function", "worst input") else "right"
        )
    console = Console(width=120)
    for label, (task, example) in cases.items():
        for fname, fn in scoring_functions(task).items():
            for text in normal.values():  # warm-up: imports, math-verify's parser, caches
                call_with_time_limit(fn, text, example, seconds=args.cap, default=None)
            adv = time_calls(fn, example, adversarial, args.cap)
            norm = time_calls(fn, example, normal, args.cap)
            worst, worst_name, cut = adv[0]
            table.add_row(
                label,
                fname,
                _fmt(worst, cut, args.cap),
                worst_name,
                f"{statistics.median(t for t, _, _ in adv):.4f}",
                f"{statistics.median(t for t, _, _ in norm):.4f}",
            )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
