"""4x4 Sudoku: exact solver, offline generator, d1's reward rule and d1's CSV format (docs/method.md §5).

A grid is a 16-character string read row by row, digits 1-4, '0' for an empty cell; rows,
columns and the four 2x2 boxes must each hold 1-4 once. There are exactly 288 valid grids, so
the solver enumerates them once and answers every question (solutions of a puzzle, their
number, uniqueness) with bit-set intersections: exact and a few microseconds per puzzle.

d1's test set (`4x4_test_sudoku.csv`, 500 rows, all with 8 blanks) has puzzles with more
than one solution (124 of 500); d1 scores every answer against the single listed solution.
The generator here only makes puzzles with a unique solution.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from d1.tasks.puzzles.answers import d1_answer_block
from d1.tasks.puzzles.io import write_rows
from d1.tasks.puzzles.splits import SPLIT_FRACTIONS, check_split, split_of

__all__ = [
    "SIZE",
    "SudokuPuzzle",
    "all_grids",
    "cell_name",
    "count_solutions",
    "generate_sudoku",
    "is_valid_grid",
    "parse_blanks",
    "solve_sudoku",
    "sudoku_cell_score",
    "sudoku_demonstration",
    "sudoku_from_row",
    "sudoku_reward",
    "sudoku_solutions",
    "sudoku_steps",
    "sudoku_to_row",
    "validate_puzzle",
    "write_sudoku",
]

SIZE = 4
CELLS = SIZE * SIZE
DIGITS = "1234"


@dataclass(frozen=True)
class SudokuPuzzle:
    """A puzzle ('0' = empty) and its solution, both 16-character strings."""

    puzzle: str
    solution: str

    @property
    def blanks(self) -> int:
        return self.puzzle.count("0")


def _units(cell: int) -> tuple[int, int, int]:
    """(row, column, box) indices of a cell, each 0-3 (boxes numbered row by row)."""
    r, c = divmod(cell, SIZE)
    return r, c, (r // 2) * 2 + c // 2


def cell_name(cell: int) -> str:
    """1-based "r2c3" name of a cell index 0-15."""
    r, c = divmod(cell, SIZE)
    return f"r{r + 1}c{c + 1}"


# Peers of each cell: the other cells of its row, column and box.
_PEERS: tuple[frozenset[int], ...] = tuple(
    frozenset(
        other
        for other in range(CELLS)
        if other != cell and any(a == b for a, b in zip(_units(cell), _units(other), strict=True))
    )
    for cell in range(CELLS)
)


def is_valid_grid(grid: str) -> bool:
    """True for a complete, valid 4x4 Sudoku grid (16 digits 1-4, no repeats in any unit)."""
    if len(grid) != CELLS or any(ch not in DIGITS for ch in grid):
        return False
    return all(grid[cell] != grid[p] for cell in range(CELLS) for p in _PEERS[cell])


@lru_cache(maxsize=1)
def all_grids() -> tuple[str, ...]:
    """The 288 valid 4x4 grids, in lexicographic order (built by backtracking once)."""
    grids: list[str] = []
    cells = [""] * CELLS

    def fill(i: int) -> None:
        if i == CELLS:
            grids.append("".join(cells))
            return
        for d in DIGITS:
            if all(cells[p] != d for p in _PEERS[i] if p < i):
                cells[i] = d
                fill(i + 1)
        cells[i] = ""

    fill(0)
    return tuple(grids)


@lru_cache(maxsize=1)
def _masks() -> tuple[tuple[int, ...], ...]:
    """masks[cell][d] has bit g set when grid g has digit d at cell (d = 1..4; index 0 unused)."""
    table = [[0] * (SIZE + 1) for _ in range(CELLS)]
    for g, grid in enumerate(all_grids()):
        for cell, ch in enumerate(grid):
            table[cell][int(ch)] |= 1 << g
    return tuple(tuple(row) for row in table)


def validate_puzzle(puzzle: str, name: str = "puzzle") -> str:
    """Return `puzzle` if it is 16 characters of 0-4, else raise a ValueError naming it."""
    if not isinstance(puzzle, str) or len(puzzle) != CELLS or any(c not in "01234" for c in puzzle):
        raise ValueError(
            f"{name} must be a 16-character string of digits 0-4 ('0' = empty), got {puzzle!r}."
        )
    return puzzle


def _consistent(puzzle: str) -> int:
    """Bit set of the grids that agree with every clue of the puzzle."""
    masks = _masks()
    bits = (1 << len(all_grids())) - 1
    for cell, ch in enumerate(puzzle):
        if ch != "0":
            bits &= masks[cell][int(ch)]
    return bits


def sudoku_solutions(puzzle: str) -> list[str]:
    """Every solution of the puzzle (lexicographic order); empty if the clues conflict."""
    bits = _consistent(validate_puzzle(puzzle))
    grids = all_grids()
    return [grids[g] for g in range(len(grids)) if bits >> g & 1]


def count_solutions(puzzle: str) -> int:
    """Number of solutions of the puzzle (0 when the clues conflict; 1 means unique)."""
    return _consistent(validate_puzzle(puzzle)).bit_count()


def solve_sudoku(puzzle: str) -> str | None:
    """A solution of the puzzle (the first in lexicographic order when several), or None."""
    solutions = sudoku_solutions(puzzle)
    return solutions[0] if solutions else None


# -- generator ---------------------------------------------------------------------------------


def parse_blanks(blanks: int | str | Sequence[int]) -> tuple[int, int]:
    """Blank-count range from 8, "8", "6-10" or (6, 10); inclusive, within 1..12.

    4x4 puzzles with a unique solution have at least 4 clues, so at most 12 blanks.
    """
    try:
        if isinstance(blanks, str):
            parts = [int(p) for p in blanks.split("-")]
        elif isinstance(blanks, int):
            parts = [blanks]
        else:
            parts = [int(p) for p in blanks]
        lo, hi = (parts[0], parts[0]) if len(parts) == 1 else parts
    except (TypeError, ValueError):
        raise ValueError(f"blanks must be like 8, '6-10' or (6, 10), got {blanks!r}.") from None
    if not 1 <= lo <= hi <= 12:
        raise ValueError(f"blanks must lie in 1..12 with low <= high, got {blanks!r}.")
    return lo, hi


def generate_sudoku(
    n: int,
    *,
    seed: int,
    blanks: int | str | Sequence[int] = (6, 10),
    split: str | None = None,
    exclude: Iterable[str] = (),
    max_tries: int | None = None,
) -> list[SudokuPuzzle]:
    """`n` distinct 4x4 puzzles with a unique solution, deterministic given the arguments.

    For each puzzle the number of blanks k is drawn uniformly from the `blanks` range; the
    puzzle is then drawn uniformly among all unique-solution puzzles with k blanks (a uniform
    grid and a uniform k-subset of cells, redrawn until the solution is unique).

    Args:
        n: number of puzzles.
        seed: seeds a private `random.Random`.
        blanks: number of empty cells, or an inclusive range ((6, 10) or "6-10"); at most 12.
        split: keep only puzzles owned by this split (see `d1.tasks.puzzles.splits`): splits never
            share a puzzle whatever their seeds or blank ranges. None keeps all.
        exclude: puzzle strings never to produce (e.g. d1's test set).
        max_tries: give up after this many draws (default scales with `n`).

    Raises:
        ValueError: bad arguments, or fewer than `n` distinct puzzles found.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    lo, hi = parse_blanks(blanks)
    if split is not None:
        check_split(split)
    share = SPLIT_FRACTIONS[split] if split is not None else 1.0
    if max_tries is None:
        # 12 blanks are unique ~5 % of the time; leave ample room before declaring failure.
        max_tries = int(400 * n / share) + 10_000
    rng = random.Random(seed)
    grids = all_grids()
    excluded = set(exclude)
    seen: set[str] = set()
    out: list[SudokuPuzzle] = []
    tries = 0
    k = rng.randint(lo, hi)
    while len(out) < n:
        tries += 1
        if tries > max_tries:
            raise ValueError(
                f"Found only {len(out)} of {n} distinct puzzles with {lo}-{hi} blanks in "
                f"{max_tries} draws (split={split!r}); ask for fewer or widen the blank range."
            )
        grid = rng.choice(grids)
        empty = set(rng.sample(range(CELLS), k))
        puzzle = "".join("0" if i in empty else ch for i, ch in enumerate(grid))
        if puzzle in seen or puzzle in excluded:
            continue
        if split is not None and split_of("sudoku:" + puzzle) != split:
            continue
        if _consistent(puzzle).bit_count() != 1:
            continue
        seen.add(puzzle)
        out.append(SudokuPuzzle(puzzle, grid))
        k = rng.randint(lo, hi)
    return out


# -- demonstrations ----------------------------------------------------------------------------


def _candidates(cells: list[str], cell: int) -> list[str]:
    taken = {cells[p] for p in _PEERS[cell]}
    return [d for d in DIGITS if d not in taken]


def _unit_members(kind: int, index: int) -> list[int]:
    return [c for c in range(CELLS) if _units(c)[kind] == index]


_UNIT_NAMES = ("row", "column", "box")


def sudoku_steps(puzzle: str, solution: str) -> list[str]:
    """Human-style solving steps that fill the puzzle's blanks with `solution`'s digits.

    Each step fills one cell: a naked single ("r1c3 = 4 (only digit left)") when the cell's
    row, column and box exclude three digits, else a hidden single ("r2c1 = 2 (only place
    for 2 in row 2)"), else the solution's digit ("(from the solution)"), needed only when
    the puzzle is not solvable by singles or has several solutions.
    """
    cells = list(validate_puzzle(puzzle))
    steps: list[str] = []
    while "0" in cells:
        move: tuple[int, str, str] | None = None
        for cell in range(CELLS):
            if cells[cell] == "0":
                cands = _candidates(cells, cell)
                if len(cands) == 1 and cands[0] == solution[cell]:
                    move = (cell, cands[0], "only digit left")
                    break
        if move is None:
            for kind in range(3):
                for index in range(SIZE):
                    members = _unit_members(kind, index)
                    for d in DIGITS:
                        if any(cells[c] == d for c in members):
                            continue
                        spots = [
                            c for c in members if cells[c] == "0" and d in _candidates(cells, c)
                        ]
                        if len(spots) == 1 and solution[spots[0]] == d:
                            move = (
                                spots[0],
                                d,
                                f"only place for {d} in {_UNIT_NAMES[kind]} {index + 1}",
                            )
                            break
                    if move:
                        break
                if move:
                    break
        if move is None:
            cell = cells.index("0")
            move = (cell, solution[cell], "from the solution")
        cell, digit, why = move
        cells[cell] = digit
        steps.append(f"{cell_name(cell)} = {digit} ({why})")
    return steps


def sudoku_demonstration(puzzle: str, solution: str, *, reasoning: bool = True) -> str:
    """A short solver-written response for SFT in d1's format: one line per filled cell,
    then the 16-character grid in the answer. `reasoning=False` leaves the reasoning empty."""
    steps = sudoku_steps(puzzle, solution) if reasoning else []
    body = "".join(s + "\n" for s in steps)
    return f"<reasoning>\n{body}</reasoning>\n<answer>\n{solution}\n</answer>"


# -- reward ------------------------------------------------------------------------------------


def sudoku_cell_score(answer: str | None, puzzle: str, solution: str) -> tuple[int, int]:
    """(correct empty cells, empty cells) of an answer's digit string, scored as d1 does:
    digits only, padded with '0' or truncated to 16, compared with `solution` on the cells
    that are '0' in `puzzle`. A missing or empty answer scores 0 correct cells."""
    empty = [i for i in range(CELLS) if puzzle[i] == "0"]
    if not answer:
        return 0, len(empty)
    grid = answer[:CELLS].ljust(CELLS, "0")
    return sum(1 for i in empty if grid[i] == solution[i]), len(empty)


def sudoku_reward(text: str, puzzle: str, solution: str) -> float:
    """d1's Sudoku reward (`sudoku_reward_func`, docs/method.md §5) for one completion.

    The digits of the last closed `<answer>` block, padded with '0' / truncated to 16, scored
    as the fraction of the puzzle's empty cells that match `solution`. 0 with no answer block,
    no digits, or (as in d1) a puzzle without empty cells. Range [0, 1].
    """
    block = d1_answer_block(text)
    if block is None:
        return 0.0
    digits = "".join(ch for ch in block if ch.isdigit())  # d1: str.isdigit, as written
    correct, total = sudoku_cell_score(digits, puzzle, solution)
    return correct / total if total else 0.0


# -- d1's CSV format ---------------------------------------------------------------------------


def _field(row: Mapping[str, Any], names: Sequence[str], where: str) -> str:
    for name in names:
        value = row.get(name)
        if value is not None:
            return str(value).strip()
    raise ValueError(
        f"{where}: missing field {names[0]!r} (fields present: {sorted(row)}); d1's Sudoku "
        "CSV has the header 'Puzzle,Solution'."
    )


def sudoku_from_row(row: Mapping[str, Any], where: str = "row") -> SudokuPuzzle:
    """Parse one row of d1's CSV ({"Puzzle": ..., "Solution": ...}; lower-case names work too).

    Raises:
        ValueError: naming `where` and the field when a string is malformed, the solution is
            not a valid grid, or it contradicts a clue.
    """
    puzzle = _field(row, ("Puzzle", "puzzle"), where)
    solution = _field(row, ("Solution", "solution"), where)
    validate_puzzle(puzzle, f"{where}: field 'Puzzle'")
    if not is_valid_grid(solution):
        raise ValueError(f"{where}: field 'Solution' is not a valid 4x4 grid: {solution!r}.")
    if any(p != "0" and p != s for p, s in zip(puzzle, solution, strict=True)):
        raise ValueError(f"{where}: 'Solution' {solution} contradicts 'Puzzle' {puzzle}.")
    return SudokuPuzzle(puzzle, solution)


def sudoku_to_row(puzzle: SudokuPuzzle, *, response: str | None = None) -> dict[str, str]:
    """d1's CSV row {"Puzzle": ..., "Solution": ...} (+ "response" if given)."""
    row = {"Puzzle": puzzle.puzzle, "Solution": puzzle.solution}
    if response is not None:
        row["response"] = response
    return row


def write_sudoku(
    puzzles: Iterable[SudokuPuzzle], path: str | Path, *, responses: bool = False
) -> int:
    """Write puzzles in d1's format (`Puzzle,Solution`) to a .csv (d1's own format) or .jsonl
    file; with `responses`, add a solver-written demonstration field "response". Returns the
    number of rows written."""
    return write_rows(
        (
            sudoku_to_row(
                p, response=sudoku_demonstration(p.puzzle, p.solution) if responses else None
            )
            for p in puzzles
        ),
        path,
    )
