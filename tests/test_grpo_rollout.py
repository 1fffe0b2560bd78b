"""Tests for diffu-GRPO rollouts and the prompt stream (docs/method.md §4, docs/method.md §7 mixtures)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import pytest
import torch

from d1.core.sampling import SamplerConfig
from d1.recipes.grpo.rollout import (
    PromptItem,
    PromptSampler,
    generate_rollouts,
    score_completions,
    score_correctness,
)
from d1.tasks.base import Example, RewardFn, Score, Task


class DigitTask(Task):
    """Toy task: the prompt names a digit; reward = share of completion characters equal to it."""

    name = "digit"

    def load(self, split="train", *, path=None, limit=None, seed=0):
        return [Example(id=f"d{i}", question=str(i % 10), answer=str(i % 10)) for i in range(20)]

    def user_message(self, example: Example) -> str:
        return example.question

    def match(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        return [
            sum(ch == ex.answer for ch in c) / max(len(c), 1)
            for c, ex in zip(completions, examples, strict=True)
        ]

    def length(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        return [0.01 * len(c) for c in completions]

    def reward_functions(self) -> dict[str, RewardFn]:
        return {"match": self.match, "length": self.length}

    def score(self, completion: str, example: Example) -> Score:
        return Score(correct=float(completion.startswith(example.answer)), parsed=completion[:1])


class LetterTask(DigitTask):
    name = "letter"

    def load(self, split="train", *, path=None, limit=None, seed=0):
        return [Example(id=f"l{i}", question="abc"[i % 3], answer="abc"[i % 3]) for i in range(7)]

    def reward_functions(self) -> dict[str, RewardFn]:
        return {"match": self.match}


class HangingTask(DigitTask):
    """A reward and a scorer that never return on the completion "hang" (a pathological
    parser), and a batch-only component that declares itself bounded."""

    name = "hang"
    self_bounded = frozenset({"batch"})

    def match(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        if "hang" in completions:
            while True:
                pass
        return super().match(completions, examples)

    def batch(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        self.batch_sizes.append(len(completions))
        return [0.5] * len(completions)

    def reward_functions(self) -> dict[str, RewardFn]:
        self.batch_sizes: list[int] = []
        return {"match": self.match, "length": self.length, "batch": self.batch}

    def score(self, completion: str, example: Example) -> Score:
        if completion == "hang":
            while True:
                pass
        return super().score(completion, example)


def test_a_hanging_reward_scores_zero_and_is_counted() -> None:
    task = HangingTask()
    items = [PromptItem("hang", task, Example(str(i), "7", "7")) for i in range(3)]
    t0 = time.monotonic()
    total, per, timeouts = score_completions(["77", "hang", "7x"], items, timeout_s=0.2)
    assert time.monotonic() - t0 < 2.0
    assert timeouts == 1  # "match" on "hang"; "length" is fine on it
    torch.testing.assert_close(per["hang/match"], torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(per["hang/length"], torch.tensor([0.02, 0.04, 0.02]))
    torch.testing.assert_close(total, torch.tensor([1.52, 0.54, 1.02]))
    assert task.batch_sizes == [3]  # the self-bounded component saw the whole batch, unguarded
    correct, cut = score_correctness(["7", "hang", "8"], items, timeout_s=0.2)
    assert cut == 1 and correct.tolist() == [1.0, 0.0, 0.0]


def test_reward_timeout_config_is_validated() -> None:
    from d1.config import ConfigError
    from d1.recipes.grpo.config import GRPOSection

    assert GRPOSection().reward_timeout_s == 5.0
    GRPOSection(reward_timeout_s=None).validate()
    for bad in (0, -1.0, float("inf"), "fast"):
        with pytest.raises(ConfigError, match="reward_timeout_s"):
            GRPOSection(reward_timeout_s=bad).validate()


def _items(n: int = 2) -> list[PromptItem]:
    task = DigitTask()
    return [PromptItem("digit", task, ex) for ex in task.load()[:n]]


def test_score_completions_multi_task() -> None:
    digit, letter = DigitTask(), LetterTask()
    items = [
        PromptItem("digit", digit, Example("a", "7", "7")),
        PromptItem("letter", letter, Example("b", "a", "a")),
        PromptItem("digit", digit, Example("c", "3", "3")),
    ]
    total, per, timeouts = score_completions(["77x", "aa", "33"], items)
    assert timeouts == 0
    torch.testing.assert_close(total, torch.tensor([2 / 3 + 0.03, 1.0, 1.0 + 0.02]))
    assert set(per) == {"digit/match", "digit/length", "letter/match"}
    assert torch.isnan(per["letter/match"][[0, 2]]).all()
    assert per["letter/match"][1] == 1.0
    assert torch.isnan(per["digit/match"][1])


def test_generate_rollouts_shapes_groups_and_masks(tiny_model, tokenizer) -> None:
    g = 3
    items = _items(2)
    sampler = SamplerConfig(gen_length=8, block_length=4, steps=4, temperature=1.0)
    kw = {
        "num_generations": g,
        "sampler": sampler,
        "mask_id": tokenizer.mask_token_id,
        "eos_id": tokenizer.eos_token_id,
        "generation_batch_size": 4,
    }
    out = generate_rollouts(
        tiny_model, tokenizer, items, generator=torch.Generator().manual_seed(0), **kw
    )
    assert len(out) == 6 and out.num_generations == g
    assert out.completion_ids.shape == (6, 8)
    # Rows [i*G, (i+1)*G) share prompt i.
    for i in range(2):
        rows = slice(i * g, (i + 1) * g)
        assert all(it.example is items[i].example for it in out.items[rows])
        assert (out.prompt_ids[rows] == out.prompt_ids[i * g]).all()
    assert not (out.completion_ids == tokenizer.mask_token_id).any()
    # Completion mask: up to and including the first EOS.
    eos = tokenizer.eos_token_id
    for row, m in zip(out.completion_ids.tolist(), out.completion_mask.tolist(), strict=True):
        first = row.index(eos) if eos in row else len(row) - 1
        assert m == [j <= first for j in range(len(row))]
    assert out.rewards.shape == (6,)
    torch.testing.assert_close(
        out.rewards, out.rewards_per_func["digit/match"] + out.rewards_per_func["digit/length"]
    )
    # Reproducible with the same generator seed, and sampling batch size does not matter.
    again = generate_rollouts(
        tiny_model, tokenizer, items, generator=torch.Generator().manual_seed(0), **kw
    )
    assert torch.equal(again.completion_ids, out.completion_ids)
    assert tiny_model.training is False


def test_prompt_truncation_keeps_last_tokens(tiny_model, tokenizer) -> None:
    sampler = SamplerConfig(gen_length=4, block_length=4, steps=2, temperature=0.0)
    out = generate_rollouts(
        tiny_model,
        tokenizer,
        _items(1),
        num_generations=2,
        sampler=sampler,
        mask_id=tokenizer.mask_token_id,
        eos_id=tokenizer.eos_token_id,
        generator=None,
        max_prompt_length=5,
    )
    assert out.prompt_ids.shape[1] == 5 and out.truncated_prompts == 1
    full = tokenizer(out.prompts[0], add_special_tokens=False)["input_ids"]
    assert out.prompt_ids[0].tolist() == full[-5:]


def test_prompt_sampler_epochs_mixture_and_resume() -> None:
    digit, letter = DigitTask(), LetterTask()
    d_ex, l_ex = digit.load(), letter.load()
    single = PromptSampler([("digit", digit, d_ex, 1.0)], seed=3)
    first = [it.example.id for it in single.next_items(20)]
    assert sorted(first) == sorted(e.id for e in d_ex)  # one epoch = a permutation
    second = [it.example.id for it in single.next_items(20)]
    assert sorted(second) == sorted(first) and second != first  # reshuffled per epoch
    assert single.epochs() == {"digit": 2.0}

    mix = PromptSampler([("digit", digit, d_ex, 3.0), ("letter", letter, l_ex, 1.0)], seed=1)
    counts = Counter(it.task_name for it in mix.next_items(800))
    assert abs(counts["digit"] / 800 - 0.75) < 0.06
    # Exact resume from a state dict.
    a = PromptSampler([("digit", digit, d_ex, 3.0), ("letter", letter, l_ex, 1.0)], seed=1)
    a.next_items(13)
    state = a.state_dict()
    expected = [(it.task_name, it.example.id) for it in a.next_items(30)]
    b = PromptSampler([("digit", digit, d_ex, 3.0), ("letter", letter, l_ex, 1.0)], seed=1)
    b.load_state_dict(state)
    assert [(it.task_name, it.example.id) for it in b.next_items(30)] == expected
    with pytest.raises(ValueError, match="does not match"):
        PromptSampler([("digit", digit, d_ex, 1.0)], seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="weight"):
        PromptSampler([("digit", digit, d_ex, 0.0)], seed=2)
