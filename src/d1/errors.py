"""Known failures: bad input or an unreachable resource, not a bug.

The command line prints these as one or two lines and exits 2 (`d1 --debug ...` shows the
traceback). Each message names what is wrong and how to fix it. They subclass `ValueError` so
callers that caught the plain `ValueError`s of earlier versions keep working.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["D1Error", "DataError", "ModelNotFoundError", "OutputError", "make_folder"]


class D1Error(ValueError):
    """A known failure with a message that says what to do."""


class DataError(D1Error):
    """A data file or dataset that cannot be used (missing, empty, malformed, unreachable)."""


class ModelNotFoundError(D1Error):
    """A model name that is no folder, built-in model or reachable hub id."""


class OutputError(D1Error):
    """An output location that cannot be written."""


# Where a hub dataset can be replaced by a local file, per command (one message everywhere).
LOCAL_DATA_HINT = (
    "pass a local file instead: `d1 eval --data TASK=PATH`, `tasks[i].path=PATH` in a diffu-GRPO "
    "config or `data.path=PATH` in an SFT config (`d1 data` generates Sudoku / Countdown)"
)


def make_folder(path: Path, *, what: str, fix: str) -> None:
    """`mkdir -p path`, or an `OutputError` naming `what` (e.g. "the run folder") and `fix`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"Cannot create {what} {path} ({e.strerror or e}); {fix}.") from None
