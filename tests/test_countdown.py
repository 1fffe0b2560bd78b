"""Countdown: solver, generator, d1's reward, generous scoring, data formats (docs/method.md §5)."""

from __future__ import annotations

import json
import random
import re
from fractions import Fraction
from itertools import permutations, product
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import d1.tasks.countdown as countdown_task
from d1.tasks import get_task
from d1.tasks.arithmetic import numbers_used, safe_eval_exact
from d1.tasks.base import Example
from d1.tasks.countdown import CountdownTask, countdown_prompt, parse_countdown_expression
from d1.tasks.puzzles.answers import d1_answer_block
from d1.tasks.puzzles.countdown import (
    CountdownProblem,
    countdown_demonstration,
    countdown_from_row,
    countdown_key,
    countdown_reward,
    generate_countdown,
    reachable_targets,
    solve_countdown,
    write_countdown,
)
from d1.tasks.puzzles.splits import split_of

REFERENCE = Path(__file__).resolve().parents[1] / "src" / "d1" / "data"
D1_TEST = REFERENCE / "countdown_cd3_test.jsonl"


# -- an independent slow reference: every expression over every ordering --------------------


def _all_values(nums: tuple[Fraction, ...], positive_integers: bool) -> set[Fraction]:
    """Values of every binary expression tree over the numbers in this order (all splits)."""
    if len(nums) == 1:
        return {nums[0]}
    out: set[Fraction] = set()
    for cut in range(1, len(nums)):
        for a, b in product(
            _all_values(nums[:cut], positive_integers), _all_values(nums[cut:], positive_integers)
        ):
            values = [a + b, a - b, a * b] + ([a / b] if b != 0 else [])
            for v in values:
                if positive_integers and (v.denominator != 1 or v <= 0):
                    continue
                out.add(v)
    return out


def _reference_reachable(numbers: list[int], positive_integers: bool) -> set[Fraction]:
    out: set[Fraction] = set()
    for perm in set(permutations(numbers)):
        out |= _all_values(tuple(Fraction(n) for n in perm), positive_integers)
    return out


def _kw(ex: Example) -> dict:
    return {"numbers": ex.meta["numbers"], "target": ex.meta["target"]}


def _assert_solution(expr: str, numbers: list[int] | tuple[int, ...], target: int) -> None:
    assert safe_eval_exact(expr) == target, expr
    assert sorted(numbers_used(expr)) == sorted(numbers), expr


# -- solver ------------------------------------------------------------------------------------


def test_solver_solves_every_d1_test_problem() -> None:
    rows = [json.loads(line) for line in D1_TEST.read_text().splitlines()]
    assert len(rows) == 256
    for i, row in enumerate(rows):
        p = countdown_from_row(row, f"row {i}")
        expr = solve_countdown(p.numbers, p.target)
        assert expr is not None
        _assert_solution(expr, p.numbers, p.target)


def test_solver_agrees_with_brute_force() -> None:
    rng = random.Random(1)
    for _ in range(40):
        numbers = [rng.randint(1, 12) for _ in range(3)]
        reachable = _reference_reachable(numbers, positive_integers=False)
        for target in rng.sample(range(-20, 60), 8):
            expr = solve_countdown(numbers, target)
            assert (expr is not None) == (Fraction(target) in reachable), (numbers, target)
            if expr is not None:
                _assert_solution(expr, numbers, target)


def test_solver_finds_rational_only_solutions() -> None:
    # 24 from (3, 3, 8, 8) needs the non-integer intermediate 8/3: 8 / (3 - 8/3).
    expr = solve_countdown([3, 3, 8, 8], 24)
    assert expr is not None
    _assert_solution(expr, [3, 3, 8, 8], 24)
    assert solve_countdown([1, 1, 1], 100) is None


def test_reachable_targets_match_brute_force() -> None:
    rng = random.Random(2)
    for _ in range(30):
        numbers = [rng.randint(1, 30) for _ in range(3)]
        expected = {int(v) for v in _reference_reachable(numbers, positive_integers=True)}
        assert reachable_targets(numbers) == expected


def test_demonstration_layout() -> None:
    assert countdown_demonstration([30, 100, 93], 23) == (
        "<reasoning>\n30 + 93 = 123\n123 - 100 = 23\n</reasoning>\n<answer>\n30 + 93 - 100\n</answer>"
    )
    assert countdown_demonstration([30, 100, 93], 23, reasoning=False) == (
        "<reasoning>\n</reasoning>\n<answer>\n30 + 93 - 100\n</answer>"
    )
    assert countdown_demonstration([1, 1, 1], 100) is None


# -- generator ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_generator_makes_valid_distinct_problems(seed: int) -> None:
    problems = generate_countdown(40, seed=seed)
    assert len({p.key for p in problems}) == 40
    for p in problems:
        assert len(p.numbers) == 3 and all(1 <= n <= 100 for n in p.numbers)
        assert 1 <= p.target <= 100
        assert p.solution is not None
        _assert_solution(p.solution, p.numbers, p.target)
        # Steps: intermediate results are positive integers and the last one is the target.
        results = [int(step.split(" = ")[1]) for step in p.steps]
        assert all(r > 0 for r in results) and results[-1] == p.target
        assert countdown_reward(p.demonstration(), p.numbers, p.target) == 1.0


def test_generator_options() -> None:
    four = generate_countdown(5, seed=0, num_count=4, max_number=10, max_target=50)
    for p in four:
        assert len(p.numbers) == 4 and max(p.numbers) <= 10 and p.target <= 50
        assert p.solution is not None
        _assert_solution(p.solution, p.numbers, p.target)
    with pytest.raises(ValueError, match="num_count"):
        generate_countdown(1, seed=0, num_count=7)
    with pytest.raises(ValueError, match="Found only"):  # only a handful of problems exist
        generate_countdown(50, seed=0, num_count=2, max_number=2, max_target=4)


def test_generator_is_deterministic_and_prefix_stable() -> None:
    a = generate_countdown(20, seed=3)
    assert a == generate_countdown(20, seed=3)
    assert generate_countdown(8, seed=3) == a[:8]
    assert a != generate_countdown(20, seed=4)


def test_generated_splits_never_overlap() -> None:
    keys = {}
    for split in ("train", "validation", "test"):
        for seed in (0, 1):
            problems = generate_countdown(30, seed=seed, split=split)
            assert all(split_of("countdown:" + p.key) == split for p in problems)
            keys.setdefault(split, set()).update(p.key for p in problems)
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]


def test_generator_exclude() -> None:
    first = generate_countdown(10, seed=5)
    again = generate_countdown(10, seed=5, exclude={p.key for p in first[:5]})
    assert not {p.key for p in first[:5]} & {p.key for p in again}


def test_key_ignores_number_order() -> None:
    assert countdown_key([30, 100, 93], 23) == countdown_key([93, 30, 100], 23) == "30,93,100->23"


# -- d1's reward -------------------------------------------------------------------------------

NUMS, TARGET = [30, 100, 93], 23


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        ("<reasoning>\n...\n</reasoning>\n<answer>\n30 + 93 - 100\n</answer>", 1.0),
        ("<answer>(93 - 100) + 30</answer>", 1.0),
        ("<answer>\n93 + 30 -\n100\n</answer>", 1.0),  # newline inside: whitespace
        ("<answer>30 + 93 - 99</answer>", 0.1),  # a number not given
        ("<answer>30 + 30 - 100 + 93</answer>", 0.1),  # a number reused
        ("<answer>93 - 30</answer>", 0.1),  # a number missing
        ("<answer>30 + 100 - 93</answer>", 0.1),  # wrong value
        ("<answer>30 + 93 - 100 = 23</answer>", 0.1),  # d1: "=" makes the answer invalid
        ("<answer>30 ** 93 - 100</answer>", 0.1),  # ** is not a Countdown operation
        ("<answer>(30 + 93 - 100</answer>", 0.1),  # malformed
        ("<answer>thirty</answer>", 0.1),
        ("<answer></answer>", 0.1),
        ("<answer>30 + 93.0 - 100</answer>", 0.1),  # 93.0 is not the given 93
        ("<answer>30 + 93 - 100.</answer>", 1.0),  # a full stop: d1 accepts it too
        ("<answer>30 + 93 - 100", 0.0),  # never closed: no answer for d1
        ("30 + 93 - 100", 0.0),
        ("", 0.0),
        # The last closed block counts.
        ("<answer>30 + 100 - 93</answer> fix: <answer>30 + 93 - 100</answer>", 1.0),
        ("<answer>30 + 93 - 100</answer> fix: <answer>30 + 100 - 93</answer>", 0.1),
    ],
)
def test_reward_rules(completion: str, reward: float) -> None:
    assert countdown_reward(completion, NUMS, TARGET) == reward


def test_reward_tolerance_and_division() -> None:
    assert countdown_reward("<answer>4 / 2 * 3</answer>", [2, 3, 4], 6) == 1.0
    assert countdown_reward("<answer>8 / (3 - 8 / 3)</answer>", [3, 3, 8, 8], 24) == 1.0
    assert countdown_reward("<answer>4 / (2 - 2)</answer>", [2, 2, 4], 1) == 0.1
    assert countdown_reward("<answer>10 / 3 + 1</answer>", [1, 3, 10], 4) == 0.1  # 4.333...


def test_task_reward_function() -> None:
    task = CountdownTask()
    ex = task.example(CountdownProblem((30, 100, 93), 23), "x")
    fns = task.reward_functions()
    assert list(fns) == ["countdown"]
    completions = ["<answer>30 + 93 - 100</answer>", "<answer>1</answer>", "nothing"]
    assert fns["countdown"](completions, [ex] * 3) == [1.0, 0.1, 0.0]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["<answer>", "</answer>", "<answer", "x", " 1 ", "\n"]), max_size=12)
)
def test_answer_block_matches_d1_regex(parts: list[str]) -> None:
    text = "".join(parts)
    matches = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)  # d1's extract_solution
    assert d1_answer_block(text) == (matches[-1].strip() if matches else None)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=120))
def test_reward_never_raises_and_stays_in_range(text: str) -> None:
    assert countdown_reward(text, NUMS, TARGET) in (0.0, 0.1, 1.0)
    assert countdown_reward(f"<answer>{text}</answer>", NUMS, TARGET) in (0.1, 1.0)


# -- generous evaluation scoring ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "correct", "parsed"),
    [
        ("<answer>\n30 + 93 - 100\n</answer>", 1.0, "30 + 93 - 100"),
        ("<answer>\n\\boxed{30 + 93 - 100}\n</answer>", 1.0, "30 + 93 - 100"),
        ("...so \\boxed{(93 - 100) + 30}", 1.0, "(93 - 100) + 30"),
        ("<answer>30 + 93 - 100 = 23</answer>", 1.0, "30 + 93 - 100"),
        ("<answer>23 = 30 + 93 - 100</answer>", 1.0, "30 + 93 - 100"),
        ("<answer>$30 + 93 - 100$</answer><|eot_id|>", 1.0, "30 + 93 - 100"),
        ("<answer>30 + 93 \u2212 100</answer>", 1.0, "30 + 93 - 100"),
        ("<answer>\\frac{93 + 30}{1} - 100</answer>", 0.0, "(93 + 30)/(1) - 100"),
        ("<answer>30 + 93 - 100", 1.0, "30 + 93 - 100"),  # unclosed tag at the end
        ("I tried 30 + 93 = 123, then 30 + 93 - 100 = 23.", 1.0, "30 + 93 - 100"),
        ("<answer>30 + 100 - 93</answer>", 0.0, "30 + 100 - 93"),
        ("<answer>30 \\times 93 - 100</answer>", 0.0, "30 * 93 - 100"),
        ("no idea", 0.0, None),
    ],
)
def test_score_is_generous_but_exact(completion: str, correct: float, parsed: str | None) -> None:
    task = CountdownTask()
    ex = task.example(CountdownProblem((30, 100, 93), 23), "x")
    score = task.score(completion, ex)
    assert score.correct == correct
    assert score.parsed == parsed


def test_score_latex_operators() -> None:
    assert parse_countdown_expression("<answer>4 \\div 2 \\times 3</answer>", [2, 3, 4]) == (
        "4 / 2 * 3"
    )
    assert parse_countdown_expression("<answer>4 x 3 \u00f7 2</answer>", [2, 3, 4]) == "4 * 3 / 2"


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=120))
def test_score_never_raises(text: str) -> None:
    task = CountdownTask()
    ex = task.example(CountdownProblem((30, 100, 93), 23), "x")
    for completion in (text, f"<answer>{text}</answer>", f"\\boxed{{{text}}}"):
        assert task.score(completion, ex).correct in (0.0, 1.0)


def test_aggregate_is_mean_accuracy() -> None:
    task = CountdownTask()
    ex = task.example(CountdownProblem((30, 100, 93), 23), "x")
    scores = [task.score(c, ex) for c in ("<answer>30+93-100</answer>", "x", "x", "x")]
    assert task.aggregate(scores) == {"accuracy": 0.25, "n": 4.0}


# -- prompts -----------------------------------------------------------------------------------

D1_TRAIN_PROMPT = (
    "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n"
    "</answer>\n\nUsing only the numbers [30, 100, 93], create an arithmetic expression that "
    "evaluates to exactly 23. You must use all numbers from the list, and each number must be "
    "used exactly once. You may use the operations +, -, *, and / as needed. After reasoning, "
    "provide only your final expression inside <answer></answer> tags without including an "
    "equals sign or the target number. For example, if the numbers are [2, 3, 4] and the "
    "target is 5, a valid answer is: <answer>\n2*4-3\n</answer>"
)


def test_prompts() -> None:
    assert countdown_prompt([30, 100, 93], 23) == D1_TRAIN_PROMPT
    evaluation = countdown_prompt([30, 100, 93], 23, "d1_eval")
    assert evaluation.startswith("Using only the provided numbers, create")
    assert "For example: \\boxed{a + b * c}Respond in the following format:\n" in evaluation
    assert evaluation.endswith("</answer>\n\nNumbers: [30, 100, 93]\nTarget: 23")
    assert countdown_prompt([30, 100, 93], 23, "compact") == "30 100 93 -> 23"
    with pytest.raises(ValueError, match="prompt_style"):
        countdown_prompt([1], 1, "fancy")

    ex = CountdownTask().example(CountdownProblem((30, 100, 93), 23), "x")
    train, evaluation_task = CountdownTask(), CountdownTask(prompt_style="d1_eval")
    assert train.messages(ex) == [{"role": "user", "content": D1_TRAIN_PROMPT}]
    assert train.assistant_prefix(ex) == ""
    assert evaluation_task.assistant_prefix(ex) == "<reasoning>"
    with pytest.raises(ValueError, match="prompt_style"):
        CountdownTask(prompt_style="fancy")  # type: ignore[arg-type]


# -- data --------------------------------------------------------------------------------------


def test_load_d1_test_set() -> None:
    task = get_task("countdown")
    test = task.load("test")
    assert len(test) == 256
    assert test[0].meta == {"numbers": [30, 100, 93], "target": 23}
    assert test[0].answer == "23" and test[0].question == "Numbers: [30, 100, 93]\nTarget: 23"
    assert len(task.load("test", limit=10)) == 10
    with pytest.raises(ValueError, match="split"):
        task.load("dev")


def test_round_trip_jsonl_and_csv(tmp_path: Path) -> None:
    problems = generate_countdown(6, seed=0, split="test")
    task = CountdownTask()
    for name in ("p.jsonl", "p.csv"):
        path = tmp_path / name
        assert write_countdown(problems, path, responses=True) == 6
        loaded = task.load("train", path=str(path))
        assert [(ex.meta["numbers"], ex.meta["target"]) for ex in loaded] == [
            (list(p.numbers), p.target) for p in problems
        ]
        assert all(countdown_reward(ex.response or "", **_kw(ex)) == 1.0 for ex in loaded)
    first = (tmp_path / "p.jsonl").read_text().splitlines()[0]
    assert set(json.loads(first)) == {"input", "output", "response"}


def test_hub_format_file_and_malformed_rows(tmp_path: Path) -> None:
    path = tmp_path / "hub.jsonl"
    path.write_text('{"nums": [2, 3, 4], "target": 5}\n{"nums": [1, 2, 3], "target": 6}\n')
    loaded = CountdownTask(demonstrations=True).load("train", path=str(path))
    assert [ex.meta for ex in loaded] == [
        {"numbers": [2, 3, 4], "target": 5},
        {"numbers": [1, 2, 3], "target": 6},
    ]
    assert all(countdown_reward(ex.response or "", **_kw(ex)) == 1.0 for ex in loaded)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "1,2,3", "output": "6"}\n{"input": "1,x,3", "output": "6"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl/1.*'input'"):
        CountdownTask().load("test", path=str(bad))
    bad.write_text('{"question": "?"}\n')
    with pytest.raises(ValueError, match="input"):
        CountdownTask().load("test", path=str(bad))


def test_generated_source_splits(tmp_path: Path) -> None:
    task = CountdownTask(source="generated", train_size=30, validation_size=10, test_size=10)
    splits = {s: task.load(s) for s in ("train", "validation", "test")}
    assert [len(v) for v in splits.values()] == [30, 10, 10]
    keys = {s: {countdown_key(**_kw(ex)) for ex in v} for s, v in splits.items()}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    d1_keys = {countdown_from_row(json.loads(r)).key for r in D1_TEST.read_text().splitlines()}
    assert not keys["train"] & d1_keys
    assert all(countdown_reward(ex.response or "", **_kw(ex)) == 1.0 for ex in splits["train"])
    assert task.load("train", limit=5) == splits["train"][:5]


def test_hub_split_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path: 3-number filter, test problems removed, validation disjoint by problem
    (reorderings of the same numbers stay on one side)."""
    rng = random.Random(0)
    fake = []
    for _ in range(300):
        nums = [rng.randint(1, 50) for _ in range(rng.choice([3, 4]))]
        fake.append({"nums": nums, "target": rng.randint(1, 100)})
        if rng.random() < 0.3:
            fake.append({"nums": list(reversed(nums)), "target": fake[-1]["target"]})
    fake.append({"nums": [100, 93, 30], "target": 23})  # a d1 test problem, reordered
    real_load_rows = countdown_task.load_rows

    def load_rows(source, **kwargs):
        if source == countdown_task.HUB_ID:
            assert kwargs.get("split") == "train"
            return fake
        return real_load_rows(source, **kwargs)

    monkeypatch.setattr(countdown_task, "load_rows", load_rows)
    task = CountdownTask(validation_size=40)
    train, validation = task.load("train", seed=1), task.load("validation", seed=1)
    assert all(len(ex.meta["numbers"]) == 3 for ex in train + validation)
    assert 40 <= len(validation) <= 42
    n3 = sum(len(r["nums"]) == 3 for r in fake) - 1
    assert len(train) + len(validation) == n3
    tk = {countdown_key(**_kw(ex)) for ex in train}
    vk = {countdown_key(**_kw(ex)) for ex in validation}
    assert not tk & vk
    assert "30,93,100->23" not in tk | vk
    assert {ex.id for ex in task.load("train", seed=1)} == {ex.id for ex in train}
    assert len(CountdownTask(validation_size=0).load("train")) == n3
    with pytest.raises(ValueError, match="no validation"):
        CountdownTask(validation_size=0).load("validation")


def test_cli_data_countdown(tmp_path: Path) -> None:
    from d1.cli import app

    out = tmp_path / "cd.jsonl"
    result = CliRunner().invoke(
        app, ["data", "countdown", "--n", "5", "--seed", "1", "--out", str(out), "--responses"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        p = countdown_from_row(row)
        assert split_of("countdown:" + p.key) == "train"
        assert countdown_reward(row["response"], p.numbers, p.target) == 1.0


def test_scoring_d1_generation_files(tmp_path: Path) -> None:
    """`d1 score` on d1's eval output: ground_truth = [numbers, target]."""
    from d1.recipes.evaluation.scoring import read_generations, score_records, summarize

    task = CountdownTask()
    question = "Numbers: [30, 100, 93]\nTarget: 23"
    ex = task.example_from_gold(question, [[30, 100, 93], 23], example_id="g")
    assert ex.meta == {"numbers": [30, 100, 93], "target": 23}
    assert task.example_from_gold(question, "23", example_id="g").meta == ex.meta
    train_prompt = countdown_prompt([30, 100, 93], 23)
    assert task.example_from_gold(train_prompt, None, example_id="g").meta == ex.meta
    with pytest.raises(ValueError, match="numbers and target"):
        task.example_from_gold("what?", "23", example_id="g")

    data = {
        "gen_length": 128,
        "generations": [
            {"question": question, "generations": g, "ground_truth": [[30, 100, 93], 23]}
            for g in ("<answer>\\boxed{30 + 93 - 100}</answer>", "<answer>30 - 93</answer>")
        ],
    }
    path = tmp_path / "countdown_llada_128_generations.json"
    path.write_text(json.dumps(data))
    results = score_records(task, read_generations(path))
    assert [r.score.correct for r in results] == [1.0, 0.0]
    (summary,) = summarize(results, tasks={"countdown": task})
    assert summary.accuracy == 50.0 and summary.gen_length == 128
