"""Writing generated puzzles to disk, as JSON Lines or CSV (chosen by the file suffix).

Both formats read back through `d1.tasks.data.load_rows` and the tasks' `load(path=...)`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["write_rows"]


def write_rows(rows: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    """Write rows to `path` (.jsonl: one JSON object per line; .csv: header from the first
    row's keys). Returns the number of rows written.

    Raises:
        ValueError: for another suffix, or CSV rows whose fields differ from the first row's.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ValueError(f"{path}: write .jsonl or .csv files (got suffix {suffix!r}).")
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer: csv.DictWriter | None = None
        for row in rows:
            if suffix == ".jsonl":
                f.write(json.dumps(dict(row), ensure_ascii=False) + "\n")
            else:
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(row), lineterminator="\n")
                    writer.writeheader()
                if list(row) != writer.fieldnames:
                    raise ValueError(
                        f"{path}: row {count} has fields {list(row)}, expected {writer.fieldnames}."
                    )
                writer.writerow(row)
            count += 1
    return count
