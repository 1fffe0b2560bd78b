"""Shared data loading for every task: rows from a local file or the hub, checks, splits.

Tasks turn rows into `Example`s; this module only fetches rows, validates them and carves a
validation split out of a training set (docs/method.md §7: checkpoint choice on a validation split, never
the test set). It never silently drops or repairs rows: malformed data raises a
`d1.errors.DataError` (a `ValueError`) naming the source, the row and the problem.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from d1.errors import LOCAL_DATA_HINT, DataError
from d1.tasks.base import Example

# File suffixes read from disk directly (no `datasets` cache, no type inference: a CSV cell like
# Sudoku's "0123..." must stay a string).
LOCAL_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet")

T = TypeVar("T")


def is_local_file(source: str | Path) -> bool:
    """True when `source` names a local data file we read directly (by suffix or existence)."""
    p = Path(source)
    return p.suffix.lower() in LOCAL_SUFFIXES or p.is_file()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not a UTF-8 text file (undecodable byte at offset {e.start}); a data file "
            "must be JSON Lines, JSON, CSV or Parquet."
        ) from None


def _read_json(path: Path, split: str | None) -> list[dict[str, Any]]:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # `.json` files are often JSON Lines (the hub's json loader accepts both).
        return _read_jsonl_text(text, path)
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if split is not None and isinstance(data.get(split), list):
            return data[split]
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if len(lists) == 1:
            return next(iter(lists.values()))
        raise DataError(
            f"{path}: a JSON object must hold exactly one list of rows or a list under the "
            f"requested split (split={split!r}); found list keys {sorted(lists)}. Pass `split=` "
            "to choose one, or store a JSON list / JSON Lines file."
        )
    raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}.")


def _read_jsonl_text(text: str, path: Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {lineno} is not valid JSON ({e.msg}).") from None
    return rows


def _read_local(path: Path, split: str | None) -> list[dict[str, Any]]:
    if not path.is_file():
        if path.is_dir():
            raise DataError(f"Data file {path} is a folder; pass the file itself.")
        raise FileNotFoundError(f"Data file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl_text(_read_text(path), path)
    if suffix == ".json":
        return _read_json(path, split)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet as pq  # a `datasets` dependency

        try:
            return pq.read_table(path).to_pylist()
        except (pyarrow.ArrowException, OSError) as e:
            raise DataError(f"{path}: not a readable Parquet file ({e}).") from None
    raise DataError(
        f"{path}: unsupported file type {suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)}."
    )


def _read_csv(path: Path) -> list[dict[str, Any]]:
    """CSV rows; a row whose field count differs from the header's is an error naming its line
    (an unclosed quote or a stray comma), never a row with silently missing fields."""
    rows = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if None in row or None in row.values():
                    n = len(reader.fieldnames or ())
                    raise DataError(
                        f"{path}: line {reader.line_num} does not have the header's {n} fields "
                        f"({', '.join(reader.fieldnames or ())}): an unclosed quote or a stray "
                        "comma?"
                    )
                rows.append(dict(row))
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not a UTF-8 text file (undecodable byte at offset {e.start})."
        ) from None
    except csv.Error as e:
        raise DataError(f"{path}: not a valid CSV file ({e}).") from None
    return rows


def _load_hub(source: str, config: str | None, split: str | None) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(source, config, split=split)
    except (ConnectionError, OSError) as e:  # offline, unreachable, or no such dataset
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"Cannot load the dataset {source!r} from the Hugging Face Hub ({reason}); "
            f"{LOCAL_DATA_HINT}."
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise DataError(f"{source}: several splits available ({', '.join(ds)}); pass `split=`.")
        ds = next(iter(ds.values()))
    return [dict(row) for row in ds]


def check_required(rows: Sequence[dict[str, Any]], required: Sequence[str], source: str) -> None:
    """Raise a ValueError naming the first row that lacks (or has null) a required field."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{source}: row {i} is a {type(row).__name__}, expected an object.")
        for name in required:
            if row.get(name) is None:
                raise DataError(
                    f"{source}: row {i} is missing required field {name!r} "
                    f"(fields present: {sorted(row)}). Fix the data or map the column name."
                )


def load_rows(
    source: str | Path,
    *,
    split: str | None = None,
    config: str | None = None,
    required: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Rows of a dataset as plain dicts, with every `required` field checked present.

    Args:
        source: a local `.jsonl` / `.json` / `.csv` / `.parquet` file, or a hub id (or a local
            dataset directory) handed to `datasets.load_dataset(source, config, split=split)`.
        split: hub split; for a local JSON object file, the key holding the rows. Ignored for
            other local files (one file = one split).
        config: hub configuration name (e.g. "main" for `openai/gsm8k`).
        required: field names each row must have (non-null).

    Raises:
        DataError: naming the source, row index and problem (also an empty dataset or an
            unreachable hub); rows are never dropped.
    """
    if is_local_file(source):
        rows = _read_local(Path(source), split)
    else:
        rows = _load_hub(str(source), config, split)
    if not rows:
        raise DataError(f"{source}: the dataset holds no rows.")
    check_required(rows, required, str(source))
    return rows


def question_key(text: str) -> str:
    """Normalised question text used to keep duplicate questions on one side of a split."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def _group_examples(examples: Sequence[Example]) -> list[list[int]]:
    """Indices grouped so that examples sharing an id or a question text share a group."""
    parent = list(range(len(examples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[str, str], int] = {}
    for i, ex in enumerate(examples):
        for key in (("id", ex.id), ("q", question_key(ex.question))):
            j = first_seen.setdefault(key, i)
            if j != i:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(examples)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def split_train_validation(
    examples: Sequence[Example],
    *,
    validation_fraction: float | None = None,
    validation_size: int | None = None,
    seed: int = 0,
) -> tuple[list[Example], list[Example]]:
    """Deterministically hold out a validation split from training examples (docs/method.md §7).

    Examples are grouped so that any two sharing an id or a (whitespace/case-normalised)
    question text stay together; groups are ordered by a seeded hash of their content
    (so the assignment does not depend on input order or on Python's hash seed) and taken
    into validation until it holds at least the requested number of examples (it can exceed
    it by less than one group). Both outputs keep the input order.

    Args:
        validation_fraction: share of examples for validation, in (0, 1); or
        validation_size: number of validation examples, in [0, len(examples)). Give exactly one.
        seed: changes which groups are held out.

    Returns:
        (train, validation), disjoint by id and by question text.
    """
    if (validation_fraction is None) == (validation_size is None):
        raise ValueError("Give exactly one of validation_fraction or validation_size.")
    n = len(examples)
    if validation_fraction is not None:
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
        target = round(validation_fraction * n)
    else:
        assert validation_size is not None
        if not 0 <= validation_size < max(n, 1):
            raise ValueError(
                f"validation_size must be in [0, {n}) for {n} examples, got {validation_size} "
                "(tasks take it as a constructor argument, e.g. get_task(name, "
                "validation_size=0.1); 0 disables the validation split)."
            )
        target = validation_size

    def order(group: list[int]) -> str:
        content = "\x1f".join(sorted(question_key(examples[i].question) for i in group))
        return hashlib.sha256(f"{seed}\x1e{content}".encode()).hexdigest()

    held: set[int] = set()
    for group in sorted(_group_examples(examples), key=order):
        if len(held) >= target:
            break
        held.update(group)
    if n and len(held) == n:
        raise ValueError(
            f"The validation split would take all {n} examples (duplicate questions form one "
            "group); lower validation_fraction/validation_size."
        )
    train = [ex for i, ex in enumerate(examples) if i not in held]
    validation = [ex for i, ex in enumerate(examples) if i in held]
    return train, validation


def hold_out(
    examples: Sequence[Example], split: str, validation_size: int | float, *, seed: int = 0
) -> list[Example]:
    """The "train" or "validation" part of a training pool (`split_train_validation`).

    `validation_size` is a count (int) or a fraction (float) of the pool; 0 keeps the whole
    pool for training (d1's setting) and then asking for "validation" is an error.
    """
    if split not in ("train", "validation"):
        raise ValueError(
            f"hold_out splits a training pool: split must be 'train' or 'validation', got {split!r}."
        )
    if not validation_size:
        if split == "validation":
            raise ValueError("validation_size=0: there is no validation split.")
        return list(examples)
    kw: dict[str, Any] = (
        {"validation_fraction": float(validation_size)}
        if isinstance(validation_size, float)
        else {"validation_size": int(validation_size)}
    )
    train, validation = split_train_validation(examples, seed=seed, **kw)
    return train if split == "train" else validation


def limit_examples(items: Sequence[T], limit: int | None, *, seed: int | None = None) -> list[T]:
    """At most `limit` items: the first ones, or (with `seed`) a seeded random sample kept in
    input order. `limit=None` keeps everything."""
    if limit is None:
        return list(items)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}.")
    if seed is None or limit >= len(items):
        return list(items[:limit])
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def row_id(prefix: str, index: int) -> str:
    """Stable example id from a source name and a row index, e.g. "gsm8k/test/17"."""
    return f"{prefix}/{index}"


__all__ = [
    "LOCAL_SUFFIXES",
    "check_required",
    "hold_out",
    "is_local_file",
    "limit_examples",
    "load_rows",
    "question_key",
    "row_id",
    "split_train_validation",
]
