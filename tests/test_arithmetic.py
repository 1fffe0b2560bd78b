"""Safe arithmetic (d1.tasks.arithmetic): the Countdown grammar is accepted, everything else refused."""

from __future__ import annotations

import builtins
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d1.tasks.arithmetic import MAX_LENGTH, numbers_used, safe_eval, safe_eval_exact


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("30 + 93 - 100", 23),
        ("(30 + 93) - 100", 23),
        ("100 - (93 - 30)", 37),
        ("2*4-3", 5),
        ("-3 + 5", 2),
        ("+4", 4),
        ("--4", 4),
        ("7/2", 3.5),
        ("1/3*3", 1),
        ("2.5 * 2", 5),
        (".5 + 1.", 1.5),
        ("((((8))))", 8),
        ("30 +\n93\t- 100", 23),  # whitespace, newlines included, carries no meaning
        ("  12  ", 12),
    ],
)
def test_valid_expressions(expr: str, value: float) -> None:
    assert safe_eval(expr) == value


def test_exact_rational_arithmetic() -> None:
    # Exact: float arithmetic would give 0.30000000000000004 - 0.3 != 0.
    assert safe_eval_exact("0.1 + 0.2 - 0.3") == 0
    assert safe_eval_exact("1/3 + 1/6") == Fraction(1, 2)
    assert safe_eval_exact("(5 - 1/5) * 5") == 24


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "().__class__.__bases__",
        "(1).real",
        "x",
        "abs(-1)",
        "(1)(2)",
        "1 if 1 else 2",
        "[1, 2]",
        "(1, 2)",
        "lambda: 1",
        "1 < 2",
        "not 1",
        "~1",
        "2**999999",
        "9**9**9",
        "2 ** 3",
        "5 // 2",
        "5 % 2",
        "1e308",
        "0x10",
        "1_000",
        "1j",
        "'1'",
        "1/0",
        "1/(2-2)",
        "",
        "   ",
        "1 +",
        "1 2",
        "30 + 93 = 123",
        "1" + "+1" * 300,  # too long
        "9" * 400,  # too large for a float
        "(" * 300 + "1" + ")" * 300,  # too deep
        "-" * 400 + "1",  # too deep
    ],
)
def test_rejects_everything_else(expr: str) -> None:
    with pytest.raises(ValueError):
        safe_eval(expr)


@pytest.mark.parametrize("value", [None, 3, 3.0, b"1+1", ["1"]])
def test_rejects_non_strings(value: object) -> None:
    with pytest.raises(ValueError, match="expression string"):
        safe_eval(value)  # type: ignore[arg-type]


def test_length_limit_is_configurable() -> None:
    expr = "1+" * 260 + "1"
    assert len(expr) > MAX_LENGTH
    with pytest.raises(ValueError, match="too long"):
        safe_eval(expr)
    assert safe_eval(expr, max_length=len(expr)) == 261


def test_never_calls_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec/compile must not be used")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    assert safe_eval("(30 + 93) - 100") == 23


def test_numbers_used() -> None:
    assert numbers_used("(30 + 93) - 100") == [30, 93, 100]
    assert numbers_used("100 - 30*93") == [100, 30, 93]
    assert numbers_used("-4 / 2") == [4, 2]
    used = numbers_used("3.0 + 2.5")
    assert used == [3.0, 2.5] and all(isinstance(u, float) for u in used)
    assert isinstance(numbers_used("3")[0], int)
    trailing = numbers_used("30 + 93 - 100.")  # a sentence's full stop, read as d1 reads it
    assert trailing == [30, 93, 100] and all(isinstance(u, int) for u in trailing)
    with pytest.raises(ValueError):
        numbers_used("3 ** 2")


# -- property tests: an independent evaluator on random expression trees ----------------------

_leaf = st.integers(min_value=0, max_value=999).map(lambda n: (str(n), Fraction(n), 3))


def _combine(children: st.SearchStrategy) -> st.SearchStrategy:
    def build(args: tuple) -> tuple[str, Fraction, int]:
        (ls, lv, _), op, (rs, rv, _) = args
        if op == "/" and rv == 0:
            op = "+"
        value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else 0}[op]
        # Fully parenthesised rendering: the value is defined by the tree, not by precedence.
        return f"({ls} {op} {rs})", value, 3

    return st.tuples(children, st.sampled_from("+-*/"), children).map(build)


_tree = st.recursive(_leaf, _combine, max_leaves=8)


@settings(max_examples=100, deadline=None)
@given(_tree)
def test_matches_independent_tree_evaluation(tree: tuple[str, Fraction, int]) -> None:
    text, value, _ = tree
    assert safe_eval_exact(text) == value
    assert numbers_used(text) == [
        int(t) for t in text.replace("(", " ").replace(")", " ").split() if t.isdigit()
    ]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_only_ever_raises_value_error(text: str) -> None:
    try:
        result = safe_eval(text)
    except ValueError:
        return
    assert isinstance(result, float)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789+-*/(). \n", min_size=1, max_size=40))
def test_grammar_alphabet_agrees_with_python(text: str) -> None:
    """Whatever the evaluator accepts, Python computes to the same value (this text holds only
    digits and + - * / ( ) ., so Python's own evaluation is a safe independent reference)."""
    try:
        value = safe_eval(text)
    except ValueError:
        return
    assert "**" not in text and "//" not in text
    reference = builtins.eval(" ".join(text.split()), {"__builtins__": {}}, {})
    assert value == pytest.approx(float(reference), rel=1e-9, abs=1e-12)
