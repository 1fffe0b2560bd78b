"""Offline puzzle logic for the Countdown and Sudoku tasks: generators, exact solvers,
demonstrations for SFT, d1's reward rules and d1's file formats (docs/method.md §5).

Pure functions with no model or tokenizer dependency; `d1.tasks.countdown` and
`d1.tasks.sudoku` wrap them as `Task`s.
"""

from d1.tasks.puzzles.countdown import (
    CountdownProblem,
    countdown_demonstration,
    countdown_reward,
    generate_countdown,
    solve_countdown,
)
from d1.tasks.puzzles.splits import SPLIT_FRACTIONS, split_of
from d1.tasks.puzzles.sudoku import (
    SudokuPuzzle,
    count_solutions,
    generate_sudoku,
    solve_sudoku,
    sudoku_demonstration,
    sudoku_reward,
)

__all__ = [
    "SPLIT_FRACTIONS",
    "CountdownProblem",
    "SudokuPuzzle",
    "count_solutions",
    "countdown_demonstration",
    "countdown_reward",
    "generate_countdown",
    "generate_sudoku",
    "solve_countdown",
    "solve_sudoku",
    "split_of",
    "sudoku_demonstration",
    "sudoku_reward",
]
