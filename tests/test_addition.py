"""Multi-digit addition: carries, traces, generator, task prompts, rewards and scoring."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d1.tasks import SYSTEM_PROMPT, get_task, render_prompt
from d1.tasks.addition import AdditionTask, digit_credit, parse_addition_answer
from d1.tasks.puzzles.addition import (
    AdditionProblem,
    addition_from_row,
    answer_width,
    count_carries,
    generate_addition,
    parse_operands,
)


def _slow_carries(numbers: list[int]) -> int:
    """Independent reference: add digit strings right to left, count overflowing columns."""
    text = [str(n)[::-1] for n in numbers]
    carry = count = 0
    for col in range(max(map(len, text)) + 3):
        total = carry + sum(int(t[col]) for t in text if col < len(t))
        carry = total // 10
        count += carry > 0
    return count


@pytest.mark.parametrize(
    ("numbers", "carries"),
    [((123, 456), 0), ((493, 28), 2), ((999, 1), 3), ((500, 500), 1), ((99, 99, 99), 2)],
)
def test_count_carries_by_hand(numbers: tuple[int, ...], carries: int) -> None:
    assert count_carries(numbers) == carries == _slow_carries(list(numbers))


@given(st.lists(st.integers(0, 99_999), min_size=2, max_size=4))
@settings(max_examples=100, deadline=None)
def test_count_carries_matches_reference(numbers: list[int]) -> None:
    assert count_carries(numbers) == _slow_carries(numbers)


def test_problem_answer_trace_and_demonstration() -> None:
    p = AdditionProblem((893, 581), answer_width(3, 2))
    assert (p.question, p.answer, p.total, p.carries) == ("893+581", "1474", 1474, 2)
    assert p.trace() == "3+1=4\n9+8=17 carry 1\n8+5+1=14 carry 1\n1"
    assert p.fixed_width_trace() == "c1:3+1+0=04\nc2:9+8+0=17\nc3:8+5+1=14\nc4:0+0+1=01"
    three = AdditionProblem((95, 7, 99), width=3)  # 201; the units column carries 2
    assert three.fixed_width_trace() == "c1:5+7+9+0=21\nc2:9+0+9+2=20\nc3:0+0+0+2=02"
    assert p.demonstration(fixed_width=True) == (
        f"<reasoning>\n{p.fixed_width_trace()}\n</reasoning>\n<answer>\n1474\n</answer>"
    )
    assert p.demonstration() == (
        f"<reasoning>\n{p.trace()}\n</reasoning>\n<answer>\n1474\n</answer>"
    )
    assert (
        p.demonstration(reasoning=False) == "<reasoning>\n\n</reasoning>\n<answer>\n1474\n</answer>"
    )
    assert AdditionProblem((100, 200), 4).answer == "0300"  # fixed width, zero-padded
    assert AdditionProblem((581, 893), 4).key == p.key  # order-free key
    assert answer_width(3, 2) == 4 and answer_width(2, 3) == 3 and answer_width(1, 2) == 2


def test_generator_is_deterministic_filtered_and_split_disjoint() -> None:
    a = generate_addition(300, seed=3, digits=3, carries=(2, 3), split="train")
    assert a == generate_addition(300, seed=3, digits=3, carries=(2, 3), split="train")
    assert len({p.key for p in a}) == 300
    assert all(2 <= p.carries <= 3 for p in a)
    assert all(100 <= n <= 999 for p in a for n in p.operands)  # exactly 3 digits
    easy = generate_addition(300, seed=3, digits=3, carries=(0, 1), split="train")
    assert all(p.carries <= 1 for p in easy)
    test = generate_addition(300, seed=99, digits=3, split="test")
    assert not {p.key for p in a + easy} & {p.key for p in test}
    with pytest.raises(ValueError, match="carries"):
        generate_addition(5, seed=0, digits=1, carries=(3, 4))  # 1-digit sums carry at most once
    with pytest.raises(ValueError, match="digits"):
        generate_addition(5, seed=0, digits=0)


def test_parse_and_rows() -> None:
    assert parse_operands(" 12 + 7 ") == (12, 7)
    for bad in ("12-7", "12", "a+b", "1.5+2"):
        with pytest.raises(ValueError, match="893\\+581"):
            parse_operands(bad)
    assert addition_from_row({"question": "893+581", "answer": "1474"}).answer == "1474"
    assert addition_from_row({"question": "1+2"}, width=4).answer == "0003"
    with pytest.raises(ValueError, match="row 3: answer '1475' is not the sum"):
        addition_from_row({"question": "893+581", "answer": "1475"}, "row 3")
    with pytest.raises(ValueError, match="missing field 'question'"):
        addition_from_row({"answer": "3"})


@pytest.mark.parametrize(
    ("completion", "parsed"),
    [
        ("1474<|eot_id|><|endoftext|>", "1474"),
        ("<reasoning>\n3+1=4\n</reasoning>\n<answer>\n1474\n</answer>", "1474"),
        ("<answer>\nthe sum is 1474\n</answer> then 99", "1474"),  # the answer block wins
        ("so 12 and then 1474", "1474"),  # no block: the last number
        ("<answer>\n1,474\n</answer>", "1474"),  # thousands separator
        ("<answer>\n</answer> 1474", "1474"),  # empty block: the whole text
        ("no digits here", None),
    ],
)
def test_parse_addition_answer(completion: str, parsed: str | None) -> None:
    assert parse_addition_answer(completion) == parsed


def test_rewards_and_score_by_hand() -> None:
    task = AdditionTask(prompt_style="compact")
    ex = task.example(AdditionProblem((893, 581), 4), "x")
    completions = ["1474", "1374", "474", "21474", "", "0999"]
    assert task.correct_reward(completions, [ex] * 6) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # digits in place of "1474": all; 3 of 4; "0474" 3 of 4; too long 0; none 0; "0999" 0.
    assert task.digits_reward(completions, [ex] * 6) == [1.0, 0.75, 0.75, 0.0, 0.0, 0.0]
    assert set(task.reward_functions()) == {"correct", "digits"}
    small = task.example(AdditionProblem((100, 200), 4), "y")
    assert task.score("300", small).correct == 1.0  # leading zeros are optional
    assert task.score("0300", small).correct == 1.0
    scores = [task.score(c, ex) for c in completions]
    agg = task.aggregate(scores)
    assert agg["accuracy"] == pytest.approx(1 / 6)
    assert agg["digit_accuracy"] == pytest.approx(2.5 / 6)
    assert digit_credit(None, "1474") == 0.0
    assert digit_credit("14.7", "1474") == 0.0 and task.score("1474.5", ex).correct == 0.0


@given(st.text(max_size=40))
@settings(max_examples=100, deadline=None)
def test_rewards_never_raise_and_stay_in_range(text: str) -> None:
    task = AdditionTask(prompt_style="compact")
    ex = task.example(AdditionProblem((893, 581), 4), "x")
    for fn in task.reward_functions().values():
        (r,) = fn([text], [ex])
        assert 0.0 <= r <= 1.0


def test_task_prompts_load_and_files(tmp_path: Path, tokenizer) -> None:
    compact = get_task("addition", prompt_style="compact", carries=[2, 3], test_size=20)
    ex = compact.load("test")[0]
    assert compact.user_message(ex) == f"{ex.question}="
    assert ex.response == ex.answer and len(ex.answer) == 4
    assert ex.meta["carries"] in (2, 3)
    train = get_task("addition")
    tex = train.load("validation", limit=2)[1]
    assert train.user_message(tex).startswith(SYSTEM_PROMPT)
    assert "<reasoning>\n" in (tex.response or "") and "carry" not in train.user_message(tex)
    # "trace": the bare prompt, answered with the full traced demonstration.
    trace = get_task("addition", prompt_style="trace", digits=6, test_size=5)
    tr = trace.load("test")[0]
    assert trace.user_message(tr) == f"{tr.question}="
    lines = tr.response.split("\n")[1:8]  # seven columns for a 7-digit answer width
    body = "\n".join(lines)
    assert tr.response == f"<reasoning>\n{body}\n</reasoning>\n<answer>\n{tr.answer}\n</answer>"
    assert [len(line) for line in lines] == [11] * 7 and lines[0].startswith("c1:")
    assert "".join(line[-1] for line in reversed(lines)) == tr.answer
    # With a chat template the prompt goes through it; a base tokenizer gets the bare text.
    assert render_prompt(tokenizer, compact, ex).endswith("<|end_header_id|>\n\n")
    from d1.core.models.tiny import tiny_tokenizer

    assert render_prompt(tiny_tokenizer("tiny-xs-base"), compact, ex) == f"{ex.question}="
    path = tmp_path / "a.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["question", "answer", "response"])
        w.writeheader()
        w.writerow({"question": "12+34", "answer": "46", "response": "46"})
        w.writerow({"question": "99+1", "answer": "100", "response": ""})
    rows = compact.load("train", path=str(path))
    assert [r.answer for r in rows] == ["0046", "0100"]
    assert rows[0].response == "46" and rows[1].response == "0100"
    rebuilt = compact.example_from_gold("893+581", "1474", example_id="g")
    assert compact.score("1474", rebuilt).correct == 1.0
