"""d1's format rewards and the answer-extraction helpers every task shares (docs/method.md §5).

The format rewards follow d1's `diffu-grpo/reward_func.py` (itself from Will Brown's GRPO demo)
with its defects fixed; `d1_compat=True` reproduces the published code exactly:

- The official soft/strict regexes lack `re.DOTALL`, so `.` never crosses a newline and any
  completion with multi-line reasoning never earns the format rewards (docs/method.md §5 "fixed").
- d1's xml-count subtracts the trailing-text penalty twice, and in its first term measures the
  text after `"\\n</answer>\\n"`, which is the *whole completion* when the closing tag is not
  followed by a newline (the usual case once the EOS token is stripped): a well-formed answer
  of 300 characters lost 0.3. We subtract 0.001 per character after the closing tag once
  (one newline directly after the tag is free), as docs/method.md §5 states the rule.

Extraction helpers never raise on arbitrary text; they return None when nothing is found.
All of them run in linear time (no backtracking regex over unbounded text), and the answer
parsers of the tasks read only the last `MAX_PARSE_CHARS` characters of a completion (`tail`):
an answer sits at the end, and a degenerate completion of a million characters must cost no
more than a long real one.
"""

from __future__ import annotations

import re

# -- format rewards --------------------------------------------------------------------------

XML_TAG_REWARD = 0.125
XML_TRAILING_PENALTY = 0.001
SOFT_FORMAT_REWARD = 0.5
STRICT_FORMAT_REWARD = 0.5

# d1's patterns (docs/method.md §5), for reference: `soft_format_ok` / `strict_format_ok` decide the same
# matches in linear time (the lazy `.*?` makes the regexes quadratic on repeated tags; the
# tests check both against the regexes).
SOFT_FORMAT_PATTERN = r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>"
STRICT_FORMAT_PATTERN = r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$"

# Answer parsers read at most this many characters from the end of a completion (after the cut
# at the first EOS marker). d1's completions are at most 512 tokens: the longest of its published
# LLaDA-8B-Instruct evaluation files, EOS padding included, has 6,151 characters.
MAX_PARSE_CHARS = 20_000
# `all_boxed` / `last_boxed` consider at most this many boxes, the last ones (a real answer has
# one or two; nested degenerate boxes would otherwise make the box scan quadratic).
MAX_BOXES = 64


def tail(text: str, limit: int = MAX_PARSE_CHARS) -> str:
    """The last `limit` characters of `text` (all of it when shorter)."""
    return text if len(text) <= limit else text[-limit:]


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


class NextFind:
    """`text.find(sub, start)` for non-decreasing `start`s in amortised linear total time."""

    def __init__(self, text: str, sub: str) -> None:
        self.text, self.sub, self.found = text, sub, -2

    def __call__(self, start: int) -> int:
        if self.found == -1 or (self.found >= start):
            return self.found
        self.found = self.text.find(self.sub, start)
        return self.found


def _soft_match(text: str, dotall: bool) -> bool:
    """`re.match(SOFT_FORMAT_PATTERN, text, DOTALL if dotall else 0) is not None`, linear."""
    open_r, close_r, open_a, close_a = "<reasoning>", "</reasoning>", "<answer>", "</answer>"
    if not text.startswith(open_r):
        return False
    n = len(text)
    first_nl = text.find("\n", len(open_r))
    line_end = n if dotall or first_nl < 0 else first_nl
    next_close = NextFind(text, close_a)
    next_nl = NextFind(text, "\n")
    k = text.find(close_r, len(open_r))
    # `.*?` before </reasoning> may not cross a newline without DOTALL: k must stay on line 1.
    while k >= 0 and k + len(close_r) <= n and (dotall or k <= line_end):
        j = k + len(close_r)
        while j < n and text[j].isspace():  # runs after distinct k are disjoint: linear
            j += 1
        if text.startswith(open_a, j):
            body = j + len(open_a)
            e = next_close(body)
            if e < 0:
                return False  # no </answer> after this <answer>: none after a later one
            if dotall:
                return True
            nl = next_nl(body)
            if nl < 0 or e < nl:
                return True
        k = text.find(close_r, k + 1)
    return False


def _strict_match(text: str, dotall: bool) -> bool:
    """`re.match(STRICT_FORMAT_PATTERN, text, DOTALL if dotall else 0) is not None`, linear."""
    head, mid, end = "<reasoning>\n", "\n</reasoning>\n<answer>\n", "\n</answer>\n"
    if not text.startswith(head):
        return False
    n = len(text)
    # `$` matches at the end or before a final newline.
    ends = [e for e in (n - len(end), n - len(end) - 1) if e >= 0 and text.startswith(end, e)]
    ends = [e for e in ends if e + len(end) == n or text[n - 1] == "\n"]
    if not ends:
        return False
    if dotall:
        m = text.find(mid, len(head))
        return m >= 0 and any(m + len(mid) <= e for e in ends)
    # Without DOTALL neither content holds a newline: each part ends at the next newline.
    m = text.find("\n", len(head))
    if m < 0 or not text.startswith(mid, m):
        return False
    e = text.find("\n", m + len(mid))
    return e in ends


def soft_format_ok(text: str, *, d1_compat: bool = False) -> bool:
    """`<reasoning>...</reasoning>` then `<answer>...</answer>` at the start of the text (content
    may span lines; d1's regex without DOTALL with `d1_compat=True`)."""
    return _soft_match(text, dotall=not d1_compat)


def strict_format_ok(text: str, *, d1_compat: bool = False) -> bool:
    """Exactly `<reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>\\n`, the layout of the
    system prompt (a final newline is required, as in d1)."""
    return _strict_match(text, dotall=not d1_compat)


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


def first_answer_block(text: str) -> str | None:
    """The group of `re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)` (d1's evaluation
    parsers), unstripped, or None; linear time (the regex rescans from every unclosed tag). The
    first `<answer>` decides: no later one can have a `</answer>` after it if it has none."""
    start = text.find("<answer>")
    if start < 0:
        return None
    end = text.find("</answer>", start + len("<answer>"))
    return None if end < 0 else text[start + len("<answer>") : end]


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
_BRACE_RE = re.compile(r"[{}]")
_BARE_ARG_RE = re.compile(r"[^\s$]+")


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each `{` -> position of its matching `}` (unmatched ones are absent), in one
    pass over the braces."""
    match: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_RE.finditer(text):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            match[stack.pop()] = m.start()
    return match


def _box_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the content of every complete box, in order of the box commands."""
    commands = [m.end() for m in _BOX_CMD_RE.finditer(text)]
    if not commands:
        return []
    match = _matching_braces(text) if "{" in text else {}
    spans = []
    n = len(text)
    for pos in commands:
        i = pos
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == "{":
            close = match.get(i)
            if close is not None:  # else never closed (a generation cut off inside the box)
                spans.append((i + 1, close))
        elif i > pos:  # `\boxed 5`: the argument is the next run of non-space, non-$ characters
            m = _BARE_ARG_RE.match(text, i)
            if m:
                spans.append((m.start(), m.end()))
    return spans


def all_boxed(text: str, *, limit: int = MAX_BOXES) -> list[str]:
    """Contents of the complete `\\boxed{..}` / `\\fbox{..}` / `\\boxed ..` in order (nested
    braces handled; unbalanced boxes are skipped); at most the last `limit` of them."""
    return [text[a:b] for a, b in _box_spans(text)[-limit:]]


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
    "MAX_BOXES",
    "MAX_PARSE_CHARS",
    "SOFT_FORMAT_REWARD",
    "STRICT_FORMAT_REWARD",
    "XML_TAG_REWARD",
    "XML_TRAILING_PENALTY",
    "NextFind",
    "all_boxed",
    "count_xml",
    "extract_answer_tag",
    "extract_xml_answer",
    "find_numbers",
    "first_answer_block",
    "last_boxed",
    "last_number",
    "soft_format_ok",
    "soft_format_reward",
    "strict_format_ok",
    "strict_format_reward",
    "strip_special_tokens",
    "tail",
]
