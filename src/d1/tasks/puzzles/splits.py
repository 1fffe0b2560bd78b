"""Split membership of generated problems, decided by the problem itself.

A generated problem goes to train, validation or test according to a hash of its canonical key
(Countdown: the sorted numbers and the target; Sudoku: the puzzle string). Because the split
is a function of the problem, two splits can never share a problem, whatever the generator
seed, size or difficulty each was generated with (docs/method.md §7: model choice on a validation split,
never the test set), and a split's first n problems do not change when other splits grow.
"""

from __future__ import annotations

import hashlib

__all__ = ["SPLITS", "SPLIT_FRACTIONS", "check_split", "split_of"]

SPLITS: tuple[str, ...] = ("train", "validation", "test")

# Share of the problem space each split owns. Changing these changes every generated split.
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}

# Domain tag so that these buckets are unrelated to any other hash of the same key.
_SALT = b"d1-generated-split-v1\x00"


def check_split(split: str) -> str:
    """Return `split` if it is one of train / validation / test, else raise a clear error."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    return split


def split_of(key: str) -> str:
    """The split ("train", "validation" or "test") that owns the problem with this key."""
    digest = hashlib.blake2b(_SALT + key.encode("utf-8"), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    edge = 0.0
    for name in SPLITS:
        edge += SPLIT_FRACTIONS[name]
        if u < edge:
            return name
    return SPLITS[-1]
