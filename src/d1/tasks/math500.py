"""MATH (competition mathematics): trained on `ankner/math-500`, evaluated on MATH-500.

Data (docs/method.md §5): "train"/"validation" come from `ankner/math-500` (split "train"; the validation
split is held out deterministically, `validation_size=0` keeps it all for training as d1 does);
"test" is `HuggingFaceH4/MATH-500` (500 problems). Rows have `problem` and `answer` and/or
`solution`; the gold is `answer` when present, else the last `\\boxed{}` of `solution`
(d1 extracted it from `solution`; both agree on MATH). A local file with these fields replaces
the hub split.

Prompt: d1 trains with `SYSTEM_PROMPT` + a "math expert ... \\boxed{}" instruction + the
problem (diffu-grpo/data_utils.py) and evaluates with another instruction (eval/math500.py,
including its stray `"` after `</answer>`) and the assistant turn pre-filled with
`<reasoning>`. `prompt_style="train"` (default) uses the training prompt everywhere;
`prompt_style="d1_eval"` reproduces d1's evaluation prompt exactly.

Rewards (max 2.5): correctness 2.0 when the last `\\boxed{}` of the completion is equivalent
to the gold (`math_normalize.math_equal`: normalised string equality or math-verify); format
0.5 x (1 for an `<answer>...</answer>` pair + (1 if the answer holds a `\\boxed`, else 0.5)),
range {0.25, 0.5, 0.75, 1.0}. d1 tested `"\\boxed" in r` with a non-raw string (`"\\b"` is a
backspace), so the box bonus never fired and d1's values were only 0.25 / 0.75; d1 also gave
the tag bonus for an opening `<answer>` alone.

Scoring (docs/method.md §5, generous): the last complete `\\boxed{}`, else the `<answer>` text, else the
last number, compared with `math_equal`. `d1_compat=True` reproduces d1's eval exactly: its
`last_boxed_only_string` returns the *whole completion* when there is no box, so the
`<answer>` fallback is dead code and unboxed answers are scored by comparing the whole text;
its `is_equiv` is `math_normalize.is_equiv_d1`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from d1.tasks.base import SYSTEM_PROMPT, Example, RewardFn, Score, Task
from d1.tasks.data import hold_out, limit_examples, load_rows, row_id
from d1.tasks.formatting import (
    extract_answer_tag,
    first_answer_block,
    last_boxed,
    last_number,
    strip_special_tokens,
    tail,
)
from d1.tasks.math_normalize import MATH_VERIFY_TIMEOUT_S, is_equiv_d1, math_equal
from d1.tasks.timeout import check_timeout

TRAIN_HUB_ID = "ankner/math-500"
TEST_HUB_ID = "HuggingFaceH4/MATH-500"

CORRECT_REWARD = 2.0
FORMAT_REWARD_SCALE = 0.5

# d1's training instruction (diffu-grpo/data_utils.py), verbatim.
TRAIN_INSTRUCTION = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}. "
)
# d1's evaluation instruction (eval/math500.py), verbatim, stray quote included.
D1_EVAL_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}.\n"
    "Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n"
    '<answer>\n\\boxed{...}\n</answer>" \n'
)

PromptStyle = Literal["train", "d1_eval"]


# -- d1's MATH answer extraction, reproduced for d1_compat ---------------------------------------
def _d1_last_boxed_only_string(text: str) -> str | None:
    idx = text.rfind("\\boxed")
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return text  # d1 quirk: no box -> the whole text
    depth = 0
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[idx : i + 1]
    return None


def _d1_remove_boxed(s: str) -> str:
    if "\\boxed " in s:
        return s[len("\\boxed ") :]
    if s.startswith("\\boxed{") and s.endswith("}"):
        return s[len("\\boxed{") : -1]
    return s


def extract_boxed_d1(text: str) -> str | None:
    """d1's `remove_boxed(last_boxed_only_string(text))` as wrapped in its try/except: the last
    box's content, the whole text when there is no box, None for an unclosed last box (on the
    last `MAX_PARSE_CHARS` characters)."""
    boxed = _d1_last_boxed_only_string(tail(text))
    return None if boxed is None else _d1_remove_boxed(boxed)


def parse_answer(completion: str) -> str | None:
    """Generous MATH answer parser: the last complete `\\boxed{}`, else the `<answer>` text,
    else the last number (of the last `MAX_PARSE_CHARS` characters)."""
    text = tail(strip_special_tokens(completion))
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    tagged = extract_answer_tag(text)
    if tagged:
        return tagged
    return last_number(text)


def parse_answer_d1(completion: str) -> str | None:
    """d1's MATH evaluation parser (eval/parse_and_get_acc.py), reproduced exactly."""
    parsed = extract_boxed_d1(completion)
    if not parsed:
        block = first_answer_block(tail(completion))
        if block is not None:
            parsed = block.strip()
    return parsed


def gold_from_row(row: dict[str, Any]) -> str | None:
    """The gold answer: the `answer` field, else the last `\\boxed{}` of `solution`."""
    answer = row.get("answer")
    if answer is not None and str(answer).strip():
        return str(answer).strip()
    solution = row.get("solution")
    if solution:
        return last_boxed(str(solution))
    return None


class MathTask(Task):
    """MATH with d1's prompt, two reward components and a math-verify scorer (module doc)."""

    name = "math500"

    def __init__(
        self,
        *,
        prompt_style: PromptStyle = "train",
        d1_compat: bool = False,
        validation_size: int | float = 500,
        verify_timeout_s: float | None = MATH_VERIFY_TIMEOUT_S,
    ) -> None:
        """Args:
        prompt_style: "train" (d1's training prompt, default) or "d1_eval" (d1's eval prompt).
        d1_compat: reproduce d1's reward and scoring code, bugs included.
        validation_size: examples (int) or fraction (float) of the training split held out
            as "validation"; 0 keeps all of it for training (d1).
        verify_timeout_s: seconds math-verify may spend on one comparison before the answer
            counts as not equivalent (None: no limit; see `math_normalize.math_equal`).
        """
        if prompt_style not in ("train", "d1_eval"):
            raise ValueError(f"prompt_style must be 'train' or 'd1_eval', got {prompt_style!r}.")
        self.prompt_style = prompt_style
        self.d1_compat = d1_compat
        self.validation_size = validation_size
        self.verify_timeout_s = check_timeout(verify_timeout_s, "verify_timeout_s")

    # -- data ------------------------------------------------------------------------------
    def example_from_row(self, row: dict[str, Any], example_id: str) -> Example:
        gold = gold_from_row(row)
        if gold is None:
            raise ValueError(
                f"{example_id}: no gold answer (needs an 'answer' field or a 'solution' with a "
                f"\\boxed{{}}); fields present: {sorted(row)}."
            )
        solution = row.get("solution")
        meta = {k: row[k] for k in ("solution", "subject", "level", "unique_id") if k in row}
        response = None
        if solution:
            response = (
                f"<reasoning>\n{str(solution).strip()}\n</reasoning>\n"
                f"<answer>\n\\boxed{{{gold}}}\n</answer>"
            )
        return Example(
            id=example_id, question=str(row["problem"]), answer=gold, meta=meta, response=response
        )

    def load(
        self,
        split: str = "train",
        *,
        path: str | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> list[Example]:
        """Load "train", "validation" (from `ankner/math-500` train or `path`, disjoint; `seed`
        picks the held-out problems) or "test" (MATH-500 or `path`)."""
        if split not in ("train", "validation", "test"):
            raise ValueError(f"Unknown split {split!r}; use 'train', 'validation' or 'test'.")
        if path is not None:
            source, hub_split, prefix = path, None, Path(path).name
        elif split == "test":
            source, hub_split, prefix = TEST_HUB_ID, "test", "math500/test"
        else:
            source, hub_split, prefix = TRAIN_HUB_ID, "train", "math/train"
        rows = load_rows(source, split=hub_split, required=("problem",))
        examples = [self.example_from_row(r, row_id(prefix, i)) for i, r in enumerate(rows)]
        if split != "test":
            examples = hold_out(examples, split, self.validation_size, seed=seed)
        return limit_examples(examples, limit)

    # -- prompt ----------------------------------------------------------------------------
    def user_message(self, example: Example) -> str:
        if self.prompt_style == "d1_eval":
            return D1_EVAL_PROMPT + "\n\n" + example.question
        return f"{SYSTEM_PROMPT}\n\n{TRAIN_INSTRUCTION}\n\n{example.question}"

    def assistant_prefix(self, example: Example) -> str:
        return "<reasoning>" if self.prompt_style == "d1_eval" else ""

    # -- rewards ---------------------------------------------------------------------------
    def correctness_reward(
        self, completions: Sequence[str], examples: Sequence[Example]
    ) -> list[float]:
        """2.0 when the completion's last `\\boxed{}` is equivalent to the gold answer."""
        out = []
        for c, ex in zip(completions, examples, strict=True):
            if self.d1_compat:
                ok = is_equiv_d1(extract_boxed_d1(c), ex.answer)
            else:
                boxed = last_boxed(tail(strip_special_tokens(c)))
                ok = math_equal(boxed, ex.answer, timeout_s=self.verify_timeout_s)
            out.append(CORRECT_REWARD if ok else 0.0)
        return out

    def format_reward(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """0.5 x (1 for `<answer>..</answer>` + (1 if the answer has a `\\boxed`, else 0.5))."""
        out = []
        for c in completions:
            if self.d1_compat:
                parts = c.split("<answer>")
                tags = 1.0 if len(parts) > 1 else 0.0
                inner = parts[1].split("</answer>")[0] if len(parts) > 1 else c
                # d1 wrote "\boxed" in a non-raw string: "\b" is a backspace, so this
                # looks for "\x08oxed" and (almost) never matches.
                boxed = "\x08oxed" in inner
            else:
                tagged = extract_answer_tag(c, require_close=True)
                tags = 0.0 if tagged is None else 1.0
                inner = c if tagged is None else tagged
                boxed = "\\boxed" in inner
            out.append(FORMAT_REWARD_SCALE * (tags + (1.0 if boxed else 0.5)))
        return out

    def reward_functions(self) -> dict[str, RewardFn]:
        return {"correctness": self.correctness_reward, "format": self.format_reward}

    # -- evaluation ------------------------------------------------------------------------
    def score(self, completion: str, example: Example) -> Score:
        if self.d1_compat:
            parsed = parse_answer_d1(completion)
            return Score(float(is_equiv_d1(parsed, example.answer)), parsed)
        parsed = parse_answer(completion)
        ok = math_equal(parsed, example.answer, timeout_s=self.verify_timeout_s)
        return Score(float(ok), parsed)


__all__ = [
    "D1_EVAL_PROMPT",
    "TRAIN_INSTRUCTION",
    "MathTask",
    "extract_boxed_d1",
    "gold_from_row",
    "parse_answer",
    "parse_answer_d1",
]
