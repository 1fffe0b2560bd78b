"""`d1 eval` runner (d1.recipes.evaluation.runner): batch-size invariance, seeds, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from d1.config import ConfigError, load_config
from d1.core.sampling import SamplerConfig
from d1.recipes.evaluation.runner import EvalConfig, effective_tokens, evaluate_model
from d1.tasks import Example, Score, Task, register_task


class ToyTask(Task):
    """Prompts of very different lengths (so batches need padding); 'correct' = has a 'W'."""

    name = "toy"

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def load(self, split="train", *, path=None, limit=None, seed=0):
        self.loaded.append(split)
        exs = [Example(id=str(i), question="ab" * (1 + 4 * i) + "?", answer="W") for i in range(7)]
        return exs[:limit] if limit else exs

    def user_message(self, example):
        return example.question

    def reward_functions(self):
        return {}

    def score(self, completion, example):
        return Score(correct=float(example.answer in completion), parsed=completion[:1] or None)


register_task("toy", f"{__name__}:ToyTask")  # a known name, so EvalConfig validates it


@pytest.fixture(scope="module")
def varied_model(tiny_model_factory):
    """A private tiny model with large random weights, so completions depend on the prompt."""
    from d1.core.models.tiny import init_weights_

    model = tiny_model_factory("tiny-xs", seed=0)
    init_weights_(model, torch.Generator().manual_seed(1), std=0.5)
    return model.eval()


def _run(model, tokenizer, temperature=0.0, **kw):
    sampler = SamplerConfig.for_eval(16, block_length=8, temperature=temperature)
    cfg = EvalConfig(model="toy-model", tasks=("toy",), gen_lengths=(16,), sampler=sampler, **kw)
    return evaluate_model(model, tokenizer, cfg, mask_id=tokenizer.mask_token_id, tasks=[ToyTask()])


def test_effective_tokens_counts_up_to_first_stop() -> None:
    assert effective_tokens([5, 6, 0, 7, 0], stop_ids=[0]) == 2
    assert effective_tokens([5, 6, 7], stop_ids=[0]) == 3
    assert effective_tokens([0, 5], stop_ids=[0, 5]) == 0


def test_batch_size_invariance_at_temperature_0(varied_model, tokenizer) -> None:
    r1 = _run(varied_model, tokenizer, batch_size=1)
    r4 = _run(varied_model, tokenizer, batch_size=4)
    g1 = [g.completion for g in r1.runs[0].generations]
    g4 = [g.completion for g in r4.runs[0].generations]
    assert g1 == g4
    assert len(set(g1)) > 1, "completions must depend on the prompt for the test to mean much"
    assert r1.runs[0].metrics == r4.runs[0].metrics
    assert [g.id for g in r4.runs[0].generations] == [str(i) for i in range(7)]  # data order


def test_seeds_collapse_when_deterministic_and_differ_when_sampling(
    varied_model, tokenizer
) -> None:
    det = _run(varied_model, tokenizer, seeds=(0, 1, 2), batch_size=4)
    assert [r.seed for r in det.runs] == [0]
    assert det.summary[0]["metrics"]["accuracy"]["ci_method"] == "wilson-examples"

    hot = _run(varied_model, tokenizer, seeds=(0, 1), temperature=1.0, batch_size=4)
    again = _run(varied_model, tokenizer, seeds=(0,), temperature=1.0, batch_size=4)
    c0, c1 = ([g.completion for g in r.generations] for r in hot.runs)
    assert c0 != c1
    assert [g.completion for g in again.runs[0].generations] == c0
    acc = hot.summary[0]["metrics"]["accuracy"]
    assert acc["ci_method"] == "t-seeds" and acc["n_seeds"] == 2
    assert acc["values"] == [r.metrics["accuracy"] for r in hot.runs]


def test_outputs_written_and_consistent(varied_model, tokenizer, tmp_path: Path) -> None:
    res = _run(varied_model, tokenizer, batch_size=3, out=str(tmp_path / "ev"))
    out = tmp_path / "ev"
    rows = [json.loads(x) for x in (out / "generations" / "toy_len16_seed0.jsonl").open()]
    assert len(rows) == 7
    assert {"id", "prompt", "completion", "parsed", "gold", "correct", "tokens"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["summary"][0]["metrics"]["accuracy"]["mean"]
    assert acc == pytest.approx(sum(r["correct"] for r in rows) / 7)
    assert acc == res.metric("toy", 16).mean
    tok = summary["summary"][0]["mean_effective_tokens"]
    assert tok == pytest.approx(sum(r["tokens"] for r in rows) / 7)
    md = (out / "summary.md").read_text()
    assert "| toy | 16 | 7 |" in md
    assert json.loads((out / "config.json").read_text())["config"]["split"] == "test"


def test_sampler_defaults_follow_d1() -> None:
    cfg = EvalConfig()
    s = cfg.sampler_config(256)
    assert (s.gen_length, s.block_length, s.num_steps, s.temperature) == (256, 32, 128, 0.0)
    assert cfg.sampler_config(128).num_steps == 64 and cfg.sampler_config(512).num_steps == 256
    assert cfg.gen_lengths == (128, 256, 512) and cfg.split == "test"
    # One explicit steps value applies to every length; each length is validated.
    fixed = EvalConfig(gen_lengths=(128, 256), sampler=SamplerConfig(gen_length=None, steps=64))
    assert [fixed.sampler_config(g).num_steps for g in (128, 256)] == [64, 64]
    twelve = SamplerConfig(gen_length=None, steps=12)
    with pytest.raises(ConfigError, match=r"sampler\.steps.*at gen length 256.*number of blocks"):
        EvalConfig(gen_lengths=(128, 256), sampler=twelve)
    assert EvalConfig(gen_lengths=(128,), sampler=twelve).sampler_config(128).num_steps == 12


def test_eval_config_from_yaml_and_keyed_errors(tmp_path: Path) -> None:
    path = tmp_path / "ev.yaml"
    path.write_text(
        "model: tiny-xs\ntasks: [sudoku]\ngen_lengths: [64]\n"
        "sampler: {name: fast, cache: dual, threshold: 0.95}\n"
    )
    cfg = load_config(EvalConfig, path)
    assert (cfg.sampler.name, cfg.sampler.cache, cfg.sampler.threshold) == ("fast", "dual", 0.95)
    assert cfg.sampler_config(64).generate_kwargs()["threshold"] == 0.95
    cases = {
        "sampler.threshold=1.5": r"'sampler\.threshold'.*\(0, 1\]",
        "sampler.thresold=0.9": r"'sampler\.thresold': unknown key.*Did you mean 'sampler\.threshold'",
        "sampler.name=reference": r"'sampler\.(cache|threshold)'.*no .* setting",
        "sampler.gen_length=32": r"'sampler\.gen_length'.*set gen_lengths",
        "steps=16": r"'steps': this key moved: write sampler\.steps=16",
        "tasks=[bogus]": r"'tasks'.*unknown task 'bogus'",
        "gen_lengths=[0]": r"'gen_lengths'.*positive",
        "sampler=fast": r"expected a section.*write sampler\.name=fast",
    }
    for override, match in cases.items():
        with pytest.raises(ConfigError, match=match):
            load_config(EvalConfig, path, [override])
    # A config's own dump loads back unchanged.
    from d1.config import save_config

    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(EvalConfig, tmp_path / "saved.yaml") == cfg


def test_eval_cli_end_to_end_on_a_builtin_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from d1.cli import app

    out = tmp_path / "ev"
    args = ["eval", "--model", "tiny-xs", "--tasks", "sudoku", "--gen-lengths", "16"]
    args += ["--block-length", "16", "--steps", "4", "--limit", "3", "--batch-size", "2"]
    args += ["--task-option", "sudoku.prompt_style=compact", "--out", str(out), "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "| sudoku | 16 | 3 |" in res.output
    rows = [json.loads(x) for x in (out / "generations" / "sudoku_len16_seed0.jsonl").open()]
    assert len(rows) == 3 and rows[0]["prompt"].endswith("assistant<|end_header_id|>\n\n")
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["summary"][0]["metrics"]) == {"accuracy", "cell_accuracy_mean", "solved"}


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "configs" / "eval").glob("*.yaml"))
)
def test_shipped_eval_configs_load(path: Path) -> None:
    cfg = load_config(EvalConfig, path, ["model=tiny"])
    assert cfg.gen_lengths == (128, 256, 512) and cfg.sampler.temperature == 0.0
