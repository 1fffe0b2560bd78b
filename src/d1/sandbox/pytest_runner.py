"""Run a job's tests with real pytest, used as a library inside the sandbox's child process.

Why: KodCode's tests are pytest files, and only pytest itself gives them pytest's semantics
(fixtures of every scope, parametrize, marks, `skipif` conditions, xfail, unittest classes, the
built-in fixtures). The harness (`d1.sandbox.harness`) imports this module, and so pytest,
before any guard is up; `run` then calls `pytest.main` with `Plugin`, which

- locks the process down (`guard`: module snapshot, audit hook) and loads the candidate and the
  setup (`load`) when pytest collects the suite file, i.e. after pytest's own configuration
  and before any untrusted code (the file, a placeholder, is removed first);
- collects the setup namespace as the test module (no import, no file is read: the module is
  the one `load` filled), plus one item per plain test snippet (`Snippet`: runs the snippet on
  a fresh copy of that namespace, as the exec runner does), and keeps only what the job asks
  for: `__d1_call__("name")` / `__d1_call__("Class", "method")` select pytest's own items of
  that test (every parameter set), in job order;
- puts back what untrusted code patched (`reset`) and arms the per-test alarm before each item,
  and reports each job test once its items have run, on the harness's nonce-tagged channel.

A test counts as passed only when every item it selects passed: setup, call and teardown
reports all "passed" and not under xfail, and, for functions and snippets, the body returned
as seen by this plugin's own call (so a patched report cannot turn a failure into a pass).
Skipped (a `skip` mark, a true `skipif` condition, `pytest.skip()`), xfailed and xpassed tests
are not passes; a test's outcome is the name of the first exception ("AssertionError",
"Skipped", "Timeout", ...) or "XFailed" / "XPassed". A `__d1_call__` naming no collected test
fails with "KeyError". As on the command line: an error collecting the module runs nothing
(every test "CollectError"), and async tests fail (no async plugin is loaded).

pytest is configured not to touch anything outside the sandbox directory: no cache provider, no
conftest, no ini file (`-c /dev/null`), rootdir and basetemp inside the directory, no plugin
autoloading (the parent sets PYTEST_DISABLE_PLUGIN_AUTOLOAD), no output capture (the parent
caps stdout/stderr), no terminal reporter, plain asserts (the module is not imported, so nothing
is rewritten).
"""

from __future__ import annotations

import ast
import os
import types

import pytest
from _pytest.compat import is_async_function
from _pytest.outcomes import Exit
from _pytest.python import Function
from _pytest.unittest import TestCaseFunction

SUITE_FILE = "test_d1_suite.py"

# Built-in plugins that would write files, read configuration or print ("debugging" stays: the
# unittest plugin reads its options).
DISABLED_PLUGINS = (
    "cacheprovider",
    "stepwise",
    "faulthandler",
    "pastebin",
    "junitxml",
    "doctest",
    "setuponly",
    "setupplan",
    "terminal",
)


def d1_call_target(src: str) -> str | None:
    """ "name" or "Class::method" for a snippet that is exactly `__d1_call__("name")` or
    `__d1_call__("Class", "method")`; None for any other snippet."""
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    call = tree.body[0].value
    if not (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "__d1_call__"
        and not call.keywords
        and 1 <= len(call.args) <= 2
        and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args)
    ):
        return None
    return "::".join(a.value for a in call.args)  # type: ignore[attr-defined]


def _test_key(item) -> str:
    """An item's node id without the file and the parameter id: "name" or "Class::method"."""
    key = item.nodeid.split("::", 1)[1] if "::" in item.nodeid else item.nodeid
    return key.split("[", 1)[0]


def run(
    *,
    root: str,
    test_srcs: list[str],
    compiled_tests: list,
    guard,
    load,
    reset,
    report,
    finish,
    arm,
    test_timeout: float,
) -> None:
    """Run the job's tests under `pytest.main` (module doc); outcomes go through `report`."""
    _BaseException, _dict, _exec = BaseException, dict, exec
    _getattribute = object.__getattribute__
    _isinstance, _hasattr = isinstance, hasattr
    _is_async = is_async_function
    from d1.sandbox.harness import _exception_name as _name

    module = types.ModuleType("__d1_tests__")
    namespace = module.__dict__
    targets = [
        d1_call_target(src) if code is not None else None
        for src, code in zip(test_srcs, compiled_tests, strict=True)
    ]
    suite_path = os.path.join(root, SUITE_FILE)
    with open(suite_path, "w") as f:  # pytest wants an existing file; the module is `namespace`
        f.write("# the tests of this run (d1.sandbox)\n")

    # Per item: what this plugin saw of the body and the first failure of any phase.
    state: dict = {"body": None, "fail": None}
    plan: dict = {}  # id(item) -> job test indices
    needs_body: dict = {}  # id(item) -> whether its body is run by this plugin's own call
    collect_error: list = []  # the first failure collecting the module (nothing runs then)
    pending: dict = {}  # job test index -> items still to run
    verdict: dict = {}  # job test index -> first failure name (None: all passed so far)

    def record_body(call):
        try:
            result = call()
        except _BaseException as e:
            state["body"] = _name(e)
            if _isinstance(e, (KeyboardInterrupt, Exit)):
                # pytest would end the session: a test's own failure only.
                raise RuntimeError(f"d1 sandbox: the test raised {_name(e)}") from None
            raise
        state["body"] = "ok"
        return result

    class Snippet(pytest.Item):
        """One plain job test: its code on a fresh copy of the test namespace."""

        def __init__(self, *, code, **kwargs) -> None:
            super().__init__(**kwargs)
            self.code = code

        def runtest(self) -> None:
            record_body(lambda: _exec(self.code, _dict(namespace)))

        def reportinfo(self):
            return self.path, None, self.name

    class SuiteModule(pytest.Module):
        """The test module: the namespace `load` filled, plus the plain job tests."""

        def _getobj(self):
            return module

        def collect(self):
            yield from super().collect()
            for i, code in enumerate(compiled_tests):
                if code is not None and targets[i] is None:
                    yield Snippet.from_parent(self, name=f"__d1_test_{i}", code=code)

    class Plugin:
        @pytest.hookimpl(tryfirst=True)
        def pytest_pycollect_makemodule(self, module_path, parent):
            if str(module_path) != suite_path:
                return None
            # pytest has found the file: it goes (the candidate sees an empty directory, as
            # under the exec runner), the guards go up, the candidate and the setup load.
            os.remove(suite_path)
            guard()
            load(namespace)
            return SuiteModule.from_parent(parent, path=module_path)

        def pytest_collectreport(self, report) -> None:
            if report.failed and not collect_error:
                collect_error.append("CollectError")

        def pytest_collection_modifyitems(self, session, config, items) -> None:
            # Runs before any test, after `load` and its reset: the classes are genuine here.
            by_key: dict = {}
            for item in items:
                needs_body[id(item)] = _isinstance(item, (Snippet, Function)) and not _isinstance(
                    item, TestCaseFunction
                )
                if _isinstance(item, Snippet):
                    by_key[item.name] = [item]
                else:
                    by_key.setdefault(_test_key(item), []).append(item)
            selected, seen = [], set()
            for i, code in enumerate(compiled_tests):
                if code is None:
                    continue
                key = targets[i] if targets[i] is not None else f"__d1_test_{i}"
                found = by_key.get(key, [])
                if not found:
                    report(f"fail {i} {collect_error[0] if collect_error else 'KeyError'}")
                    continue
                pending[i] = len(found)
                verdict[i] = None
                for item in found:
                    plan.setdefault(id(item), []).append(i)
                    if id(item) not in seen:
                        seen.add(id(item))
                        selected.append(item)
            deselected = [item for item in items if id(item) not in seen]
            if deselected:
                config.hook.pytest_deselected(items=deselected)
            items[:] = selected

        @pytest.hookimpl(tryfirst=True)
        def pytest_pyfunc_call(self, pyfuncitem):
            function = pyfuncitem.obj
            if _is_async(function):
                return None  # pytest's own handling: an async test fails without a plugin
            funcargs = pyfuncitem.funcargs
            args = {arg: funcargs[arg] for arg in pyfuncitem._fixtureinfo.argnames}
            result = record_body(lambda: function(**args))
            if _hasattr(result, "__await__") or _hasattr(result, "__aiter__"):
                state["body"] = "Coroutine"
                return None
            return True

        @pytest.hookimpl(wrapper=True, tryfirst=True)
        def pytest_runtest_makereport(self, item, call):
            rep = yield
            if state["fail"] is None:
                xfail = _hasattr(rep, "wasxfail")
                outcome = rep.outcome
                if xfail:
                    state["fail"] = "XFailed" if outcome == "skipped" else "XPassed"
                elif outcome != "passed":
                    excinfo = _getattribute(call, "excinfo")
                    state["fail"] = _name(excinfo.value) if excinfo is not None else "Failed"
            return rep

        @pytest.hookimpl(wrapper=True, tryfirst=True)
        def pytest_runtest_protocol(self, item, nextitem):
            reset()
            state["body"] = state["fail"] = None
            arm(test_timeout)
            try:
                return (yield)
            except _BaseException as e:  # the alarm went off inside pytest's own code
                state["fail"] = state["fail"] or _name(e)
                return True
            finally:
                arm(0)
                fail = state["fail"]
                if fail is None and needs_body.get(id(item), True) and state["body"] != "ok":
                    fail = state["body"] or "NotRun"
                for i in plan.get(id(item), ()):
                    if verdict[i] is None and fail is not None:
                        verdict[i] = fail
                    pending[i] -= 1
                    if pending[i] == 0:
                        report(f"pass {i}" if verdict[i] is None else f"fail {i} {verdict[i]}")

        @pytest.hookimpl(tryfirst=True)
        def pytest_sessionfinish(self, session, exitstatus) -> None:
            # Every outcome is reported: end here, skipping pytest's unconfigure (its forced
            # garbage collections cost more than the tests of a small file).
            finish()

    args = [suite_path, "-s", "--assert=plain", "--noconftest", "-c", os.devnull]
    args += ["--rootdir", root, "--confcutdir", root, "--basetemp", os.path.join(root, "tmp")]
    for name in DISABLED_PLUGINS:
        args += ["-p", "no:" + name]
    pytest.main(args, plugins=[Plugin()])
