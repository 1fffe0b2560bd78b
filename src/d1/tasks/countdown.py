"""Countdown (3 numbers): reach a target with + - * /, using each given number once (docs/method.md §5).

Data: "train" and "validation" come from the hub dataset `Jiayi-Pan/Countdown-Tasks-3to4`
(fields `nums`, `target`; its only split, "train") filtered to 3 numbers as d1 does; the
validation split is held out deterministically (`d1.tasks.data.split_train_validation`,
grouping problems that differ only in the order of their numbers), and problems of the test
set are removed from both (d1 trains on all rows). "test" is d1's `countdown_cd3_test.jsonl`
(256 problems, shipped in `d1/data/`; d1 evaluates all of them). `source="generated"` uses the
offline generator (`d1.tasks.puzzles.countdown`) for all splits instead; its splits never share a
problem. A local file (`path=`) in either format replaces a split.

Prompt: d1 trains with `SYSTEM_PROMPT + "\\n" + instruction(numbers, target)`
(diffu-grpo/data_utils.py) but evaluates (eval/countdown.py) with a different instruction that
asks for `\\boxed{}` inside the answer tags, the problem as "Numbers: [..]\\nTarget: t", and the
assistant turn pre-filled with "<reasoning>". `prompt_style="train"` (default) uses the
training prompt everywhere; `"d1_eval"` reproduces d1's evaluation prompt (to compare with
docs/method.md §6); `"compact"` is a one-line prompt ("30 100 93 -> 23") for tiny character-level models.

Reward (RL, d1's only Countdown reward, `d1.tasks.puzzles.countdown.countdown_reward`): 1.0 when the
last closed `<answer>` block holds an expression using exactly the given numbers and within
1e-5 of the target, 0.1 for any other answer, 0 without one; arithmetic is evaluated safely.

Scoring (evaluation, generous): the expression is read from, in order, the last `\\boxed{}`
inside the last `<answer>` tag, that tag's text (closed or not), the last `\\boxed{}` anywhere,
else the last "expression = number" in the text (d1's fallback). LaTeX and Unicode operators
are translated and an "= target" suffix is dropped; correct under the reward's rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from d1.tasks.base import SYSTEM_PROMPT, Example, RewardFn, Score, Task
from d1.tasks.data import limit_examples, load_rows, row_id, split_train_validation
from d1.tasks.formatting import extract_answer_tag, last_boxed, strip_special_tokens, tail
from d1.tasks.puzzles.countdown import (
    CountdownProblem,
    check_countdown_answer,
    countdown_demonstration,
    countdown_from_row,
    countdown_key,
    countdown_reward,
    generate_countdown,
)
from d1.tasks.puzzles.splits import check_split

__all__ = [
    "D1_EVAL_PROMPT",
    "D1_TEST_FILE",
    "HUB_ID",
    "CountdownTask",
    "countdown_key",
    "countdown_prompt",
    "parse_countdown_expression",
]

HUB_ID = "Jiayi-Pan/Countdown-Tasks-3to4"
# d1's test set (dataset/countdown_cd3_test.jsonl in dllm-reasoning/d1), shipped with d1.
D1_TEST_FILE = Path(__file__).resolve().parent.parent / "data" / "countdown_cd3_test.jsonl"

PromptStyle = Literal["train", "d1_eval", "compact"]
PROMPT_STYLES: tuple[str, ...] = ("train", "d1_eval", "compact")

# d1's evaluation instruction (eval/countdown.py), verbatim: note the missing space between
# "\boxed{a + b * c}" and "Respond".
D1_EVAL_PROMPT = (
    "Using only the provided numbers, create an arithmetic expression that evaluates to "
    "exactly the provided target number. You may use the operations +, -, *, and / as needed, "
    "but each number must be used exactly once. Think step-by-step. After reasoning, provide "
    "only your final expression inside \\boxed{} tags without including an equals sign or the "
    "target number. For example: \\boxed{a + b * c}Respond in the following format:\n"
    "<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>"
)


def countdown_prompt(numbers: Sequence[int], target: int, style: str = "train") -> str:
    """The user turn for a Countdown problem: the one place the prompt text lives.

    - "train": d1's training prompt (diffu-grpo/data_utils.py), verbatim;
    - "d1_eval": d1's evaluation prompt (eval/countdown.py), verbatim;
    - "compact": "30 100 93 -> 23".
    """
    nums = [int(n) for n in numbers]  # d1 formats the Python list: "[30, 100, 93]"
    if style == "train":
        return (
            f"{SYSTEM_PROMPT}\nUsing only the numbers {nums}, create an arithmetic expression "
            f"that evaluates to exactly {target}. You must use all numbers from the list, and "
            "each number must be used exactly once. You may use the operations +, -, *, and / "
            "as needed. After reasoning, provide only your final expression inside "
            "<answer></answer> tags without including an equals sign or the target number. "
            "For example, if the numbers are [2, 3, 4] and the target is 5, a valid answer is: "
            "<answer>\n2*4-3\n</answer>"
        )
    if style == "d1_eval":
        return f"{D1_EVAL_PROMPT}\n\nNumbers: {nums}\nTarget: {target}"
    if style == "compact":
        return " ".join(str(n) for n in nums) + f" -> {target}"
    raise ValueError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {style!r}.")


# -- generous answer parsing -------------------------------------------------------------------

_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_REPLACEMENTS = (
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("\\ast", "*"),
    ("\\div", "/"),
    ("\\left", ""),
    ("\\right", ""),
    ("\\(", ""),
    ("\\)", ""),
    ("\\[", ""),
    ("\\]", ""),
    ("\u00d7", "*"),  # multiplication sign
    ("\u22c5", "*"),  # dot operator
    ("\u00b7", "*"),  # middle dot
    ("\u2217", "*"),  # asterisk operator
    ("\u00f7", "/"),  # division sign
    ("\u2212", "-"),  # minus sign
    ("\u2013", "-"),  # en dash
    ("$", ""),
    ("`", ""),
)
# "3 x 4": a letter x between numbers or parentheses means multiplication.
_LETTER_TIMES = re.compile(r"(?<=[\d)\s])[xX](?=[\s\d(])")
_EXPRESSION_CHARS = frozenset("0123456789+-*/() ")
# Rounds of innermost-\frac rewriting (an answer nests a few; each round is a pass over the text).
_MAX_FRAC_ROUNDS = 8
# An answer with more "=" than this is not "expression = target": left as is (and wrong).
_MAX_EQUATION_SIDES = 4


def _equation_sides(text: str) -> list[str]:
    """Left sides of "expression = number" in the text, in order: d1's fallback regex
    `([0-9+\\-*/() ]+)=[0-9. ]+`, found in linear time (the regex is quadratic on long runs)."""
    out = []
    for i, ch in enumerate(text):
        if ch != "=" or i + 1 >= len(text) or text[i + 1] not in "0123456789. ":
            continue
        j = i
        while j > 0 and text[j - 1] in _EXPRESSION_CHARS:
            j -= 1
        if j < i:
            out.append(text[j:i])
    return out


def _normalise(text: str) -> str:
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    text = _LETTER_TIMES.sub("*", text)
    for _ in range(_MAX_FRAC_ROUNDS):  # innermost \frac{a}{b} first
        text, rewritten = _LATEX_FRAC.subn(r"(\1)/(\2)", text)
        if not rewritten:
            break
    return text.replace("{", "(").replace("}", ")").strip().rstrip(".").strip()


def _pick_side(expression: str, numbers: Sequence[int]) -> str:
    """Drop an "= target" (or "target =") part: keep the side of an equation that uses the
    given numbers, else the first side that parses, else the text unchanged."""
    if "=" not in expression or expression.count("=") >= _MAX_EQUATION_SIDES:
        return expression
    sides = [s.strip() for s in expression.split("=") if s.strip()]
    checked = [(s, check_countdown_answer(s, numbers, 0)) for s in sides]
    for side, (numbers_ok, _, _) in checked:
        if numbers_ok:
            return side
    for side, (_, _, value) in checked:
        if value is not None:
            return side
    return expression


def parse_countdown_expression(completion: str, numbers: Sequence[int]) -> str | None:
    """The answer expression of a completion, read generously (see the module docstring), from
    its last `MAX_PARSE_CHARS` characters."""
    text = tail(strip_special_tokens(completion))
    tag = extract_answer_tag(text)
    candidate: str | None = None
    if tag is not None:
        boxed = last_boxed(tag)
        candidate = boxed if boxed is not None else tag
    if candidate is None:
        candidate = last_boxed(text)
    if candidate is None:
        sides = _equation_sides(_normalise(text))
        candidate = sides[-1] if sides else None
    if candidate is None:
        return None
    return _pick_side(_normalise(candidate), numbers)


# -- the task ----------------------------------------------------------------------------------


class CountdownTask(Task):
    """Countdown with 3 numbers (docs/method.md §5); see the module docstring for data, prompts, rewards."""

    name = "countdown"

    def __init__(
        self,
        *,
        prompt_style: PromptStyle = "train",
        source: Literal["hub", "generated"] = "hub",
        validation_size: int = 500,
        train_size: int = 10_000,
        test_size: int = 500,
        num_count: int = 3,
        min_number: int = 1,
        max_number: int = 100,
        min_target: int = 1,
        max_target: int = 100,
        demonstrations: bool = False,
        demo_reasoning: bool = True,
    ) -> None:
        """
        Args:
            prompt_style: "train" (d1's training prompt, default), "d1_eval" (d1's evaluation
                prompt and "<reasoning>" prefix) or "compact".
            source: "hub" (d1's data, default) or "generated" (the offline generator).
            validation_size: problems held out for validation (hub and generated). 0 with the
                hub source trains on every 3-number hub problem, as d1 does.
            train_size, test_size: sizes of the generated train and test splits.
            num_count: numbers per problem (d1: 3; the hub data also has 4).
            min_number, max_number, min_target, max_target: generator ranges (d1's data:
                1-100 for both).
            demonstrations: attach a solver-written `response` (for SFT) to hub and file
                examples too; generated examples always carry one.
            demo_reasoning: demonstrations list the solver's steps (else an empty reasoning).
        """
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(
                f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {prompt_style!r}."
            )
        if source not in ("hub", "generated"):
            raise ValueError(f"source must be 'hub' or 'generated', got {source!r}.")
        if validation_size < 0 or train_size < 0 or test_size < 0:
            raise ValueError("split sizes must be >= 0.")
        self.prompt_style = prompt_style
        self.source = source
        self.sizes = {"train": train_size, "validation": validation_size, "test": test_size}
        self.num_count = num_count
        self.ranges = {
            "min_number": min_number,
            "max_number": max_number,
            "min_target": min_target,
            "max_target": max_target,
        }
        self.demonstrations = demonstrations
        self.demo_reasoning = demo_reasoning

    # -- data ------------------------------------------------------------------------------
    def example(
        self, problem: CountdownProblem, example_id: str, response: str | None = None
    ) -> Example:
        """Wrap a problem as an `Example` (question in d1's evaluation wording)."""
        numbers = [int(n) for n in problem.numbers]
        if response is None and self.demonstrations:
            response = countdown_demonstration(
                numbers, problem.target, reasoning=self.demo_reasoning
            )
        return Example(
            id=example_id,
            question=f"Numbers: {numbers}\nTarget: {problem.target}",
            answer=str(problem.target),
            meta={"numbers": numbers, "target": problem.target},
            response=response,
        )

    def _from_rows(self, rows: list[dict[str, Any]], prefix: str) -> list[Example]:
        out = []
        for i, row in enumerate(rows):
            example_id = row_id(prefix, i)
            problem = countdown_from_row(row, example_id)
            response = row.get("response")
            out.append(self.example(problem, example_id, str(response) if response else None))
        return out

    def _test_keys(self) -> set[str]:
        rows = load_rows(D1_TEST_FILE)
        return {countdown_from_row(r).key for r in rows}

    def _generated(self, split: str, n: int, seed: int) -> list[Example]:
        problems = generate_countdown(
            n,
            seed=seed,
            num_count=self.num_count,
            split=split,
            exclude=self._test_keys() if split != "test" else (),
            **self.ranges,
        )
        prefix = f"countdown/generated/{seed}/{split}"
        return [
            self.example(p, row_id(prefix, i), p.demonstration(reasoning=self.demo_reasoning))
            for i, p in enumerate(problems)
        ]

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
            path: a local file (d1's JSONL {"input", "output"} or hub-style {"nums",
                "target"}, as .jsonl/.json/.csv/.parquet) used as this split, whole.
            limit: keep the first `limit` examples.
            seed: which hub problems are held out for validation (pass the same seed for
                "train" and "validation"); for generated data, the generator seed (splits
                never overlap whatever the seeds).
        """
        check_split(split)
        if path is not None:
            return limit_examples(self._from_rows(load_rows(path), Path(path).name), limit)
        if self.source == "generated":
            n = self.sizes[split] if limit is None else min(limit, self.sizes[split])
            return self._generated(split, n, seed)
        if split == "test":
            if self.num_count != 3:
                raise ValueError(
                    f"d1's Countdown test set has 3 numbers; for num_count={self.num_count} "
                    "pass path= or use source='generated'."
                )
            rows = load_rows(D1_TEST_FILE, required=("input", "output"))
            return limit_examples(self._from_rows(rows, "countdown/cd3_test"), limit)
        return limit_examples(self._hub_split(split, seed), limit)

    def _hub_split(self, split: str, seed: int) -> list[Example]:
        rows = load_rows(HUB_ID, split="train", required=("nums", "target"))
        test_keys = self._test_keys()
        examples: list[Example] = []
        keys: list[str] = []
        for i, row in enumerate(rows):
            example_id = row_id(f"countdown/{HUB_ID}", i)
            problem = countdown_from_row(row, example_id)
            if len(problem.numbers) != self.num_count or problem.key in test_keys:
                continue
            examples.append(self.example(problem, example_id))
            keys.append(problem.key)
        if self.sizes["validation"] == 0:
            if split == "validation":
                raise ValueError("validation_size=0: there is no validation split.")
            return examples
        # Group by the canonical problem (sorted numbers + target), not the question text, so
        # a reordering of the same numbers never straddles train and validation.
        proxies = [
            Example(id=ex.id, question=key, answer="")
            for ex, key in zip(examples, keys, strict=True)
        ]
        train, validation = split_train_validation(
            proxies, validation_size=self.sizes["validation"], seed=seed
        )
        chosen = {ex.id for ex in (train if split == "train" else validation)}
        return [ex for ex in examples if ex.id in chosen]

    def example_from_gold(self, question: str, gold: Any, *, example_id: str) -> Example:
        """Rebuild an Example from a saved generation: d1's evaluation files store
        `ground_truth = [numbers, target]`; a {"numbers"/"nums", "target"} mapping works too,
        and otherwise the numbers (and target) are read from the question ("Numbers: [..]"
        and "Target: t", as d1's parser does, or this task's training prompt)."""
        numbers: list[int] | None = None
        target: Any = None
        if isinstance(gold, (list, tuple)) and len(gold) == 2 and isinstance(gold[0], list):
            numbers, target = [int(n) for n in gold[0]], gold[1]
        elif isinstance(gold, dict):
            numbers, target = gold.get("numbers", gold.get("nums")), gold.get("target")
        else:
            target = gold
        if numbers is None:
            m = re.search(r"(?:Numbers:|numbers)\s*\[([\d,\s]+)\]", question)
            numbers = [int(n) for n in m.group(1).split(",")] if m else None
        if target is None or (isinstance(target, str) and not target.strip()):
            m = re.search(r"(?:Target:|evaluates to exactly)\s*(\d+)", question)
            target = m.group(1) if m else None
        if numbers is None or target is None:
            raise ValueError(
                f"{example_id}: cannot read the Countdown numbers and target from gold "
                f"{gold!r} and question {question[:80]!r}; give gold as [numbers, target]."
            )
        problem = countdown_from_row({"nums": numbers, "target": target}, example_id)
        return self.example(problem, example_id)

    # -- prompt ----------------------------------------------------------------------------
    def user_message(self, example: Example) -> str:
        return countdown_prompt(example.meta["numbers"], example.meta["target"], self.prompt_style)

    def assistant_prefix(self, example: Example) -> str:
        return "<reasoning>" if self.prompt_style == "d1_eval" else ""

    # -- rewards and scoring ---------------------------------------------------------------
    def countdown_reward(
        self, completions: Sequence[str], examples: Sequence[Example]
    ) -> list[float]:
        """d1's Countdown reward per completion: 1.0 / 0.1 / 0 (docs/method.md §5), on the last
        `MAX_PARSE_CHARS` characters."""
        return [
            countdown_reward(tail(c), ex.meta["numbers"], ex.meta["target"])
            for c, ex in zip(completions, examples, strict=True)
        ]

    def reward_functions(self) -> dict[str, RewardFn]:
        return {"countdown": self.countdown_reward}

    def timeout_score(self, example: Example) -> Score:
        return Score(0.0, None, {"numbers_ok": False, "value": None, "timeout": True})

    def score(self, completion: str, example: Example) -> Score:
        numbers, target = example.meta["numbers"], example.meta["target"]
        expression = parse_countdown_expression(completion, numbers)
        if expression is None:
            return Score(0.0, None, {"numbers_ok": False, "value": None})
        numbers_ok, correct, value = check_countdown_answer(expression, numbers, target)
        details = {"numbers_ok": numbers_ok, "value": _as_float(value)}
        return Score(1.0 if correct else 0.0, expression, details)


def _as_float(value: Fraction | None) -> float | None:
    """A float for reports; huge exact values become +-inf rather than raising."""
    if value is None:
        return None
    try:
        return float(value)
    except OverflowError:
        return math.copysign(math.inf, value)
