"""MATH task and the project's one math normaliser (d1.tasks.math500, d1.tasks.math_normalize)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d1.tasks import get_task, render_prompt
from d1.tasks.base import SYSTEM_PROMPT, Example
from d1.tasks.math500 import (
    D1_EVAL_PROMPT,
    MathTask,
    extract_boxed_d1,
    gold_from_row,
    parse_answer,
    parse_answer_d1,
)
from d1.tasks.math_normalize import (
    clean_number_text,
    is_equiv_d1,
    is_integer_text,
    math_equal,
    normalize_math_answer,
    numeric_value,
)

FIXTURES = Path(__file__).parent / "fixtures"
HALF = Example(id="m/0", question="q", answer="\\frac{3}{4}")


# -- normaliser ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("0.5", "\\frac{1}{2}"),
        ("x = 5", "5"),
        ("\\sqrt3", "\\sqrt{3}"),
        ("\\frac12", "\\frac{1}{2}"),
        ("3/4", "\\frac{3}{4}"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("90^\\circ", "90"),
        ("\\$36", "36"),
        ("50\\%", "50"),
        ("10 \\text{ cm}", "10"),
        (".5", "\\frac{1}{2}"),
        ("", ""),
    ],
)
def test_normalize_math_answer(raw: str, norm: str) -> None:
    assert normalize_math_answer(raw) == norm
    assert normalize_math_answer(raw, d1_compat=True) == norm


def test_inputs_on_which_d1s_normaliser_raises() -> None:
    # d1's strip_string raises on these; its is_equiv then falls back to raw equality.
    two_units = "2 \\text{ cm} \\text{ long}"
    assert normalize_math_answer(two_units) == "2"
    assert not is_equiv_d1(two_units, "2")
    assert math_equal(two_units, "2")
    assert normalize_math_answer("x/y") == "x/y"  # non-integer a/b: left alone
    assert is_equiv_d1("x / y", "x/y") is False  # d1: ValueError -> raw strings differ
    assert normalize_math_answer("1+\\sqrt") == "1+\\sqrt"
    assert normalize_math_answer("\\frac") == "\\frac"
    for bad in ("x/y", "1+\\sqrt", "\\frac", two_units):
        with pytest.raises(ValueError):
            normalize_math_answer(bad, d1_compat=True)


def test_is_equiv_d1_semantics() -> None:
    assert is_equiv_d1("\\frac{1}{2}", "0.5")
    assert is_equiv_d1(None, None) and not is_equiv_d1(None, "1")
    assert is_equiv_d1(18.0, "18") and not is_equiv_d1(18.0, "abc")


def test_math_equal() -> None:
    assert math_equal("\\frac{6}{3}", "2")  # math-verify
    assert math_equal("0.75", "\\frac{3}{4}")
    assert math_equal("7i - 2", "-2 + 7i")
    assert math_equal("[-2, 7]", "x \\in [-2,7]")
    assert math_equal("x=2", "2")
    assert math_equal("\\sqrt{2^{16}}", "256")
    assert not math_equal("3", "2")
    assert not math_equal("\\frac{2}{3}", "2")
    assert not math_equal(None, "2") and not math_equal("  ", "2")
    assert not math_equal("}{\\frac{", "2")  # garbage never raises


def test_numeric_value_and_integer_text() -> None:
    assert numeric_value("1,000") == Decimal(1000)
    assert numeric_value("\\boxed{\\$18.}") == Decimal(18)
    assert numeric_value("18.0") == numeric_value("18")
    assert numeric_value("-3") == Decimal(-3)
    assert numeric_value(18.0) == Decimal(18)
    assert numeric_value("18 apples") is None and numeric_value("3/4") is None
    assert numeric_value(None) is None
    assert clean_number_text(" \\boxed{1,234} ") == "1234"
    assert is_integer_text("-3") and is_integer_text("1,000") and is_integer_text("\\boxed{7}")
    assert not is_integer_text("18.0") and not is_integer_text("7 apples")


# -- data -----------------------------------------------------------------------------------------
def test_load_local_and_gold_sources(tmp_path: Path) -> None:
    task = MathTask(validation_size=1)
    test = task.load("test", path=str(FIXTURES / "tiny_math.jsonl"))
    assert [e.answer for e in test] == ["\\frac{3}{4}", "2"]
    assert test[0].meta["subject"] == "Prealgebra"
    assert test[0].response is not None and test[0].response.endswith(
        "<answer>\n\\boxed{\\frac{3}{4}}\n</answer>"
    )
    train = task.load("train", path=str(FIXTURES / "tiny_math.jsonl"))
    val = task.load("validation", path=str(FIXTURES / "tiny_math.jsonl"))
    assert len(train) == 1 and len(val) == 1 and train[0].id != val[0].id
    # gold from the solution's last box when there is no answer field (d1's training data)
    assert gold_from_row({"solution": "so \\boxed{1} no, \\boxed{\\frac{1}{2}}"}) == "\\frac{1}{2}"
    assert gold_from_row({"solution": "no box"}) is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "p", "solution": "no box"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl/0: no gold answer"):
        task.load("test", path=str(bad))
    bad.write_text('{"question": "p", "answer": "1"}\n')
    with pytest.raises(ValueError, match=r"row 0 .*'problem'"):
        task.load("test", path=str(bad))


def test_hub_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        rows = [{"problem": f"p{i}", "solution": f"\\boxed{{{i}}}"} for i in range(10)]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    task = get_task("math", validation_size=0.2)
    assert isinstance(task, MathTask) and isinstance(get_task("math500"), MathTask)
    assert len(task.load("test")) == 10
    assert len(task.load("train")) == 8 and len(task.load("validation")) == 2
    assert calls[0] == ("HuggingFaceH4/MATH-500", None, "test")
    assert calls[1] == ("ankner/math-500", None, "train")


# -- prompts --------------------------------------------------------------------------------------
class FakeTokenizer:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"[{m['role']}]{m['content']}" for m in messages) + "[assistant]"


def test_prompts() -> None:
    ex = Example(id="x", question="Find $x$.", answer="1")
    assert MathTask().user_message(ex) == (
        f"{SYSTEM_PROMPT}\n\nYou are a math expert. You will be given a question to solve. "
        "Solve it step by step. Wrap the final answer in a \\boxed{}. \n\nFind $x$."
    )
    ev = MathTask(prompt_style="d1_eval")
    assert ev.user_message(ex) == D1_EVAL_PROMPT + "\n\nFind $x$."
    assert D1_EVAL_PROMPT.endswith('</answer>" \n')  # d1's stray quote, kept verbatim
    assert render_prompt(FakeTokenizer(), ev, ex).endswith("[assistant]<reasoning>")
    assert render_prompt(FakeTokenizer(), MathTask(), ex).endswith("[assistant]")


# -- rewards --------------------------------------------------------------------------------------
def test_correctness_reward() -> None:
    t = MathTask()
    texts = [
        "<answer>\\boxed{\\frac{3}{4}}</answer>",
        "<answer>\\boxed{0.75}</answer>",  # equivalent, by math-verify
        "\\boxed{1} then \\boxed{\\dfrac34}",  # the last box counts
        "<answer>3/4</answer>",  # no box: the reward asks for one
        "\\boxed{\\frac{1}{2}}",
    ]
    assert t.correctness_reward(texts, [HALF] * 5) == [2.0, 2.0, 2.0, 0.0, 0.0]
    d1 = MathTask(d1_compat=True)
    assert d1.correctness_reward(texts, [HALF] * 5) == [2.0, 0.0, 2.0, 0.0, 0.0]


def test_format_reward_values_and_raw_boxed_regression() -> None:
    cases = {
        "<reasoning>r</reasoning><answer>\\boxed{1}</answer>": (1.0, 0.75),
        "<answer>1</answer>": (0.75, 0.75),
        "no tags \\boxed{1}": (0.5, 0.25),
        "nothing": (0.25, 0.25),
        "<answer>\\boxed{1}": (0.5, 0.75),  # d1 rewarded an unclosed tag
        "\\boxed{1} outside <answer>2</answer>": (0.75, 0.75),  # box must be in the answer
    }
    fixed, d1 = MathTask(), MathTask(d1_compat=True)
    for text, (want_fixed, want_d1) in cases.items():
        assert fixed.format_reward([text], [HALF]) == [want_fixed], text
        assert d1.format_reward([text], [HALF]) == [want_d1], text
    # the regression itself: d1's "\boxed" literal contains a backspace, not a backslash
    assert "\boxed" != "\\boxed"


@settings(max_examples=60, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=60),
        st.lists(
            st.sampled_from(["<answer>", "</answer>", "\\boxed{", "}", "3", "\\frac", "x", " "])
        ).map("".join),
    ),
    compat=st.booleans(),
)
def test_rewards_never_raise_and_stay_in_range(text: str, compat: bool) -> None:
    t = MathTask(d1_compat=compat)
    assert t.format_reward([text], [HALF])[0] in (0.25, 0.5, 0.75, 1.0)
    assert t.correctness_reward([text], [HALF])[0] in (0.0, 2.0)
    assert isinstance(t.score(text, HALF).correct, float)


# -- scorer ---------------------------------------------------------------------------------------
def test_parse_answer() -> None:
    assert parse_answer("so \\boxed{\\frac{3}{4}}.<|eot_id|>\\boxed{9}") == "\\frac{3}{4}"
    assert parse_answer("<answer>\n\\frac{1}{4}\n</answer>") == "\\frac{1}{4}"
    assert parse_answer("we get x = 66.\n</,") == "66"
    assert parse_answer("nothing") is None


def test_d1_parser_quirks_and_scores() -> None:
    # d1's last_boxed_only_string returns the whole text without a box, so the <answer>
    # fallback never runs and a correct tagged answer is scored wrong.
    text = "reasoning...\n<answer>\n\\frac{1}{4}\n</answer>"
    assert extract_boxed_d1(text) == text and parse_answer_d1(text) == text
    quarter = Example(id="q", question="q", answer="\\frac{1}{4}")
    assert MathTask(d1_compat=True).score(text, quarter).correct == 0.0
    assert MathTask().score(text, quarter).correct == 1.0
    assert extract_boxed_d1("\\boxed{\\frac{1}{4}") is None  # unclosed last box
    assert extract_boxed_d1("a \\boxed 5$ b") == "5"
    # equivalent forms d1's string normaliser misses
    for pred, gold in [
        ("0.25", "\\frac14"),
        ("\\frac{3}{24}", "\\frac{1}{8}"),
        ("C", "\\text{(C)}"),
    ]:
        ex = Example(id="e", question="q", answer=gold)
        assert MathTask().score(f"\\boxed{{{pred}}}", ex).correct == 1.0, pred
        assert MathTask(d1_compat=True).score(f"\\boxed{{{pred}}}", ex).correct == 0.0, pred
