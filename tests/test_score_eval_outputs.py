"""`d1 score` rescores `d1 eval`'s own generation files, for every task and prompt style, to the
correctness the evaluation recorded (d1.recipes.evaluation.scoring reading d1.recipes.evaluation.runner's output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import d1.recipes.evaluation.runner as runner
from d1.cli import app
from d1.recipes.evaluation.runner import EvalConfig, evaluate_model
from d1.recipes.evaluation.scoring import read_generations, score_files
from d1.tasks import Example, get_task
from d1.tasks.puzzles.countdown import solve_countdown

FIXTURES = Path(__file__).parent / "fixtures"

# Every prompt style of every task that `d1 eval` can run offline.
STYLES = {
    "gsm8k": ("train", "d1_eval"),
    "math500": ("train", "d1_eval"),
    "countdown": ("train", "d1_eval", "compact"),
    "sudoku": ("train", "d1_eval", "compact"),
    "addition": ("train", "compact", "trace"),
    "humaneval": ("d1", "explicit"),
}

HUMANEVAL_ROWS = [
    {
        "task_id": f"HumanEval/{i}",
        "prompt": f'def f{i}(a, b):\n    """Return a {op} b."""\n',
        "canonical_solution": f"    return a {op} b\n",
        "test": f"def check(candidate):\n    assert candidate(2, 3) == 2 {op} 3\n"
        f"    assert candidate(5, 1) == 5 {op} 1\n",
        "entry_point": f"f{i}",
    }
    for i, op in enumerate(["+", "-", "*", "+"])
]


def _data_paths(tmp_path: Path) -> dict[str, str]:
    he = tmp_path / "humaneval.jsonl"
    he.write_text("".join(json.dumps(r) + "\n" for r in HUMANEVAL_ROWS))
    return {
        "gsm8k": str(FIXTURES / "tiny_gsm8k.jsonl"),
        "math500": str(FIXTURES / "tiny_math.jsonl"),
        "humaneval": str(he),
    }


def _right_answer(task: str, ex: Example) -> str:
    """A completion the task's scorer counts correct."""
    if task == "gsm8k":
        return f"<reasoning>\nadd\n</reasoning>\n<answer>\n{ex.answer}\n</answer>"
    if task == "math500":
        return f"<answer>\n\\boxed{{{ex.answer}}}\n</answer>"
    if task == "countdown":
        return f"<answer>{solve_countdown(ex.meta['numbers'], ex.meta['target'])}</answer>"
    if task == "sudoku":
        return f"<answer>\n{ex.meta['solution']}\n</answer>"
    if task == "addition":
        return f"<answer>{ex.answer}</answer>"
    assert task == "humaneval"
    return f"<answer>\n```python\n{ex.meta['solution']}```\n</answer>"


def _fake_generation(answers: list[str]):
    def fake(model, tokenizer, prompts, **kwargs):
        assert len(prompts) == len(answers)
        return list(answers), [len(a) for a in answers]

    return fake


@pytest.mark.parametrize("task", sorted(STYLES))
def test_score_reproduces_eval_correctness_for_every_prompt_style(
    task: str, tmp_path: Path, tiny_model, tokenizer, monkeypatch
) -> None:
    paths = _data_paths(tmp_path)
    for style in STYLES[task]:
        options = {task: {"prompt_style": style}}
        cfg = EvalConfig(
            model="tiny",
            tasks=(task,),
            gen_lengths=(16,),
            limit=4,
            data_paths={k: v for k, v in paths.items() if k == task},
            task_options=options,
            out=str(tmp_path / style),
        )
        exs = get_task(task, prompt_style=style).load(
            "test", path=paths.get(task), limit=4, seed=cfg.data_seed
        )
        # Right answers on even rows, wrong ones on odd rows: both verdicts are exercised.
        answers = [
            _right_answer(task, ex) if i % 2 == 0 else "<answer>\n0\n</answer>"
            for i, ex in enumerate(exs)
        ]
        monkeypatch.setattr(runner, "generate_completions", _fake_generation(answers))
        result = evaluate_model(tiny_model, tokenizer, cfg, mask_id=tokenizer.mask_token_id)
        recorded = [g.correct for g in result.runs[0].generations]
        assert len(exs) >= 2
        assert recorded == [float(i % 2 == 0) for i in range(len(exs))], (task, style, recorded)

        (gen_file,) = (tmp_path / style / "generations").glob("*.jsonl")
        assert gen_file.name == f"{get_task(task).name}_len16_seed0.jsonl"
        scored = score_files([gen_file])  # task and options from the file and its config.json
        assert [s.score.correct for s in scored] == recorded, (task, style)
        assert {s.record.gen_length for s in scored} == {16}
        assert [s.score.details for s in scored] == [g.details for g in result.runs[0].generations]


def test_score_reproduces_a_real_tiny_model_eval(tmp_path: Path, tiny_model, tokenizer) -> None:
    """No patching: the tiny model's own (mostly wrong) generations, every task, compact prompts
    where a task has them; `d1 score` on the output folder gives the recorded scores."""
    tasks = tuple(sorted(STYLES))
    options = {t: {"prompt_style": "compact"} for t in ("countdown", "sudoku", "addition")}
    cfg = EvalConfig(
        model="tiny",
        tasks=tasks,
        gen_lengths=(8,),
        limit=2,
        data_paths=_data_paths(tmp_path),
        task_options=options,
        out=str(tmp_path / "eval"),
    )
    result = evaluate_model(tiny_model, tokenizer, cfg, mask_id=tokenizer.mask_token_id)
    files = sorted((tmp_path / "eval" / "generations").glob("*.jsonl"))
    assert len(files) == len(tasks)
    for f in files:
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        assert all({"question", "answer", "meta"} <= set(r["example"]) for r in rows)
        scored = score_files([f])
        assert [s.score.correct for s in scored] == [r["correct"] for r in rows], f.name
        assert [s.score.parsed for s in scored] == [r["parsed"] for r in rows], f.name
    # The CLI, on the whole folder at once, prints each task's recorded accuracy.
    out = CliRunner().invoke(app, ["score", str(tmp_path / "eval" / "generations" / "*.jsonl")])
    assert out.exit_code == 0, out.output
    for row in result.summary:
        assert row["task"] in out.output


def test_old_eval_rows_without_example_still_need_the_question(tmp_path: Path) -> None:
    """A generation row without the saved example is rebuilt from its question and gold: fine
    for the default prompts, and a one-line error naming the fix for a compact Sudoku prompt."""
    gen = tmp_path / "generations"
    gen.mkdir()
    f = gen / "sudoku_len16_seed0.jsonl"
    row = {"id": "0", "prompt": "<|start|>0120", "completion": "x", "gold": "1" * 16}
    f.write_text(json.dumps({**row, "parsed": None, "correct": 0.0, "tokens": 1}) + "\n")
    assert read_generations(f)[0].example is None
    with pytest.raises(ValueError, match="no 16-digit puzzle"):
        score_files([f])
