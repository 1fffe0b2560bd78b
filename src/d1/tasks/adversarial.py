"""Adversarial completions for checking that a task's rewards and scorer are bounded.

Early in RL a diffusion LM emits degenerate text: one token repeated over the whole canvas,
half-written LaTeX, tags repeated, huge numbers. A reward or scorer must handle any of it in
bounded time, return a value in its documented range and never raise. `adversarial_completions`
builds a fixed list of such worst cases (about `size` characters each) and
`normal_completions` a few well-formed ones; `tests/test_rewards_bounded.py` and
`benchmarks/rewards.py` run every task on both. Use them to check a task of your own:

    for name, text in adversarial_completions().items():
        task.score(text, example)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "DEFAULT_SIZE",
    "adversarial_completions",
    "normal_completions",
    "scoring_functions",
    "task_cases",
]

DEFAULT_SIZE = 1_000_000


def _fill(unit: str, size: int) -> str:
    """`unit` repeated to about `size` characters (at least once)."""
    return unit * max(1, size // max(1, len(unit)))


def adversarial_completions(size: int = DEFAULT_SIZE) -> dict[str, str]:
    """Named worst-case completions of about `size` characters (a few are short on purpose:
    exponent towers and factorials are dangerous because they are short)."""
    half = size // 2
    tags = "<reasoning>\n...\n</reasoning>\n<answer>\n"
    cases = {
        # unbalanced / nested LaTeX
        "boxed_open": _fill("\\boxed{", size),
        "frac_open": _fill("\\frac{", size),
        "boxed_frac_open": _fill("\\boxed{\\frac{", size),
        "boxed_nested_balanced": _fill("\\boxed{", half // 7) + "1" + _fill("}", half // 7),
        "boxed_many_closed": _fill("\\boxed{1} ", size),
        "boxed_space_form": _fill("\\boxed 1 ", size),
        "boxed_long_content": "\\boxed{" + _fill("x+", size) + "1}",
        "boxed_long_number": "\\boxed{" + _fill("9", size) + "}",
        "boxed_deep_parens": "\\boxed{" + _fill("(", half) + "1" + _fill(")", half) + "}",
        "answer_boxed_long_sum": tags + "\\boxed{" + _fill("1+", size) + "1}\n</answer>",
        "frac_chain": "\\boxed{" + _fill("\\frac{1}{", half // 8) + "2" + _fill("}", half // 8),
        "sqrt_text_left": _fill("\\sqrt\\text{ \\left(\\right)\\dfrac", size),
        "braces_open": _fill("{", size),
        "braces_close": _fill("}", size),
        "backslashes": _fill("\\", size),
        "dollars": _fill("$", size),
        # parentheses and arithmetic
        "parens_open_1e5": "(" * 100_000,
        "parens_open": _fill("(", size),
        "parens_balanced": _fill("(", half) + "1" + _fill(")", half),
        "answer_parens": "<answer>" + _fill("(", size) + "</answer>",
        "answer_parens_balanced": "<answer>"
        + _fill("(", half)
        + "1"
        + _fill(")", half)
        + "</answer>",
        "power_tower": "<answer>9**9**9**9</answer> \\boxed{9**9**9**9}",
        "latex_power_tower": "<answer>\\boxed{9^{9^{9^{9}}}}</answer>",
        "latex_power_big": "\\boxed{10^{10^{10}}}",
        "factorial": "<answer>\\boxed{99999999999!}</answer>",
        "binomial": "\\boxed{\\binom{10^{12}}{5 \\cdot 10^{11}}}",
        "huge_number": _fill("9", size),
        "answer_huge_number": "<answer>" + _fill("9", size) + "</answer>",
        "answer_huge_decimal": "<answer>" + _fill("9", half) + "." + _fill("9", half) + "</answer>",
        "thousands_separators": _fill("1,000,", size),
        "dots": _fill("1.", size),
        "minus_signs": _fill("-", size),
        "unicode_minus_numbers": _fill("\u22121", size),
        "differences": _fill("1-", size),
        "equations": _fill("1+1=2 ", size),
        "equals": _fill("=", size),
        "expression_chars": _fill("1 + 2 * (3 - 4) / 5 ", size),
        "answer_expression_long": "<answer>" + _fill("1+", size) + "1</answer>",
        "times_x": _fill("3 x 4 ", size),
        # tags
        "answer_open_tags": _fill("<answer>", size),
        "answer_close_tags": _fill("</answer>", size),
        "answer_pairs": _fill("<answer>1</answer>", size),
        "answer_pairs_empty": _fill("<answer></answer>", size),
        "answer_open_then_close": _fill("<answer>", half) + _fill("</answer>", half),
        "reasoning_tags": _fill("<reasoning>\n", size),
        "format_blocks": _fill(tags + "1\n</answer>\n", size),
        "special_tokens": _fill("<|eot_id|>", size),
        "special_token_like": _fill("<|a", size),
        "endoftext_tail": tags + "\\boxed{18}\n</answer>" + _fill("<|endoftext|>", size),
        "fences": _fill("```", size),
        "python_fences": _fill("```python\n", size),
        "python_fence_unclosed": "<answer>\n```python\n" + _fill("x = 1\n", size),
        # repetitive text of an untrained model
        "repeated_word": _fill("the ", size),
        "repeated_token": _fill("a", size),
        "repeated_digits": _fill("1234 ", size),
        "sudoku_digits": _fill("1234123412341234 ", size),
        "newlines": _fill("\n", size),
        "spaces": _fill(" ", size),
        "mask_like": _fill("<|mdm_mask|>", size),
        # encodings
        "nul_bytes": _fill("\x00", size),
        "nul_mixed": _fill("<answer>\x00\\boxed{\x00}\x001\x00", size),
        "unicode_cjk": _fill("\u6570\u5b66\u7b54\u3048", size),
        "unicode_emoji": _fill("\U0001f600\U0001f9ee", size),
        "unicode_combining": _fill("e\u0301\u0302\u0303", size),
        "unicode_digits": _fill("\u0663\u0664\u0665", size),  # Arabic-Indic digits
        "surrogate_free_mix": _fill("\u00d7\u00f7\u2212\u22c5\u00b7", size),
        "control_chars": _fill("\x01\x02\x1b[0m\r\t\x0b\x0c", size),
        "empty": "",
    }
    return cases


def normal_completions() -> dict[str, str]:
    """A few well-formed completions of the kinds d1's models write (for median timings)."""
    reasoning = "Janet has 16 eggs, eats 3 and bakes 4, so 16 - 3 - 4 = 9 are sold at $2: 18."
    return {
        "gsm8k_style": f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n18\n</answer>",
        "boxed_style": f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n\\boxed{{18}}\n</answer>",
        "math_style": (
            "<reasoning>\nThe fraction simplifies: \\frac{2}{4} = \\frac{1}{2}.\n</reasoning>\n"
            "<answer>\n\\boxed{\\frac{1}{2}}\n</answer>"
        ),
        "countdown_style": "<reasoning>\n30 - 93 + 100 = 37\n</reasoning>\n<answer>\n(100 - 93) + 30 - 14\n</answer>",
        "sudoku_style": "<reasoning>\nFill row by row.\n</reasoning>\n<answer>\n1234341221434321\n</answer>",
        "addition_style": "<reasoning>\n3+1=4 carry 0\n</reasoning>\n<answer>\n1474\n</answer>",
        "code_style": (
            "<reasoning>\nReturn the sum.\n</reasoning>\n<answer>\n```python\n"
            "def add(a, b):\n    return a + b\n```\n</answer>"
        ),
        "unformatted": "I think the answer is 42 because 6 times 7 is 42.",
        "eos_padded": (
            f"\n{reasoning}\n</reasoning>\n<answer>\n\\boxed{{18}}\n</answer><|eot_id|>"
            + "<|endoftext|>" * 100
        ),
    }


def task_cases(*, code: bool = True) -> dict[str, tuple[Any, Any]]:
    """One offline (task, example) pair per built-in task and scoring mode, named like
    "gsm8k" or "math500/d1_compat" (no hub access). `code=False` leaves out the code task
    (its sandbox needs Linux)."""
    from d1.tasks import get_task
    from d1.tasks.base import Example
    from d1.tasks.code import CodeTask, HumanEvalTask, humaneval_tests
    from d1.tasks.puzzles.countdown import CountdownProblem

    gsm8k = Example(id="gsm8k/0", question="Janet's ducks ...", answer="18")
    math = Example(id="math/0", question="Simplify 2/4.", answer="\\frac{1}{2}")
    countdown = get_task("countdown")
    sudoku = get_task("sudoku")
    addition = get_task("addition")
    cases: dict[str, tuple[Any, Any]] = {
        "gsm8k": (get_task("gsm8k"), gsm8k),
        "gsm8k/d1_compat": (get_task("gsm8k", d1_compat=True), gsm8k),
        "math500": (get_task("math500"), math),
        "math500/d1_compat": (get_task("math500", d1_compat=True), math),
        "countdown": (countdown, countdown.example(CountdownProblem((30, 100, 93), 23), "cd/0")),
        "sudoku": (sudoku, sudoku.load("test", limit=1)[0]),
        "addition": (addition, addition.load("test", limit=1)[0]),
    }
    if code:
        prompt = 'def add(a, b):\n    """Return a + b."""\n'
        test = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(0, 0) == 0\n"
        suite = humaneval_tests(prompt, test, "add")
        task = HumanEvalTask()
        cases["humaneval"] = (task, CodeTask._example("he/0", prompt, suite))
    return cases


def scoring_functions(task: Any) -> dict[str, Callable[[str, Any], list[float]]]:
    """The task's reward components and its scorer ("score": `Score.correct`), each as
    `fn(completion, example) -> [value]` on one completion."""

    def component(fn: Any) -> Callable[[str, Any], list[float]]:
        return lambda text, example: [float(v) for v in fn([text], [example])]

    fns = {name: component(fn) for name, fn in task.reward_functions().items()}
    fns["score"] = lambda text, example: [float(task.score(text, example).correct)]
    return fns
