"""Multi-digit addition: problems, carries, an offline generator, short worked traces.

The smallest reasoning task d1 ships: a character-level model trained from scratch on a laptop
CPU learns it in about a minute, which is what `d1 demo` needs (issue #6). Difficulty is
controlled by the operand length and by the number of *carries* (columns whose sum overflows
into the next column): a model shown only problems with few carries must still learn to chain
them, which is where reward-driven RL has room to help.

A problem is its operands; the answer is their sum written with a fixed width (zero-padded to
the widest possible sum), so every answer of a task has the same number of characters. The
canonical key is the sorted operands, and `d1.tasks.puzzles.splits` assigns each key to one split.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from d1.tasks.puzzles.splits import SPLIT_FRACTIONS, check_split, split_of

__all__ = [
    "AdditionProblem",
    "addition_from_row",
    "addition_to_row",
    "answer_width",
    "column_steps",
    "count_carries",
    "generate_addition",
    "parse_operands",
]


def answer_width(digits: int, operands: int) -> int:
    """Characters of the largest possible sum of `operands` numbers of `digits` digits."""
    return len(str(operands * (10**digits - 1)))


def column_steps(numbers: Sequence[int]) -> list[tuple[list[int], int, int, int]]:
    """Schoolbook addition, units column first: per column (its digits, the carry in, the
    column sum, the carry out). Columns run until every operand and the carry are exhausted."""
    steps = []
    carry, col = 0, 0
    width = max(len(str(n)) for n in numbers)
    while col < width or carry:
        column = [n // 10**col % 10 for n in numbers] if col < width else []
        total = sum(column) + carry
        steps.append((column, carry, total, total // 10))
        carry, col = total // 10, col + 1
    return steps


def count_carries(numbers: Sequence[int]) -> int:
    """Columns whose sum overflows into the next column (493 + 28: units 3+8 and tens
    9+2+1 carry, so 2)."""
    return sum(1 for *_, out in column_steps(numbers) if out)


@dataclass(frozen=True)
class AdditionProblem:
    """Operands (as generated, in order) and the answer width of their task."""

    operands: tuple[int, ...]
    width: int

    @property
    def total(self) -> int:
        return sum(self.operands)

    @property
    def question(self) -> str:
        """The bare problem, e.g. "893+581"."""
        return "+".join(str(n) for n in self.operands)

    @property
    def answer(self) -> str:
        """The sum, zero-padded to the task's answer width ("0085" for 3-digit operands)."""
        return f"{self.total:0{self.width}d}"

    @property
    def carries(self) -> int:
        return count_carries(self.operands)

    @property
    def key(self) -> str:
        """Canonical key (order-free), which decides the split."""
        return "addition:" + "+".join(str(n) for n in sorted(self.operands))

    def trace(self) -> str:
        """A short worked solution, one line per column from the units, e.g. for 893+581:
        "3+1=4", "9+8=17 carry 1", "8+5+1=14 carry 1", "1"."""
        lines = []
        for column, carry_in, total, carry_out in column_steps(self.operands):
            terms = [str(d) for d in column] + ([str(carry_in)] if carry_in else [])
            line = f"{'+'.join(terms)}={total}" if len(terms) > 1 else str(total)
            lines.append(line + (f" carry {carry_out}" if carry_out else ""))
        return "\n".join(lines)

    def fixed_width_trace(self) -> str:
        """The same schoolbook columns in fixed width, for tiny models: one line per answer
        digit, units first: column number, the column's digits, the carry in, and the column
        sum in two digits; for 893+581 (width 4) "c1:3+1+0=04", "c2:9+8+0=17", "c3:8+5+1=14",
        "c4:0+0+1=01". Every line has the same length, so the prompt digits a line reads sit
        at fixed distances from it, and the answer is the lines' last digits, bottom up."""
        label = len(str(self.width))
        total_width = len(str(10 * len(self.operands) - 1))  # digits <= 9 each, carry < n
        steps = column_steps(self.operands)
        zeros = [0] * len(self.operands)
        lines = []
        for col in range(self.width):  # columns past the sum's own length are all zeros
            column, carry_in, total, _ = steps[col] if col < len(steps) else ([], 0, 0, 0)
            terms = "+".join(str(d) for d in [*(column or zeros), carry_in])
            lines.append(f"c{col + 1:0{label}d}:{terms}={total:0{total_width}d}")
        return "\n".join(lines)

    def demonstration(self, *, reasoning: bool = True, fixed_width: bool = False) -> str:
        """The SFT response in d1's format: the trace as reasoning (`fixed_width_trace` when
        `fixed_width`), or an empty one."""
        body = (self.fixed_width_trace() if fixed_width else self.trace()) if reasoning else ""
        return f"<reasoning>\n{body}\n</reasoning>\n<answer>\n{self.answer}\n</answer>"


def parse_operands(question: str, where: str = "question") -> tuple[int, ...]:
    """Operands of "893+581" (spaces allowed); a clear error for anything else."""
    parts = [p.strip() for p in str(question).split("+")]
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise ValueError(
            f"{where}: an addition problem must look like '893+581' (non-negative integers "
            f"joined by '+'), got {question!r}."
        )
    return tuple(int(p) for p in parts)


def generate_addition(
    n: int,
    *,
    seed: int,
    digits: int = 3,
    operands: int = 2,
    carries: Sequence[int] | None = None,
    split: str | None = None,
    max_tries: int | None = None,
) -> list[AdditionProblem]:
    """`n` distinct problems, deterministic given the arguments.

    Each operand is a uniform `digits`-digit number (no leading zeros, so the columns of every
    problem line up at the same character positions); with `carries=(lo, hi)` only problems with
    lo..hi carries (inclusive) are kept. With `split`, only problems whose key that split owns
    (`d1.tasks.puzzles.splits`), so splits never share a problem whatever their seeds or difficulty.

    Raises:
        ValueError: on bad arguments, or when `n` distinct problems cannot be found.
    """
    if digits < 1 or operands < 2:
        raise ValueError(f"need digits >= 1 and operands >= 2, got {digits} and {operands}.")
    lo, hi = (0, digits + operands) if carries is None else (int(carries[0]), int(carries[1]))
    if not 0 <= lo <= hi:
        raise ValueError(f"carries must be [low, high] with 0 <= low <= high, got {carries}.")
    if split is not None:
        check_split(split)
    width = answer_width(digits, operands)
    low = 10 ** (digits - 1) if digits > 1 else 0
    share = SPLIT_FRACTIONS[split] if split is not None else 1.0
    tries = max_tries if max_tries is not None else int(200 * n / share) + 10_000
    rng = random.Random(f"addition-{seed}-{digits}-{operands}")
    seen: set[str] = set()
    out: list[AdditionProblem] = []
    for _ in range(tries):
        if len(out) == n:
            break
        numbers = tuple(rng.randrange(low, 10**digits) for _ in range(operands))
        problem = AdditionProblem(numbers, width)
        if problem.key in seen or not lo <= problem.carries <= hi:
            continue
        if split is not None and split_of(problem.key) != split:
            continue
        seen.add(problem.key)
        out.append(problem)
    if len(out) < n:
        raise ValueError(
            f"Found only {len(out)} of {n} distinct addition problems with {lo}-{hi} carries "
            f"(split={split!r}); ask for fewer, more digits, or a wider carries range."
        )
    return out


def addition_to_row(problem: AdditionProblem, *, response: str | None = None) -> dict[str, str]:
    """A data-file row: {"question", "answer"} (+ "response" for SFT)."""
    row = {"question": problem.question, "answer": problem.answer}
    if response is not None:
        row["response"] = response
    return row


def addition_from_row(
    row: Mapping[str, Any], where: str = "row", width: int = 0
) -> AdditionProblem:
    """A problem from a row with a "question" like "893+581" (an "answer" is checked if given).

    `width` is the answer width; 0 takes the given answer's length (or the widest sum)."""
    if "question" not in row:
        raise ValueError(f"{where}: missing field 'question' (e.g. '893+581').")
    numbers = parse_operands(row["question"], where)
    if not width:
        given = str(row.get("answer", "")).strip()
        width = len(given) or answer_width(max(len(str(n)) for n in numbers), len(numbers))
    problem = AdditionProblem(numbers, width)
    given = str(row.get("answer", "")).strip()
    if given and (not given.isdigit() or int(given) != problem.total):
        raise ValueError(
            f"{where}: answer {row['answer']!r} is not the sum of {row['question']!r} "
            f"({problem.total})."
        )
    return problem
