"""Every task's rewards and scorer on ~1 MB adversarial completions: an in-range value, in under
0.2 s of CPU time per call, never an exception (d1.tasks.adversarial's corpus, plus hypothesis).

CPU time (`time.process_time`) rather than wall time, so that a busy machine does not fail the
test; the wall-clock guarantee is `d1.tasks.timeout`'s (tests/test_timeout.py).
`benchmarks/rewards.py` prints the timings.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d1.sandbox import SandboxLimits
from d1.tasks import get_task
from d1.tasks.adversarial import (
    adversarial_completions,
    normal_completions,
    scoring_functions,
    task_cases,
)
from d1.tasks.code import HumanEvalTask

BOUND_S = 0.2


def _one_of(*values: float) -> Callable[[float, str], bool]:
    return lambda v, text: v in values


def _between(lo: float, hi: float) -> Callable[[float, str], bool]:
    return lambda v, text: lo <= v <= hi


def _xmlcount(per_char: float) -> Callable[[float, str], bool]:
    # 0.125 per tag, minus 0.001 per trailing character (d1 counts it twice)
    return lambda v, text: -per_char * len(text) - 1e-9 <= v <= 0.5


# Each component's documented range (task docstrings).
RANGES: dict[str, dict[str, Callable[[float, str], bool]]] = {
    "gsm8k": {
        "xmlcount": _xmlcount(0.001),
        "soft_format": _one_of(0.0, 0.5),
        "strict_format": _one_of(0.0, 0.5),
        "int_answer": _one_of(0.0, 0.5),
        "correctness": _one_of(0.0, 2.0),
    },
    "gsm8k/d1_compat": {
        "xmlcount": _xmlcount(0.002),
        "soft_format": _one_of(0.0, 0.5),
        "strict_format": _one_of(0.0, 0.5),
        "int_answer": _one_of(0.0, 0.5),
        "correctness": _one_of(0.0, 2.0),
    },
    "math500": {"correctness": _one_of(0.0, 2.0), "format": _one_of(0.25, 0.5, 0.75, 1.0)},
    "math500/d1_compat": {
        "correctness": _one_of(0.0, 2.0),
        "format": _one_of(0.25, 0.5, 0.75, 1.0),
    },
    "countdown": {"countdown": _one_of(0.0, 0.1, 1.0)},
    "sudoku": {"sudoku": _between(0.0, 1.0)},
    "addition": {"correct": _one_of(0.0, 1.0), "digits": _between(0.0, 1.0)},
    "humaneval": {
        "xmlcount": _xmlcount(0.001),
        "code_format": _one_of(0.0, 0.5),
        "correctness": _between(0.0, 1.0),
    },
}
SCORE_RANGE = _between(0.0, 1.0)

CASES = task_cases(code=False)


@pytest.fixture(scope="module")
def corpus() -> dict[str, str]:
    return adversarial_completions()


def _check(label: str, fname: str, fn, text: str, example, name: str) -> float:
    """Run one call; assert it returns one finite in-range value. Returns its CPU seconds."""
    t0 = time.process_time()
    values = fn(text, example)
    spent = time.process_time() - t0
    assert len(values) == 1, (label, fname, name)
    value = values[0]
    ok = RANGES[label].get(fname, SCORE_RANGE) if fname != "score" else SCORE_RANGE
    assert math.isfinite(value) and ok(value, text), (label, fname, name, value)
    return spent


def _warm_up(label: str, task, example) -> None:
    for fname, fn in scoring_functions(task).items():
        for name, text in normal_completions().items():
            _check(label, fname, fn, text, example, name)


def test_the_corpus_is_about_a_megabyte_per_case(corpus) -> None:
    big = [name for name, text in corpus.items() if len(text) >= 900_000]
    assert len(big) >= 50 and "parens_open_1e5" in corpus and corpus["empty"] == ""
    assert len(corpus["parens_open_1e5"]) == 100_000


@pytest.mark.parametrize("label", sorted(CASES))
def test_every_reward_and_score_is_bounded_on_the_corpus(label: str, corpus) -> None:
    task, example = CASES[label]
    _warm_up(label, task, example)
    slow = []
    for fname, fn in scoring_functions(task).items():
        for name, text in corpus.items():
            spent = _check(label, fname, fn, text, example, name)
            if spent >= BOUND_S:
                slow.append((fname, name, round(spent, 3)))
    assert not slow, slow


def test_well_formed_answers_still_score(corpus) -> None:
    """The bounds do not switch the scorers off: right answers are still right."""
    right = {
        "gsm8k": "<reasoning>\nx\n</reasoning>\n<answer>\n18\n</answer>\n",
        "gsm8k/d1_compat": "<reasoning>\nx\n</reasoning>\n<answer>\n18\n</answer>\n",
        "math500": "<answer>\n\\boxed{0.5}\n</answer>",
        "math500/d1_compat": "<answer>\n\\boxed{\\frac12}\n</answer>",
        "countdown": "<answer>30 - 100 + 93</answer>",
        "addition": "<answer>{answer}</answer>",
    }
    for label, text in right.items():
        task, example = CASES[label]
        text = text.replace("{answer}", example.answer)
        assert task.score(text, example).correct == 1.0, label
        # ... also after a megabyte of degenerate text, when the answer comes last
        assert task.score(corpus["repeated_word"] + text, example).correct == 1.0, label


# Pieces of degenerate completions; hypothesis strings them together and repeats them.
FRAGMENTS = [
    "\\boxed{",
    "\\boxed ",
    "\\frac{",
    "\\sqrt",
    "\\text{ ",
    "\\left(",
    "{",
    "}",
    "(",
    ")",
    "<answer>",
    "</answer>",
    "<reasoning>\n",
    "\n</reasoning>\n",
    "9",
    "1,000",
    "-",
    ".",
    "=",
    "**",
    "^{",
    "!",
    "\\binom",
    "```python\n",
    "```",
    "<|eot_id|>",
    "\x00",
    "\u2212",
    "\U0001f600",
    "\n",
    " ",
    "x",
]
UNIT = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), min_size=1, max_size=10
).map("".join)
DEGENERATE = st.tuples(UNIT, st.integers(1, 200_000), UNIT).map(
    lambda t: (t[0] * t[1])[:1_000_000] + t[2]
)


# math-verify's LaTeX parser alone can take 0.2-0.8 s on plausible short answers that pass
# `verifiable` ("(((1)))"); its time limit is what bounds it, so the random inputs run with a
# 0.1 s budget (the default is 2 s, to keep real verdicts).
HYPOTHESIS_CASES = {
    **CASES,
    "math500": (get_task("math500", verify_timeout_s=0.1), CASES["math500"][1]),
}


@pytest.mark.parametrize("label", sorted(HYPOTHESIS_CASES))
def test_random_degenerate_completions_are_bounded(label: str) -> None:
    task, example = HYPOTHESIS_CASES[label]
    _warm_up(label, task, example)
    fns = scoring_functions(task)

    @settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(text=DEGENERATE)
    def check(text: str) -> None:
        for fname, fn in fns.items():
            spent = _check(label, fname, fn, text, example, repr(text[:60]))
            assert spent < BOUND_S, (label, fname, text[:200], spent)

    check()


@pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")
def test_code_task_is_bounded(corpus) -> None:
    """Extraction and format rewards in the main process: < 0.2 s on every input. Running the
    extracted program is bounded by the sandbox's own limits (here 1 s per program)."""
    task = HumanEvalTask(limits=SandboxLimits(timeout_s=1.0, test_timeout_s=0.5))
    _, example = task_cases(code=True)["humaneval"]
    task_fns = scoring_functions(task)
    for name, text in corpus.items():
        for fname in ("xmlcount", "code_format"):
            assert _check("humaneval", fname, task_fns[fname], text, example, name) < BOUND_S
        t0 = time.process_time()
        task.programs([text], [example])
        assert time.process_time() - t0 < BOUND_S, name
    for name in ("power_tower", "python_fence_unclosed", "answer_parens", "nul_mixed"):
        t0 = time.monotonic()
        _check("humaneval", "correctness", task_fns["correctness"], corpus[name], example, name)
        assert time.monotonic() - t0 < 1.0 + 3.0, name  # the sandbox limit + process start
