"""GSM8K (`openai/gsm8k`, config `main`): grade-school word problems with integer answers.

Data (docs/method.md §5): the gold answer is the text after `####` with thousands separators removed.
"train" and "validation" come from the hub train split (the validation split is held out
deterministically by `d1.tasks.data.split_train_validation`; `validation_size=0` trains on the
whole hub train split as d1 does); "test" is the hub test split (1,319 problems). A local file
(`path=`) with the same fields (question, answer) replaces the hub split.

Prompt: d1 trains with the user turn `SYSTEM_PROMPT + "\\n\\n" + question`
(diffu-grpo/data_utils.py) but evaluates with a different one (eval/gsm8k.py): a "math expert"
instruction asking for `\\boxed{}` inside the same tags, and the assistant turn pre-filled with
`<reasoning>`. `prompt_style="train"` (default) uses the training prompt everywhere, so a model
is evaluated on the prompt it was trained on; `prompt_style="d1_eval"` reproduces d1's
evaluation prompt exactly (needed to compare with the published tables, docs/method.md §6).

Rewards (max 4.0): xmlcount, soft_format, strict_format (d1's, DOTALL fixed; see
`d1.tasks.formatting`), int_answer 0.5 and correctness 2.0 on the `<answer>` text, which is
read as a number after light cleaning (`\\boxed{}`, `$`, thousands separators, a final period):
d1 compared raw strings ("1,000" or "$18" scored 0) and used `str.isdigit` (negative answers
never earned int_answer). An integral decimal ("18.0") is correct but does not earn int_answer,
which rewards writing the answer as an integer.

Scoring (docs/method.md §5, generous): the last `\\boxed{}` holding a number, else the `<answer>` text's
last number, else the completion's last number; correct when numerically equal to the gold.
`d1_compat=True` reproduces d1's eval/parse_and_get_acc.py exactly (first `\\boxed{}` via a
regex that stops at the first `}`, the first number inside it, only closed `<answer>` tags,
no last-number fallback) and d1's training rewards (no DOTALL, raw string equality, isdigit).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from d1.tasks.base import SYSTEM_PROMPT, Example, RewardFn, Score, Task
from d1.tasks.data import hold_out, limit_examples, load_rows, row_id
from d1.tasks.formatting import (
    NextFind,
    all_boxed,
    count_xml,
    extract_answer_tag,
    extract_xml_answer,
    find_numbers,
    first_answer_block,
    last_number,
    soft_format_reward,
    strict_format_reward,
    strip_special_tokens,
    tail,
)
from d1.tasks.math_normalize import clean_number_text, is_integer_text, numeric_value

HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"

INT_REWARD = 0.5
CORRECT_REWARD = 2.0

# d1's evaluation instruction (eval/gsm8k.py), verbatim including the space before the newline.
D1_EVAL_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}. \n"
    "Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n"
    "<answer>\n\\boxed{...}\n</answer>"
)

PromptStyle = Literal["train", "d1_eval"]


def gold_from_solution(solution: str) -> str:
    """The gold answer of a GSM8K solution: the text after `####`, commas removed. A bare number
    (a file that stores only the final answer) is accepted as is."""
    if "####" in solution:
        return solution.split("####")[-1].strip().replace(",", "")
    value = numeric_value(solution)
    if value is None:
        raise ValueError(
            f"GSM8K answer has no '####' marker and is not a number: {solution[:80]!r}."
        )
    return solution.strip().replace(",", "")


def demonstration(solution: str, gold: str) -> str:
    """An SFT response in d1's format built from a GSM8K worked solution (calculator
    annotations `<<...>>` removed)."""
    rationale = re.sub(r"<<[^<>]*>>", "", solution.split("####")[0]).strip()
    return f"<reasoning>\n{rationale}\n</reasoning>\n<answer>\n{gold}\n</answer>"


_FRACTION_RE = re.compile(
    r"(-?)\\[dt]?frac\{\s*(-?\d+(?:\.\d+)?)\s*\}\{\s*(-?\d+(?:\.\d+)?)\s*\}"
    r"|(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)"
)


def box_number(content: str) -> str | None:
    """The number a `\\boxed{}` states: its value when it is a number ("1,000", "\\$18"), a
    fraction's value ("\\frac{2}{3}" is 0.666..., not 2), else the first number after the last
    "=" ("5 \\times 3 = 15" -> 15; "2:00 pm" -> 2); None when it holds no number."""
    tail = content.split("=")[-1]
    value = numeric_value(tail)
    if value is not None:
        return clean_number_text(tail)
    m = _FRACTION_RE.fullmatch(clean_number_text(tail))
    if m:
        sign, num, den = (
            (m.group(1), m.group(2), m.group(3)) if m.group(2) else ("", *m.group(4, 5))
        )
        if Decimal(den) != 0:
            return str((-1 if sign else 1) * Decimal(num) / Decimal(den))
    numbers = find_numbers(tail)
    return numbers[0] if numbers else None


def parse_answer(completion: str, *, number_fallback: bool = True) -> str | None:
    """Generous GSM8K answer parser (docs/method.md §5) on the completion cut at its first EOS: the last
    `\\boxed{}` that holds a number (`box_number`), else the last number of the `<answer>`
    text (closed or not), else (with `number_fallback`) the last number of the completion."""
    text = tail(strip_special_tokens(completion))
    for content in reversed(all_boxed(text)):
        number = box_number(content)
        if number is not None:
            return number
    tagged = extract_answer_tag(text)
    if tagged:
        number = last_number(tagged)
        if number is not None:
            return number
    return last_number(text) if number_fallback else None


def _d1_boxed_contents(text: str) -> Iterator[str]:
    """The groups of `re.findall(r"\\boxed{(.*?)}", text)`, lazily and in linear time (the
    regex rescans to the end of the line from every unclosed `\\boxed{`)."""
    next_close = NextFind(text, "}")
    next_nl = NextFind(text, "\n")
    pos = 0
    while True:
        start = text.find("\\boxed{", pos)
        if start < 0:
            return
        body = start + len("\\boxed{")
        close = next_close(body)
        if close < 0:
            return  # no "}" left: no later box can match either
        nl = next_nl(body)
        if 0 <= nl < close:  # `.` stops at the newline: no match from this box
            pos = start + 1
            continue
        yield text[body:close]
        pos = close + 1


_D1_NUMBER_RE = re.compile(r"-?\d+\.?\d*")


def parse_answer_d1(completion: str) -> float | None:
    """d1's GSM8K evaluation parser (eval/parse_and_get_acc.py), reproduced exactly (on the last
    `MAX_PARSE_CHARS` characters, in linear time)."""
    completion = tail(completion)
    for content in _d1_boxed_contents(completion):
        content = content.strip()
        if not content or re.fullmatch(r"\.+", content):
            continue
        try:
            return float(content)
        except ValueError:
            m = _D1_NUMBER_RE.search(content)
            if m:
                return float(m.group())
    block = first_answer_block(completion)
    if block is not None and block.strip():
        text = block.strip()
        try:
            return float(text)
        except ValueError:
            numbers = _D1_NUMBER_RE.findall(text)
            if numbers:
                return float(numbers[-1])
    return None


def _same_number(a: str | None, gold: str) -> bool:
    x, y = numeric_value(a), numeric_value(gold)
    return x is not None and y is not None and x == y


class GSM8KTask(Task):
    """GSM8K with d1's prompt, five reward components and a generous scorer (module doc)."""

    name = "gsm8k"

    def __init__(
        self,
        *,
        prompt_style: PromptStyle = "train",
        d1_compat: bool = False,
        validation_size: int | float = 500,
        number_fallback: bool = True,
    ) -> None:
        """Args:
        prompt_style: "train" (d1's training prompt, default) or "d1_eval" (d1's eval prompt).
        d1_compat: reproduce d1's reward and scoring code, bugs included.
        validation_size: examples (int) or fraction (float) of the hub train split held out
            as "validation"; 0 keeps all of it for training (d1).
        number_fallback: when the completion has neither a boxed number nor an `<answer>`
            number, score its last number (docs/method.md §5's generous parser); False scores it wrong.
        """
        if prompt_style not in ("train", "d1_eval"):
            raise ValueError(f"prompt_style must be 'train' or 'd1_eval', got {prompt_style!r}.")
        self.prompt_style = prompt_style
        self.d1_compat = d1_compat
        self.validation_size = validation_size
        self.number_fallback = number_fallback

    # -- data ------------------------------------------------------------------------------
    def example_from_row(self, row: dict[str, Any], example_id: str) -> Example:
        solution = str(row["answer"])
        try:
            gold = gold_from_solution(solution)
        except ValueError as e:
            raise ValueError(f"{example_id}: {e}") from None
        return Example(
            id=example_id,
            question=str(row["question"]),
            answer=gold,
            meta={"solution": solution},
            response=demonstration(solution, gold) if "####" in solution else None,
        )

    def load(
        self,
        split: str = "train",
        *,
        path: str | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> list[Example]:
        """Load "train", "validation" (both from the hub train split or `path`, disjoint; `seed`
        picks the held-out problems) or "test" (the hub test split or `path`)."""
        if split not in ("train", "validation", "test"):
            raise ValueError(f"Unknown split {split!r}; use 'train', 'validation' or 'test'.")
        hub_split = "test" if split == "test" else "train"
        source = path if path is not None else HUB_ID
        rows = load_rows(
            source,
            split=hub_split,
            config=None if path is not None else HUB_CONFIG,
            required=("question", "answer"),
        )
        prefix = f"gsm8k/{hub_split}" if path is None else Path(path).name
        examples = [self.example_from_row(r, row_id(prefix, i)) for i, r in enumerate(rows)]
        if split != "test":
            examples = hold_out(examples, split, self.validation_size, seed=seed)
        return limit_examples(examples, limit)

    # -- prompt ----------------------------------------------------------------------------
    def user_message(self, example: Example) -> str:
        if self.prompt_style == "d1_eval":
            return D1_EVAL_PROMPT + "\n\n" + example.question
        return SYSTEM_PROMPT + "\n\n" + example.question

    def assistant_prefix(self, example: Example) -> str:
        return "<reasoning>" if self.prompt_style == "d1_eval" else ""

    # -- rewards ---------------------------------------------------------------------------
    def xmlcount_reward(
        self, completions: Sequence[str], examples: Sequence[Example]
    ) -> list[float]:
        """0.125 per well-placed tag minus trailing text (`formatting.count_xml`), <= 0.5."""
        return [count_xml(c, d1_compat=self.d1_compat) for c in completions]

    def soft_format_reward(
        self, completions: Sequence[str], examples: Sequence[Example]
    ) -> list[float]:
        """0.5 for `<reasoning>..</reasoning> <answer>..</answer>` (any content)."""
        return [soft_format_reward(c, d1_compat=self.d1_compat) for c in completions]

    def strict_format_reward(
        self, completions: Sequence[str], examples: Sequence[Example]
    ) -> list[float]:
        """0.5 for exactly the system prompt's layout."""
        return [strict_format_reward(c, d1_compat=self.d1_compat) for c in completions]

    def int_reward(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """0.5 when the `<answer>` text is written as an integer (negative allowed)."""
        if self.d1_compat:
            return [INT_REWARD if extract_xml_answer(c).isdigit() else 0.0 for c in completions]
        out = []
        for c in completions:
            answer = extract_answer_tag(tail(c))
            out.append(INT_REWARD if answer is not None and is_integer_text(answer) else 0.0)
        return out

    def correctness_reward(
        self, completions: Sequence[str], examples: Sequence[Example]
    ) -> list[float]:
        """2.0 when the `<answer>` text is a number equal to the gold answer."""
        if self.d1_compat:
            return [
                CORRECT_REWARD if extract_xml_answer(c) == ex.answer else 0.0
                for c, ex in zip(completions, examples, strict=True)
            ]
        out = []
        for c, ex in zip(completions, examples, strict=True):
            answer = extract_answer_tag(tail(c))
            ok = answer is not None and _same_number(answer, ex.answer)
            out.append(CORRECT_REWARD if ok else 0.0)
        return out

    def reward_functions(self) -> dict[str, RewardFn]:
        return {
            "xmlcount": self.xmlcount_reward,
            "soft_format": self.soft_format_reward,
            "strict_format": self.strict_format_reward,
            "int_answer": self.int_reward,
            "correctness": self.correctness_reward,
        }

    # -- evaluation ------------------------------------------------------------------------
    def score(self, completion: str, example: Example) -> Score:
        if self.d1_compat:
            parsed_d1 = parse_answer_d1(completion)
            gold = numeric_value(example.answer)
            ok = parsed_d1 is not None and gold is not None and parsed_d1 == float(gold)
            return Score(float(ok), None if parsed_d1 is None else repr(parsed_d1))
        parsed = parse_answer(completion, number_fallback=self.number_fallback)
        return Score(float(_same_number(parsed, example.answer)), parsed)

    def example_from_gold(self, question: str, gold: Any, *, example_id: str) -> Example:
        """Example from an evaluation record whose gold is a number (d1's files store floats)."""
        if isinstance(gold, float) and gold.is_integer():
            gold = int(gold)
        return Example(id=example_id, question=question, answer=str(gold).replace(",", ""))


__all__ = ["D1_EVAL_PROMPT", "GSM8KTask", "gold_from_solution", "parse_answer", "parse_answer_d1"]
