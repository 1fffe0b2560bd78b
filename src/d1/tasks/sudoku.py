"""4x4 Sudoku: fill the empty cells ('0') of a 16-character grid (docs/method.md §5).

Data: "test" is d1's `4x4_test_sudoku.csv` (500 puzzles, 8 blanks each, shipped in `d1/data/`);
d1 evaluates 256 of them, drawn by `np.random.choice(500, 256, replace=False)` right after
`np.random.seed(42)` (eval/eval.py's `init_seed(42)`, nothing else drawing from NumPy's global
RNG before the dataset is built); `test_subset="d1"` (default) gives exactly those rows, in
d1's order, from a private `RandomState(42)`; `test_subset="all"` gives all 500. d1 trains on
its own `4x4_sudoku_unique_puzzles.csv`, which is not on the hub: pass it as `path=`, or let the
offline generator (`d1.tasks.puzzles.sudoku`, unique-solution puzzles with `blanks` empty cells, never
one of the test puzzles) provide "train" and "validation"; `source="generated"` generates
"test" too. Splits of generated data never share a puzzle. A local CSV in d1's format
(`Puzzle,Solution`, optional `response`) replaces a split.

Prompt: d1's training (diffu-grpo/data_utils.py) and evaluation (eval/sudoku.py) prompts have
the same user turn, `SUDOKU_PROMPT + "\\n\\nSolve the following Sudoku puzzle: <puzzle>\\n"`;
the evaluation also pre-fills the assistant turn with "<reasoning>" (`prompt_style="d1_eval"`).
`"compact"` is the bare 16-character puzzle, for tiny character-level models.

Reward (RL, d1's only Sudoku reward): the fraction of the puzzle's empty cells that the digits
of the last closed `<answer>` block fill correctly (`d1.tasks.puzzles.sudoku.sudoku_reward`), in
[0, 1].

Scoring (evaluation, generous): the digits of the last `<answer>` tag (closed or not; spaces,
commas, newlines, bars are ignored), else the last run of exactly 16 digits in the text; the
per-example score is the fraction of empty cells right. `aggregate` reports d1's accuracy
(correct empty cells / all empty cells over the dataset), the mean per-puzzle fraction, and
the solved rate (the answer is a valid grid keeping every clue; 124 of d1's 500 test puzzles
have several solutions, and d1's cell accuracy only credits the listed one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from d1.tasks.base import Example, RewardFn, Score, Task
from d1.tasks.data import limit_examples, load_rows, row_id
from d1.tasks.formatting import extract_answer_tag, strip_special_tokens, tail
from d1.tasks.puzzles.splits import check_split
from d1.tasks.puzzles.sudoku import (
    CELLS,
    SudokuPuzzle,
    generate_sudoku,
    is_valid_grid,
    parse_blanks,
    sudoku_cell_score,
    sudoku_demonstration,
    sudoku_from_row,
    sudoku_reward,
)

__all__ = [
    "D1_TEST_FILE",
    "SUDOKU_PROMPT",
    "SudokuTask",
    "d1_test_subset",
    "parse_sudoku_answer",
    "sudoku_prompt",
]

D1_TEST_FILE = Path(__file__).resolve().parent.parent / "data" / "sudoku_4x4_test.csv"
D1_TEST_SUBSET_SIZE = 256
D1_TEST_SUBSET_SEED = 42

PromptStyle = Literal["train", "d1_eval", "compact"]
PROMPT_STYLES: tuple[str, ...] = ("train", "d1_eval", "compact")

# d1's SUDOKU_SYSTEM_PROMPT (diffu-grpo/data_utils.py and eval/sudoku.py), verbatim.
SUDOKU_PROMPT = """
Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading left-to-right, top-to-bottom, where '0' represents empty cells.

Rules:
- Fill empty cells with digits 1-4
- Each row must contain digits 1-4 exactly once
- Each column must contain digits 1-4 exactly once
- Each 2x2 box must contain digits 1-4 exactly once

Important: Your solution must be a COMPLETE 16-character string with only the digits 1-4, representing your final solved grid.

Respond in this exact format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
[16-character solution string with no spaces or separators]
</answer>
"""


def sudoku_prompt(puzzle: str, style: str = "train") -> str:
    """The user turn for a puzzle: the one place the prompt text lives ("train" and "d1_eval"
    share d1's text; "compact" is the bare puzzle string)."""
    if style in ("train", "d1_eval"):
        return f"{SUDOKU_PROMPT}\n\nSolve the following Sudoku puzzle: {puzzle}\n"
    if style == "compact":
        return puzzle
    raise ValueError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {style!r}.")


def d1_test_subset(n_rows: int = 500) -> list[int]:
    """Row indices of d1's 256-puzzle evaluation subset, in d1's order.

    d1 calls `np.random.choice(len(dataset), 256, replace=False)` after `np.random.seed(42)`;
    a `RandomState(42)` draws the same numbers without touching NumPy's global RNG.
    """
    import numpy as np

    rng = np.random.RandomState(D1_TEST_SUBSET_SEED)
    return [int(i) for i in rng.choice(n_rows, D1_TEST_SUBSET_SIZE, replace=False)]


_SIXTEEN_DIGITS = re.compile(r"(?<!\d)\d{16}(?!\d)")


def parse_sudoku_answer(completion: str) -> str | None:
    """The answer's digits, read generously (see the module docstring), or None (from the last
    `MAX_PARSE_CHARS` characters)."""
    text = tail(strip_special_tokens(completion))
    tag = extract_answer_tag(text)
    if tag is not None:
        digits = "".join(ch for ch in tag if ch in "0123456789")
        if digits:
            return digits
    runs = _SIXTEEN_DIGITS.findall(text)
    return runs[-1] if runs else None


class SudokuTask(Task):
    """4x4 Sudoku (docs/method.md §5); see the module docstring for data, prompts, rewards, metrics."""

    name = "sudoku"

    def __init__(
        self,
        *,
        prompt_style: PromptStyle = "train",
        source: Literal["d1", "generated"] = "d1",
        blanks: int | str | tuple[int, int] = (6, 10),
        train_size: int = 10_000,
        validation_size: int = 500,
        test_size: int = 500,
        test_subset: Literal["d1", "all"] = "d1",
        demo_reasoning: bool = True,
    ) -> None:
        """
        Args:
            prompt_style: "train" (d1's prompt, default), "d1_eval" (the same plus the
                "<reasoning>" prefix of d1's evaluation) or "compact".
            source: "d1" (d1's test set; train/validation generated unless `path=` is given)
                or "generated" (every split generated).
            blanks: empty cells per generated puzzle, or an inclusive range ((6, 10) or
                "6-10"; at most 12; d1's test puzzles have 8).
            train_size, validation_size, test_size: sizes of the generated splits.
            test_subset: "d1" (the 256 puzzles d1 evaluates) or "all" (all 500 rows).
            demo_reasoning: demonstrations list the solving steps (else an empty reasoning).
        """
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(
                f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {prompt_style!r}."
            )
        if source not in ("d1", "generated"):
            raise ValueError(f"source must be 'd1' or 'generated', got {source!r}.")
        if test_subset not in ("d1", "all"):
            raise ValueError(f"test_subset must be 'd1' or 'all', got {test_subset!r}.")
        if min(train_size, validation_size, test_size) < 0:
            raise ValueError("split sizes must be >= 0.")
        self.prompt_style = prompt_style
        self.source = source
        self.blanks = parse_blanks(blanks)
        self.sizes = {"train": train_size, "validation": validation_size, "test": test_size}
        self.test_subset = test_subset
        self.demo_reasoning = demo_reasoning

    # -- data ------------------------------------------------------------------------------
    def example(
        self, puzzle: SudokuPuzzle, example_id: str, response: str | None = None
    ) -> Example:
        """Wrap a puzzle as an `Example` (question = the puzzle string; a solver-written
        demonstration as `response` unless one is given)."""
        if response is None:
            response = sudoku_demonstration(
                puzzle.puzzle, puzzle.solution, reasoning=self.demo_reasoning
            )
        return Example(
            id=example_id,
            question=puzzle.puzzle,
            answer=puzzle.solution,
            meta={"puzzle": puzzle.puzzle, "solution": puzzle.solution},
            response=response,
        )

    def _from_rows(self, rows: Sequence[dict[str, Any]], prefix: str) -> list[Example]:
        out = []
        for i, row in enumerate(rows):
            example_id = row_id(prefix, i)
            response = row.get("response")
            out.append(
                self.example(
                    sudoku_from_row(row, example_id),
                    example_id,
                    str(response) if response else None,
                )
            )
        return out

    def load(
        self,
        split: str = "train",
        *,
        path: str | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> list[Example]:
        """Load "train", "validation" or "test" (see the module docstring).

        Args:
            path: a CSV/JSONL/parquet file with Puzzle/Solution fields, used whole as this split.
            limit: keep the first `limit` examples.
            seed: the generator seed for generated splits (splits never overlap whatever the
                seeds); unused for files.
        """
        check_split(split)
        if path is not None:
            rows = load_rows(path)
            return limit_examples(self._from_rows(rows, Path(path).name), limit)
        if split == "test" and self.source == "d1":
            rows = load_rows(D1_TEST_FILE, required=("Puzzle", "Solution"))
            examples = self._from_rows(rows, "sudoku/4x4_test")
            if self.test_subset == "d1":
                examples = [examples[i] for i in d1_test_subset(len(examples))]
            return limit_examples(examples, limit)
        n = self.sizes[split] if limit is None else min(limit, self.sizes[split])
        exclude: set[str] = set()
        if split != "test":  # never train or select on d1's test puzzles
            exclude = {r["Puzzle"] for r in load_rows(D1_TEST_FILE, required=("Puzzle",))}
        puzzles = generate_sudoku(n, seed=seed, blanks=self.blanks, split=split, exclude=exclude)
        prefix = f"sudoku/generated/{seed}/{split}"
        return [self.example(p, row_id(prefix, i)) for i, p in enumerate(puzzles)]

    def example_from_gold(self, question: str, gold: Any, *, example_id: str) -> Example:
        """Rebuild an Example from a saved generation: the gold is the solution string; the
        puzzle is the question itself (16 digits) or follows "Sudoku puzzle:" in it (d1's
        evaluation files store "Solve the following Sudoku puzzle: <puzzle>\\n")."""
        text = question.strip()
        if len(text) >= CELLS and text[:CELLS].isdigit():
            puzzle = text[:CELLS]
        else:
            m = re.search(r"Sudoku puzzle:\s*([0-9]{16})", question)
            if m is None:
                raise ValueError(
                    f"{example_id}: no 16-digit puzzle in the question {question[:80]!r}."
                )
            puzzle = m.group(1)
        row = {"Puzzle": puzzle, "Solution": str(gold)}
        return self.example(sudoku_from_row(row, example_id), example_id)

    # -- prompt ----------------------------------------------------------------------------
    def user_message(self, example: Example) -> str:
        return sudoku_prompt(example.meta["puzzle"], self.prompt_style)

    def assistant_prefix(self, example: Example) -> str:
        return "<reasoning>" if self.prompt_style == "d1_eval" else ""

    # -- rewards, scoring, metrics ---------------------------------------------------------
    def sudoku_reward(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """d1's Sudoku reward per completion: fraction of empty cells right, in [0, 1] (on the
        last `MAX_PARSE_CHARS` characters)."""
        return [
            sudoku_reward(tail(c), ex.meta["puzzle"], ex.meta["solution"])
            for c, ex in zip(completions, examples, strict=True)
        ]

    def reward_functions(self) -> dict[str, RewardFn]:
        return {"sudoku": self.sudoku_reward}

    def score(self, completion: str, example: Example) -> Score:
        puzzle, solution = example.meta["puzzle"], example.meta["solution"]
        digits = parse_sudoku_answer(completion)
        correct, empty = sudoku_cell_score(digits, puzzle, solution)
        grid = digits[:CELLS].ljust(CELLS, "0") if digits else None
        solved = (
            grid is not None
            and is_valid_grid(grid)
            and all(p in ("0", g) for p, g in zip(puzzle, grid, strict=True))
        )
        details = {"cells_correct": correct, "cells_empty": empty, "solved": float(solved)}
        return Score(correct / empty if empty else 0.0, grid, details)

    def timeout_score(self, example: Example) -> Score:
        empty = example.meta["puzzle"].count("0")
        details = {"cells_correct": 0, "cells_empty": empty, "solved": 0.0, "timeout": True}
        return Score(0.0, None, details)

    def aggregate(self, scores: Sequence[Score]) -> dict[str, float]:
        """d1's accuracy (correct empty cells / all empty cells), the mean per-puzzle cell
        fraction, the solved rate and the count."""
        n = len(scores)
        if n == 0:
            return {"accuracy": 0.0, "cell_accuracy_mean": 0.0, "solved": 0.0, "n": 0.0}
        cells = sum(s.details["cells_empty"] for s in scores)
        right = sum(s.details["cells_correct"] for s in scores)
        return {
            "accuracy": right / cells if cells else 0.0,
            "cell_accuracy_mean": sum(s.correct for s in scores) / n,
            "solved": sum(s.details["solved"] for s in scores) / n,
            "n": float(n),
        }
