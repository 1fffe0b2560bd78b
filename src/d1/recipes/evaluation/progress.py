"""Progress bars for long evaluation / demo phases (rich; quiet when disabled)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

# progress(done, total, description)
ProgressFn = Callable[[int, int, str], None]


@contextmanager
def progress_bar(title: str, enabled: bool = True) -> Iterator[ProgressFn]:
    """A rich progress bar driven by `progress(done, total, description)` calls.

    With `enabled=False` it yields a no-op, so callers need no branches.
    """
    if not enabled:
        yield lambda done, total, desc: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.fields[title]}[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task_id = bar.add_task("", total=None, title=title)

        def update(done: int, total: int, desc: str) -> None:
            bar.update(task_id, completed=done, total=total, description=desc)

        yield update
