"""Run untrusted candidate programs against unit tests in a separate, limited process.

Modules: `parent` (`run_tests`, `run_many`, limits, results: the API re-exported here),
`harness` (the child process), `pytest_runner` (the child's tests under real pytest),
`seccomp` (the kernel filter), `audit` (the audit hook).

Code rewards (docs/method.md §5: the candidate's tests run in a separate, limited process;
reward = passed / total) call `run_tests` once per completion, or `run_many` for a batch with bounded
parallelism. Each run:

1. writes the job to a fresh temporary directory and starts a fresh `python -I -B` running the
   child harness (`d1.sandbox.harness`) in its own session / process group, with that
   directory as cwd, HOME and TMPDIR and a scrubbed environment (no tokens or keys of the
   parent);
2. the harness, before any untrusted code, lowers its resource limits (RLIMIT_AS memory,
   RLIMIT_CPU, RLIMIT_FSIZE per-file size, RLIMIT_NOFILE, RLIMIT_CORE=0; RLIMIT_NPROC when not
   root), installs a seccomp-BPF filter and an audit hook (both irrevocable), and only then
   runs the candidate as module `solution`, the test setup, and each test separately, each
   under a per-test alarm;
3. the harness reports every test outcome on a private socket, each record tagged with a random
   nonce the candidate is never handed; the parent counts passes only from tagged records and
   takes `total` from its own list of tests, so printing "passed", exiting early
   (`sys.exit(0)`, `os._exit(0)`), or crashing can never add a pass;
4. the parent enforces the wall-clock limit, caps captured stdout/stderr (it keeps draining, so
   a flood neither blocks the child nor grows the parent's memory), then kills the whole
   process group with SIGKILL, sweeps /proc for anything left in the session, and deletes the
   temporary directory.

Layers:
- seccomp (kernel; x86_64 and aarch64 Linux): `fork`, `vfork`, `clone` without CLONE_THREAD,
  `execve`/`execveat` and non-AF_UNIX `socket` fail with EPERM, whatever Python-level route is
  taken (`_posixsubprocess` reloaded through an importlib loader, which raises no audit event,
  included); threads keep working. This is what stops fork bombs as root: RLIMIT_NPROC is
  counted per user and not enforced for root (the usual user in training containers), and
  running the child as an unprivileged uid fails whenever the interpreter lives under a
  private home (pyenv or conda in /root). Where the filter cannot be installed the run goes on
  with the audit hook alone and `SandboxResult.seccomp` is False.
- audit hook (`sys.addaudithook`): refuses creating processes (`os.fork`/`forkpty`/`system`/
  `exec*`/`spawn*`/`posix_spawn`, `subprocess.Popen`), importing `ctypes`, `cffi`,
  sub-interpreters and CPython's test modules, every `ctypes` call, creating or resolving
  sockets, signalling other processes, raising resource limits, opening files for writing (or
  creating, deleting, renaming, linking, chmod-ing them) outside the temporary directory,
  opening `/proc` and `/dev` (except null/zero/random: `/proc/self/fd` would expose the result
  socket, `/proc/self/mem` the nonce), relative `os.open` (its `dir_fd` is invisible to the
  hook), `sqlite3` files outside the directory and its extensions, tracing/profiling hooks,
  `sys._current_frames` and the `gc` object walkers. `_posixsubprocess.fork_exec` (no audit
  event) is replaced by a refusal, so `import subprocess` (which pytest needs) still works.
- RLIMIT_NPROC, for non-root users only: their current task count plus `max_tasks`.
- process group + session: SIGKILL to the group and a /proc sweep of the session at the end.

Guarantees and limits (this is a best-effort guard for RL rewards, NOT a security boundary):
- It stops the accidents and reward hacks a policy model produces: infinite loops, fork
  bombs, memory bombs, output floods, shelling out, network access, file writes outside its
  directory, early exits, fake "all tests passed" output, overwriting harness functions,
  builtins or `sys.modules` entries the harness uses.
- The candidate runs in the same interpreter as the test loop. A determined attacker can walk
  interpreter frames (`sys._getframe().f_back.f_locals`, needed by `namedtuple`, `enum` and
  `warnings`, so it stays allowed) to reach the reporting function (under the pytest runner
  also through pytest's plugin manager, reachable from `_pytest.debugging`), or sabotage tests
  semantically (objects whose `__eq__` is always true, patching the modules the tests use).
- C extensions that write files without going through Python's audited calls are not
  intercepted (`sqlite3` is handled); the memory limit keeps large libraries such as torch from
  importing. Reads are allowed wherever the parent's user can read (nothing can leave: no
  network, no processes). Without seccomp, extension modules loaded through importlib
  loaders can fork (no audit event exists for that).
- Linux only (resource limits, /proc). For untrusted users use real isolation (containers,
  gVisor, nsjail, a VM).

Tests: `tests` is a list of independent test snippets (Python source). Each runs on a fresh
shallow copy of the namespace built from the candidate's globals plus `setup` (imports, helper
definitions, a test file of pytest-style functions); `from solution import f` works. A snippet
passes when it finishes without raising. A snippet `__d1_call__("test_name")` /
`__d1_call__("TestClass", "test_method")` runs that test of the setup's test file with real
pytest (`d1/sandbox/pytest_runner.py`: fixtures of every scope and kind, parametrize, where all
parameter sets must pass, marks, `skipif` conditions, xfail, plain and `unittest.TestCase`
classes, the built-in fixtures); skipped and xfailed tests are not passes. Which child runner
runs a job is `SandboxLimits.runner`: by default real pytest for jobs with `__d1_call__` tests
and a plain `exec` loop for the rest (HumanEval's and MBPP's assert snippets), which gives the
same outcomes without pytest's start-up (benchmarks/sandbox.py). Under pytest the candidate
shares the interpreter with pytest: the pytest classes that run tests and write reports are
put back before each test, and a function's or snippet's pass is seen by the runner's own
call of its body, not only by pytest's report.
"""

from __future__ import annotations

from d1.sandbox.audit import BLOCKED_MODULES
from d1.sandbox.parent import (
    STATUSES,
    SandboxError,
    SandboxJob,
    SandboxLimits,
    SandboxResult,
    available_cpus,
    run_many,
    run_tests,
)

__all__ = [
    "BLOCKED_MODULES",
    "STATUSES",
    "SandboxError",
    "SandboxJob",
    "SandboxLimits",
    "SandboxResult",
    "available_cpus",
    "run_many",
    "run_tests",
]
