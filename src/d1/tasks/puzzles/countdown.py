"""Countdown: solver, offline generator, d1's reward rule and d1's data formats (docs/method.md §5).

A problem is a few integers and a target; an answer is an expression that uses every number
exactly once with + - * / and parentheses. d1 trains on `Jiayi-Pan/Countdown-Tasks-3to4`
(3 numbers) and tests on `countdown_cd3_test.jsonl`: numbers and targets in 1..100, and every
test target is reachable with positive-integer intermediate results.

The generator follows those rules: numbers drawn uniformly from [min_number, max_number]
(repeats allowed, as in d1's data), the target drawn uniformly among the values in
[min_target, max_target] reachable when *every intermediate result is a positive integer*
(divisions exact), as in the classic game. The reward still accepts any expression whose exact
value is within 1e-5 of the target.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from d1.tasks.arithmetic import numbers_used, safe_eval_exact
from d1.tasks.puzzles.answers import d1_answer_block
from d1.tasks.puzzles.io import write_rows
from d1.tasks.puzzles.splits import SPLIT_FRACTIONS, check_split, split_of

__all__ = [
    "COUNTDOWN_FORMAT_SCORE",
    "COUNTDOWN_SCORE",
    "COUNTDOWN_TOLERANCE",
    "CountdownProblem",
    "check_countdown_answer",
    "countdown_demonstration",
    "countdown_from_row",
    "countdown_key",
    "countdown_reward",
    "countdown_to_row",
    "generate_countdown",
    "reachable_targets",
    "solve_countdown",
    "solve_countdown_steps",
    "write_countdown",
]

# d1's `compute_score` constants (docs/method.md §5).
COUNTDOWN_SCORE = 1.0
COUNTDOWN_FORMAT_SCORE = 0.1
COUNTDOWN_TOLERANCE = Fraction(1, 10**5)

_OPS = ("+", "-", "*", "/")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_LEAF_PREC = 3


@dataclass(frozen=True)
class CountdownProblem:
    """One Countdown problem.

    Attributes:
        numbers: the given numbers, in presentation order.
        target: the value to reach.
        solution: an expression reaching the target (from the solver), if known.
        steps: the solver's intermediate computations, one "a op b = c" line each.
    """

    numbers: tuple[int, ...]
    target: int
    solution: str | None = None
    steps: tuple[str, ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        return countdown_key(self.numbers, self.target)

    def demonstration(self, *, reasoning: bool = True) -> str | None:
        """`countdown_demonstration` from the stored solution (solving only if there is none)."""
        if self.solution is None:
            return countdown_demonstration(self.numbers, self.target, reasoning=reasoning)
        return _format_demonstration(self.solution, self.steps, reasoning)


def countdown_key(numbers: Iterable[int], target: int) -> str:
    """Canonical identity of a problem: the sorted numbers and the target ("30,93,100->23").
    Problems that differ only in the order of their numbers are the same problem."""
    return ",".join(str(n) for n in sorted(numbers)) + "->" + str(target)


# -- solver ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    value: Fraction
    expr: str
    prec: int
    steps: tuple[str, ...] = ()


def _fmt(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def _leaf(n: int) -> _Node:
    text = str(n)
    # A negative given number needs parentheses wherever it appears inside an expression.
    return _Node(Fraction(n), text if n >= 0 else f"({text})", _LEAF_PREC)


def _combine(a: _Node, b: _Node, op: str) -> _Node | None:
    if op == "+":
        value = a.value + b.value
    elif op == "-":
        value = a.value - b.value
    elif op == "*":
        value = a.value * b.value
    else:
        if b.value == 0:
            return None
        value = a.value / b.value
    p = _PREC[op]
    left = a.expr if a.prec >= p else f"({a.expr})"
    # Same precedence on the right needs parentheses only after - and / (a - (b + c)).
    right = b.expr if b.prec > p or (b.prec == p and op in "+*") else f"({b.expr})"
    step = f"{_fmt(a.value)} {op} {_fmt(b.value)} = {_fmt(value)}"
    return _Node(value, f"{left} {op} {right}", p, (*a.steps, *b.steps, step))


def _search(nodes: list[_Node], target: Fraction, positive_integers: bool) -> _Node | None:
    if len(nodes) == 1:
        return nodes[0] if nodes[0].value == target else None
    for i in range(len(nodes)):
        for j in range(len(nodes)):
            if i == j:
                continue
            rest = [nodes[k] for k in range(len(nodes)) if k != i and k != j]
            for op in _OPS:
                if op in "+*" and i > j:  # commutative: one order is enough
                    continue
                node = _combine(nodes[i], nodes[j], op)
                if node is None:
                    continue
                if positive_integers and (node.value.denominator != 1 or node.value <= 0):
                    continue
                found = _search([*rest, node], target, positive_integers)
                if found is not None:
                    return found
    return None


def solve_countdown_steps(
    numbers: Sequence[int], target: int | Fraction
) -> tuple[str, tuple[str, ...]] | None:
    """An expression using every number once that equals `target` exactly, with its steps.

    Solutions whose intermediate results are all positive integers are preferred (they make
    readable demonstrations); otherwise any rational solution is returned. Exhaustive search:
    instant for 3-4 numbers, slow beyond 5.

    Returns:
        (expression, steps) or None when the target is unreachable.
    """
    if not numbers:
        raise ValueError("numbers must not be empty")
    leaves = [_leaf(int(n)) for n in numbers]
    goal = Fraction(target)
    for positive_integers in (True, False):
        found = _search(leaves, goal, positive_integers)
        if found is not None:
            return found.expr, found.steps
    return None


def solve_countdown(numbers: Sequence[int], target: int | Fraction) -> str | None:
    """An expression using each of `numbers` exactly once that equals `target`, or None."""
    solved = solve_countdown_steps(numbers, target)
    return solved[0] if solved else None


@lru_cache(maxsize=65536)
def _reachable(values: tuple[int, ...]) -> frozenset[int]:
    """Values reachable using all of `values` (sorted tuple) with positive-integer results."""
    if len(values) == 1:
        return frozenset(values)
    out: set[int] = set()
    n = len(values)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = values[i], values[j]
            rest = values[:i] + values[i + 1 : j] + values[j + 1 :]
            results = {a + b, a * b, abs(a - b)}
            if a % b == 0:
                results.add(a // b)
            if b % a == 0:
                results.add(b // a)
            for r in results:
                if r > 0:
                    out |= _reachable(tuple(sorted((*rest, r))))
    return frozenset(out)


def reachable_targets(numbers: Sequence[int]) -> frozenset[int]:
    """All targets reachable from `numbers` (each used once) when every intermediate result
    must be a positive integer (the classic rules, and those of d1's test data)."""
    if any(n <= 0 for n in numbers):
        raise ValueError(f"numbers must be positive integers, got {list(numbers)}")
    return _reachable(tuple(sorted(int(n) for n in numbers)))


# -- generator ---------------------------------------------------------------------------------


def generate_countdown(
    n: int,
    *,
    seed: int,
    num_count: int = 3,
    min_number: int = 1,
    max_number: int = 100,
    min_target: int = 1,
    max_target: int = 100,
    split: str | None = None,
    exclude: Iterable[str] = (),
    max_tries: int | None = None,
) -> list[CountdownProblem]:
    """`n` distinct solvable Countdown problems, deterministic given the arguments.

    Numbers are drawn uniformly from [min_number, max_number] (repeats allowed); the target
    uniformly among the values in [min_target, max_target] reachable with positive-integer
    intermediate results. Each problem carries the solver's expression and steps.

    Args:
        n: number of problems.
        seed: seeds a private `random.Random`; the same arguments give the same problems.
        num_count: numbers per problem (2 to 4; d1 uses 3).
        split: keep only problems owned by this split ("train" / "validation" / "test", see
            `d1.tasks.puzzles.splits`), so that splits never share a problem whatever their seeds.
            None keeps all.
        exclude: problem keys (`countdown_key`) never to produce, e.g. a test set's.
        max_tries: give up after this many draws (default scales with `n`).

    Raises:
        ValueError: on bad ranges, or when `n` distinct problems cannot be found (the ranges
            are too narrow for the request).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 2 <= num_count <= 4:
        raise ValueError(f"num_count must be 2, 3 or 4, got {num_count}")
    if not 1 <= min_number <= max_number:
        raise ValueError(f"need 1 <= min_number <= max_number, got {min_number}, {max_number}")
    if not 1 <= min_target <= max_target:
        raise ValueError(f"need 1 <= min_target <= max_target, got {min_target}, {max_target}")
    if split is not None:
        check_split(split)
    share = SPLIT_FRACTIONS[split] if split is not None else 1.0
    if max_tries is None:
        max_tries = int(50 * n / share) + 1000
    rng = random.Random(seed)
    excluded = set(exclude)
    seen: set[str] = set()
    out: list[CountdownProblem] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > max_tries:
            raise ValueError(
                f"Found only {len(out)} of {n} distinct Countdown problems in {max_tries} draws "
                f"(split={split!r}); widen the number/target ranges or ask for fewer."
            )
        numbers = tuple(rng.randint(min_number, max_number) for _ in range(num_count))
        targets = sorted(t for t in reachable_targets(numbers) if min_target <= t <= max_target)
        if not targets:
            continue
        target = rng.choice(targets)
        key = countdown_key(numbers, target)
        if key in seen or key in excluded:
            continue
        if split is not None and split_of("countdown:" + key) != split:
            continue
        seen.add(key)
        solved = solve_countdown_steps(numbers, target)
        assert solved is not None  # the target was drawn from the reachable set
        out.append(CountdownProblem(numbers, target, solved[0], solved[1]))
    return out


# -- demonstrations and rewards ----------------------------------------------------------------


def _format_demonstration(expr: str, steps: Sequence[str], reasoning: bool) -> str:
    body = "".join(step + "\n" for step in steps) if reasoning else ""
    return f"<reasoning>\n{body}</reasoning>\n<answer>\n{expr}\n</answer>"


def countdown_demonstration(
    numbers: Sequence[int], target: int, *, reasoning: bool = True
) -> str | None:
    """A short solver-written response for SFT, in d1's format, or None if unsolvable::

        <reasoning>
        30 + 93 = 123
        123 - 100 = 23
        </reasoning>
        <answer>
        30 + 93 - 100
        </answer>

    With `reasoning=False` the reasoning block is left empty.
    """
    solved = solve_countdown_steps(numbers, target)
    if solved is None:
        return None
    return _format_demonstration(solved[0], solved[1], reasoning)


def check_countdown_answer(
    expression: str, numbers: Sequence[int], target: int
) -> tuple[bool, bool, Fraction | None]:
    """Check an answer expression: (uses exactly the given numbers, correct, exact value).

    The numbers must be the given ones as a multiset (each used once, none added); a literal
    written with a decimal point (`3.0`) is not a given integer. The value must be within
    1e-5 of the target (d1's tolerance). Never raises.
    """
    try:
        used = numbers_used(expression)
        value = safe_eval_exact(expression)
    except ValueError:
        return False, False, None
    numbers_ok = all(isinstance(u, int) for u in used) and sorted(used) == sorted(
        int(x) for x in numbers
    )
    correct = numbers_ok and abs(value - Fraction(target)) < COUNTDOWN_TOLERANCE
    return numbers_ok, correct, value


def countdown_reward(
    text: str,
    numbers: Sequence[int],
    target: int,
    *,
    score: float = COUNTDOWN_SCORE,
    format_score: float = COUNTDOWN_FORMAT_SCORE,
) -> float:
    """d1's Countdown reward (`compute_score`, docs/method.md §5) for one completion.

    0 when there is no closed `<answer>...</answer>` block; 1.0 when its expression uses
    exactly the given numbers and is within 1e-5 of the target; else 0.1 (an answer that
    fails: wrong numbers, wrong value, unparsable, division by zero).

    Deliberate deviation from d1: d1 evaluates with `eval` after a character check that lets
    `**` and `//` through; here only + - * / are accepted (the game's operations), so such an
    answer earns 0.1, and evaluation is exact and cannot hang. Whitespace, including newlines,
    inside the expression is allowed.
    """
    expression = d1_answer_block(text)
    if expression is None:
        return 0.0
    _, correct, _ = check_countdown_answer(expression, numbers, target)
    return score if correct else format_score


# -- d1's data formats -------------------------------------------------------------------------


def _int_field(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{where}: field {name!r} must be an integer, got {value!r}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValueError(f"{where}: field {name!r} must be an integer, got {value!r}.")


def countdown_from_row(row: Mapping[str, Any], where: str = "row") -> CountdownProblem:
    """Parse one data row in either of d1's formats.

    - test format (`countdown_cd3_test.jsonl`): {"input": "30,100,93", "output": "23"};
    - hub format (`Jiayi-Pan/Countdown-Tasks-3to4`): {"nums": [30, 100, 93], "target": 23}.

    Raises:
        ValueError: naming `where` and the field, when the row fits neither format.
    """
    if "nums" in row or "target" in row:
        nums, target = row.get("nums"), row.get("target")
        if nums is None or target is None:
            raise ValueError(f"{where}: needs both 'nums' and 'target' (got {sorted(row)}).")
        if isinstance(nums, str):
            nums = json.loads(nums) if nums.strip().startswith("[") else nums.split(",")
        if not isinstance(nums, (list, tuple)) or not nums:
            raise ValueError(f"{where}: field 'nums' must be a non-empty list, got {nums!r}.")
        numbers = tuple(_int_field(x, "nums", where) for x in nums)
        return CountdownProblem(numbers, _int_field(target, "target", where))
    if "input" in row or "output" in row:
        text, target = row.get("input"), row.get("output")
        if text is None or target is None:
            raise ValueError(f"{where}: needs both 'input' and 'output' (got {sorted(row)}).")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: field 'input' must be like '30,100,93', got {text!r}.")
        numbers = tuple(_int_field(x, "input", where) for x in text.split(","))
        return CountdownProblem(numbers, _int_field(target, "output", where))
    raise ValueError(
        f"{where}: not a Countdown row; expected fields 'input'/'output' (d1's test JSONL) or "
        f"'nums'/'target' (Jiayi-Pan/Countdown-Tasks-3to4), got {sorted(row)}."
    )


def countdown_to_row(problem: CountdownProblem, *, response: str | None = None) -> dict[str, Any]:
    """d1's test-set row {"input": "30,100,93", "output": "23"} (+ "response" if given)."""
    row: dict[str, Any] = {
        "input": ",".join(str(x) for x in problem.numbers),
        "output": str(problem.target),
    }
    if response is not None:
        row["response"] = response
    return row


def write_countdown(
    problems: Iterable[CountdownProblem], path: str | Path, *, responses: bool = False
) -> int:
    """Write problems in d1's test format ({"input": "30,100,93", "output": "23"}) to a .jsonl
    (d1's own format) or .csv file; with `responses`, add a solver-written demonstration
    under "response". Returns the number of rows written."""
    return write_rows(
        (countdown_to_row(p, response=p.demonstration() if responses else None) for p in problems),
        path,
    )
