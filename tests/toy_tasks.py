"""Toy generated tasks for diffu-GRPO tests (importable by name, so subprocesses launched with
`accelerate launch` can register them too: `register_toy_tasks()` with `tests/` on the path)."""

from __future__ import annotations

from collections.abc import Sequence

from d1.tasks.base import Example, RewardFn, Score, Task


class Echo(Task):
    """Toy generated task: the prompt is a digit d, the answer "ddd"; reward = share right."""

    name = "echo"

    def load(self, split="train", *, path=None, limit=None, seed=0):
        out = []
        for i in range(200):
            d = str((i * 7) % 10)
            out.append(Example(id=f"{split}{i}", question=d, answer=d * 3, response=d * 3))
        return out[:limit] if limit else out

    def user_message(self, example: Example) -> str:
        return example.question

    def match(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        return [
            sum(a == b for a, b in zip(c[:3], ex.answer, strict=False)) / 3
            for c, ex in zip(completions, examples, strict=True)
        ]

    def reward_functions(self) -> dict[str, RewardFn]:
        return {"match": self.match}

    def score(self, completion: str, example: Example) -> Score:
        return Score(correct=float(completion.strip() == example.answer), parsed=completion)


class Letter(Echo):
    """A second toy task for mixtures, with a dense reward (share of lowercase letters), so that
    even a random model gets non-zero advantages."""

    name = "letter"

    def load(self, split="train", *, path=None, limit=None, seed=0):
        return [Example(f"l{i}", "abc"[i % 3], "abc"[i % 3] * 3) for i in range(30)]

    def match(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        return [sum(ch.islower() for ch in c) / max(len(c), 1) for c in completions]


TOY_TASKS = {"echo": f"{__name__}:Echo", "letter": f"{__name__}:Letter"}


def register_toy_tasks() -> None:
    """Register "echo" and "letter" in d1's task registry (for a whole process)."""
    from d1.tasks import register_task

    for name, target in TOY_TASKS.items():
        register_task(name, target)
