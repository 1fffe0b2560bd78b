"""The sandbox's parent side: `run_tests`, `run_many`, their limits and results.

Each run writes the job to a fresh temporary directory, starts the child harness
(`d1.sandbox.harness`) in its own session with a scrubbed environment, reads its nonce-tagged
records from a private socket, enforces the wall-clock limit and the output caps, kills the
whole session and deletes the directory (protocol: `d1/sandbox/__init__.py`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from d1.sandbox.audit import RECORD_BYTES, RECORD_LIMIT_BLOCKED

# The child: a fresh interpreter that imports the harness from this very installation and runs
# it on the job file. It needs only the child modules (harness, seccomp, audit: standard library
# only), so `d1` and `d1.sandbox` are bare package stubs there: running their `__init__` (this
# parent API, its imports) would cost more than the rest of the start-up.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD_BOOTSTRAP = (
    "import sys, types\n"
    "for name in ('d1', 'd1.sandbox'):\n"
    "    stub = types.ModuleType(name)\n"
    "    stub.__path__ = [sys.argv[1] + '/' + name.replace('.', '/')]\n"
    "    sys.modules[name] = stub\n"
    "from d1.sandbox.harness import _child_main\n"
    "_child_main(sys.argv[2])\n"
)


# Outcome statuses of a run (SandboxResult.status).
STATUSES: tuple[str, ...] = (
    "passed",  # every test passed
    "failed",  # ran to the end, some test failed
    "syntax_error",  # the candidate does not compile
    "error",  # the candidate or the test setup raised (SystemExit included) before the tests
    "timeout",  # wall-clock or CPU limit reached
    "crashed",  # the process ended without finishing (os._exit, a fatal signal, ...)
    "no_tests",  # nothing to run (total = 0)
)


RUNNERS: tuple[str, ...] = ("auto", "pytest", "exec")

PYTEST_MISSING = (
    "The code sandbox runs pytest-style tests with pytest, which is not installed for {python}: "
    'pip install "d1[code]".'
)


class SandboxError(RuntimeError):
    """The sandbox itself could not run (not the candidate's fault): e.g. no interpreter."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run (defaults suit unit tests of small functions).

    Attributes:
        timeout_s: wall-clock budget of the whole run, interpreter start included; the
            process group is killed when it expires (CPU time is capped at this + 2 s).
        test_timeout_s: per-test alarm (also bounds loading the candidate and the setup);
            None uses `timeout_s`. A test that overruns fails and the next one starts, so a
            slow test does not take the credit of the others.
        memory_mb: address-space limit (RLIMIT_AS); allocations beyond it raise MemoryError.
        max_output_bytes: stdout and stderr are each cut to this many bytes (the rest is read
            and discarded).
        max_file_mb: largest file the candidate may write (RLIMIT_FSIZE; beyond: OSError).
        max_files: files the candidate may create in its directory.
        max_open_files: RLIMIT_NOFILE.
        max_tasks: extra processes/threads allowed when not root (RLIMIT_NPROC headroom).
        seccomp: also install the kernel-level seccomp filter (x86_64/aarch64 Linux); when it
            cannot be installed the run continues with the audit hook alone
            (`SandboxResult.seccomp` says which).
        runner: how the tests run in the child: "pytest" (real pytest as a library,
            `d1/sandbox/pytest_runner.py`; needs the `code` extra), "exec" (each snippet
            `exec`-ed in a loop: no pytest start-up, no `__d1_call__`), or "auto": pytest for
            jobs whose tests call pytest-style tests (`__d1_call__`), exec for the rest
            (assert snippets: HumanEval, MBPP), where both give the same outcomes.
    """

    timeout_s: float = 5.0
    test_timeout_s: float | None = None
    memory_mb: int = 512
    max_output_bytes: int = 64_000
    max_file_mb: int = 4
    max_files: int = 64
    max_open_files: int = 256
    max_tasks: int = 64
    seccomp: bool = True
    runner: str = "auto"

    def __post_init__(self) -> None:
        if self.runner not in RUNNERS:
            raise ValueError(f"runner must be one of {RUNNERS}, got {self.runner!r}.")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}.")
        if self.test_timeout_s is not None and not self.test_timeout_s > 0:
            raise ValueError(f"test_timeout_s must be > 0 or None, got {self.test_timeout_s}.")
        if self.memory_mb < 64:
            raise ValueError(
                f"memory_mb={self.memory_mb} is too small for a Python interpreter; use >= 64."
            )
        for name in ("max_output_bytes", "max_file_mb", "max_files", "max_open_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_open_files < 16:
            raise ValueError("max_open_files must be >= 16 (the interpreter needs a few).")

    def with_fields(self, values: Mapping[str, Any], *, where: str = "") -> SandboxLimits:
        """These limits with `values` ({field: value}) over them; an unknown field is a
        ValueError naming it (and `where` it came from) and the known ones."""
        known = sorted(f.name for f in fields(self))
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown sandbox limit(s) {unknown}{where}; known: {known}.")
        return replace(self, **values)


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of running one candidate against its tests.

    Attributes:
        passed: tests that finished without raising (counted from nonce-tagged records only).
        total: number of tests given (never reported by the child).
        status: one of `STATUSES`.
        outcomes: per test, "passed", the exception name that failed it ("AssertionError",
            "Timeout", "Skipped" for a skip mark, a true `skipif` or `pytest.skip()`, ...),
            "XFailed" / "XPassed" (under an xfail mark), "KeyError" (a `__d1_call__` naming no
            collected test) or "not_run".
        error: exception name of a compile / load / setup failure, "" otherwise.
        stdout, stderr: the first `max_output_bytes` of each, decoded (invalid UTF-8 replaced).
        truncated: True when stdout or stderr was cut.
        blocked: audit events the sandbox refused (first 32), e.g. "os.fork".
        duration: wall-clock seconds of the run.
        returncode: exit status of the process (negative: killed by that signal).
        pid: process id of the run (also its process group and session id).
        seccomp: whether the kernel-level filter was active (else the audit hook alone).
    """

    passed: int
    total: int
    status: str
    outcomes: tuple[str, ...] = ()
    error: str = ""
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    blocked: tuple[str, ...] = ()
    duration: float = 0.0
    returncode: int | None = None
    pid: int | None = None
    seccomp: bool = False

    @property
    def fraction(self) -> float:
        """passed / total (0.0 when there are no tests): the code correctness reward."""
        return self.passed / self.total if self.total else 0.0

    @property
    def all_passed(self) -> bool:
        """pass@1 of this sample: at least one test and all passed."""
        return self.total > 0 and self.passed == self.total


@dataclass(frozen=True)
class SandboxJob:
    """One program to test: candidate `code`, independent test snippets, shared `setup`."""

    code: str
    tests: tuple[str, ...]
    setup: str = ""


def available_cpus() -> int:
    """CPU cores this process may run on (the ceiling for parallel sandboxes)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@functools.cache
def _pytest_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("pytest") is not None


def _as_tests(tests: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(tests, str):
        return (tests,)
    out = tuple(tests)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"tests[{i}] is a {type(t).__name__}; each test must be source code.")
    return out


def _session_members(sid: int) -> list[int]:
    """Processes whose process group or session is `sid` (Linux /proc scan)."""
    members = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return members
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp session ...
        fields = data[data.rfind(b")") + 2 :].split()
        in_session = len(fields) >= 4 and sid in (int(fields[2]), int(fields[3]))
        if in_session and fields[0] != b"Z":  # zombies are already dead
            members.append(int(name))
    return members


def _terminate_session(pid: int) -> None:
    """SIGKILL the process group `pid` (a session leader's group) and anything else left in
    its session; our own direct child is reaped by the caller."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for _ in range(3):
        members = [p for p in _session_members(pid) if p != os.getpid()]
        if not members:
            return
        for p in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.01)


def _rmtree(path: str) -> None:
    def on_error(func, p, exc_info):  # the candidate may have removed permissions
        try:
            os.chmod(p, stat.S_IRWXU)
            parent = os.path.dirname(p)
            os.chmod(parent, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=on_error)


def _parse_records(data: bytes, nonce: str, total: int) -> dict:
    """Nonce-tagged harness records -> counts; untagged or malformed lines are ignored."""
    tag = nonce.encode()
    out: dict = {
        "ready": False,
        "seccomp": False,
        "done": False,
        "outcomes": {},
        "error": "",
        "kind": "",
        "blocked": [],
        "no_pytest": False,
    }
    for raw in data.split(b"\n"):
        i = raw.rfind(tag)
        if i < 0:
            continue
        parts = raw[i + len(tag) :].decode("ascii", "replace").split()
        if not parts:
            continue
        kind = parts[0]
        if kind == "ready":
            out["ready"] = True
            out["seccomp"] = parts[1:] == ["seccomp"]
        elif kind == "no_pytest":
            out["no_pytest"] = True
        elif kind == "done":
            out["done"] = True
        elif kind in ("pass", "fail", "test_error") and len(parts) >= 2 and parts[1].isdigit():
            idx = int(parts[1])
            if 0 <= idx < total and idx not in out["outcomes"]:
                reason = parts[2] if len(parts) > 2 else "Error"
                out["outcomes"][idx] = "passed" if kind == "pass" else reason
        elif kind in ("compile_error", "load_error", "setup_error") and not out["kind"]:
            out["kind"] = kind
            out["error"] = parts[1] if len(parts) > 1 else "Error"
        elif kind == "blocked" and len(parts) >= 2:
            out["blocked"].append(" ".join(parts[1:]))
    return out


def run_tests(
    code: str,
    tests: Sequence[str] | str,
    *,
    setup: str = "",
    limits: SandboxLimits | None = None,
    python: str | None = None,
    **limit_overrides: object,
) -> SandboxResult:
    """Run `code` as module `solution`, then each test snippet independently (module doc).

    Args:
        code: the candidate program (untrusted).
        tests: independent test snippets; a single string is one test. Each passes when it
            runs without raising.
        setup: source run once after the candidate, in the namespace the tests copy (imports,
            helpers, a pytest-style test file whose functions the tests call).
        limits: resource limits; keyword overrides (`timeout_s=2.0`, `memory_mb=256`, ...)
            replace single fields.
        python: interpreter for the sandbox (default: this one, `sys.executable`).

    Returns:
        A SandboxResult; `passed / total` is the correctness reward. Never raises because of
        the candidate; raises SandboxError when the sandbox cannot start at all.
    """
    if not isinstance(code, str) or not isinstance(setup, str):
        raise TypeError(
            f"code and setup must be str, got {type(code).__name__} and {type(setup).__name__}."
        )
    test_srcs = _as_tests(tests)
    limits = limits or SandboxLimits()
    if limit_overrides:
        limits = limits.with_fields(limit_overrides)
    total = len(test_srcs)
    if total == 0:
        return SandboxResult(passed=0, total=0, status="no_tests")
    if sys.platform != "linux":
        raise SandboxError("The code sandbox needs Linux (resource limits, /proc).")
    runner = limits.runner
    pytest_style = any("__d1_call__" in t for t in test_srcs)
    if runner == "auto":
        runner = "pytest" if pytest_style else "exec"
    elif runner == "exec" and pytest_style:
        raise ValueError(
            "runner 'exec' cannot run pytest-style tests (they call __d1_call__, which only "
            "the pytest runner defines); use runner 'auto' or 'pytest'."
        )
    if runner == "pytest" and python is None and not _pytest_installed():
        raise SandboxError(PYTEST_MISSING.format(python=sys.executable))

    import selectors
    import socket
    import subprocess

    tmp = tempfile.mkdtemp(prefix="d1-sandbox-")
    root = os.path.realpath(tmp)
    nonce = secrets.token_hex(16)
    # The result channel: a socket, unlike a pipe, cannot be reopened through /proc/self/fd.
    parent_sock, child_sock = socket.socketpair()
    read_fd, write_fd = parent_sock.fileno(), child_sock.fileno()
    proc = None
    start = time.monotonic()
    try:
        config = {
            "code": code,
            "setup": setup,
            "tests": list(test_srcs),
            "nonce": nonce,
            "result_fd": write_fd,
            "timeout_s": math.ceil(limits.timeout_s),
            "test_timeout_s": limits.test_timeout_s or limits.timeout_s,
            "memory_mb": limits.memory_mb,
            "max_file_mb": limits.max_file_mb,
            "max_files": limits.max_files,
            "max_open_files": limits.max_open_files,
            "max_tasks": limits.max_tasks,
            "seccomp": limits.seccomp,
            "runner": runner,
        }
        config_path = os.path.join(root, ".d1-sandbox-job.json")
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(config).encode("ascii"))  # ensure_ascii: any str survives
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": root,
            "TMPDIR": root,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            # One thread per numerical library: threads would eat the address-space budget.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            # pytest (the pytest runner) loads only its built-in plugins.
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        }
        cmd = [
            python or sys.executable,
            "-I",
            "-B",
            "-c",
            CHILD_BOOTSTRAP,
            PACKAGE_ROOT,
            config_path,
        ]
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=root,
                env=env,
                pass_fds=(write_fd,),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            raise SandboxError(f"Could not start the sandbox interpreter {cmd[0]!r}: {e}") from e
        finally:
            child_sock.close()
        cap = limits.max_output_bytes
        record_cap = RECORD_BYTES * (total + RECORD_LIMIT_BLOCKED + 8)
        buffers = {
            proc.stdout.fileno(): bytearray(),
            proc.stderr.fileno(): bytearray(),
            read_fd: bytearray(),
        }
        caps = {proc.stdout.fileno(): cap, proc.stderr.fileno(): cap, read_fd: record_cap}
        cut = False
        deadline = start + limits.timeout_s
        timed_out = False

        def keep(fd: int, chunk: bytes) -> bool:
            """Append what fits under fd's cap; True when a stdout / stderr chunk did not fit
            (the output is then reported cut; the record channel never marks it)."""
            buf = buffers[fd]
            room = caps[fd] - len(buf)
            if room > 0:
                buf += chunk[:room]
            return len(chunk) > room and fd != read_fd

        with selectors.DefaultSelector() as sel:
            for fd_ in buffers:
                os.set_blocking(fd_, False)
                sel.register(fd_, selectors.EVENT_READ)
            while sel.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(timeout=min(remaining, 0.5)):
                    try:
                        chunk = os.read(key.fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(key.fd)
                        continue
                    cut = keep(key.fd, chunk) or cut
            if not timed_out:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
            _terminate_session(proc.pid)
            proc.wait()
            # Whatever the killed processes left in the pipes (bounded by the caps).
            for key in list(sel.get_map().values()):
                for _ in range(64):
                    try:
                        chunk = os.read(key.fd, 1 << 16)
                    except (BlockingIOError, OSError):
                        break
                    if not chunk:
                        break
                    cut = keep(key.fd, chunk) or cut
        duration = time.monotonic() - start
        rec = _parse_records(bytes(buffers[read_fd]), nonce, total)
        stdout = bytes(buffers[proc.stdout.fileno()]).decode("utf-8", "replace")
        stderr = bytes(buffers[proc.stderr.fileno()]).decode("utf-8", "replace")
        rc = proc.returncode
        if rec["no_pytest"]:
            raise SandboxError(PYTEST_MISSING.format(python=cmd[0]))
        if not rec["ready"] and not timed_out:
            raise SandboxError(
                f"The sandbox harness failed before running the candidate (exit {rc}): "
                f"{stderr[-2000:]}"
            )
        outcomes = tuple(rec["outcomes"].get(i, "not_run") for i in range(total))
        passed = sum(o == "passed" for o in outcomes)
        if timed_out or rc == -signal.SIGXCPU:
            status = "timeout"
        elif not rec["done"]:
            status = "crashed"
        elif rec["kind"] == "compile_error":
            status = "syntax_error"
        elif rec["kind"] in ("load_error", "setup_error"):
            status = "error"
        else:
            status = "passed" if passed == total else "failed"
        return SandboxResult(
            passed=passed,
            total=total,
            status=status,
            outcomes=outcomes,
            error=rec["error"],
            stdout=stdout,
            stderr=stderr,
            truncated=cut,
            blocked=tuple(rec["blocked"]),
            duration=duration,
            returncode=rc,
            pid=proc.pid,
            seccomp=rec["seccomp"],
        )
    finally:
        if proc is not None:
            if proc.returncode is None:
                _terminate_session(proc.pid)
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        parent_sock.close()
        child_sock.close()
        _rmtree(tmp)


def run_many(
    jobs: Sequence[SandboxJob],
    *,
    max_workers: int | None = None,
    limits: SandboxLimits | None = None,
    python: str | None = None,
    **limit_overrides: object,
) -> list[SandboxResult]:
    """`run_tests` for every job, several at a time, results in job order.

    Args:
        max_workers: concurrent sandboxes; None or more than the available cores means one
            per core (each sandbox is one busy process).
    """
    jobs = list(jobs)
    workers = min(max_workers or available_cpus(), available_cpus(), max(1, len(jobs)))

    def one(job: SandboxJob) -> SandboxResult:
        return run_tests(
            job.code, job.tests, setup=job.setup, limits=limits, python=python, **limit_overrides
        )

    if workers <= 1 or len(jobs) <= 1:
        return [one(j) for j in jobs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="d1-sandbox") as pool:
        return list(pool.map(one, jobs))


__all__ = [
    "STATUSES",
    "SandboxError",
    "SandboxJob",
    "SandboxLimits",
    "SandboxResult",
    "available_cpus",
    "run_many",
    "run_tests",
]
