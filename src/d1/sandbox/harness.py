"""The sandbox's child process: limits, guards, then the candidate and its tests.

The parent (`d1.sandbox.parent`) starts a fresh `python -I -B` that imports this module and calls
`_child_main(CONFIG)`. It lowers the resource limits, installs the seccomp filter
(`d1.sandbox.seccomp`) and the audit hook (`d1.sandbox.audit`), and only then runs the
candidate as module `solution`, the test setup, and each test, reporting every outcome on the
private, nonce-tagged result socket (the protocol is in `d1/sandbox/__init__.py`). It never
returns: `os._exit` skips the candidate's atexit handlers and threads.
"""

from __future__ import annotations

import os
import sys

from d1.sandbox.audit import _make_audit_hook
from d1.sandbox.seccomp import _install_seccomp


def _neuter_posixsubprocess() -> None:
    """Replace `_posixsubprocess.fork_exec` (which forks without an audit event) by a refusal,
    so `import subprocess` keeps working (pytest needs it) while spawning does not."""
    try:
        import _posixsubprocess
    except ImportError:
        return

    def fork_exec(*args, **kwargs):
        raise PermissionError("d1 sandbox: creating processes is not allowed")

    _posixsubprocess.fork_exec = fork_exec


def _prefer_path_based_shutil() -> None:
    """Make `shutil.rmtree` remove by full path (audited `os.remove`/`os.rmdir`) instead of by
    relative `os.open(..., dir_fd=)`, which the audit hook cannot check and refuses."""
    import shutil

    if hasattr(shutil, "_use_fd_functions"):
        shutil._use_fd_functions = False


def _user_task_count(uid: int) -> int:
    """Tasks (processes and threads) of `uid`, from /proc; what RLIMIT_NPROC is compared with."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                uid_line = threads = None
                for line in f:
                    if line.startswith("Uid:"):
                        uid_line = line
                    elif line.startswith("Threads:"):
                        threads = line
                        break
        except OSError:
            continue
        if uid_line is not None and int(uid_line.split()[1]) == uid:
            count += int(threads.split()[1]) if threads else 1
    return count


def _apply_limits(cfg: dict) -> None:
    """Lower this process's resource limits (child side, before any untrusted code)."""
    import resource
    import signal

    def lower(which: int, value: int) -> None:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    mib = 1024 * 1024
    lower(resource.RLIMIT_AS, int(cfg["memory_mb"]) * mib)
    # CPU seconds: SIGXCPU kills the process a little after the wall-clock budget.
    lower(resource.RLIMIT_CPU, int(cfg["timeout_s"]) + 2)
    lower(resource.RLIMIT_FSIZE, int(cfg["max_file_mb"]) * mib)
    lower(resource.RLIMIT_NOFILE, int(cfg["max_open_files"]))
    lower(resource.RLIMIT_CORE, 0)
    if os.getuid() != 0:
        # Per-user count, ignored for root: allow `max_tasks` more tasks than the user has now.
        try:  # noqa: SIM105 (keep the child's imports minimal)
            lower(resource.RLIMIT_NPROC, _user_task_count(os.getuid()) + int(cfg["max_tasks"]))
        except (OSError, ValueError):
            pass
    # Oversized writes then fail with EFBIG (an OSError) instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _exception_name(exc: BaseException, _type=type) -> str:
    """The exception's class name, safe for a one-line record (`type` bound at definition, so a
    candidate replacing `builtins.type` cannot change it)."""
    name = _type(exc).__name__
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)[:64] or "Exception"


def _make_pytest_runner(root: str):
    """`__d1_call__`: run one pytest-style test item (parametrize, fixtures, classes).

    Built before untrusted code runs, so the modules it uses are the genuine ones.
    """
    import collections
    import inspect
    import io
    import pathlib
    import unittest

    signature = inspect.signature
    isgenerator = inspect.isgenerator
    iscoroutine = inspect.iscoroutine
    StringIO = io.StringIO
    Path = pathlib.Path
    TestCase = unittest.TestCase
    CaptureResult = collections.namedtuple("CaptureResult", ["out", "err"])
    counter = [0]

    class Skipped(Exception):
        """A test skipped at run time (`skip`/`skipif` mark): counted as not passed."""

    class Capture:
        """`capsys` / `capfd`: sys.stdout / sys.stderr captured in memory."""

        def __init__(self) -> None:
            self._saved = (sys.stdout, sys.stderr)
            self._out, self._err = StringIO(), StringIO()
            sys.stdout, sys.stderr = self._out, self._err

        def readouterr(self):
            out, err = self._out.getvalue(), self._err.getvalue()
            for buf in (self._out, self._err):
                buf.seek(0)
                buf.truncate()
            return CaptureResult(out, err)

        def close(self) -> None:
            sys.stdout, sys.stderr = self._saved

        def disabled(self):
            capture = self

            class _Disabled:
                def __enter__(self_inner):
                    sys.stdout, sys.stderr = capture._saved

                def __exit__(self_inner, *exc):
                    sys.stdout, sys.stderr = capture._out, capture._err
                    return False

            return _Disabled()

    def fresh_dir() -> str:
        counter[0] += 1
        path = os.path.join(root, f"pytest-tmp-{counter[0]}")
        os.mkdir(path)
        return path

    def fixture_function(obj):
        """The plain function behind a `@pytest.fixture` object, and its marker (or None)."""
        fn = getattr(obj, "_fixture_function", None)  # pytest >= 8.4
        if fn is not None:
            return fn, getattr(obj, "_fixture_function_marker", None)
        wrapped = getattr(obj, "__pytest_wrapped__", None)  # older pytest
        if wrapped is not None:
            return wrapped.obj, getattr(obj, "_pytestfixturefunction", None)
        return None, None

    def user_fixtures(*spaces) -> dict:
        found = {}
        for space in spaces:
            for key, value in list(space.items()):
                fn, marker = fixture_function(value)
                if fn is not None:
                    found[getattr(marker, "name", None) or key] = (fn, marker)
        return found

    def param_sets(marks) -> list[dict]:
        sets: list[dict] = [{}]
        for mark in marks:
            if getattr(mark, "name", None) != "parametrize":
                continue
            args = list(getattr(mark, "args", ()))
            kwargs = dict(getattr(mark, "kwargs", {}))
            argnames = args[0] if args else kwargs["argnames"]
            argvalues = args[1] if len(args) > 1 else kwargs["argvalues"]
            if isinstance(argnames, str):
                names = [n.strip() for n in argnames.split(",") if n.strip()]
            else:
                names = list(argnames)
            rows = []
            for value in argvalues:
                if hasattr(value, "values") and hasattr(value, "marks") and hasattr(value, "id"):
                    values = tuple(value.values)  # pytest.param(...)
                elif len(names) == 1:
                    values = (value,)
                else:
                    values = tuple(value)
                if len(values) != len(names):
                    raise TypeError(f"parametrize: {len(values)} values for names {names}")
                rows.append(dict(zip(names, values, strict=True)))
            sets = [{**a, **b} for a in sets for b in rows]
        return sets

    def skipped(marks) -> bool:
        for mark in marks:
            name = getattr(mark, "name", None)
            if name == "skip":
                return True
            if name == "skipif":
                conditions = list(getattr(mark, "args", ()))
                if "condition" in getattr(mark, "kwargs", {}):
                    conditions.append(mark.kwargs["condition"])
                if any(c for c in conditions if not isinstance(c, str)):
                    return True
        return False

    def call_with_fixtures(fn, params: dict, fixtures: dict, finalizers: list) -> None:
        cache: dict = {}

        def value_of(name: str, stack: tuple = ()):
            if name in params:
                return params[name]
            if name in cache:
                return cache[name]
            if name in stack:
                raise RecursionError(f"fixture cycle at {name!r}")
            if name in fixtures:
                ffn, _ = fixtures[name]
                result = ffn(**arguments(ffn, (*stack, name)))
                if isgenerator(result):
                    gen = result
                    result = next(gen)
                    finalizers.append(lambda gen=gen: next(gen, None))
            elif name == "tmp_path":
                result = Path(fresh_dir())
            elif name == "tmpdir":
                try:
                    from _pytest._py.path import LocalPath

                    result = LocalPath(fresh_dir())
                except ImportError:
                    result = Path(fresh_dir())
            elif name in ("capsys", "capfd"):
                result = Capture()
                finalizers.append(result.close)
            elif name == "monkeypatch":
                from _pytest.monkeypatch import MonkeyPatch

                result = MonkeyPatch()
                finalizers.append(result.undo)
            else:
                raise LookupError(f"fixture {name!r} not found")
            cache[name] = result
            return result

        def arguments(func, stack: tuple = ()) -> dict:
            out = {}
            for pname, p in signature(func).parameters.items():
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                if pname in params or pname in fixtures or p.default is p.empty:
                    out[pname] = value_of(pname, stack)
            return out

        for name, (_, marker) in fixtures.items():
            if getattr(marker, "autouse", False):
                value_of(name)
        result = fn(**arguments(fn))
        if iscoroutine(result):
            import asyncio

            asyncio.run(result)

    def run(ns: dict, name: str, method: str | None = None) -> None:
        owner = ns[name] if method is not None else None
        fn = getattr(owner, method) if owner is not None else ns[name]
        marks = list(getattr(fn, "pytestmark", []) or [])
        if owner is not None:
            marks += list(getattr(owner, "pytestmark", []) or [])
        if skipped(marks):
            raise Skipped(name)  # a skipped test is no evidence of a correct solution
        spaces = [ns] if owner is None else [ns, dict(vars(owner))]
        for params in param_sets(marks):
            finalizers: list = []
            try:
                if owner is None:
                    setup = ns.get("setup_function")
                    if callable(setup):
                        setup(fn) if signature(setup).parameters else setup()
                        teardown = ns.get("teardown_function")
                        if callable(teardown):
                            finalizers.append(
                                lambda t=teardown: t(fn) if signature(t).parameters else t()
                            )
                    call_with_fixtures(fn, params, user_fixtures(*spaces), finalizers)
                elif isinstance(owner, type) and issubclass(owner, TestCase):
                    owner.setUpClass()
                    finalizers.append(owner.tearDownClass)
                    case = owner(method)
                    case.setUp()
                    finalizers.append(case.tearDown)
                    getattr(case, method)()
                else:
                    instance = owner()
                    bound = getattr(instance, method)
                    setup = getattr(instance, "setup_method", None)
                    if callable(setup):
                        setup(bound)
                        teardown = getattr(instance, "teardown_method", None)
                        if callable(teardown):
                            finalizers.append(lambda t=teardown, b=bound: t(b))
                    fixtures = user_fixtures(ns)
                    for key, value in vars(owner).items():
                        ffn, marker = fixture_function(value)
                        if ffn is not None:
                            # A fixture method: bind it to the instance.
                            fixtures[getattr(marker, "name", None) or key] = (
                                ffn.__get__(instance),
                                marker,
                            )
                    call_with_fixtures(bound, params, fixtures, finalizers)
            finally:
                error = None
                for finalizer in reversed(finalizers):
                    try:
                        finalizer()
                    except BaseException as e:
                        error = error or e
                if error is not None:
                    raise error

    return run


def _snapshot_modules():
    """A function that puts back every module attribute (builtins, stdlib, pytest, the harness)
    rebound or deleted since this call, and every replaced `sys.modules` entry. Attributes that
    were added, class attributes and object state are left alone."""
    modules = sys.modules
    saved_modules = dict(modules)
    saved = [
        (vars(m), dict(vars(m)))
        for name, m in list(modules.items())
        if m is not None and name != "solution" and isinstance(getattr(m, "__dict__", None), dict)
    ]
    missing = object()

    def restore() -> None:
        for namespace, values in saved:
            for key, value in values.items():
                if namespace.get(key, missing) is not value:
                    namespace[key] = value
        for key, value in saved_modules.items():
            if modules.get(key, missing) is not value:
                modules[key] = value

    return restore


def _child_main(config_path: str) -> None:
    """Entry point of the sandbox process (see the module docstring for the protocol)."""
    import json
    import signal
    import types

    with open(config_path, "rb") as f:
        cfg = json.loads(f.read())
    os.remove(config_path)  # the tests and the nonce are not left on disk
    _apply_limits(cfg)
    seccomp = bool(cfg["seccomp"]) and _install_seccomp()
    _neuter_posixsubprocess()
    _prefer_path_based_shutil()

    # Everything the test loop uses is bound to locals now, before untrusted code can replace
    # builtins, module attributes or `sys.modules` entries (a patched `enumerate` could
    # otherwise relabel tests).
    _exec, _compile, _dict, _enumerate = exec, compile, dict, enumerate
    _BaseException = BaseException
    _write, _exit, _chdir = os.write, os._exit, os.chdir
    _setitimer, _ITIMER_REAL = signal.setitimer, signal.ITIMER_REAL
    _name = _exception_name
    _sys, _modules = sys, sys.modules
    _stdout, _stderr = sys.stdout, sys.stderr
    result_fd = int(cfg["result_fd"])
    prefix = (str(cfg["nonce"]) + " ").encode()
    root = os.path.realpath(os.getcwd())
    test_timeout = float(cfg["test_timeout_s"])
    max_files = int(cfg["max_files"])
    code_src, setup_src, test_srcs = cfg["code"], cfg["setup"], list(cfg["tests"])
    del cfg

    def report(line: str) -> None:
        _write(result_fd, prefix + line.encode("ascii", "replace") + b"\n")

    class Timeout(BaseException):  # reported as the outcome "Timeout"
        """Raised by the per-test alarm; a BaseException so `except Exception` cannot hide it."""

    def on_alarm(signum, frame):
        raise Timeout()

    signal.signal(signal.SIGALRM, on_alarm)

    # Compile the trusted sources first, so a broken test is reported as such.
    compiled_tests: list = []
    for i, src in enumerate(test_srcs):
        try:
            compiled_tests.append(_compile(src, f"<test {i}>", "exec"))
        except _BaseException as e:
            compiled_tests.append(None)
            report(f"test_error {i} {_name(e)}")
    try:
        setup_code = _compile(setup_src, "<setup>", "exec")
    except _BaseException as e:
        setup_code = None
        report(f"setup_error {_name(e)}")
    runner = _make_pytest_runner(root) if any("__d1_call__" in s for s in test_srcs) else None
    if "pytest" in setup_src or any("pytest" in s for s in test_srcs):
        import importlib.util

        if importlib.util.find_spec("pytest") is not None:
            import pytest  # noqa: F401  (imported now, so that the restore below covers it)
    restore_modules = _snapshot_modules()

    sys.addaudithook(_make_audit_hook(root, report, max_files))
    report("ready seccomp" if seccomp else "ready")

    def timed(code, namespace) -> None:
        _setitimer(_ITIMER_REAL, test_timeout)
        try:
            _exec(code, namespace)
        finally:
            _setitimer(_ITIMER_REAL, 0)

    def finish() -> None:
        for stream in (_stdout, _stderr):
            try:  # noqa: SIM105 (no module lookups after untrusted code ran)
                stream.flush()
            except _BaseException:
                pass
        report("done")
        _exit(0)  # skip atexit handlers, finalizers and non-daemon threads of the candidate

    def reset() -> None:
        """Undo what untrusted code did to shared state before trusted code runs again."""
        restore_modules()
        _chdir(root)
        _sys.stdout, _sys.stderr = _stdout, _stderr

    # 1. The candidate, as module `solution`.
    try:
        code = _compile(code_src, "solution.py", "exec")
    except _BaseException as e:
        report(f"compile_error {_name(e)}")
        finish()
    module = types.ModuleType("solution")
    module.__file__ = os.path.join(root, "solution.py")
    module_dict = module.__dict__
    _modules["solution"] = module
    try:
        timed(code, module_dict)
    except _BaseException as e:
        report(f"load_error {_name(e)}")
        finish()

    # 2. The test namespace: the candidate's globals plus the setup code.
    namespace = _dict(module_dict)
    namespace["__name__"] = "__d1_tests__"
    if setup_code is None:
        finish()
    try:
        reset()
        timed(setup_code, namespace)
    except _BaseException as e:
        report(f"setup_error {_name(e)}")
        finish()

    # 3. Each test on its own copy of the namespace.
    for i, test_code in _enumerate(compiled_tests):
        if test_code is None:
            continue
        try:
            reset()
            scope = _dict(namespace)
            if runner is not None:
                scope["__d1_call__"] = lambda *a, _s=scope: runner(_s, *a)
            timed(test_code, scope)
            outcome = f"pass {i}"
        except _BaseException as e:
            outcome = f"fail {i} {_name(e)}"
        report(outcome)
    finish()
