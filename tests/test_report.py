"""Training reports (d1.recipes.report): PNG curves + markdown from a synthetic metrics JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from d1.recipes.report import (
    GROUPS,
    group_keys,
    load_metrics,
    make_figure,
    moving_average,
    numeric_series,
    plan_figures,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_metrics(path: Path, n: int = 30) -> None:
    with path.open("w", encoding="utf-8") as f:
        for step in range(1, n + 1):
            row = {
                "step": step,
                "reward": {"xml_count": 0.1 * step / n, "correctness": 2.0 * step / n},
                "reward_total": 2.1 * step / n,
                "accuracy": step / n,
                "kl": 0.001 * step,
                "completion_length": 200 - step,
                "clip_fraction": 0.05,
                "loss": 1.0 / step,
                "lr": 3e-6,
                "phase": "grpo",  # a string: never plotted
            }
            f.write(json.dumps(row) + "\n")
            if step % 10 == 0:  # an eval row logged at another frequency
                f.write(json.dumps({"step": step, "eval/accuracy": 0.5 + step / 100}) + "\n")
        f.write("\n")


def test_report_writes_pngs_and_markdown(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _write_metrics(run / "metrics.jsonl")
    sample = {"step": 30, "reward": 1.0, "completion": "<answer>\n" + "1234" * 20 + "\n</answer>"}
    (run / "samples.jsonl").write_text(json.dumps(sample) + "\n")
    res = write_report(run)
    assert res.markdown == run / "report" / "report.md"
    assert res.n_rows == 33
    # clip_fraction and lr never change: listed, not plotted
    expected = {"reward", "accuracy", "kl", "completion_length", "loss"}
    assert set(res.figures) == expected
    for png in res.figures.values():
        assert png.read_bytes()[:8] == PNG_MAGIC
    md = res.markdown.read_text()
    for stem in expected:
        assert f"![{stem}]({stem}.png)" in md
    # Table rows carry first / last values of the flattened keys.
    assert "| reward/correctness | 30 | 0.06667 | 2 |" in md
    assert "| eval/accuracy | 3 | 0.6 | 0.8 |" in md
    assert "phase" not in md
    assert "Constant (not plotted): `clip_fraction`, `lr`." in md
    assert "| lr | 30 | 3.000e-06 |" in md
    assert "## Sample completions (last 1 of `samples.jsonl`)" in md
    assert "step: 30, reward: 1.0" in md and "1234" * 20 in md


def test_series_and_grouping(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    _write_metrics(p, n=10)
    rows = load_metrics(p)
    x_key, series = numeric_series(rows)
    assert x_key == "step"
    assert series["eval/accuracy"] == ([10.0], [0.6])
    assert series["reward/xml_count"][0] == [float(s) for s in range(1, 11)]
    groups = group_keys(series)
    assert groups["reward"] == ["reward/correctness", "reward/xml_count", "reward_total"]
    assert groups["accuracy"] == ["accuracy", "eval/accuracy"]
    assert list(groups)[:2] == ["reward", "accuracy"]
    assert group_keys(["weird metric!"]) == {"weird_metric": ["weird metric!"]}


def test_moving_average_by_hand() -> None:
    assert moving_average([1, 2, 3, 4], 2) == [1.0, 1.5, 2.5, 3.5]


def test_bad_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metrics"):
        write_report(tmp_path)
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        load_metrics(bad)


def _grpo_rows(n: int = 40) -> list[dict]:
    """Rows shaped like diffu-GRPO's metrics.jsonl, with a gradient spike, a ratio spike, a KL
    that grows over decades, cumulative compute counts and a flat eval count."""
    rows = []
    for step in range(1, n + 1):
        row = {
            "step": step,
            "train/reward": 0.1 * step,
            "train/rewards/gsm8k/correctness": 0.05 * step,
            "train/reward/timeouts": 0.0,
            "train/grad_norm": 1000.0 if step == 20 else 0.5 + 0.01 * step,
            "train/ratio/max": 50.0 if step == 20 else 1.05,
            "train/ratio/min": 0.01 if step == 20 else 0.95,
            "train/ratio/mean": 1.0,
            "train/kl": 0.0 if step == 1 else 1e-6 * 1.3**step,
            "train/loss": 0.01 * (-1) ** step,
            "eval/n": 64,
            "time/seconds_per_step": 2.0 + step % 3,
            "train/tokens_per_s": 1000.0 + step,
        }
        for i, name in enumerate(
            ["forward_passes", "backward_passes", "generations", "generation_batches",
             "optimizer_steps", "sampler_forward_passes", "ref_forward_passes",
             "old_forward_passes", "policy_forward_passes", "extra_a", "extra_b"]
        ):  # fmt: skip
            row[f"compute/{name}"] = (i + 1) * step
        row["compute/forward_tokens"] = 300 * step
        row["compute/sampler_tokens"] = 2500 * step
        rows.append(row)
    return rows


@pytest.fixture
def figures():
    """`figures(rows)` -> ({stem: matplotlib Figure}, constant keys), as `write_report` plans
    them; closed after the test."""
    import matplotlib.pyplot as plt

    def build(rows):
        x_key, series = numeric_series(rows)
        planned, constant = plan_figures(series)
        made = {stem: make_figure(g, x_key, members) for stem, (g, members) in planned.items()}
        return made, constant

    yield build
    plt.close("all")


def test_figures_have_labels_log_scales_and_distinct_colours(figures) -> None:
    made, constant = figures(_grpo_rows())
    # a flat series is not plotted anywhere
    assert constant == ["eval/n", "train/ratio/mean", "train/reward/timeouts"]
    plotted = {line.get_label() for fig in made.values() for line in fig.axes[0].get_lines()}
    assert not any("eval/n" in label or "timeouts" in label for label in plotted)
    ylabels = {g.stem: g.ylabel for g in GROUPS}
    for stem, fig in made.items():
        (ax,) = fig.axes
        assert ax.get_xlabel() == "optimizer step", stem
        assert ax.get_ylabel() and ax.get_ylabel() == ylabels.get(stem, ax.get_ylabel()), stem
        assert ax.get_title(), stem
        # one colour per series: the labelled (legend) lines never share a colour
        labelled = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        colours = [tuple(ln.get_color()) for ln in labelled]
        assert len(set(colours)) == len(colours), stem
    scales = {stem: fig.axes[0].get_yscale() for stem, fig in made.items()}
    for stem in ("grad_norm", "ratio", "kl", "compute", "compute_tokens"):
        assert scales[stem] == "log", stem
    for stem in ("reward", "loss", "time", "throughput"):
        assert scales[stem] == "linear", stem
    # the compute figure does not mix counts of passes with token counts
    compute = {ln.get_label() for ln in made["compute"].axes[0].get_lines()}
    tokens = {ln.get_label() for ln in made["compute_tokens"].axes[0].get_lines()}
    assert len([c for c in compute if not c.startswith("_")]) == 11
    assert not any("tokens" in c for c in compute)
    assert all("tokens" in t for t in tokens if not t.startswith("_"))
    assert made["time"].axes[0].get_ylabel() == "seconds"
    assert made["throughput"].axes[0].get_ylabel() == "tokens per second"


def test_log_scale_only_where_the_values_span_a_decade(figures) -> None:
    rows = [
        {"step": s, "train/grad_norm": 1.0 + 0.1 * s, "train/ratio/max": 1.0 + 0.01 * s}
        for s in range(1, 10)
    ]
    made, _ = figures(rows)
    assert made["grad_norm"].axes[0].get_yscale() == "linear"  # 1.1 .. 1.9: within a decade
    assert made["ratio"].axes[0].get_yscale() == "linear"
