"""The project's one math-answer normaliser and equivalence check (docs/method.md §5, 8).

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
  (fractions vs decimals, reordered sums, `x = 2` vs `2`, intervals, ...). math-verify's LaTeX
  parser (ANTLR, pure Python) and sympy can take seconds on short text (20 nested parentheses:
  2 s; `9^{9^{9}}`: forever), so an answer goes to math-verify only when `verifiable` (at most
  `MAX_VERIFY_CHARS` characters, brackets nested at most `MAX_VERIFY_DEPTH` deep, no exponent
  tower, huge factorial, binomial, sum or product), and math-verify runs under
  `d1.tasks.timeout.time_limit(timeout_s)` (default `MATH_VERIFY_TIMEOUT_S`); past it, the
  answers count as not equivalent. On d1's 1,500 published MATH500 generations none of this
  changes a verdict.
- `numeric_value`: a GSM8K-style number ("1,000", "$18", "18.0", "-3") as an exact Decimal.
"""

from __future__ import annotations

import functools
import logging
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from d1.tasks.formatting import last_boxed
from d1.tasks.timeout import call_with_time_limit

# Answers longer or deeper than this are compared as normalised strings only (module doc). The
# longest answer in d1's MATH500 generations has 151 characters and brackets 3 deep.
MAX_VERIFY_CHARS = 400
MAX_VERIFY_DEPTH = 6
# math-verify's budget per comparison (both parses and the check); the slowest real answer
# takes 0.6 s on a loaded 2-core machine.
MATH_VERIFY_TIMEOUT_S = 2.0


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


# Constructs that make sympy compute astronomically large numbers from short text.
_HAZARD_RE = re.compile(
    r"\\(?:prod|sum)(?![A-Za-z])"  # large bounds
    r"|\d{5,}\s*!|[)}\]]\s*!"  # 10000! or (...)!
    r"|\^\s*\{[^{}]*\^"  # a power in an exponent: 9^{9^{9}}
    r"|\*\*"  # Python powers (9**9**9) are not LaTeX
)
_BINOMIAL_RE = re.compile(r"\\(?:[dt]?binom|choose)(?![A-Za-z])")
_BIG_ARGUMENT_RE = re.compile(r"\d{4,}|\^")  # \binom{10^{12}}{...} or \binom{100000}{...}
_EXPONENT_DIGITS_RE = re.compile(r"\^\s*\{?\s*(\d+)")
_MAX_EXPONENT_DIGITS = 6  # 2^{100000} is instant; (10^{1000})^{1000} takes 0.5 s


def verifiable(text: str) -> bool:
    """Whether math-verify may be asked about `text` in bounded time (module doc)."""
    if len(text) > MAX_VERIFY_CHARS or _HAZARD_RE.search(text):
        return False
    if _BINOMIAL_RE.search(text) and _BIG_ARGUMENT_RE.search(text):
        return False
    if sum(len(d) for d in _EXPONENT_DIGITS_RE.findall(text)) > _MAX_EXPONENT_DIGITS:
        return False
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth = max(depth - 1, 0)
    return deepest <= MAX_VERIFY_DEPTH


class _DropTimeoutWarning(logging.Filter):
    """math-verify warns once that its own (signal.alarm) timeouts are off: they are, because
    `time_limit` bounds it instead (see d1.tasks.timeout)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutWarning())


@functools.lru_cache(maxsize=8192)
def _parse_latex(text: str) -> tuple[Any, ...]:
    """math-verify's parse of `$text$` (cached: a gold answer is compared many times)."""
    from math_verify import parse

    try:
        return tuple(parse(f"${text}$", parsing_timeout=None))
    except Exception:  # math-verify / sympy may fail in many ways on model text
        return ()


def _verify_parsed(pred: str, gold: str) -> bool:
    from math_verify import verify

    gold_parsed, pred_parsed = _parse_latex(gold), _parse_latex(pred)
    if not gold_parsed or not pred_parsed:
        return False
    try:
        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))
    except Exception:
        return False


@functools.lru_cache(maxsize=1)
def _load_math_verify() -> None:
    """Import math-verify and build its LaTeX parser once, outside any time limit (the first
    parse of a process takes about a second; it must not count against an answer's budget)."""
    _parse_latex("1")


def _verify_symbolic(pred: str, gold: str, timeout_s: float | None) -> bool:
    if not (verifiable(pred) and verifiable(gold)):
        return False
    _load_math_verify()
    ok, _ = call_with_time_limit(_verify_parsed, pred, gold, seconds=timeout_s, default=False)
    return ok


def math_equal(
    pred: str | None, gold: str, *, timeout_s: float | None = MATH_VERIFY_TIMEOUT_S
) -> bool:
    """Whether a predicted MATH answer is equivalent to the gold answer: equal after
    `normalize_math_answer`, or symbolically equal according to math-verify (when both are
    `verifiable`, within `timeout_s` seconds; None: no limit)."""
    if pred is None:
        return False
    pred, gold = pred.strip(), gold.strip()
    if not pred:
        return False
    if normalize_math_answer(pred) == normalize_math_answer(gold):
        return True
    return _verify_symbolic(pred, gold, timeout_s)


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
    "MATH_VERIFY_TIMEOUT_S",
    "MAX_VERIFY_CHARS",
    "MAX_VERIFY_DEPTH",
    "clean_number_text",
    "is_equiv_d1",
    "is_integer_text",
    "math_equal",
    "normalize_math_answer",
    "numeric_value",
    "verifiable",
]
