"""Training reports (d1.report): PNG curves + markdown from a synthetic metrics JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from d1.report import group_keys, load_metrics, moving_average, numeric_series, write_report

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
    expected = {"reward", "accuracy", "kl", "completion_length", "clip_fraction", "loss", "lr"}
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
