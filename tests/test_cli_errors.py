"""Bad input on the command line: one message naming the cause, exit 2, no traceback, and
nothing that already existed is changed. One case per fault a new user hit (missing or wrong
model, unusable data files, bad output or resume paths, unknown tasks and keys, offline hub)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from d1.cli import app

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SFT_CONFIG = str(CONFIGS / "sft" / "tiny_sudoku.yaml")
GRPO_CONFIG = str(CONFIGS / "grpo" / "tiny-sudoku.yaml")


def _files(root: Path) -> dict[str, str]:
    """Every file under `root` with the sha256 of its bytes (what must stay untouched)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """Inputs of every case, made once per test in `tmp_path/in` (compared before / after)."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "empty.jsonl").write_text("")
    (d / "unclosed.csv").write_text('prompt,response\n"2+2=,4\n1+1=,2\n')
    (d / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (d / "no_response.jsonl").write_text('{"prompt": "2+2="}\n')
    (d / "bad_line.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": \n')
    (d / "a_file").write_text("keep me\n")
    (d / "not_a_model").mkdir()
    (d / "not_a_model" / "notes.txt").write_text("keep me too\n")
    (d / "foreign").mkdir()
    (d / "foreign" / "config.json").write_text(json.dumps({"model_type": "mysterydlm"}))
    return d


def _sft(d: Path, *extra: str) -> list[str]:
    return ["sft", "--config", SFT_CONFIG, f"train.output_dir={d.parent / 'runs'}", *extra]


def _sft_rows(d: Path, file: str) -> list[str]:
    """SFT on a prompt/response file (no task, so no generation eval)."""
    return _sft(
        d,
        "eval_generation=null",
        "data.format=prompt_response",
        "data.task=null",
        "data.task_options={}",
        f"data.path={d / file}",
    )


# (name, arguments given the input folder, regexes the message must match)
CASES: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    (
        "model path that does not exist",
        lambda d: _sft(d, f"model.name_or_path={d / 'missing' / 'model'}"),
        [r"Model '.*missing/model' not found", r"no such folder"],
    ),
    (
        "relative model folder that does not exist (not a hub-id error)",
        lambda d: _sft(d, "model.name_or_path=./no_such_folder"),
        [r"'\./no_such_folder' not found", r"not a Hugging Face hub id"],
    ),
    (
        "folder that is not a model",
        lambda d: _sft(d, f"model.name_or_path={d / 'not_a_model'}"),
        [r"is a folder but not a model \(no config\.json\)"],
    ),
    (
        "model without a mask token",
        lambda d: _sft(d, f"model.name_or_path={d / 'foreign'}"),
        [r"mysterydlm", r"--mask-token-id"],
    ),
    (
        "generate with a missing model",
        lambda d: ["generate", "--model", str(d / "gone"), "--prompt", "hi"],
        [r"not found"],
    ),
    (
        "empty dataset file",
        lambda d: _sft_rows(d, "empty.jsonl"),
        [r"empty\.jsonl: the dataset holds no rows"],
    ),
    (
        "malformed CSV names the line, not a missing field",
        lambda d: _sft_rows(d, "unclosed.csv"),
        [r"unclosed\.csv: line \d+ does not have the header's 2 fields", r"unclosed quote"],
    ),
    (
        "binary dataset file names the file",
        lambda d: _sft_rows(d, "binary.jsonl"),
        [r"binary\.jsonl: not a UTF-8 text file"],
    ),
    (
        "row without a required field",
        lambda d: _sft_rows(d, "no_response.jsonl"),
        [r"no_response\.jsonl: row 0 is missing required field 'response'"],
    ),
    (
        "invalid JSON line",
        lambda d: _sft_rows(d, "bad_line.jsonl"),
        [r"bad_line\.jsonl: line 2 is not valid JSON"],
    ),
    (
        "garbage resume_from",
        lambda d: _sft(d, "train.resume_from=@@garbage@@"),
        [r"train\.resume_from=@@garbage@@", r"not a folder", r"resume_from=auto"],
    ),
    (
        "truncated resume_from (a folder that is no checkpoint)",
        lambda d: _sft(d, f"train.resume_from={d / 'not_a_model'}"),
        [r"is not a checkpoint", r"resume_from=auto"],
    ),
    (
        "output dir that is a file",
        lambda d: ["sft", "--config", SFT_CONFIG, f"train.output_dir={d / 'a_file'}"],
        [r"train\.output_dir", r"is a file, not a folder"],
    ),
    (
        "output dir below a file",
        lambda d: ["sft", "--config", SFT_CONFIG, f"train.output_dir={d / 'a_file' / 'runs'}"],
        [r"train\.output_dir", r"is a file, not a folder"],
    ),
    (
        "output dir that cannot be created",
        lambda d: ["sft", "--config", SFT_CONFIG, "train.output_dir=/proc/d1-cannot-write"],
        [r"Cannot create the run folder /proc/d1-cannot-write", r"train\.output_dir"],
    ),
    (
        "unknown command-line section is blamed on the command line",
        lambda d: _sft(d, "bogus.key=1"),
        [r"'bogus': unknown key", r"\(from command line\)"],
    ),
    (
        "bad completion length names the sampler key",
        lambda d: ["grpo", "--config", GRPO_CONFIG, "grpo.sampler.gen_length=0"],
        [r"grpo\.sampler\.gen_length", r"positive integer"],
    ),
    (
        "old flat GRPO key names its new key",
        lambda d: ["grpo", "--config", GRPO_CONFIG, "grpo.max_completion_length=64"],
        [r"grpo\.max_completion_length", r"grpo\.sampler\.gen_length"],
    ),
    (
        "eval of an unknown task, before any model loads",
        lambda d: ["eval", "--model", str(d / "gone"), "--tasks", "bogus"],
        [r"unknown task 'bogus'", r"known: .*sudoku"],
    ),
    (
        "eval with generation length 0",
        lambda d: ["eval", "--model", "tiny", "--tasks", "sudoku", "--gen-lengths", "0"],
        [r"gen_lengths", r"positive integers"],
    ),
    (
        "eval output that is a file",
        lambda d: ["eval", "--model", "tiny", "--tasks", "sudoku", "--out", str(d / "a_file")],
        [r"'out'", r"is a file, not a folder"],
    ),
    (
        "eval of a hub dataset offline suggests a local file",
        lambda d: [
            *("eval", "--model", "tiny-xs", "--tasks", "gsm8k", "--limit", "1"),
            *("--no-progress", "--out", str(d.parent / "eval")),
        ],
        [r"Cannot load the dataset 'openai/gsm8k'", r"--data TASK=PATH"],
    ),
    (
        "report on a missing folder",
        lambda d: ["report", str(d / "no_run")],
        [r"no_run does not exist"],
    ),
    (
        "select on a missing folder",
        lambda d: ["select", str(d / "no_run"), "--tasks", "sudoku", "--no-progress"],
        [r"no_run does not exist"],
    ),
    (
        "score of a missing file",
        lambda d: ["score", "--task", "gsm8k", str(d / "none.jsonl")],
        [r"none\.jsonl does not exist"],
    ),
    (
        "merge of a folder that is no adapter",
        lambda d: ["merge", str(d / "not_a_model"), str(d.parent / "merged")],
        [r"no adapter_config\.json"],
    ),
]


@pytest.mark.parametrize(("name", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_message_and_exit_2(
    name: str,
    args: Callable[[Path], list[str]],
    expected: list[str],
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import re

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(work.parent)
    before = _files(work)
    result = CliRunner().invoke(app, args(work))
    message = result.output
    assert result.exit_code == 2, (name, result.exit_code, message, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # no uncaught error
    assert "Traceback" not in message
    errors = [line for line in message.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, message
    for pattern in expected:
        assert re.search(pattern, message), (pattern, message)
    assert _files(work) == before  # nothing that existed was changed


def test_debug_shows_the_traceback(work: Path) -> None:
    """`d1 --debug` re-raises a known failure instead of the one-line message."""
    from d1.errors import ModelNotFoundError

    result = CliRunner().invoke(
        app, ["--debug", "generate", "--model", str(work / "gone"), "--prompt", "hi"]
    )
    assert isinstance(result.exception, ModelNotFoundError)
    assert result.exit_code == 1


def test_unknown_errors_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (an error that is not a known failure) keeps its traceback: it is not exit 2."""
    import d1.cli as cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_generate_one", broken)
    result = CliRunner().invoke(app, ["generate", "--model", "tiny-xs", "--prompt", "hi"])
    assert isinstance(result.exception, ZeroDivisionError)
    assert result.exit_code == 1
