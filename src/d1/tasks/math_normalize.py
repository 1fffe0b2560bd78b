"""The project's one math-answer normaliser and equivalence check (SPEC 5, 8).

d1 ships three copies of the MATH (Hendrycks) string normaliser; this module is the single
implementation used by the MATH reward, the MATH scorer and the GSM8K number parsing.

- `normalize_math_answer`: Hendrycks' `strip_string` steps (drop `\\left`/`\\right`, degrees,
  `\\$`, `\\%`, units after `\\text{ `, a short `k =` prefix, spaces; `tfrac`/`dfrac` -> `frac`;
  `\\frac12` -> `\\frac{1}{2}`; `\\sqrt3` -> `\\sqrt{3}`; `0.5` and `a/b` -> `\\frac{a}{b}`).
  d1's copy raises on several inputs (`"\\\\sqrt"` at the end, `"\\\\frac"` at the end, two
  `"\\\\text{ "`, a non-integer `a/b`), and its `is_equiv` then silently falls back to raw string
  equality; here those inputs are normalised like the rest. `d1_compat=True` raises where d1
  raises so that `is_equiv_d1` reproduces d1 exactly.
- `math_equal`: normalised string equality, else symbolic equivalence by `math-verify`
  (fractions vs decimals, reordered sums, `x = 2` vs `2`, intervals, ...).
- `numeric_value`: a GSM8K-style number ("1,000", "$18", "18.0", "-3") as an exact Decimal.
"""

from __future__ import annotations

import functools
import re
import threading
from decimal import Decimal, InvalidOperation
from typing import Any

from d1.tasks.formatting import last_boxed


class _D1Raise(ValueError):
    """Raised (only with d1_compat) where d1's normaliser raises."""


def _remove_right_units(s: str, d1_compat: bool) -> str:
    # "\text{ " only ever marks units in MATH answers.
    if "\\text{ " not in s:
        return s
    parts = s.split("\\text{ ")
    if d1_compat and len(parts) != 2:
        raise _D1Raise("several units")
    return parts[0]


def _fix_sqrt(s: str, d1_compat: bool) -> str:
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        if not part:
            if d1_compat:
                raise _D1Raise("\\sqrt at the end")
            out += "\\sqrt"
        elif part[0] != "{":
            out += "\\sqrt{" + part[0] + "}" + part[1:]
        else:
            out += "\\sqrt" + part
    return out


def _fix_fracs(s: str, d1_compat: bool) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if not part:
            if d1_compat:
                raise _D1Raise("\\frac at the end")
            continue
        if part[0] == "{":
            out += part
            continue
        if len(part) < 2:
            return s
        a, b = part[0], part[1]
        if b != "{":
            out += "{" + a + "}{" + b + "}" + part[2:]
        else:
            out += "{" + a + "}" + b + part[2:]
    return out


def _fix_a_slash_b(s: str, d1_compat: bool) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        if d1_compat:
            raise _D1Raise("non-integer a/b") from None
        return s
    if s != f"{a}/{b}":
        return s
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def normalize_math_answer(answer: str, *, d1_compat: bool = False) -> str:
    """Canonical string form of a MATH answer (Hendrycks' `strip_string`, see module doc)."""
    s = answer.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    s = _remove_right_units(s, d1_compat)
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5" -> "5"
        s = sides[1]
    s = _fix_sqrt(s, d1_compat)
    s = s.replace(" ", "")
    s = _fix_fracs(s, d1_compat)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s, d1_compat)


def is_equiv_d1(pred: str | float | None, gold: str | float | None) -> bool:
    """d1's `is_equiv` (eval/parser_helper.py), bug for bug: floats compare within 1e-6; two
    Nones are equal; when the normaliser raises, raw string equality decides."""
    if isinstance(pred, float) or isinstance(gold, float):
        try:
            return abs(float(pred) - float(gold)) < 1e-6  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
    if pred is None and gold is None:
        return True
    if pred is None or gold is None:
        return False
    try:
        return normalize_math_answer(pred, d1_compat=True) == normalize_math_answer(
            gold, d1_compat=True
        )
    except _D1Raise:
        return pred == gold


def _timeout() -> int | None:
    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    return 5 if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=8192)
def _parse_latex(text: str) -> tuple[Any, ...]:
    """math-verify's parse of `$text$` (cached: a gold answer is compared many times)."""
    from math_verify import parse

    try:
        return tuple(parse(f"${text}$", parsing_timeout=_timeout()))
    except Exception:  # math-verify / sympy may fail in many ways on model text
        return ()


def _verify_symbolic(pred: str, gold: str) -> bool:
    from math_verify import verify

    gold_parsed, pred_parsed = _parse_latex(gold), _parse_latex(pred)
    if not gold_parsed or not pred_parsed:
        return False
    try:
        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=_timeout()))
    except Exception:
        return False


def math_equal(pred: str | None, gold: str) -> bool:
    """Whether a predicted MATH answer is equivalent to the gold answer: equal after
    `normalize_math_answer`, or symbolically equal according to math-verify."""
    if pred is None:
        return False
    pred, gold = pred.strip(), gold.strip()
    if not pred:
        return False
    if normalize_math_answer(pred) == normalize_math_answer(gold):
        return True
    return _verify_symbolic(pred, gold)


_CLEAN_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


def clean_number_text(text: str) -> str:
    """A short answer stripped of what does not change a number: a `\\boxed{}` wrapper, `$`,
    `\\$`, `\\(..\\)`, `\\text{..}` wrappers, thousands separators, surrounding spaces and a
    final period. ("\\boxed{\\$1,000.}" -> "1000")."""
    s = text.strip()
    boxed = last_boxed(s)
    if boxed is not None and s.startswith(("\\boxed", "\\fbox")):
        s = boxed.strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    for junk in ("\\$", "$", "\\(", "\\)", "\\[", "\\]"):
        s = s.replace(junk, "")
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s).strip()
    if s.endswith("."):
        s = s[:-1].rstrip()
    return s.replace("\u2212", "-")


def numeric_value(text: str | float | int | None) -> Decimal | None:
    """The exact value of a text that *is* a number after `clean_number_text`, else None.
    ("18", "18.0", "$1,000", "-3", "\\boxed{42}"; not "18 apples" or "3/4")."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return Decimal(repr(text)) if isinstance(text, float) else Decimal(text)
    s = clean_number_text(text)
    if not _CLEAN_NUMBER_RE.fullmatch(s):
        return None
    try:
        return Decimal(s)
    except InvalidOperation:
        return None


def is_integer_text(text: str) -> bool:
    """True when the cleaned text is written as an integer ("-3", "1,000", "\\boxed{7}"); a
    decimal point ("18.0") does not count (see GSM8K's int_answer reward)."""
    return re.fullmatch(r"[-+]?\d+", clean_number_text(text)) is not None


__all__ = [
    "clean_number_text",
    "is_equiv_d1",
    "is_integer_text",
    "math_equal",
    "normalize_math_answer",
    "numeric_value",
]
