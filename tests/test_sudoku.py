"""4x4 Sudoku: solver, generator, d1's reward, generous scoring, metrics, CSV (docs/method.md §5)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from d1.tasks import get_task
from d1.tasks.base import Score
from d1.tasks.puzzles.splits import split_of
from d1.tasks.puzzles.sudoku import (
    SudokuPuzzle,
    all_grids,
    count_solutions,
    generate_sudoku,
    is_valid_grid,
    parse_blanks,
    solve_sudoku,
    sudoku_demonstration,
    sudoku_from_row,
    sudoku_reward,
    sudoku_solutions,
    sudoku_steps,
    write_sudoku,
)
from d1.tasks.sudoku import SudokuTask, d1_test_subset, parse_sudoku_answer, sudoku_prompt

D1_TEST = Path(__file__).resolve().parents[1] / "src" / "d1" / "data" / "sudoku_4x4_test.csv"


# -- an independent slow reference solver ------------------------------------------------------


def _ok(cells: list[int], i: int, d: int) -> bool:
    r, c = divmod(i, 4)
    box = [(r // 2 * 2 + a) * 4 + c // 2 * 2 + b for a in range(2) for b in range(2)]
    peers = [r * 4 + k for k in range(4)] + [k * 4 + c for k in range(4)] + box
    return all(cells[p] != d for p in peers if p != i)


def _reference_solutions(puzzle: str) -> list[str]:
    """Backtracking over the empty cells, checking rows, columns and boxes directly."""
    cells = [int(ch) for ch in puzzle]
    # Clues must not conflict with each other either.
    if any(v and not _ok(cells, i, v) for i, v in enumerate(cells)):
        return []
    empty = [i for i, v in enumerate(cells) if v == 0]
    out: list[str] = []

    def rec(k: int) -> None:
        if k == len(empty):
            out.append("".join(map(str, cells)))
            return
        i = empty[k]
        for d in range(1, 5):
            if _ok(cells, i, d):
                cells[i] = d
                rec(k + 1)
                cells[i] = 0

    rec(0)
    return sorted(out)


def _d1_rows() -> list[dict[str, str]]:
    with D1_TEST.open(newline="") as f:
        return list(csv.DictReader(f))


# -- solver ------------------------------------------------------------------------------------


def test_all_grids() -> None:
    grids = all_grids()
    assert len(grids) == 288 == len(set(grids))
    assert all(is_valid_grid(g) for g in grids)
    assert grids == tuple(_reference_solutions("0" * 16))


def test_is_valid_grid() -> None:
    assert is_valid_grid("1234341221434321")
    assert not is_valid_grid("1234341221434312")  # column clash
    assert not is_valid_grid("1234123412341234")
    assert not is_valid_grid("123434122143432")  # 15 characters
    assert not is_valid_grid("1234341221434320")


def test_solver_matches_reference_on_d1_test_set() -> None:
    counts: Counter[int] = Counter()
    for row in _d1_rows():
        expected = _reference_solutions(row["Puzzle"])
        assert sudoku_solutions(row["Puzzle"]) == expected
        assert count_solutions(row["Puzzle"]) == len(expected)
        assert row["Solution"] in expected
        counts[len(expected)] += 1
    # A fact about d1's test set worth knowing: a quarter of its puzzles are not unique.
    assert counts == {1: 376, 2: 115, 3: 8, 4: 1}


def test_solver_edge_cases() -> None:
    assert count_solutions("1100000000000000") == 0  # clashing clues
    assert solve_sudoku("1100000000000000") is None
    assert count_solutions("0" * 16) == 288
    assert solve_sudoku("1234341221434321") == "1234341221434321"
    for bad in ("123", "12345678901234567", "123434122143432x", "5234341221434321"):
        with pytest.raises(ValueError, match="16-character"):
            count_solutions(bad)


# -- generator ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "blanks"), [(0, (6, 10)), (1, (4, 4)), (2, 12), (3, (1, 12))])
def test_generator_unique_puzzles(seed: int, blanks: int | tuple[int, int]) -> None:
    puzzles = generate_sudoku(40, seed=seed, blanks=blanks)
    lo, hi = (blanks, blanks) if isinstance(blanks, int) else blanks
    assert len({p.puzzle for p in puzzles}) == 40
    for p in puzzles:
        assert lo <= p.blanks <= hi
        assert _reference_solutions(p.puzzle) == [p.solution]
        assert sudoku_reward(sudoku_demonstration(p.puzzle, p.solution), p.puzzle, p.solution) == 1


def test_generator_covers_the_blank_range() -> None:
    blanks = Counter(p.blanks for p in generate_sudoku(300, seed=0, blanks=(6, 10)))
    assert set(blanks) == {6, 7, 8, 9, 10}
    assert min(blanks.values()) > 30  # roughly uniform: 60 expected each


def test_generator_deterministic_prefix_stable_and_seeded() -> None:
    a = generate_sudoku(20, seed=7)
    assert a == generate_sudoku(20, seed=7)
    assert generate_sudoku(5, seed=7) == a[:5]
    assert a != generate_sudoku(20, seed=8)
    with pytest.raises(ValueError, match="blanks"):
        generate_sudoku(1, seed=0, blanks=13)
    with pytest.raises(ValueError, match="blanks"):
        generate_sudoku(1, seed=0, blanks=(8, 6))
    for text in ("x", "1-2-3", "0", ""):
        with pytest.raises(ValueError, match="blanks"):
            parse_blanks(text)
    assert parse_blanks("6-10") == parse_blanks([6, 10]) == (6, 10)
    assert parse_blanks(8) == parse_blanks("8") == (8, 8)
    assert SudokuTask(blanks="9-11").blanks == (9, 11)


def test_generated_splits_never_overlap_and_exclude() -> None:
    seen: dict[str, set[str]] = {}
    for split in ("train", "validation", "test"):
        for seed, blanks in ((0, (4, 6)), (1, (6, 10))):
            puzzles = generate_sudoku(40, seed=seed, blanks=blanks, split=split)
            assert all(split_of("sudoku:" + p.puzzle) == split for p in puzzles)
            seen.setdefault(split, set()).update(p.puzzle for p in puzzles)
    assert not seen["train"] & seen["validation"]
    assert not seen["train"] & seen["test"]
    assert not seen["validation"] & seen["test"]
    first = generate_sudoku(10, seed=3)
    again = generate_sudoku(10, seed=3, exclude={p.puzzle for p in first})
    assert not {p.puzzle for p in first} & {p.puzzle for p in again}


def test_generator_reports_exhaustion() -> None:
    # One blank: 288 * 16 puzzles in all, far fewer in the test bucket than asked for.
    with pytest.raises(ValueError, match="Found only"):
        generate_sudoku(2000, seed=0, blanks=1, split="test", max_tries=20_000)


def test_steps_fill_exactly_the_blanks() -> None:
    for row in _d1_rows()[:50]:
        steps = sudoku_steps(row["Puzzle"], row["Solution"])
        assert len(steps) == row["Puzzle"].count("0")
        filled = list(row["Puzzle"])
        for step in steps:
            name, digit = step.split(" (")[0].split(" = ")
            r, c = int(name[1]), int(name[3])
            assert filled[(r - 1) * 4 + c - 1] == "0"
            filled[(r - 1) * 4 + c - 1] = digit
        assert "".join(filled) == row["Solution"]
    demo = sudoku_demonstration("3102200002100320", "3142243142131324")
    assert demo.startswith("<reasoning>\nr1c3 = 4 (only digit left)\n")
    assert demo.endswith("</reasoning>\n<answer>\n3142243142131324\n</answer>")


# -- d1's reward -------------------------------------------------------------------------------

PUZZLE, SOLUTION = "3102200002100320", "3142243142131324"  # 8 blanks


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        (f"<reasoning>\n..\n</reasoning>\n<answer>\n{SOLUTION}\n</answer>", 1.0),
        ("<answer>3142 2431 4213 1324</answer>", 1.0),
        ("<answer>\n3,1,4,2\n2,4,3,1\n4,2,1,3\n1,3,2,4\n</answer>", 1.0),
        ("<answer>[3 1 | 4 2]\n[2 4 | 3 1]\n[4 2 | 1 3]\n[1 3 | 2 4]</answer>", 1.0),
        (f"<answer>{PUZZLE}</answer>", 0.0),  # the puzzle copied: no blank filled
        ("<answer>3142243142131111</answer>", 7 / 8),  # blank 15 wrong (12 right by luck)
        ("<answer>31422431</answer>", 0.5),  # padded with zeros: 4 of 8 blanks in row 1-2
        (f"<answer>{SOLUTION}9999</answer>", 1.0),  # truncated to 16
        (f"<answer>9{SOLUTION}</answer>", 0.0),  # shifted by one digit
        ("<answer></answer>", 0.0),
        (f"<answer>{SOLUTION}", 0.0),  # never closed: no answer for d1
        (SOLUTION, 0.0),
        (f"<answer>1111111111111111</answer> <answer>{SOLUTION}</answer>", 1.0),
    ],
)
def test_reward_rules(completion: str, reward: float) -> None:
    assert sudoku_reward(completion, PUZZLE, SOLUTION) == reward


def test_reward_hand_computed_fraction() -> None:
    # The 8 blanks of PUZZLE (0-based cells).
    blanks = [i for i, ch in enumerate(PUZZLE) if ch == "0"]
    assert blanks == [2, 5, 6, 7, 8, 11, 12, 15]
    wrong = list(SOLUTION)
    for i in (2, 5, 6):  # three of eight blanks wrong
        wrong[i] = "1" if SOLUTION[i] != "1" else "2"
    assert sudoku_reward(f"<answer>{''.join(wrong)}</answer>", PUZZLE, SOLUTION) == 5 / 8


def test_task_reward_function() -> None:
    task = SudokuTask()
    ex = task.example(SudokuPuzzle(PUZZLE, SOLUTION), "x")
    fns = task.reward_functions()
    assert list(fns) == ["sudoku"]
    assert fns["sudoku"]([f"<answer>{SOLUTION}</answer>", "none"], [ex, ex]) == [1.0, 0.0]


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=100))
def test_reward_never_raises_and_stays_in_range(text: str) -> None:
    for completion in (text, f"<answer>{text}</answer>"):
        r = sudoku_reward(completion, PUZZLE, SOLUTION)
        assert 0.0 <= r <= 1.0 and r * 8 == int(r * 8)


# -- generous scoring and metrics --------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "correct", "solved"),
    [
        (f"<answer>\n{SOLUTION}\n</answer>", 1.0, 1.0),
        (f"<answer>\n{SOLUTION}", 1.0, 1.0),  # unclosed final tag
        (f"The grid is {SOLUTION}.", 1.0, 1.0),  # 16 digits, no tags
        (f"<answer>{SOLUTION}</answer><|eot_id|>", 1.0, 1.0),
        ("<answer>3 1 4 2\n2 4 3 1\n4 2 1 3\n1 3 2 4</answer>", 1.0, 1.0),
        ("<answer>3142243142131111</answer>", 7 / 8, 0.0),
        ("no answer", 0.0, 0.0),
    ],
)
def test_score(completion: str, correct: float, solved: float) -> None:
    task = SudokuTask()
    ex = task.example(SudokuPuzzle(PUZZLE, SOLUTION), "x")
    score = task.score(completion, ex)
    assert score.correct == correct
    assert score.details["solved"] == solved
    assert score.details["cells_empty"] == 8


def test_score_credits_alternative_solutions_as_solved() -> None:
    row = next(r for r in _d1_rows() if count_solutions(r["Puzzle"]) > 1)
    other = next(s for s in sudoku_solutions(row["Puzzle"]) if s != row["Solution"])
    task = SudokuTask()
    ex = task.example(sudoku_from_row(row), "x")
    score = task.score(f"<answer>{other}</answer>", ex)
    assert score.details["solved"] == 1.0
    assert score.correct < 1.0  # d1's cell metric only credits the listed solution


def test_aggregate_hand_computed() -> None:
    scores = [
        Score(1.0, "a", {"cells_correct": 8, "cells_empty": 8, "solved": 1.0}),
        Score(0.5, "b", {"cells_correct": 2, "cells_empty": 4, "solved": 0.0}),
        Score(0.0, None, {"cells_correct": 0, "cells_empty": 12, "solved": 0.0}),
    ]
    metrics = SudokuTask().aggregate(scores)
    assert metrics["accuracy"] == pytest.approx(10 / 24)  # d1: cells over the dataset
    assert metrics["cell_accuracy_mean"] == pytest.approx(0.5)  # (1 + 0.5 + 0) / 3
    assert metrics["solved"] == pytest.approx(1 / 3)
    assert metrics["n"] == 3.0
    assert SudokuTask().aggregate([])["n"] == 0.0


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=100))
def test_score_never_raises(text: str) -> None:
    task = SudokuTask()
    ex = task.example(SudokuPuzzle(PUZZLE, SOLUTION), "x")
    for completion in (text, f"<answer>{text}</answer>", f"<answer>{text}"):
        s = task.score(completion, ex)
        assert 0.0 <= s.correct <= 1.0 and s.details["solved"] in (0.0, 1.0)
    assert parse_sudoku_answer(text) is None or parse_sudoku_answer(text).isdigit()


# -- prompts -----------------------------------------------------------------------------------


def test_prompt_is_d1s_text() -> None:
    prompt = sudoku_prompt(PUZZLE)
    assert prompt.startswith("\nPlease solve the following 4x4 Sudoku puzzle. The puzzle is ")
    assert "- Each 2x2 box must contain digits 1-4 exactly once\n\nImportant: Your" in prompt
    assert prompt.endswith(
        "<answer>\n[16-character solution string with no spaces or separators]\n</answer>\n"
        f"\n\nSolve the following Sudoku puzzle: {PUZZLE}\n"
    )
    assert sudoku_prompt(PUZZLE, "d1_eval") == prompt
    assert sudoku_prompt(PUZZLE, "compact") == PUZZLE
    ex = SudokuTask().example(SudokuPuzzle(PUZZLE, SOLUTION), "x")
    assert SudokuTask(prompt_style="d1_eval").assistant_prefix(ex) == "<reasoning>"
    assert SudokuTask().assistant_prefix(ex) == ""
    assert SudokuTask(prompt_style="compact").messages(ex) == [{"role": "user", "content": PUZZLE}]


# -- data --------------------------------------------------------------------------------------


def test_d1_test_subset_matches_numpy_global_seed_42() -> None:
    state = np.random.get_state()
    try:
        np.random.seed(42)  # what d1's eval.py does, reproduced here as the reference
        expected = np.random.choice(500, 256, replace=False).tolist()
    finally:
        np.random.set_state(state)
    before = np.random.get_state()[1].copy()
    assert d1_test_subset(500) == expected
    assert (np.random.get_state()[1] == before).all()  # the global RNG is untouched


def test_load_d1_test_set() -> None:
    rows = _d1_rows()
    assert len(rows) == 500 and all(r["Puzzle"].count("0") == 8 for r in rows)
    task = get_task("sudoku")
    test = task.load("test")
    assert len(test) == 256 == len({ex.id for ex in test})
    subset = d1_test_subset()
    assert [ex.meta["puzzle"] for ex in test] == [rows[i]["Puzzle"] for i in subset]
    assert len(get_task("sudoku", test_subset="all").load("test")) == 500
    assert len(task.load("test", limit=7)) == 7


def test_generated_train_and_validation_avoid_d1_test(tmp_path: Path) -> None:
    task = SudokuTask(blanks=8, train_size=300, validation_size=40)
    train, validation = task.load("train"), task.load("validation")
    d1_puzzles = {r["Puzzle"] for r in _d1_rows()}
    tp, vp = {ex.meta["puzzle"] for ex in train}, {ex.meta["puzzle"] for ex in validation}
    assert len(train) == 300 and len(validation) == 40
    assert not tp & vp and not (tp | vp) & d1_puzzles
    gen = SudokuTask(source="generated", test_size=30, blanks=(4, 6)).load("test")
    assert len(gen) == 30 and not {ex.meta["puzzle"] for ex in gen} & tp


def test_round_trip_csv_and_jsonl(tmp_path: Path) -> None:
    puzzles = generate_sudoku(5, seed=0, split="train")
    for name in ("s.csv", "s.jsonl"):
        path = tmp_path / name
        assert write_sudoku(puzzles, path, responses=True) == 5
        loaded = SudokuTask().load("train", path=str(path))
        assert [(ex.meta["puzzle"], ex.answer) for ex in loaded] == [
            (p.puzzle, p.solution) for p in puzzles
        ]
        assert loaded[0].response == sudoku_demonstration(puzzles[0].puzzle, puzzles[0].solution)
    header = (tmp_path / "s.csv").read_text().splitlines()[0]
    assert header == "Puzzle,Solution,response"
    write_sudoku(puzzles, tmp_path / "plain.csv")
    assert (tmp_path / "plain.csv").read_text().splitlines()[:2] == [
        "Puzzle,Solution",
        f"{puzzles[0].puzzle},{puzzles[0].solution}",
    ]
    # d1's own file reads back identically.
    loaded = SudokuTask().load("test", path=str(D1_TEST))
    assert [ex.meta["puzzle"] for ex in loaded] == [r["Puzzle"] for r in _d1_rows()]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"Puzzle": "310220000210032", "Solution": SOLUTION}, "Puzzle"),
        ({"Puzzle": PUZZLE, "Solution": "3142243142131323"}, "Solution"),
        ({"Puzzle": PUZZLE, "Solution": "1234341221434321"}, "contradicts"),  # valid grid
        ({"Puzzle": PUZZLE}, "Solution"),
    ],
)
def test_malformed_rows_name_the_field(tmp_path: Path, row: dict, match: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = {"Puzzle": PUZZLE, "Solution": SOLUTION}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=rf"bad.jsonl/1.*{match}"):
        SudokuTask().load("train", path=str(path))


def test_cli_data_sudoku(tmp_path: Path) -> None:
    from d1.cli import app

    out = tmp_path / "s.csv"
    args = ["data", "sudoku", "--n", "12", "--blanks", "9-11", "--seed", "2", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--split", "validation"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(newline="")))
    assert len(rows) == 12
    for row in rows:
        p = sudoku_from_row(row)
        assert 9 <= p.blanks <= 11 and count_solutions(p.puzzle) == 1
        assert split_of("sudoku:" + p.puzzle) == "validation"
    bad = CliRunner().invoke(app, ["data", "sudoku", "--blanks", "x", "--out", str(out)])
    assert bad.exit_code != 0


def test_scoring_d1_generation_files(tmp_path: Path) -> None:
    """`d1 score` on d1's eval output: question "Solve the following Sudoku puzzle: ..."."""
    from d1.recipes.evaluation.scoring import read_generations, score_records, summarize

    task = SudokuTask()
    question = f"Solve the following Sudoku puzzle: {PUZZLE}\n"
    ex = task.example_from_gold(question, SOLUTION, example_id="g")
    assert ex.meta == {"puzzle": PUZZLE, "solution": SOLUTION}
    assert task.example_from_gold(PUZZLE, SOLUTION, example_id="g").meta == ex.meta
    with pytest.raises(ValueError, match="16-digit puzzle"):
        task.example_from_gold("Solve this", SOLUTION, example_id="g")

    completions = [f"<answer>{SOLUTION}</answer>", "<answer>3142243142131111</answer>", ""]
    data = {
        "gen_length": 256,
        "generations": [
            {"question": question, "generations": c, "ground_truth": SOLUTION} for c in completions
        ],
    }
    path = tmp_path / "sudoku_llada_256_generations.json"
    path.write_text(json.dumps(data))
    results = score_records(task, read_generations(path))
    assert [r.score.correct for r in results] == [1.0, 7 / 8, 0.0]
    (summary,) = summarize(results, tasks={"sudoku": task})
    assert summary.accuracy == pytest.approx(100 * 15 / 24)  # d1: cells over all puzzles
