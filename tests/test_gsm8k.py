"""GSM8K task: data, prompts, the five reward components, the scorer (d1.tasks.gsm8k)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d1.tasks import get_task, render_prompt
from d1.tasks.base import SYSTEM_PROMPT, Example
from d1.tasks.gsm8k import (
    D1_EVAL_PROMPT,
    GSM8KTask,
    box_number,
    gold_from_solution,
    parse_answer,
    parse_answer_d1,
)

FIXTURES = Path(__file__).parent / "fixtures"
EX = Example(id="t/0", question="Q?", answer="18")
NEG = Example(id="t/1", question="Q?", answer="-3")
BIG = Example(id="t/2", question="Q?", answer="1000")


def completion(answer: str, reasoning: str = "Step 1.\nStep 2.") -> str:
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>\n"


# -- data ---------------------------------------------------------------------------------------
def test_gold_from_solution() -> None:
    assert gold_from_solution("He has 3 + 4 = 7 apples.\n#### 7") == "7"
    assert gold_from_solution("...\n#### 1,000") == "1000"
    assert gold_from_solution("#### -3") == "-3"
    assert gold_from_solution("42") == "42"  # files that store only the final number
    with pytest.raises(ValueError, match="####"):
        gold_from_solution("no marker here")


@pytest.mark.parametrize("name", ["tiny_gsm8k.jsonl", "tiny_gsm8k.parquet"])
def test_load_local_splits(name: str) -> None:
    task = GSM8KTask(validation_size=1)
    path = str(FIXTURES / name)
    test = task.load("test", path=path)
    assert [e.answer for e in test] == ["7", "1000", "-3"]
    assert test[0].response is not None and "<<" not in test[0].response
    assert test[0].response.endswith("<answer>\n7\n</answer>")
    train = task.load("train", path=path, seed=1)
    val = task.load("validation", path=path, seed=1)
    assert len(train) == 2 and len(val) == 1
    assert {e.id for e in train}.isdisjoint({e.id for e in val})
    assert task.load("train", path=path, seed=1, limit=1) == train[:1]
    with pytest.raises(ValueError, match="no validation split"):
        GSM8KTask(validation_size=0).load("validation", path=path)
    with pytest.raises(ValueError, match="Unknown split"):
        task.load("dev", path=path)


def test_load_csv_and_bad_rows(tmp_path: Path) -> None:
    task = GSM8KTask(validation_size=0)
    assert [e.answer for e in task.load("train", path=str(FIXTURES / "tiny_gsm8k.csv"))] == [
        "7",
        "5",
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "#### 1"}\n{"question": "b", "answer": "six"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl/1.*####"):
        task.load("test", path=str(bad))
    bad.write_text('{"question": "a"}\n')
    with pytest.raises(ValueError, match=r"row 0 .*'answer'"):
        task.load("test", path=str(bad))


def test_hub_ids_and_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        rows = [{"question": f"q{i} {split}", "answer": f"#### {i}"} for i in range(20)]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    task = get_task("gsm8k", validation_size=5)
    test = task.load("test")
    train = task.load("train")
    val = task.load("validation")
    hub = ("openai/gsm8k", "main")
    assert calls == [(*hub, "test"), (*hub, "train"), (*hub, "train")]
    assert len(test) == 20 and len(train) == 15 and len(val) == 5
    assert test[3].id == "gsm8k/test/3" and train[0].id.startswith("gsm8k/train/")
    assert {e.question for e in train}.isdisjoint({e.question for e in val})


# -- prompts ------------------------------------------------------------------------------------
class FakeTokenizer:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        body = "".join(f"<|{m['role']}|>{m['content']}<|eot_id|>" for m in messages)
        return body + ("<|assistant|>" if add_generation_prompt else "")


def test_prompts_train_and_d1_eval() -> None:
    ex = Example(id="x", question="What is 2+2?", answer="4")
    train = GSM8KTask()
    assert train.user_message(ex) == SYSTEM_PROMPT + "\n\nWhat is 2+2?"
    assert render_prompt(FakeTokenizer(), train, ex).endswith("<|assistant|>")
    ev = GSM8KTask(prompt_style="d1_eval")
    assert ev.user_message(ex) == (
        "You are a math expert. You will be given a question to solve. Solve it step by step. "
        "Wrap the final answer in a \\boxed{}. \nRespond in the following format:\n<reasoning>\n"
        "Your reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>\n\nWhat is 2+2?"
    )
    assert ev.user_message(ex).startswith(D1_EVAL_PROMPT)
    assert render_prompt(FakeTokenizer(), ev, ex).endswith("<|assistant|><reasoning>")
    with pytest.raises(ValueError, match="prompt_style"):
        GSM8KTask(prompt_style="fancy")  # type: ignore[arg-type]


# -- rewards ------------------------------------------------------------------------------------
def rewards(task: GSM8KTask, text: str, ex: Example = EX) -> dict[str, float]:
    return {k: fn([text], [ex])[0] for k, fn in task.reward_functions().items()}


def test_perfect_completion_earns_max_4() -> None:
    r = rewards(GSM8KTask(), completion("18"))
    assert r == pytest.approx(
        {"xmlcount": 0.5, "soft_format": 0.5, "strict_format": 0.5, "int_answer": 0.5,
         "correctness": 2.0}
    )  # fmt: skip
    assert sum(r.values()) == pytest.approx(4.0)


def test_reward_components_hand_cases() -> None:
    t = GSM8KTask()
    wrong = rewards(t, completion("17"))
    assert wrong["correctness"] == 0.0 and wrong["int_answer"] == 0.5
    # negative integers: d1's str.isdigit never rewarded them
    assert rewards(t, completion("-3"), NEG)["int_answer"] == 0.5
    assert rewards(t, completion("-3"), NEG)["correctness"] == 2.0
    assert rewards(GSM8KTask(d1_compat=True), completion("-3"), NEG)["int_answer"] == 0.0
    # "18.0": numerically correct, but not written as an integer
    dec = rewards(t, completion("18.0"))
    assert dec["correctness"] == 2.0 and dec["int_answer"] == 0.0
    # light cleaning: thousands separators, $, \boxed{}, a final period
    for text in ("1,000", "$1,000", "\\boxed{1000}", "1000."):
        r = rewards(t, completion(text), BIG)
        assert r["correctness"] == 2.0 and r["int_answer"] == 0.5, text
    # d1 compared raw strings
    assert rewards(GSM8KTask(d1_compat=True), completion("1,000"), BIG)["correctness"] == 0.0
    # a sentence is not a numeric answer
    assert rewards(t, completion("18 apples"))["correctness"] == 0.0
    # no <answer> tag: no answer rewards (d1 compared the whole text)
    none = rewards(t, "The answer is 18.")
    assert none == {"xmlcount": 0.0, "soft_format": 0.0, "strict_format": 0.0,
                    "int_answer": 0.0, "correctness": 0.0}  # fmt: skip
    assert rewards(GSM8KTask(d1_compat=True), "18")["correctness"] == 2.0


def test_multiline_completion_format_reward_regression() -> None:
    text = completion("18", reasoning="Line one.\nLine two.\nLine three.")
    fixed, d1 = rewards(GSM8KTask(), text), rewards(GSM8KTask(d1_compat=True), text)
    assert fixed["soft_format"] == 0.5 and fixed["strict_format"] == 0.5
    assert d1["soft_format"] == 0.0 and d1["strict_format"] == 0.0


def test_reward_batches_and_length_mismatch() -> None:
    t = GSM8KTask()
    texts = [completion("18"), completion("-3"), "junk"]
    exs = [EX, NEG, EX]
    assert t.correctness_reward(texts, exs) == [2.0, 2.0, 0.0]
    with pytest.raises(ValueError):
        t.correctness_reward(texts, exs[:2])


@settings(max_examples=100, deadline=None)
@given(
    text=st.one_of(
        st.text(),
        st.builds(completion, st.text(max_size=12), st.text(max_size=20)),
    ),
    compat=st.booleans(),
)
def test_rewards_never_raise_and_stay_in_range(text: str, compat: bool) -> None:
    r = rewards(GSM8KTask(d1_compat=compat), text)
    assert r["soft_format"] in (0.0, 0.5) and r["strict_format"] in (0.0, 0.5)
    assert r["int_answer"] in (0.0, 0.5) and r["correctness"] in (0.0, 2.0)
    assert r["xmlcount"] <= 0.5 + 1e-12
    assert sum(r.values()) <= 4.0 + 1e-12


# -- scorer -------------------------------------------------------------------------------------
def test_box_number() -> None:
    assert box_number("1,000") == "1000"
    assert box_number("\\$18") == "18"
    assert box_number("5 \\times 3 = 15") == "15"
    assert box_number("2:00 pm") == "2"
    assert box_number("18 \\text{ dollars}") == "18"
    assert box_number("45/3") == "15"
    assert box_number("\\frac{2}{3}").startswith("0.666")  # not 2
    assert box_number("...") is None and box_number("") is None


def test_parse_answer_order_and_fallbacks() -> None:
    assert parse_answer(r"\boxed{1} reasoning \boxed{2}") == "2"
    assert parse_answer(r"x \boxed{12} <answer>\boxed{...}</answer>") == "12"  # skips empty box
    assert parse_answer("calc 3 + 4 = 7\n<answer>\n7 apples\n</answer>") == "7"
    assert parse_answer("<answer>\n\\boxed{225>") == "225"  # broken box inside an open tag
    assert parse_answer("so the total is 1,250 dollars.") == "1250"
    assert parse_answer("so the total is 1,250 dollars.", number_fallback=False) is None
    # text after the first EOS is not part of the answer
    assert parse_answer("\\boxed{20}</answer><|eot_id|>\n\\boxed{0}<|eot_id|>") == "20"
    assert parse_answer("nothing") is None


def test_score_correct_and_d1_compat_differences() -> None:
    t, d1 = GSM8KTask(), GSM8KTask(d1_compat=True)
    ex = Example(id="x", question="q", answer="43500")
    text = "<answer>\n\\boxed{43,500}\n</answer>"
    assert t.score(text, ex).correct == 1.0 and t.score(text, ex).parsed == "43500"
    assert d1.score(text, ex).correct == 0.0 and parse_answer_d1(text) == 43.0  # d1's comma bug
    # d1 takes the first number of the first box, accepting a wrong 2/3 for gold 2
    frac = "pay is \\boxed{\\frac{2}{3}} dollars"
    two = Example(id="y", question="q", answer="2")
    assert d1.score(frac, two).correct == 1.0 and t.score(frac, two).correct == 0.0
    # d1 only reads closed <answer> tags and has no last-number fallback
    assert parse_answer_d1("so 7.\n</reasoning>") is None
    assert parse_answer_d1("<answer> 3 then 7 </answer>") == 7.0
    assert parse_answer_d1("\\boxed{...} \\boxed{ 5 }") == 5.0
    assert t.score("so 7.", Example(id="z", question="q", answer="7")).correct == 1.0


def test_example_from_gold_for_saved_generations() -> None:
    t = GSM8KTask()
    assert t.example_from_gold("q", 18.0, example_id="f#0").answer == "18"
    assert t.example_from_gold("q", "1,000", example_id="f#1").answer == "1000"
    assert t.score("\\boxed{18}", t.example_from_gold("q", 18.0, example_id="i")).correct == 1.0


def _parse_answer_d1_reference(completion: str) -> float | None:
    """d1's eval/parse_and_get_acc.py GSM8K parser, verbatim in substance (regexes)."""
    import re

    for content in re.findall(r"\\boxed{(.*?)}", completion):
        content = content.strip()
        if not content or re.fullmatch(r"\.+", content):
            continue
        try:
            return float(content)
        except ValueError:
            numbers = re.findall(r"-?\d+\.?\d*", content)
            if numbers:
                return float(numbers[0])
    m = re.search(r"<answer>(.*?)</answer>", completion, re.DOTALL)
    if m and m.group(1).strip():
        text = m.group(1).strip()
        try:
            return float(text)
        except ValueError:
            numbers = re.findall(r"-?\d+\.?\d*", text)
            if numbers:
                return float(numbers[-1])
    return None


D1_PIECES = st.sampled_from(
    ["\\boxed{", "}", "{", "<answer>", "</answer>", "\n", " ", "7", "-3", "1.5", "..", "x", "."]
)


@settings(max_examples=1000, deadline=None)
@given(text=st.lists(st.one_of(D1_PIECES, st.text(max_size=3)), max_size=12).map("".join))
def test_linear_d1_parser_matches_d1s_regexes(text: str) -> None:
    want = _parse_answer_d1_reference(text)
    got = parse_answer_d1(text)
    assert (got is None and want is None) or got == want or (got != got and want != want)
