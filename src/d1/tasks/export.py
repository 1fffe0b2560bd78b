"""`d1 data ...`: generate a split of Countdown or Sudoku problems and write it to a file."""

from __future__ import annotations

from pathlib import Path

from d1.tasks.data import load_rows
from d1.tasks.puzzles.countdown import countdown_from_row, generate_countdown, write_countdown
from d1.tasks.puzzles.sudoku import generate_sudoku, write_sudoku

__all__ = ["generate_file"]


def generate_file(
    kind: str,
    out: str | Path,
    *,
    n: int,
    seed: int = 0,
    split: str | None = "train",
    blanks: str | tuple[int, int] = (6, 10),
    num_count: int = 3,
    max_number: int = 100,
    max_target: int = 100,
    responses: bool = False,
) -> int:
    """Generate `n` problems of `kind` ("countdown" or "sudoku") owned by `split` and write
    them in d1's format (.jsonl or .csv by suffix). Outside the test split, d1's own test
    problems are never produced. Returns the number of rows written."""
    if kind == "countdown":
        from d1.tasks.countdown import D1_TEST_FILE

        exclude = set()
        if split != "test":
            exclude = {countdown_from_row(r).key for r in load_rows(D1_TEST_FILE)}
        problems = generate_countdown(
            n,
            seed=seed,
            num_count=num_count,
            max_number=max_number,
            max_target=max_target,
            split=split,
            exclude=exclude,
        )
        return write_countdown(problems, out, responses=responses)
    if kind == "sudoku":
        from d1.tasks.sudoku import D1_TEST_FILE as SUDOKU_TEST_FILE

        exclude = set()
        if split != "test":
            exclude = {r["Puzzle"] for r in load_rows(SUDOKU_TEST_FILE, required=("Puzzle",))}
        puzzles = generate_sudoku(n, seed=seed, blanks=blanks, split=split, exclude=exclude)
        return write_sudoku(puzzles, out, responses=responses)
    raise ValueError(f"Unknown puzzle kind {kind!r}; use 'countdown' or 'sudoku'.")
