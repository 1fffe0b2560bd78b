"""One sampler configuration everywhere: the package's import graph, compute accounting pinned
by hand for every mode, EOS early exit, and `SamplerConfig` reaching `d1 eval`, `d1 grpo` and
`d1 generate` from YAML and flags, with keyed errors before any model loads."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from d1.cli import SAMPLER_CHOICES, _show_tokens, app
from d1.config import ConfigError, load_config
from d1.core.models import LLaDAConfig, LLaDAModelLM
from d1.core.models.tiny import init_weights_
from d1.core.sampling import (
    SamplerConfig,
    SamplingStats,
    generate,
    generate_fast,
    left_pad,
    sample,
    sampler_names,
)
from d1.recipes.grpo.config import GRPOConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "d1"
MASK, PAD, EOS, VOCAB = 39, 1, 2, 40


# ----------------------------------------------------------------------------- import graph


def _module_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every module-level `from d1... import ...` in `path`."""
    tree = ast.parse(path.read_text())
    found = []
    for node in tree.body:  # module level only: imports inside functions are deferred
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("d1"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("d1")]
    return found


def test_no_module_imports_a_private_name_of_another() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        for module, names in _module_imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                offenders.append(f"{path.relative_to(SRC)}: from {module} import {private}")
    assert not offenders, offenders


def test_sampling_package_has_no_import_circle() -> None:
    pkg = SRC / "core" / "sampling"
    graph: dict[str, set[str]] = {}
    for path in pkg.glob("*.py"):
        if path.name == "__init__.py":
            continue
        deps = set()
        for module, _ in _module_imports(path):
            assert module != "d1.core.sampling", f"{path.name} imports the package it belongs to"
            if module.startswith("d1.core.sampling."):
                deps.add(module.rsplit(".", 1)[1])
        graph[path.stem] = deps

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"import circle: {' -> '.join((*stack, node))}"
        for dep in graph.get(node, ()):
            visit(dep, (*stack, node))

    for node in graph:
        visit(node, ())
    # The layering the package docstring describes: steps at the bottom, the loop on it, the
    # reference sampler as the loop with its options off.
    assert graph["steps"] == set()
    assert graph["fast"] == {"steps"} and graph["reference"] == {"fast", "steps"}
    assert graph["registry"] == {"reference", "fast"}


def test_cli_lists_every_registered_sampler() -> None:
    assert sorted(SAMPLER_CHOICES.split(" | ")) == sampler_names()
    result = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert all(name in result.output for name in sampler_names())


def test_show_tokens(tokenizer) -> None:
    ids = tokenizer("a\nb", add_special_tokens=False)["input_ids"]
    mask = tokenizer.mask_token_id
    assert _show_tokens(tokenizer, [*ids, mask, mask], mask) == "a⏎b░░"


# ----------------------------------------------------------------------------- compute counts


def _llada(seed: int = 0, head_scale: float = 1.0) -> LLaDAModelLM:
    config = LLaDAConfig(
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        mlp_hidden_size=48,
        vocab_size=VOCAB,
        embedding_size=VOCAB,
        rope_theta=10000.0,
        mask_token_id=MASK,
        eos_token_id=EOS,
        pad_token_id=PAD,
        bos_token_id=0,
    )
    model = LLaDAModelLM(config)
    init_weights_(model, torch.Generator().manual_seed(seed), std=0.2)
    with torch.no_grad():
        model.model.transformer.ff_out.weight.mul_(head_scale)
    return model.double().eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    # Two prompts, padded to P = 5: sequences of 5 + 12 = 17 positions.
    return left_pad([[3, 4, 5, 6, 7], [8, 9, 10]], PAD)


def _stats(config: SamplerConfig, model: torch.nn.Module | None = None) -> SamplingStats:
    ids, attn = _batch()
    stats = SamplingStats()
    sample(model or _llada(), ids, attn, config=config, mask_id=MASK, stats=stats)
    return stats


# gen 12 = 3 blocks of 4, 6 steps (2 per block); 2 rows of P + gen = 17 positions.
BASE = dict(gen_length=12, block_length=4, steps=6)


@pytest.mark.parametrize(
    "settings,expected",
    [
        # reference: every step a full pass of both rows: 6 calls x 2 rows x 17 positions.
        (
            {},
            dict(steps=6, full_forwards=6, cached_forwards=0, full_sequences=12, query_tokens=204),
        ),
        # CFG doubles the rows of every call (conditional + unconditional, batched).
        (
            {"cfg_scale": 1.0},
            dict(steps=6, full_forwards=6, full_sequences=24, query_tokens=408),
        ),
        # prefix: per block one refresh (2 x 17) + one chunk from the block start to the end:
        # 12, 8 and 4 positions for blocks 0, 1, 2.
        (
            {"name": "fast", "cache": "prefix"},
            dict(
                steps=6,
                full_forwards=3,
                cached_forwards=3,
                full_sequences=6,
                cached_sequences=6,
                query_tokens=3 * 34 + 2 * (12 + 8 + 4),
            ),
        ),
        # dual: the chunk is the block only (4 positions).
        (
            {"name": "fast", "cache": "dual"},
            dict(full_forwards=3, cached_forwards=3, query_tokens=3 * 34 + 3 * 2 * 4),
        ),
        # fast without cache is the reference's work exactly.
        (
            {"name": "fast", "cache": "none"},
            dict(steps=6, full_forwards=6, cached_forwards=0, query_tokens=204),
        ),
    ],
)
def test_sampling_stats_pinned_by_hand(settings, expected) -> None:
    stats = _stats(SamplerConfig(**BASE, **settings))
    for key, value in expected.items():
        assert getattr(stats, key) == value, (key, stats)
    assert stats.model_calls == stats.full_forwards + stats.cached_forwards


def test_threshold_counts_follow_the_adaptive_steps() -> None:
    # A confident model (sharp head): with threshold 0.5 a block may finish in one step. The
    # counts must equal what a trace of the decoding shows: one call per step, all full
    # passes without a cache.
    model = _llada(3, head_scale=30.0)
    ids, attn = _batch()
    trace: list[torch.Tensor] = []
    stats = SamplingStats()
    cfg = SamplerConfig(**BASE, name="fast", cache="none", threshold=0.5)
    sample(model, ids, attn, config=cfg, mask_id=MASK, stats=stats, trace=trace)
    assert stats.steps == len(trace) < 6  # fewer steps than the fixed schedule
    assert stats.full_forwards == stats.steps and stats.cached_forwards == 0
    assert stats.query_tokens == stats.steps * 2 * 17
    # With the dual cache: one refresh per block, the other steps are 4-position chunks.
    stats = SamplingStats()
    cfg = SamplerConfig(**BASE, name="fast", cache="dual", threshold=0.5)
    sample(model, ids, attn, config=cfg, mask_id=MASK, stats=stats)
    assert stats.full_forwards == 3
    assert stats.query_tokens == 3 * 34 + stats.cached_forwards * 2 * 4


# ----------------------------------------------------------------------------- early exit


class EndsEarly(torch.nn.Module):
    """A model that writes token 3 + (position % 5) until position `P + end[b]` of row b and EOS
    from there on, whatever it sees: a model that ends early and pads with EOS."""

    def __init__(self, prompt_len: int, ends: list[int]):
        super().__init__()
        self.prompt_len, self.ends = prompt_len, ends

    def forward(self, input_ids: torch.Tensor, attention_mask=None):
        b, n = input_ids.shape
        pos = torch.arange(n)
        logits = torch.zeros(b, n, VOCAB, dtype=torch.float64)
        for row in range(b):
            # CFG rows repeat the batch: row r and r + B/2 share an end.
            end = self.prompt_len + self.ends[row % len(self.ends)]
            target = torch.where(pos >= end, EOS, 3 + pos % 5)
            logits[row, pos, target] = 5.0 + pos.double() / n  # distinct confidences
        return logits


@pytest.mark.parametrize("threshold", [None, 0.5])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_early_exit_equals_the_full_run_on_a_model_that_ends_early(threshold, temperature):
    ids, attn = _batch()
    model = EndsEarly(ids.shape[1], ends=[3, 6])  # rows end in blocks 0 and 1 of 4
    kw = dict(gen_length=16, block_length=4, steps=8, mask_id=MASK, temperature=temperature)
    kw.update(cache="none", threshold=threshold)
    full_stats, exit_stats = SamplingStats(), SamplingStats()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    full = generate_fast(model, ids, attn, generator=g1, stats=full_stats, **kw)
    early = generate_fast(
        model, ids, attn, generator=g2, stats=exit_stats, early_exit=True, eos_id=EOS, **kw
    )
    assert torch.equal(early, full)
    assert exit_stats.early_exit_blocks == 2  # both rows ended by block 1: blocks 2, 3 skipped
    assert exit_stats.model_calls < full_stats.model_calls
    # Off by default: the default config never exits early.
    assert not SamplerConfig(name="fast").early_exit


def test_early_exit_keeps_the_text_up_to_the_first_eos_on_any_model() -> None:
    # A random native LLaDA with the cache: after every row's first EOS the tokens may differ
    # (EOS instead of what the model would write), before it they are the same.
    model = _llada(7, head_scale=4.0)
    ids, attn = _batch()
    kw = dict(gen_length=16, block_length=4, steps=8, mask_id=MASK, cache="dual")
    full = generate_fast(model, ids, attn, **kw)[:, ids.shape[1] :]
    # Call the most common token of the first block "EOS" so every row ends early.
    eos = int(torch.mode(full[:, :4].flatten()).values)
    early = generate_fast(model, ids, attn, early_exit=True, eos_id=eos, **kw)[:, ids.shape[1] :]
    for row_full, row_early in zip(full.tolist(), early.tolist(), strict=True):
        cut = row_full.index(eos) if eos in row_full else len(row_full)
        assert row_early[: cut + 1] == row_full[: cut + 1]
    with pytest.raises(ValueError, match="eos_id"):
        generate_fast(model, ids, attn, early_exit=True, **kw)


def test_fast_without_cache_and_threshold_is_the_reference() -> None:
    model = _llada(11)
    ids, attn = _batch()
    kw = dict(gen_length=12, block_length=4, steps=6, temperature=0.8, mask_id=MASK)
    ref = generate(model, ids, attn, generator=torch.Generator().manual_seed(2), **kw)
    fast = generate_fast(
        model, ids, attn, cache="none", generator=torch.Generator().manual_seed(2), **kw
    )
    assert torch.equal(ref, fast)


# ----------------------------------------------------------------------------- configs


def test_grpo_sampler_section_and_moved_keys() -> None:
    cfg = load_config(
        GRPOConfig,
        "configs/grpo/gsm8k.yaml",
        ["grpo.sampler.name=fast", "grpo.sampler.cache=dual", "grpo.sampler.threshold=0.95"],
    )
    s = cfg.grpo.sampler
    assert (s.name, s.cache, s.threshold, s.gen_length, s.num_steps) == (
        "fast",
        "dual",
        0.95,
        256,
        128,
    )
    # The paper configs keep their values.
    paper = load_config(GRPOConfig, "configs/grpo/gsm8k.yaml").grpo.sampler
    assert (paper.name, paper.gen_length, paper.block_length, paper.steps) == (
        "reference",
        256,
        32,
        128,
    )
    assert paper.temperature == 0.9
    moved = {
        "grpo.max_completion_length=128": "grpo.sampler.gen_length=128",
        "grpo.block_length=16": "grpo.sampler.block_length=16",
        "grpo.diffusion_steps=64": "grpo.sampler.steps=64",
        "grpo.temperature=0.5": "grpo.sampler.temperature=0.5",
        "grpo.cfg_scale=1.0": "grpo.sampler.cfg_scale=1.0",
        "grpo.remasking=random": "grpo.sampler.remasking=random",
        "grpo.sampler=fast": "grpo.sampler.name=fast",
    }
    for old, new in moved.items():
        with pytest.raises(ConfigError, match="write " + re.escape(new)):
            load_config(GRPOConfig, None, [old])


def _family_folder(tmp_path: Path, model_type: str) -> Path:
    """A model folder with only a config.json (no weights): loading it would fail."""
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


@pytest.mark.parametrize(
    "args,match",
    [
        (["--sampler-option", "thresold=0.9"], r"'sampler\.thresold'.*'sampler\.threshold'"),
        (["--sampler", "fast", "--sampler-option", "threshold=1.5"], r"'sampler\.threshold'"),
        (["--sampler", "fast", "--sampler-option", "threshold=0"], r"\(0, 1\]"),
        (["--sampler-option", "cache=dual"], r"'sampler\.cache'.*name='fast'"),
        (["--sampler", "slow"], r"'sampler\.name'.*unknown sampler 'slow'.*fast, reference"),
        (["--sampler-option", "cache"], r"KEY=VALUE"),
    ],
)
def test_eval_bad_sampler_options_exit_2_naming_the_key(args, match) -> None:
    # The model is a hub id that cannot be reached: the error must come before loading it.
    base = ["eval", "--model", "no-such/model", "--tasks", "sudoku", "--gen-lengths", "32"]
    res = CliRunner().invoke(app, [*base, *args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert re.search(match, res.output.replace("\n", " ")), res.output


def test_cache_with_a_model_family_that_has_none(tmp_path: Path) -> None:
    dream = _family_folder(tmp_path, "Dream")
    runner = CliRunner()
    for cmd in (
        ["eval", "--model", str(dream), "--sampler", "fast", "--tasks", "sudoku"],
        ["generate", "--model", str(dream), "--prompt", "hi", "--sampler", "fast"],
    ):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2, res.output
        assert "sampler.cache" in res.output and "cache=none" in res.output
    args = f"eval --model {dream} --sampler fast --sampler-option cache=none --tasks sudoku"
    ok = runner.invoke(app, [*args.split(), "--print-config"])
    assert ok.exit_code == 0, ok.output
    with pytest.raises(ConfigError, match=r"'grpo\.sampler\.cache'.*'dream' model"):
        load_config(
            GRPOConfig,
            "configs/grpo/tiny-sudoku.yaml",
            [f"model.name_or_path={dream}", "grpo.sampler.name=fast"],
        )


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def confident_model(tmp_path_factory) -> Path:
    """A saved tiny-xs LLaDA with a sharpened head: confident predictions, so threshold 0.95
    commits several tokens per step (an untrained model never would), but not whole blocks at
    once (x44, measured: 11 calls for 4 blocks of 8 on these prompts, 7 of them cached)."""
    from d1.core.models import make_tiny_model

    model, tok = make_tiny_model("tiny-xs", seed=0)
    with torch.no_grad():
        model.model.transformer.ff_out.weight.mul_(44.0)
    folder = tmp_path_factory.mktemp("confident")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _eval_calls(model: Path, out: Path, *extra: str) -> dict:
    cfg = out.with_suffix(".yaml")
    cfg.write_text(
        f"model: {model}\ntasks: [sudoku]\ngen_lengths: [32]\nlimit: 4\nbatch_size: 4\n"
        "task_options: {sudoku: {prompt_style: compact}}\n"
        "sampler: {block_length: 8}\n"
    )
    res = CliRunner().invoke(
        app, ["eval", "--config", str(cfg), "--out", str(out), "--no-progress", *extra]
    )
    assert res.exit_code == 0, res.output
    return json.loads((out / "summary.json").read_text())["summary"][0]["compute"]


def test_eval_yaml_and_flags_reach_the_sampler(confident_model: Path, tmp_path: Path) -> None:
    ref = _eval_calls(confident_model, tmp_path / "ref")
    assert ref["model_calls"] == 16 and ref["cached_forwards"] == 0  # steps = 32 / 2, 1 batch
    yaml_cfg = tmp_path / "fast.yaml"
    yaml_cfg.write_text(
        f"model: {confident_model}\ntasks: [sudoku]\ngen_lengths: [32]\nlimit: 4\n"
        "batch_size: 4\ntask_options: {sudoku: {prompt_style: compact}}\n"
        "sampler: {name: fast, cache: dual, threshold: 0.95, block_length: 8}\n"
    )
    out = tmp_path / "fast"
    res = CliRunner().invoke(
        app, ["eval", "--config", str(yaml_cfg), "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    fast = json.loads((out / "summary.json").read_text())["summary"][0]
    assert fast["sampler"]["name"] == "fast" and fast["sampler"]["threshold"] == 0.95
    # The dual cache ran (chunk calls) and the threshold cut the calls per block (4 blocks).
    assert fast["compute"]["cached_forwards"] > 0
    assert fast["compute"]["model_calls"] / 4 < ref["model_calls"] / 4
    # The same through flags on the plain config.
    flags = _eval_calls(
        confident_model,
        tmp_path / "flags",
        "--sampler",
        "fast",
        "--sampler-option",
        "cache=dual,threshold=0.95",
    )
    assert flags == fast["compute"]


def test_grpo_yaml_sampler_reaches_the_rollouts(confident_model: Path, tmp_path: Path) -> None:
    from d1.recipes.grpo.trainer import train_grpo

    def run(name: str, sampler: str) -> dict:
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            f"model: {{name_or_path: {confident_model}, load_in_4bit: false}}\n"
            "lora: null\nglobal_batch_size: 4\n"
            f"train: {{max_steps: 2, num_threads: 1, output_dir: {tmp_path / name}, "
            "report_to: [none], save_steps: null, progress: 'off', per_device_batch_size: 4}\n"
            "grpo:\n  num_generations: 2\n  num_iterations: 2\n"
            "  sampler: {gen_length: 32, block_length: 8, temperature: 0" + sampler + "}\n"
            "tasks: [{name: sudoku, limit: 8, options: {prompt_style: compact}}]\n"
        )
        result = train_grpo(path)
        rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").open()]
        return rows[-1]

    ref = run("ref", ", name: reference")
    fast = run("fast", ", name: fast, cache: dual, threshold: 0.95")
    default = run("default", "")
    # One generation batch of 4 completions (one sampler call): reference 16 full calls.
    assert ref["compute/sampler_model_calls"] == 16
    assert ref["compute/sampler_forward_passes"] == 16 * 4
    assert ref["compute/sampler_chunk_passes"] == 0
    # The RL default: the same 16 steps, one refresh per block of 8 and chunk calls otherwise.
    assert default["compute/sampler_model_calls"] == 16
    assert default["compute/sampler_forward_passes"] == 4 * 4
    assert default["compute/sampler_chunk_passes"] == 12 * 4
    # The dual cache ran (chunk calls) and the threshold cut the calls per block.
    assert fast["compute/sampler_chunk_passes"] > 0
    assert fast["compute/sampler_model_calls"] < ref["compute/sampler_model_calls"]
    assert fast["compute/sampler_tokens"] < ref["compute/sampler_tokens"]
