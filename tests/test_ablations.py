"""`benchmarks/ablations.py --quick` end to end: every ablation's table and PNG is written from
finished cells, and a rerun resumes (nothing re-trained) with the same numbers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path, *extra: str) -> str:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "ablations.py"),
            *("--quick", "--out", str(out), "--no-progress", *extra),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
    ).stdout


def test_ablations_quick_writes_tables_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "abl"
    text = _run(out)
    md = (out / "ablations.md").read_text()
    assert md in text
    for ablation in ("p_mask", "mu", "stages"):
        png = out / f"ablation_{ablation}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{ablation}](ablation_{ablation}.png)" in md
    for heading in ("Prompt masking", "Inner iterations mu", "Stages"):
        assert f"### {heading}" in md
    assert "Missing cells: none." in md
    # Every row of the three tables: both seeds finished, accuracies are percentages.
    rows = [line for line in md.splitlines() if re.match(r"\| [0-9a-zA-Z]", line)]
    table_rows = [r for r in rows if "/2" in r.split("|")[2]]
    assert len(table_rows) == 2 + 2 + 4  # p_mask {0, 0.15}, mu {1, 2}, four stages
    for row in table_rows:
        cols = [c.strip() for c in row.strip("|").split("|")]
        assert cols[1] == "2/2"
        mean, std = (float(v) for v in cols[2].split(" ± "))
        assert 0.0 <= mean <= 100.0 and std >= 0.0
    # Each RL cell: one reward per generation batch, generations growing by a batch's worth.
    cell = json.loads((out / "seed0" / "cells" / "sft-p0.15-mu2.json").read_text())
    gens = [g for g, _ in cell["curve"]]
    assert gens == [4, 8] and cell["steps"] == 4
    assert all(0.0 <= r <= 10.0 for _, r in cell["curve"])
    mu1 = json.loads((out / "seed0" / "cells" / "sft-p0.15-mu1.json").read_text())
    assert mu1["steps"] == 2 and [g for g, _ in mu1["curve"]] == gens  # same generations
    # Resume: finished cells are read back, not re-run; the report is identical.
    before = {p: p.stat().st_mtime_ns for p in out.glob("seed*/cells/*.json")}
    _run(out)
    assert {p: p.stat().st_mtime_ns for p in out.glob("seed*/cells/*.json")} == before
    assert (out / "ablations.md").read_text() == md
