"""The task interface: data, the prompt, reward components and the evaluation scorer.

A task bundles, in one module, everything d1 needs to know about one kind of problem
(docs/method.md §5). Trainers and the evaluator only ever talk to this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from d1.tasks.timeout import SCORE_TIMEOUT_S, call_with_time_limit

# d1's system prompt (docs/method.md §5): the model answers as <reasoning>..</reasoning><answer>..</answer>.
SYSTEM_PROMPT = """
Respond in the following format:
<reasoning>
...
</reasoning>
<answer>
...
</answer>
"""


@dataclass
class Example:
    """One task instance.

    Attributes:
        id: stable identifier (hub row index, file line, or generator seed + index).
        question: the problem text, without the system prompt or chat template.
        answer: the gold answer as a string (a number, a target, a 16-char Sudoku solution...).
        meta: task-specific fields (Countdown numbers, Sudoku puzzle, code tests, ...).
        response: a demonstration `<reasoning>..</reasoning>\\n<answer>..</answer>` for SFT, when
            the data has one.
    """

    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)
    response: str | None = None


@dataclass
class Score:
    """Evaluation outcome of one completion.

    Attributes:
        correct: 1.0 / 0.0 for most tasks; a fraction where the task's accuracy is fractional
            (Sudoku: correct empty cells / empty cells).
        parsed: the answer the generous parser extracted, or None.
        details: extra per-example numbers (e.g. Sudoku's `solved`, `cells_total`).
    """

    correct: float
    parsed: str | None
    details: dict[str, Any] = field(default_factory=dict)


# A reward component scores a batch of completions against their examples.
RewardFn = Callable[[Sequence[str], Sequence[Example]], list[float]]


class Task(ABC):
    """One reasoning task. Subclasses live one per module under `d1.tasks`."""

    name: ClassVar[str]
    system_prompt: ClassVar[str] = SYSTEM_PROMPT
    # Reward components (and "score") that bound their own running time and are called on the
    # whole batch, without the per-completion time limit of the reward pipeline (the code
    # tasks: their sandbox has per-program wall-clock limits and runs programs in parallel).
    self_bounded: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def load(
        self,
        split: str = "train",
        *,
        path: str | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> list[Example]:
        """Load a split ("train", "validation", "test") from the hub or from a local file."""

    @abstractmethod
    def user_message(self, example: Example) -> str:
        """The user turn's text: the one place this task's prompt is written."""

    def messages(self, example: Example) -> list[dict[str, str]]:
        """Chat messages for the prompt, ready for `tokenizer.apply_chat_template`."""
        return [{"role": "user", "content": self.user_message(example)}]

    def assistant_prefix(self, example: Example) -> str:
        """Text that starts the assistant turn, after the chat template's generation prompt.

        Empty by default. d1's evaluation scripts append "<reasoning>" here, so completions
        generated under that prompt do not contain the opening tag themselves.
        """
        return ""

    @abstractmethod
    def reward_functions(self) -> dict[str, RewardFn]:
        """Named RL reward components; the total reward is their sum."""

    @abstractmethod
    def score(self, completion: str, example: Example) -> Score:
        """Evaluation correctness of one completion, with generous parsing."""

    def timeout_score(self, example: Example) -> Score:
        """The score of a completion whose scoring ran past its time limit: wrong, with
        `details["timeout"]` set (tasks whose `aggregate` reads details add theirs)."""
        return Score(0.0, None, {"timeout": True})

    def score_within(
        self, completion: str, example: Example, seconds: float | None = SCORE_TIMEOUT_S
    ) -> Score:
        """`score` cut short after `seconds` (then `timeout_score`); how evaluation scores."""
        if "score" in self.self_bounded:
            return self.score(completion, example)
        score, timed_out = call_with_time_limit(
            self.score, completion, example, seconds=seconds, default=None
        )
        return self.timeout_score(example) if timed_out or score is None else score

    def example_from_gold(self, question: str, gold: Any, *, example_id: str) -> Example:
        """An Example rebuilt from an evaluation record (question + gold answer), used to score
        saved generations (`d1 score`). Tasks whose gold is structured (Countdown's
        [numbers, target], ...) override this."""
        return Example(id=example_id, question=question, answer=str(gold))

    def aggregate(self, scores: Sequence[Score]) -> dict[str, float]:
        """Task-level metrics from per-example scores (default: mean correctness)."""
        n = len(scores)
        return {"accuracy": sum(s.correct for s in scores) / n if n else 0.0, "n": float(n)}


def render_prompt(tokenizer: Any, task: Task, example: Example) -> str:
    """The prompt string: the task's messages through the model tokenizer's chat template,
    followed by the task's `assistant_prefix` (empty unless the task asks for one).

    A tokenizer without a chat template (a base model, e.g. LLaDA-8B-Base or a built-in
    "-base" tiny model) gets the messages' text as is, joined by blank lines."""
    messages = task.messages(example)
    # Only a tokenizer that says it has no template (chat_template None / "") gets raw text.
    if getattr(tokenizer, "chat_template", True):
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        prompt = "\n\n".join(m["content"] for m in messages)
    return prompt + task.assistant_prefix(example)
