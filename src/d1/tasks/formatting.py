"""d1's format rewards and the answer-extraction helpers every task shares (SPEC 5).

The format rewards follow d1's `diffu-grpo/reward_func.py` (itself from Will Brown's GRPO demo)
with its defects fixed; `d1_compat=True` reproduces the published code exactly:

- The official soft/strict regexes lack `re.DOTALL`, so `.` never crosses a newline and any
  completion with multi-line reasoning never earns the format rewards (SPEC 5 "fixed").
- d1's xml-count subtracts the trailing-text penalty twice, and in its first term measures the
  text after `"\\n</answer>\\n"`, which is the *whole completion* when the closing tag is not
  followed by a newline (the usual case once the EOS token is stripped): a well-formed answer
  of 300 characters lost 0.3. We subtract 0.001 per character after the closing tag once
  (one newline directly after the tag is free), as SPEC 5 states the rule.

Extraction helpers never raise on arbitrary text; they return None when nothing is found.
"""

from __future__ import annotations

import re

# -- format rewards --------------------------------------------------------------------------

XML_TAG_REWARD = 0.125
XML_TRAILING_PENALTY = 0.001
SOFT_FORMAT_REWARD = 0.5
STRICT_FORMAT_REWARD = 0.5

# d1's patterns (SPEC 5); compiled with DOTALL unless reproducing d1's bug.
_STRICT = r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$"
_SOFT = r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>"
_STRICT_RE = re.compile(_STRICT, re.DOTALL)
_SOFT_RE = re.compile(_SOFT, re.DOTALL)
_STRICT_RE_D1 = re.compile(_STRICT)
_SOFT_RE_D1 = re.compile(_SOFT)


def count_xml(text: str, *, d1_compat: bool = False) -> float:
    """d1's xml-count reward: 0.125 for each of `<reasoning>\\n`, `\\n</reasoning>\\n`,
    `\\n<answer>\\n`, `\\n</answer>` present exactly once, minus 0.001 per character after the
    closing answer tag (a single newline right after it is free).

    Range: at most 0.5; at least `0.125 - 0.001 * len(text)` when penalised (never below
    `-0.001 * len(text)`). With `d1_compat=True`, d1's exact arithmetic (penalty counted twice,
    the whole text penalised when `\\n</answer>\\n` is absent).
    """
    score = 0.0
    if text.count("<reasoning>\n") == 1:
        score += XML_TAG_REWARD
    if text.count("\n</reasoning>\n") == 1:
        score += XML_TAG_REWARD
    if d1_compat:
        if text.count("\n<answer>\n") == 1:
            score += XML_TAG_REWARD
            score -= len(text.split("\n</answer>\n")[-1]) * XML_TRAILING_PENALTY
        if text.count("\n</answer>") == 1:
            score += XML_TAG_REWARD
            score -= (len(text.split("\n</answer>")[-1]) - 1) * XML_TRAILING_PENALTY
        return score
    if text.count("\n<answer>\n") == 1:
        score += XML_TAG_REWARD
    if text.count("\n</answer>") == 1:
        score += XML_TAG_REWARD
        trailing = text.split("\n</answer>")[-1]
        if trailing.startswith("\n"):
            trailing = trailing[1:]
        score -= len(trailing) * XML_TRAILING_PENALTY
    return score


def soft_format_ok(text: str, *, d1_compat: bool = False) -> bool:
    """`<reasoning>...</reasoning>` then `<answer>...</answer>` at the start of the text (content
    may span lines; d1's regex without DOTALL with `d1_compat=True`)."""
    return (_SOFT_RE_D1 if d1_compat else _SOFT_RE).match(text) is not None


def strict_format_ok(text: str, *, d1_compat: bool = False) -> bool:
    """Exactly `<reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>\\n`, the layout of the
    system prompt (a final newline is required, as in d1)."""
    return (_STRICT_RE_D1 if d1_compat else _STRICT_RE).match(text) is not None


def soft_format_reward(text: str, *, d1_compat: bool = False) -> float:
    """0.5 when `soft_format_ok`, else 0.0."""
    return SOFT_FORMAT_REWARD if soft_format_ok(text, d1_compat=d1_compat) else 0.0


def strict_format_reward(text: str, *, d1_compat: bool = False) -> float:
    """0.5 when `strict_format_ok`, else 0.0."""
    return STRICT_FORMAT_REWARD if strict_format_ok(text, d1_compat=d1_compat) else 0.0


# -- extraction --------------------------------------------------------------------------------

_SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>")
# End-of-sequence markers of LLaDA (and common chat models) as they appear in decoded text.
EOS_MARKERS: tuple[str, ...] = ("<|eot_id|>", "<|endoftext|>", "<|im_end|>", "<|end|>")


def strip_special_tokens(text: str) -> str:
    """The completion as the model ended it: cut at the first end-of-sequence marker (a
    diffusion sampler fills the rest of the canvas after EOS, and d1's evaluation files keep
    that text: LLaDA sometimes writes a different `\boxed{}` there), then drop any other
    `<|...|>` special token."""
    cut = min((i for i in (text.find(m) for m in EOS_MARKERS) if i >= 0), default=len(text))
    return _SPECIAL_TOKEN_RE.sub("", text[:cut])


def extract_xml_answer(text: str) -> str:
    """d1's `extract_xml_answer`: the text after the last `<answer>` up to the next `</answer>`,
    stripped. Without an `<answer>` tag this is the whole text, stripped (d1's behaviour, kept
    because d1's GSM8K rewards are defined on it)."""
    return text.split("<answer>")[-1].split("</answer>")[0].strip()


def extract_answer_tag(text: str, *, require_close: bool = False) -> str | None:
    """Content of the last `<answer>` tag, stripped: up to the next `</answer>`, or to the end
    of the text when the tag is never closed (unless `require_close`). None without a tag."""
    start = text.rfind("<answer>")
    if start < 0:
        return None
    rest = text[start + len("<answer>") :]
    end = rest.find("</answer>")
    if end < 0:
        if require_close:
            return None
        return rest.strip()
    return rest[:end].strip()


_BOX_CMD_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _box_content(text: str, pos: int) -> str | None:
    """Content of the box whose command ends at `pos`, or None if unbalanced / empty form."""
    i = pos
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j]
        return None  # never closed (e.g. a generation cut off inside the box)
    if i > pos:  # `\boxed 5`: the argument is the next run of non-space, non-$ characters
        m = re.match(r"[^\s$]+", text[i:])
        return m.group(0) if m else None
    return None


def all_boxed(text: str) -> list[str]:
    """Contents of every complete `\\boxed{..}` / `\\fbox{..}` / `\\boxed ..` in order (nested
    braces handled; unbalanced boxes are skipped)."""
    out = []
    for m in _BOX_CMD_RE.finditer(text):
        content = _box_content(text, m.end())
        if content is not None:
            out.append(content)
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed x`), with
    nested braces; None if there is none."""
    boxes = all_boxed(text)
    return boxes[-1] if boxes else None


# A number: optional minus, digits with optional thousands separators, optional decimals.
# Not preceded by a digit or "." (so "5-3" yields 3, not -3) and not followed by a digit.
_NUMBER_RE = re.compile(r"(?<![\d.])(-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+))(?![\d])")


def find_numbers(text: str) -> list[str]:
    """All numbers in the text, thousands separators removed ("1,000" -> "1000")."""
    return [m.group(1).replace(",", "") for m in _NUMBER_RE.finditer(text.replace("\u2212", "-"))]


def last_number(text: str) -> str | None:
    """The last number in the text ("-3", "2.5", "1,234" -> "1234"), or None."""
    nums = find_numbers(text)
    return nums[-1] if nums else None


__all__ = [
    "EOS_MARKERS",
    "SOFT_FORMAT_REWARD",
    "STRICT_FORMAT_REWARD",
    "XML_TAG_REWARD",
    "XML_TRAILING_PENALTY",
    "all_boxed",
    "count_xml",
    "extract_answer_tag",
    "extract_xml_answer",
    "find_numbers",
    "last_boxed",
    "last_number",
    "soft_format_ok",
    "soft_format_reward",
    "strict_format_ok",
    "strict_format_reward",
    "strip_special_tokens",
]
