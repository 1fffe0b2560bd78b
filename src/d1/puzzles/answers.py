"""d1's answer extraction for the puzzle rewards (SPEC 5, Countdown and Sudoku).

d1's `extract_solution` / `extract_answer_sudoku` take the *last closed* `<answer>...</answer>`
block found by a non-greedy regex, or nothing. That differs in edge cases from
`d1.tasks.formatting.extract_answer_tag` (the last `<answer>` tag, closed or not), which the
generous evaluation scorers use; the RL rewards keep d1's rule exactly.
"""

from __future__ import annotations

import re

__all__ = ["d1_answer_block"]

_ANSWER_BLOCK_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def d1_answer_block(text: str) -> str | None:
    """Content of the last closed `<answer>...</answer>` block, stripped, or None (d1's rule)."""
    matches = _ANSWER_BLOCK_RE.findall(text)
    return matches[-1].strip() if matches else None
