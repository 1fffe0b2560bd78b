"""Safe evaluation of the arithmetic expressions models write (Countdown, docs/method.md §5).

d1's reference reward checks the answer against the character class `[\\d+\\-*/().\\s]` and then
calls `eval`: that lets `**` through (`9**9**9` hangs the trainer) as well as `//`. Here the
expression is parsed with `ast.parse` and walked; only the Countdown grammar is accepted:

    expr   := number | expr (+ | - | * | /) expr | -expr | +expr | ( expr )
    number := digits | digits.digits | .digits | digits.        (no exponents, no underscores)

Anything else (names, calls, attribute access, `**`, `//`, `%`, comparisons, exponent or
complex literals, over-long or over-deep input, division by zero, a non-finite result) raises
a `ValueError` that says what was rejected. The value is computed exactly with `Fraction`s,
so `1/3*3` is exactly 1, and converted to float at the end; nothing is ever executed.
"""

from __future__ import annotations

import ast
import math
import re
from fractions import Fraction

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "numbers_used",
    "parse_expression",
    "safe_eval",
    "safe_eval_exact",
]

# Countdown answers are a few dozen characters; the caps keep hostile input cheap to reject.
MAX_LENGTH = 500
MAX_DEPTH = 300

# A plain decimal literal as written in the source (ast would also accept 1e9, 0x1F, 1_000, 1j).
_LITERAL = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)")
# The characters the grammar can use at all; anything else fails fast, before parsing.
_ALLOWED_CHARS = re.compile(r"[0-9+\-*/().\s]*")

_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
}


def parse_expression(expr: str, *, max_length: int = MAX_LENGTH) -> ast.expr:
    """Parse `expr` into an AST restricted to the Countdown grammar (see module docstring).

    Raises:
        ValueError: the input is not a string, is empty or too long, contains a character the
            grammar cannot use, does not parse, or uses an operation or literal outside it.
    """
    if not isinstance(expr, str):
        raise ValueError(f"expected an expression string, got {type(expr).__name__}")
    if len(expr) > max_length:
        raise ValueError(f"expression too long ({len(expr)} > {max_length} characters)")
    if not expr.strip():
        raise ValueError("empty expression")
    if not _ALLOWED_CHARS.fullmatch(expr):
        bad = sorted({c for c in expr if not _ALLOWED_CHARS.fullmatch(c)})
        raise ValueError(
            f"expression contains characters outside digits, + - * / ( ) . and spaces: {bad!r}"
        )
    source = _normalise(expr)
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ValueError(f"not a valid arithmetic expression: {e.__class__.__name__}") from None
    _check(tree.body, source, 0)
    return tree.body


def _normalise(expr: str) -> str:
    """Whitespace carries no meaning in arithmetic: collapse it, so that an answer wrapped over
    lines (`30 +\n93`) parses (Python's own grammar, and so d1's `eval`, would reject it)."""
    return " ".join(expr.split())


def _check(node: ast.AST, source: str, depth: int) -> None:
    """Reject every node outside the grammar; the depth cap bounds the recursion."""
    if depth > MAX_DEPTH:
        raise ValueError(f"expression nested too deeply (> {MAX_DEPTH} levels)")
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise ValueError(f"operator {type(node.op).__name__} is not allowed (only + - * /)")
        _check(node.left, source, depth + 1)
        _check(node.right, source, depth + 1)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise ValueError(f"unary operator {type(node.op).__name__} is not allowed")
        _check(node.operand, source, depth + 1)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ValueError(f"literal {node.value!r} is not a number")
        text = ast.get_source_segment(source, node)
        if text is None or not _LITERAL.fullmatch(text):
            raise ValueError(f"number literal {text!r} is not a plain decimal")
    else:
        raise ValueError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _literal_fraction(node: ast.Constant, source: str) -> Fraction:
    text = ast.get_source_segment(source, node)
    assert text is not None  # guaranteed by _check
    return Fraction(text)  # exact: Fraction("0.1") == 1/10


def _value(node: ast.expr, source: str) -> Fraction:
    if isinstance(node, ast.Constant):
        return _literal_fraction(node, source)
    if isinstance(node, ast.UnaryOp):
        v = _value(node.operand, source)
        return -v if isinstance(node.op, ast.USub) else v
    assert isinstance(node, ast.BinOp)
    left, right = _value(node.left, source), _value(node.right, source)
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    if right == 0:
        raise ValueError("division by zero")
    return left / right


def safe_eval_exact(expr: str, *, max_length: int = MAX_LENGTH) -> Fraction:
    """The exact value of an arithmetic expression as a `Fraction` (docs/method.md §5, Countdown).

    Raises:
        ValueError: see `parse_expression`; also on division by zero.
    """
    tree = parse_expression(expr, max_length=max_length)
    return _value(tree, _normalise(expr))


def safe_eval(expr: str, *, max_length: int = MAX_LENGTH) -> float:
    """Evaluate an arithmetic expression of numbers, + - * /, unary minus and parentheses.

    Never calls `eval`. The value is exact until the final conversion to float.

    Raises:
        ValueError: anything outside the grammar (names, calls, attributes, `**`, `//`, ...),
            input longer than `max_length`, nesting deeper than `MAX_DEPTH`, division by zero,
            or a result too large for a float.
    """
    value = safe_eval_exact(expr, max_length=max_length)
    try:
        result = float(value)
    except OverflowError:
        raise ValueError("result too large for a float") from None
    if not math.isfinite(result):
        raise ValueError("result is not finite")
    return result


def numbers_used(expr: str, *, max_length: int = MAX_LENGTH) -> list[int | float]:
    """The number literals of a valid expression, in reading order.

    Integer literals come back as `int`; a literal with digits after its decimal point comes
    back as `float` (even `3.0`), so it never counts as using the given integer 3 (d1's regex
    `\\d+` reads `3.0` as the numbers 3 and 0: rejected there too). A bare trailing point
    (`100.`, as at the end of a sentence) is the integer 100, as d1's regex reads it.

    Raises:
        ValueError: if `expr` is not a valid expression (see `parse_expression`).
    """
    tree = parse_expression(expr, max_length=max_length)
    source = _normalise(expr)
    found: list[tuple[int, int, int | float]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            text = ast.get_source_segment(source, node)
            assert text is not None
            integer = text.endswith(".") and text[:-1].isdigit()
            number: int | float = (
                int(text[:-1]) if integer else (float(text) if "." in text else int(text))
            )
            found.append((node.lineno, node.col_offset, number))
    found.sort(key=lambda t: (t[0], t[1]))
    return [n for _, _, n in found]
