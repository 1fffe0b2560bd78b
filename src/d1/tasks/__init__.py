"""Task registry: `get_task("gsm8k")` returns a ready `Task`.

Task modules are imported lazily, so importing `d1.tasks` stays cheap and a broken optional
task cannot break the others.
"""

from __future__ import annotations

import importlib

from d1.tasks.base import SYSTEM_PROMPT, Example, RewardFn, Score, Task, render_prompt

# name -> "module:Class". Aliases point at the same class.
_REGISTRY: dict[str, str] = {
    "gsm8k": "d1.tasks.gsm8k:GSM8KTask",
    "math500": "d1.tasks.math500:MathTask",
    "math": "d1.tasks.math500:MathTask",
    "countdown": "d1.tasks.countdown:CountdownTask",
    "sudoku": "d1.tasks.sudoku:SudokuTask",
    "addition": "d1.tasks.addition:AdditionTask",
    "humaneval": "d1.tasks.code:HumanEvalTask",
    "mbpp": "d1.tasks.code:MBPPTask",
    "kodcode": "d1.tasks.code:KodCodeTask",
}


def register_task(name: str, target: str) -> None:
    """Register a task class given as "module:Class" (for plugins and tests)."""
    _REGISTRY[name] = target


def list_tasks() -> list[str]:
    return sorted(_REGISTRY)


def same_task(a: str, b: str) -> bool:
    """Whether two registered names are the same task (an alias: "math" and "math500")."""
    a, b = a.lower(), b.lower()
    return a == b or (a in _REGISTRY and _REGISTRY.get(a) == _REGISTRY.get(b))


def get_task(name: str, **kwargs: object) -> Task:
    """Instantiate a registered task by name; kwargs go to the task's constructor."""
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"Unknown task {name!r}. Known tasks: {', '.join(list_tasks())}.")
    module_name, cls_name = _REGISTRY[key].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**kwargs)


__all__ = [
    "SYSTEM_PROMPT",
    "Example",
    "RewardFn",
    "Score",
    "Task",
    "get_task",
    "list_tasks",
    "register_task",
    "render_prompt",
    "same_task",
]
