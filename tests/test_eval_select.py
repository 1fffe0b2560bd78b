"""`d1 select` (d1.recipes.evaluation.select): validation-only checkpoint choice, optimistic flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from d1.core.sampling import SamplerConfig
from d1.recipes.evaluation.runner import EvalConfig
from d1.recipes.evaluation.select import SelectConfig, find_checkpoints, select_checkpoint
from d1.tasks import Example, Score, Task, register_task


class SpyTask(Task):
    """Records every split it is asked to load; 'correct' = an even first character code."""

    name = "spy"

    def __init__(self) -> None:
        self.splits: list[str] = []

    def load(self, split="train", *, path=None, limit=None, seed=0):
        self.splits.append(split)
        exs = [Example(id=str(i), question="q" * (2 + 3 * i), answer="W") for i in range(4)]
        return exs[:limit] if limit else exs

    def user_message(self, example):
        return example.question

    def reward_functions(self):
        return {}

    def score(self, completion, example):
        return Score(correct=float(bool(completion) and ord(completion[0]) % 2 == 0), parsed=None)


register_task("spy", f"{__name__}:SpyTask")  # a known name, so EvalConfig validates it


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer) -> Path:
    """A run folder laid out as the trainers write it (RUN/checkpoints/checkpoint-N) with three
    tiny checkpoints (different random weights), a stray folder and an unfinished one."""
    from d1.core.models import make_tiny_model
    from d1.core.models.tiny import init_weights_

    root = tmp_path_factory.mktemp("run")
    for step in (10, 20, 30):
        model, tok = make_tiny_model("tiny-xs", seed=0)
        init_weights_(model, torch.Generator().manual_seed(step), std=0.5)
        model.save_pretrained(root / "checkpoints" / f"checkpoint-{step}")
        tok.save_pretrained(root / "checkpoints" / f"checkpoint-{step}")
    (root / "checkpoints" / "logs").mkdir()
    (root / "checkpoints" / ".tmp-checkpoint-40").mkdir()
    return root


def _loader(path, cfg):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    import d1.core.models  # noqa: F401  (registers LLaDA with the Auto classes)

    tok = AutoTokenizer.from_pretrained(path)
    return AutoModelForMaskedLM.from_pretrained(path).eval(), tok, tok.mask_token_id, False


def _cfg(run_dir: Path, **kw) -> SelectConfig:
    sampler = SamplerConfig.for_eval(None, block_length=8)
    ev = EvalConfig(tasks=("spy",), gen_lengths=(8,), sampler=sampler, batch_size=4)
    return SelectConfig(run_dir=str(run_dir), eval=ev, **kw)


def test_find_checkpoints_in_training_order(run_dir: Path) -> None:
    found = find_checkpoints(run_dir)
    assert [c.step for c in found] == [10, 20, 30]
    with pytest.raises(FileNotFoundError, match="No checkpoints"):
        find_checkpoints(run_dir / "checkpoints" / "logs")
    assert [c.step for c in find_checkpoints(run_dir / "checkpoints")] == [10, 20, 30]


def test_select_never_reads_the_test_split(run_dir: Path, tmp_path: Path) -> None:
    spy = SpyTask()
    sel = select_checkpoint(_cfg(run_dir, out=str(tmp_path)), loader=_loader, tasks=[spy])
    assert spy.splits and set(spy.splits) == {"validation"}
    assert sel.split == "validation" and not sel.optimistic
    # The chosen checkpoint has the best validation score; ties go to the later one.
    best = max(s for _, s in sel.scores)
    assert sel.chosen.step == max(c.step for c, s in sel.scores if s == best)
    assert len({s for _, s in sel.scores}) > 1, "checkpoints should differ for the test to bite"
    saved = json.loads((tmp_path / "selection.json").read_text())
    assert saved["chosen_step"] == sel.chosen.step and saved["split"] == "validation"
    md = (tmp_path / "selection.md").read_text()
    assert "validation" in md and "OPTIMISTIC" not in md
    assert f"d1 eval --model {sel.chosen.path} --split test" in md


def test_best_on_test_is_explicit_and_labelled(run_dir: Path, tmp_path: Path) -> None:
    spy = SpyTask()
    sel = select_checkpoint(
        _cfg(run_dir, out=str(tmp_path), best_on_test=True), loader=_loader, tasks=[spy]
    )
    assert set(spy.splits) == {"test"}
    assert sel.optimistic
    saved = json.loads((tmp_path / "selection_best_on_test.json").read_text())
    assert saved["optimistic"] is True and saved["protocol"].startswith("OPTIMISTIC")
    assert "OPTIMISTIC" in (tmp_path / "selection_best_on_test.md").read_text()
    assert not (tmp_path / "selection.json").exists()
