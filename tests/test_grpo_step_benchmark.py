"""benchmarks/grpo_step.py: its "faithful" mode computes d1's quantities (so the comparison is
like with like), its W1 preset has the issue's shape, and `--quick --compare` runs end to end
(timings are measurements, never asserted)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_grpo_step", ROOT / "benchmarks" / "grpo_step.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_w1_preset_shape_and_reward() -> None:
    bench = _bench()
    model = bench.w1_model()
    c = model.config
    assert (c.d_model, c.n_layers, c.n_heads, c.mlp_hidden_size, c.vocab_size) == (
        64,
        2,
        4,
        96,
        300,
    )
    assert c.mask_token_id == 299 and c.eos_token_id == 298
    ids = torch.tensor([[2, 4, 5, 298, 7], [1, 3, 5, 7, 9]])
    mask = torch.tensor([[True] * 4 + [False], [True] * 5])
    # Row 0: 2, 4 and the EOS (298) are even among its 4 valid tokens.
    assert bench.even_share_reward(ids, mask).tolist() == [0.75, 0.0]


def test_faithful_estimator_and_loss_are_the_projects() -> None:
    from d1.core.likelihood import estimate_logps
    from d1.recipes.grpo.loss import grpo_loss

    bench = _bench()
    torch.set_num_threads(1)
    model = bench.w1_model().eval()
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 296, (4, 9), generator=g)
    pmask = torch.ones_like(prompt)
    pmask[0, :2] = 0
    completion = torch.randint(0, 299, (4, 12), generator=g)
    noise = (torch.rand(prompt.shape, generator=g) < 0.3) & pmask.bool()
    with torch.no_grad():
        ours = estimate_logps(model, prompt, pmask, completion, mask_id=299, prompt_noise=noise)
        d1 = bench.d1_one_step_logps(model, prompt, pmask, completion, noise, 299)
    torch.testing.assert_close(d1, ours, rtol=0, atol=1e-5)
    old = ours + 0.1 * torch.randn(ours.shape, generator=g)
    ref = ours + 0.1 * torch.randn(ours.shape, generator=g)
    adv = torch.tensor([0.5, -0.5, 1.0, 0.0])
    cmask = torch.ones_like(completion, dtype=torch.bool)
    weights = cmask.float() / cmask.sum()
    project = grpo_loss(
        ours, old, adv, cmask, epsilon=0.5, beta=0.04, ref_logps=ref, weights=weights
    ).loss
    torch.testing.assert_close(bench.d1_loss(ours, old, ref, adv, weights, 0.5, 0.04), project)


def test_quick_compare_prints_both_modes_and_the_split(tmp_path: Path) -> None:
    rows_file = tmp_path / "rows.json"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "grpo_step.py"),
            "--quick",
            "--json",
            str(rows_file),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env={**os.environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1"},
    ).stdout
    progress = [ln for ln in out.splitlines() if ln.startswith("mu ")]
    assert [ln.split(":")[0] for ln in progress] == [
        "mu 1 faithful",
        "mu 1 fast",
        "mu 4 faithful",
        "mu 4 fast",
    ]
    header = next(ln for ln in out.splitlines() if ln.startswith("┃") and "s / step" in ln)
    for column in ("rollout", "old", "ref", "forward", "backward", "optimizer", "rollout-free"):
        assert column in header
    rows = {(r["mode"], r["mu"]): r for r in json.loads(rows_file.read_text())}
    for r in rows.values():
        assert r["cpu"]["rollout"] > 0 and r["cpu"]["forward"] > 0 and r["cpu"]["backward"] > 0
    # Measured no-grad logits: d1's giant batch holds mu x N rows (1 prompt x G 6) and every
    # position; the project's chunks hold the micro-batch and the completion only, at any mu.
    assert rows[("faithful", 4)]["nograd_rows"] == 24
    assert rows[("fast", 1)]["nograd_rows"] == rows[("fast", 4)]["nograd_rows"] == 6
    assert rows[("fast", 4)]["nograd_logits_mib"] == rows[("fast", 1)]["nograd_logits_mib"]
    assert rows[("fast", 4)]["nograd_logits_mib"] < rows[("faithful", 1)]["nograd_logits_mib"]


def test_rl_rollouts_quick_runs_and_reports(tmp_path: Path) -> None:
    """benchmarks/rl_rollouts.py: SFT once per seed, RL per rollout setting from it, checkpoint
    evaluations, then the table (with the paired differences) and the plot."""
    script = str(ROOT / "benchmarks" / "rl_rollouts.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--quick", "--out", str(tmp_path), "--seeds", "0"]
    settings = ["--settings", "reference:name=reference", "fast-dual:name=fast,cache=dual"]
    subprocess.run(
        [sys.executable, script, *common, *settings, "--eval-every", "1", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env=env,
    )
    out = subprocess.run(
        [sys.executable, script, *common, "--report"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=env,
    ).stdout
    table = [
        ln for ln in out.splitlines() if ln.startswith("| reference") or ln.startswith("| fast")
    ]
    assert [ln.split("|")[1].strip() for ln in table] == ["reference", "fast-dual", "fast-dual"]
    assert "fast (cache dual)" in table[1]
    assert (tmp_path / "rl_rollouts.png").is_file()
