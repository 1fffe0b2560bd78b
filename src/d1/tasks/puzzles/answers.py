"""d1's answer extraction for the puzzle rewards (docs/method.md §5, Countdown and Sudoku).

d1's `extract_solution` / `extract_answer_sudoku` take the *last* match of the non-greedy
`re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)`, or nothing. That differs in edge
cases from `d1.tasks.formatting.extract_answer_tag` (the last `<answer>` tag, closed or not),
which the generous evaluation scorers use; the RL rewards keep d1's rule exactly.
"""

from __future__ import annotations

__all__ = ["d1_answer_block"]

_OPEN, _CLOSE = "<answer>", "</answer>"


def d1_answer_block(text: str) -> str | None:
    """Content of the last closed `<answer>...</answer>` block, stripped, or None (d1's rule).

    Same result as the last match of d1's non-greedy regex (each block runs from an opening
    tag to the next closing tag, scanning on after it) in linear time: the regex is quadratic
    on text with many unclosed opening tags.
    """
    last = None
    pos = 0
    while True:
        start = text.find(_OPEN, pos)
        if start < 0:
            break
        end = text.find(_CLOSE, start + len(_OPEN))
        if end < 0:
            break
        last = text[start + len(_OPEN) : end]
        pos = end + len(_CLOSE)
    return None if last is None else last.strip()
