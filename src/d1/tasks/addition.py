"""Multi-digit addition with short worked traces: d1's built-in from-scratch task.

Not one of the paper's tasks: it is the task `d1 demo` trains a tiny model on, from random
weights, on a laptop CPU (issue #6), because 4x4 Sudoku could not be learned from scratch in
that budget (see README). Problems come from the offline generator `d1.tasks.puzzles.addition`;
difficulty is the operand length and the number of carries, so a run can do SFT on easy
problems (few carries) and RL on hard ones (many carries). Splits never share a problem.

Prompt styles: `"train"` (d1's system prompt and an instruction, answers in d1's
`<reasoning>`/`<answer>` format, demonstrations carry a column-by-column trace) and
`"compact"` (the bare problem "893+581="; the response is the bare zero-padded sum "1474",
for tiny character-level models) and `"trace"` (the bare problem, answered in d1's format with
a fixed-width column trace: a long, checkable completion a tiny model can learn, 135 tokens at
6 digits, which the fast-sampling benchmark uses).

Rewards (RL): `correct` (1.0 when the parsed answer equals the sum) and `digits` (the fraction
of the answer's fixed-width digits in the right place: partial credit for a missed carry).
Scoring (evaluation): the last number of the `<answer>` block, else of the whole completion,
must equal the sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from d1.tasks.base import SYSTEM_PROMPT, Example, RewardFn, Score, Task
from d1.tasks.data import limit_examples, load_rows, row_id
from d1.tasks.formatting import extract_answer_tag, last_number, strip_special_tokens, tail
from d1.tasks.puzzles.addition import (
    AdditionProblem,
    addition_from_row,
    answer_width,
    generate_addition,
)
from d1.tasks.puzzles.splits import check_split

__all__ = ["AdditionTask", "addition_prompt", "parse_addition_answer"]

PromptStyle = Literal["train", "compact", "trace"]
PROMPT_STYLES: tuple[str, ...] = ("train", "compact", "trace")


def addition_prompt(question: str, style: str = "train") -> str:
    """The user turn for a problem: the one place the prompt text lives."""
    if style == "train":
        return f"{SYSTEM_PROMPT}\nAdd the numbers, column by column: {question}\n"
    if style in ("compact", "trace"):  # "893+581=": the "=" marks where the answer starts
        return f"{question}="
    raise ValueError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {style!r}.")


def parse_addition_answer(completion: str) -> str | None:
    """The last number of the `<answer>` block, else of the whole completion (special tokens
    removed; d1's shared number reader, so "1,474" reads as "1474"), or None; from the last
    `MAX_PARSE_CHARS` characters."""
    text = tail(strip_special_tokens(completion))
    tag = extract_answer_tag(text)
    return (last_number(tag) if tag else None) or last_number(text)


def same_sum(answer: str | None, gold: str) -> bool:
    """Whether a parsed answer is the integer `gold` (leading zeros allowed). A longer number is
    never equal, so no huge digit string is ever converted (`int` refuses > 4,300 digits)."""
    if answer is None or not answer.isdigit():
        return False
    digits = answer.lstrip("0") or "0"
    return len(digits) <= len(gold) and int(digits) == int(gold)


def digit_credit(answer: str | None, gold: str) -> float:
    """Fraction of the gold answer's fixed-width digits matched in place (right-aligned, the
    parsed answer zero-padded to the same width); 0 for no answer or a longer one."""
    if answer is None or not answer.isdigit() or len(answer) > len(gold):
        return 0.0
    padded = answer.rjust(len(gold), "0")
    return sum(a == b for a, b in zip(padded, gold, strict=True)) / len(gold)


class AdditionTask(Task):
    """Multi-digit addition; see the module docstring for data, prompts, rewards."""

    name = "addition"

    def __init__(
        self,
        *,
        prompt_style: PromptStyle = "train",
        digits: int = 3,
        operands: int = 2,
        carries: Sequence[int] | None = None,
        train_size: int = 10_000,
        validation_size: int = 500,
        test_size: int = 500,
        demo_reasoning: bool = True,
    ) -> None:
        """
        Args:
            prompt_style: "train" (d1's format, default), "compact" (bare problem and sum) or
                "trace" (bare problem, d1-format answer with a fixed-width column trace).
            digits: digits per operand (uniform `digits`-digit numbers).
            operands: numbers per problem.
            carries: keep only problems with this inclusive range of carries, e.g. [2, 3];
                None keeps all.
            train_size, validation_size, test_size: sizes of the generated splits.
            demo_reasoning: "train"-style demonstrations carry the column trace (else an
                empty reasoning); "trace" ones carry the fixed-width trace. Compact
                demonstrations are the bare sum.
        """
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(
                f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {prompt_style!r}."
            )
        if min(train_size, validation_size, test_size) < 0:
            raise ValueError("split sizes must be >= 0.")
        if digits < 1 or operands < 2:
            raise ValueError(f"need digits >= 1 and operands >= 2, got {digits}, {operands}.")
        self.prompt_style = prompt_style
        self.digits = digits
        self.operands = operands
        self.carries = None if carries is None else (int(carries[0]), int(carries[1]))
        self.sizes = {"train": train_size, "validation": validation_size, "test": test_size}
        self.demo_reasoning = demo_reasoning

    # -- data ------------------------------------------------------------------------------
    def demonstration(self, problem: AdditionProblem) -> str:
        """The SFT response for a problem in this task's style."""
        if self.prompt_style == "compact":
            return problem.answer
        fixed = self.prompt_style == "trace"
        return problem.demonstration(reasoning=self.demo_reasoning, fixed_width=fixed)

    def example(
        self, problem: AdditionProblem, example_id: str, response: str | None = None
    ) -> Example:
        """Wrap a problem as an `Example` (with this task's demonstration unless given)."""
        return Example(
            id=example_id,
            question=problem.question,
            answer=problem.answer,
            meta={"operands": list(problem.operands), "carries": problem.carries},
            response=self.demonstration(problem) if response is None else response,
        )

    def load(
        self,
        split: str = "train",
        *,
        path: str | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> list[Example]:
        """Load a generated split, or a local file (rows with "question" like "893+581", an
        optional "answer" that is checked, an optional "response") used whole as this split.

        Args:
            limit: keep the first `limit` examples.
            seed: generator seed (splits never overlap whatever the seeds).
        """
        check_split(split)
        width = answer_width(self.digits, self.operands)
        if path is not None:
            prefix = Path(path).name
            examples = []
            for i, row in enumerate(load_rows(path, required=("question",))):
                example_id = row_id(prefix, i)
                problem = addition_from_row(row, example_id, width)
                response = row.get("response")
                examples.append(self.example(problem, example_id, response or None))
            return limit_examples(examples, limit)
        n = self.sizes[split] if limit is None else min(limit, self.sizes[split])
        problems = generate_addition(
            n,
            seed=seed,
            digits=self.digits,
            operands=self.operands,
            carries=self.carries,
            split=split,
        )
        prefix = f"addition/generated/{seed}/{split}"
        return [self.example(p, row_id(prefix, i)) for i, p in enumerate(problems)]

    def example_from_gold(self, question: str, gold: Any, *, example_id: str) -> Example:
        row = {"question": question, "answer": str(gold)}
        return self.example(addition_from_row(row, example_id), example_id)

    # -- prompt ----------------------------------------------------------------------------
    def user_message(self, example: Example) -> str:
        return addition_prompt(example.question, self.prompt_style)

    # -- rewards, scoring ------------------------------------------------------------------
    def correct_reward(
        self, completions: Sequence[str], examples: Sequence[Example]
    ) -> list[float]:
        """1.0 when the parsed answer equals the sum, else 0.0."""
        return [self.score(c, ex).correct for c, ex in zip(completions, examples, strict=True)]

    def digits_reward(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """Partial credit: fraction of the fixed-width answer's digits in the right place."""
        return [
            digit_credit(parse_addition_answer(c), ex.answer)
            for c, ex in zip(completions, examples, strict=True)
        ]

    def reward_functions(self) -> dict[str, RewardFn]:
        return {"correct": self.correct_reward, "digits": self.digits_reward}

    def score(self, completion: str, example: Example) -> Score:
        parsed = parse_addition_answer(completion)
        ok = same_sum(parsed, example.answer)
        return Score(1.0 if ok else 0.0, parsed, {"digits": digit_credit(parsed, example.answer)})

    def timeout_score(self, example: Example) -> Score:
        return Score(0.0, None, {"digits": 0.0, "timeout": True})

    def aggregate(self, scores: Sequence[Score]) -> dict[str, float]:
        """Accuracy (exact sums), digit accuracy and the count."""
        n = len(scores)
        if n == 0:
            return {"accuracy": 0.0, "digit_accuracy": 0.0, "n": 0.0}
        return {
            "accuracy": sum(s.correct for s in scores) / n,
            "digit_accuracy": sum(s.details["digits"] for s in scores) / n,
            "n": float(n),
        }
