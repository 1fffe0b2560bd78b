"""The sandbox's child process: limits, guards, then the candidate and its tests.

The parent (`d1.sandbox.parent`) starts a fresh `python -I -B` that imports this module and calls
`_child_main(CONFIG)`. It lowers the resource limits, installs the seccomp filter
(`d1.sandbox.seccomp`) and the audit hook (`d1.sandbox.audit`), and only then runs the
candidate as module `solution`, the test setup, and each test, reporting every outcome on the
private, nonce-tagged result socket (the protocol is in `d1/sandbox/__init__.py`). The tests
run in a plain `exec` loop, or under real pytest (`d1/sandbox/pytest_runner.py`) when the
parent asks for it (`SandboxLimits.runner`). It never returns: `os._exit` skips the candidate's
atexit handlers and threads.
"""

from __future__ import annotations

import os
import sys

from d1.sandbox.audit import RECORD_BYTES, make_audit_hook
from d1.sandbox.seccomp import install_seccomp


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


def _snapshot_modules():
    """A function that puts back every module attribute (builtins, stdlib, pytest, the harness)
    rebound or deleted since this call, every replaced `sys.modules` entry, and every class
    attribute of pytest's and pluggy's own classes (the machinery that runs the tests and
    writes their reports under the pytest runner). Attributes that were added, other classes'
    attributes and object state are left alone."""
    modules = sys.modules
    saved_modules = dict(modules)
    saved = [
        (vars(m), dict(vars(m)))
        for name, m in list(modules.items())
        if m is not None and name != "solution" and isinstance(getattr(m, "__dict__", None), dict)
    ]
    classes = {}
    for name, m in list(modules.items()):
        if m is None or name.partition(".")[0] not in ("_pytest", "pytest", "pluggy"):
            continue
        for value in list(vars(m).values()):
            if isinstance(value, type) and getattr(value, "__module__", "") == name:
                classes[id(value)] = (value, dict(vars(value)))
    saved_classes = list(classes.values())
    set_attr = type.__setattr__
    missing = object()

    def restore() -> None:
        for namespace, values in saved:
            for key, value in values.items():
                if namespace.get(key, missing) is not value:
                    namespace[key] = value
        for key, value in saved_modules.items():
            if modules.get(key, missing) is not value:
                modules[key] = value
        for cls, values in saved_classes:
            current = cls.__dict__
            for key, value in values.items():
                if key not in ("__dict__", "__weakref__", "__doc__") and (
                    current.get(key, missing) is not value
                ):
                    try:  # noqa: SIM105 (no module lookups after untrusted code ran)
                        set_attr(cls, key, value)
                    except (AttributeError, TypeError):
                        pass

    return restore


def _child_main(config_path: str) -> None:
    """Entry point of the sandbox process (see the package docstring for the protocol)."""
    import json
    import signal
    import types

    with open(config_path, "rb") as f:
        cfg = json.loads(f.read())
    os.remove(config_path)  # the tests and the nonce are not left on disk
    _apply_limits(cfg)
    seccomp = bool(cfg["seccomp"]) and install_seccomp()
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
    use_pytest = cfg.get("runner") == "pytest"
    code_src, setup_src, test_srcs = cfg["code"], cfg["setup"], list(cfg["tests"])
    del cfg

    room = RECORD_BYTES - len(prefix) - 1

    def report(line: str) -> None:
        _write(result_fd, prefix + line.encode("ascii", "replace")[:room] + b"\n")

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
    if use_pytest:
        try:
            from d1.sandbox import pytest_runner
        except ImportError:
            report("no_pytest")  # the parent names the missing extra
            _exit(0)
    elif "pytest" in setup_src or any("pytest" in s for s in test_srcs):
        import importlib.util

        if importlib.util.find_spec("pytest") is not None:
            import pytest  # noqa: F401  (imported now, so that the restore below covers it)
    restore_modules = None

    def guard() -> None:
        """Snapshot the trusted modules, then lock down: from here on code may be hostile."""
        nonlocal restore_modules
        restore_modules = _snapshot_modules()
        sys.addaudithook(make_audit_hook(root, report, max_files))
        report("ready seccomp" if seccomp else "ready")

    def arm(seconds: float) -> None:
        _setitimer(_ITIMER_REAL, seconds)

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

    def load(namespace: dict) -> None:
        """The candidate as module `solution`, then the test namespace: its globals plus the
        setup code, in `namespace`. Reports the failure and finishes the run on error."""
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
        namespace.update(module_dict)
        namespace["__name__"] = "__d1_tests__"
        if setup_code is None:
            finish()
        try:
            reset()
            timed(setup_code, namespace)
        except _BaseException as e:
            report(f"setup_error {_name(e)}")
            finish()
        reset()

    if use_pytest:
        # Real pytest (d1/sandbox/pytest_runner.py): `guard` and `load` run inside its session,
        # after its configuration and before collection.
        try:  # noqa: SIM105 (no module lookups after untrusted code ran)
            pytest_runner.run(
                root=root,
                test_srcs=test_srcs,
                compiled_tests=compiled_tests,
                guard=guard,
                load=load,
                reset=reset,
                report=report,
                finish=finish,
                arm=arm,
                test_timeout=test_timeout,
            )
        except _BaseException:
            pass  # an alarm or an error inside pytest itself: the tests not reported are not run
        finish()

    guard()
    namespace: dict = {}
    load(namespace)
    # Each test on its own copy of the namespace.
    for i, test_code in _enumerate(compiled_tests):
        if test_code is None:
            continue
        try:
            reset()
            scope = _dict(namespace)
            timed(test_code, scope)
            outcome = f"pass {i}"
        except _BaseException as e:
            outcome = f"fail {i} {_name(e)}"
        report(outcome)
    finish()
