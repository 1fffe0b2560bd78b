"""Run untrusted candidate programs against unit tests in a separate, limited process.

Code rewards (docs/method.md §5: "run the tests in a separate process with time and memory limits; reward =
passed / total") call `run_tests` once per completion, or `run_many` for a batch with bounded
parallelism. Each run:

1. writes the job to a fresh temporary directory and starts a fresh `python -I -B` on this very
   file (the child harness below) in its own session / process group, with that directory as
   cwd, HOME and TMPDIR and a scrubbed environment (no tokens or keys of the parent);
2. the harness, before any untrusted code, lowers its resource limits (RLIMIT_AS memory,
   RLIMIT_CPU, RLIMIT_FSIZE per-file size, RLIMIT_NOFILE, RLIMIT_CORE=0; RLIMIT_NPROC when not
   root), installs a seccomp-BPF filter and an audit hook (both irrevocable), and only then
   runs the candidate as module `solution`, the test setup, and each test separately, each
   under a per-test alarm;
3. the harness reports every test outcome on a private pipe, each record tagged with a random
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
  pipe, `/proc/self/mem` the nonce), relative `os.open` (its `dir_fd` is invisible to the
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
  `warnings`, so it stays allowed) to reach the reporting function, or sabotage tests
  semantically (objects whose `__eq__` is always true, patching the modules the tests use).
- C extensions that write files without going through Python's audited calls are not
  intercepted (`sqlite3` is handled); the memory limit keeps large libraries such as torch from
  importing. Reads are allowed wherever the parent's user can read (nothing can leave: no
  network, no processes). Without seccomp, extension modules loaded through importlib
  loaders can fork (no audit event exists for that).
- Linux only (resource limits, /proc). For untrusted users use real isolation (containers,
  gVisor, nsjail, a VM).

Tests: `tests` is a list of independent test snippets (Python source). Each runs in a fresh
shallow copy of the namespace built from the candidate's globals plus `setup` (imports, helper
definitions, a test file of pytest-style functions); `from solution import f` works. A snippet
passes when it finishes without raising. Pytest-style functions can be run with
`__d1_call__("test_name")` / `__d1_call__("TestClass", "test_method")`, which supports
`@pytest.mark.parametrize` (all parameter sets must pass), `skip`/`skipif`, plain and
`unittest.TestCase` classes, async tests, user fixtures (including generator and autouse ones)
and the `tmp_path`, `tmpdir`, `capsys`, `capfd` and `monkeypatch` fixtures.
"""

from __future__ import annotations

import os
import sys

# ---------------------------------------------------------------------------------------------
# Child side. This part runs in the sandbox process (`python -I -B sandbox.py CONFIG`); it only
# imports the standard library, and never `subprocess` before `_posixsubprocess` is neutered.
# ---------------------------------------------------------------------------------------------

# Modules that give a way around the audit events: raw foreign calls, interpreters without our
# hook, CPython's internal test helpers. (`_posixsubprocess`, which forks without an audit event,
# stays importable because pytest imports `subprocess`: its `fork_exec` is replaced by a refusal
# and, under seccomp, the kernel refuses the fork anyway.)
BLOCKED_MODULES: frozenset[str] = frozenset(
    {
        "ctypes",
        "_ctypes",
        "_ctypes_test",
        "cffi",
        "_cffi_backend",
        "_xxsubinterpreters",
        "_xxinterpchannels",
        "_interpreters",
        "_interpchannels",
        "_interpqueues",
        "_testcapi",
        "_testinternalcapi",
        "_testbuffer",
        "_testmultiphase",
        "_testsinglephase",
        "_testimportmultiple",
        "_xxtestfuzz",
    }
)

# Audit events refused outright.
_DENIED_EVENTS: frozenset[str] = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
        "os.killpg",
        "resource.setrlimit",
        "resource.prlimit",
        "sys.settrace",
        "sys.setprofile",
        "sys._current_frames",
        "sys._current_exceptions",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "cpython.PyInterpreterState_New",
        "sqlite3.enable_load_extension",
        "sqlite3.load_extension",
        "webbrowser.open",
    }
)
_DENIED_PREFIXES: tuple[str, ...] = (
    "socket.",
    "ctypes.",
    "urllib.",
    "http.client.",
    "ftplib.",
    "smtplib.",
    "poplib.",
    "imaplib.",
    "nntplib.",
    "telnetlib.",
    "_winapi.",
    "winreg.",
)

# Filesystem events: event -> ((path arg index, dir_fd arg index or None), ...); every listed
# path must lie inside the sandbox directory.
_FS_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.mkdir": ((0, 2),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "os.chflags": ((0, None),),
    "os.lchflags": ((0, None),),
    "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),
    "os.symlink": ((1, 2),),
    "os.truncate": ((0, None),),
}
# (os.mkfifo / os.mknod raise no audit event: seccomp refuses mknod, and opening a device node
# other than the allowed ones below is refused by the open check.)

# Readable device files; everything else under /dev and /proc is refused.
_DEV_ALLOWED: frozenset[str] = frozenset(
    {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/full"}
)
_PROC_ALLOWED: frozenset[str] = frozenset({"/proc/cpuinfo", "/proc/meminfo", "/proc/stat"})

_RECORD_LIMIT_BLOCKED = 32  # at most this many "blocked" records per run

# seccomp-BPF (kernel-level, irrevocable, survives root): per architecture, the audit arch
# value, syscalls refused with EPERM, and the numbers of clone, clone3 and socket.
_SECCOMP_ARCHES: dict[str, tuple[int, tuple[int, ...], int, int, int]] = {
    # fork 57, vfork 58, execve 59, execveat 322, mknod 133, mknodat 259; clone 56,
    # clone3 435, socket 41
    "x86_64": (0xC000003E, (57, 58, 59, 322, 133, 259), 56, 435, 41),
    # execve 221, execveat 281, mknodat 33 (no fork/vfork/mknod); clone 220, clone3 435,
    # socket 198
    "aarch64": (0xC00000B7, (221, 281, 33), 220, 435, 198),
}


def _seccomp_program(machine: str) -> list[tuple[int, int, int, int]] | None:
    """BPF filter (code, jt, jf, k): refuse fork/vfork/exec/mknod, `clone` without CLONE_THREAD
    (threads keep working), `clone3` (ENOSYS, so glibc falls back to `clone`) and sockets
    other than AF_UNIX; refuse syscalls of a foreign ABI (i386 `int 0x80`, x32)."""
    spec = _SECCOMP_ARCHES.get(machine)
    if spec is None:
        return None
    arch, denied, nr_clone, nr_clone3, nr_socket = spec
    ld, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    clone_thread, af_unix = 0x00010000, 1
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, eperm), (ld, 0, 0, 0)]
    if machine == "x86_64":
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]  # x32 syscall numbers
    for nr in denied:
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, eperm)]
    prog += [(jeq, 0, 1, nr_clone3), (ret, 0, 0, enosys)]
    # args[0] (low 32 bits) sits at offset 16 of struct seccomp_data.
    prog += [(jeq, 0, 4, nr_clone), (ld, 0, 0, 16), (jset, 1, 0, clone_thread)]
    prog += [(ret, 0, 0, eperm), (ret, 0, 0, allow)]
    prog += [(jeq, 0, 4, nr_socket), (ld, 0, 0, 16), (jeq, 1, 0, af_unix)]
    prog += [(ret, 0, 0, eperm), (ret, 0, 0, allow)]
    prog += [(ret, 0, 0, allow)]
    return prog


def _install_seccomp() -> bool:
    """Install `_seccomp_program` on this process (child side, single-threaded, before any
    untrusted code). False when unsupported here; the audit hook still applies then."""
    prog = _seccomp_program(os.uname().machine)
    if prog is None or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
    except ImportError:
        return False
    try:

        class SockFilter(ctypes.Structure):
            _fields_ = [
                ("code", ctypes.c_ushort),
                ("jt", ctypes.c_ubyte),
                ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32),
            ]

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

        filters = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
        fprog = SockFprog(len(prog), filters)
        libc = ctypes.CDLL(None, use_errno=True)
        zero = ctypes.c_ulong(0)
        # PR_SET_NO_NEW_PRIVS (38) then PR_SET_SECCOMP (22), SECCOMP_MODE_FILTER (2).
        if libc.prctl(38, ctypes.c_ulong(1), zero, zero, zero) != 0:
            return False
        return libc.prctl(22, ctypes.c_ulong(2), ctypes.byref(fprog), zero, zero) == 0
    except (OSError, AttributeError, TypeError, ValueError):
        return False
    finally:
        # Untrusted code must import ctypes afresh, which the audit hook refuses.
        for name in [
            m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))
        ]:
            del sys.modules[name]


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


def _make_resolver(on_loop):
    """`real(path)`: the absolute path with every symlink resolved (a missing tail is kept as
    written), like `os.path.realpath` but built only from C functions bound now, so untrusted
    code cannot change its answer by patching `posixpath` or `os`. `on_loop(reason)` is
    called (and must raise) after 40 symlink hops."""
    import stat

    getcwd, lstat, readlink, S_ISLNK = os.getcwd, os.lstat, os.readlink, stat.S_ISLNK
    _OSError = OSError

    def real(path):
        if not path.startswith("/"):
            path = getcwd() + "/" + path
        todo = [c for c in path.split("/") if c and c != "."]
        done = []
        hops = 0
        while todo:
            name = todo.pop(0)
            if name == "..":
                if done:
                    done.pop()
                continue
            candidate = "/" + "/".join([*done, name])
            try:
                mode = lstat(candidate).st_mode
            except _OSError:
                done.append(name)
                continue
            if S_ISLNK(mode):
                hops += 1
                if hops > 40:
                    on_loop("a symlink loop")
                target = readlink(candidate)
                if target.startswith("/"):
                    done = []
                todo = [c for c in target.split("/") if c and c != "."] + todo
            else:
                done.append(name)
        return "/" + "/".join(done)

    return real


def _make_audit_hook(root: str, report, max_files: int):
    """The audit hook enforcing the sandbox policy (module docstring) for directory `root`.

    The hook runs while untrusted code may have replaced builtins or module attributes, so it
    only calls C functions and builtins bound here (a patched `isinstance` or
    `posixpath.realpath` must not turn an outside write into an inside one); paths are resolved
    by `_make_resolver`, not `os.path.realpath`.
    """
    import stat

    lstat, stat_, readlink, getpid = os.lstat, os.stat, os.readlink, os.getpid
    S_ISCHR, S_ISBLK = stat.S_ISCHR, stat.S_ISBLK
    _isinstance, _int, _str, _bytes = isinstance, int, str, bytes
    _OSError, _PermissionError, _ImportError = OSError, PermissionError, ImportError
    encoding = sys.getfilesystemencoding()
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    o_creat = os.O_CREAT
    root_slash = root.rstrip("/") + "/"
    denied_events = _DENIED_EVENTS
    denied_prefixes = _DENIED_PREFIXES
    fs_events = _FS_EVENTS
    blocked_modules = BLOCKED_MODULES
    dev_allowed = _DEV_ALLOWED
    proc_allowed = _PROC_ALLOWED
    state = {"blocked": 0, "created": 0}

    def deny(event, exc_type=_PermissionError):
        if state["blocked"] < _RECORD_LIMIT_BLOCKED:
            state["blocked"] += 1
            report("blocked " + event)
        raise exc_type(f"d1 sandbox: {event} is not allowed")

    def text(path):
        return path.decode(encoding, "surrogateescape") if _isinstance(path, _bytes) else path

    real = _make_resolver(deny)

    def resolve(path, dir_fd):
        p = text(path)
        if _isinstance(dir_fd, _int) and dir_fd >= 0 and not p.startswith("/"):
            try:
                p = readlink(f"/proc/self/fd/{dir_fd}") + "/" + p
            except _OSError:
                deny("a path relative to an unknown directory descriptor")
        return real(p)

    def inside(resolved):
        return resolved == root or resolved.startswith(root_slash)

    def readable(resolved):
        if resolved.startswith("/proc/") or resolved == "/proc":
            return resolved in proc_allowed
        if resolved.startswith("/dev/") or resolved == "/dev":
            return resolved in dev_allowed
        return True

    def device_node(resolved):
        """A character or block device (e.g. one made with mknod) outside the allowed ones."""
        try:
            mode = stat_(resolved).st_mode
        except _OSError:
            return False
        return (S_ISCHR(mode) or S_ISBLK(mode)) and resolved not in dev_allowed

    def exists(resolved):
        try:
            lstat(resolved)
        except _OSError:
            return False
        return True

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if _isinstance(path, _int):
                return  # an already-open descriptor
            if mode is None and not text(path).startswith("/"):
                # os.open: a dir_fd would not be visible here, so relative paths are refused.
                deny("open (relative os.open)")
            resolved = resolve(path, None)
            if device_node(resolved):
                deny("open of device " + resolved)
            writing = ((flags or 0) & write_flags) != 0
            if _isinstance(mode, _str):
                writing = writing or "w" in mode or "a" in mode or "x" in mode or "+" in mode
            if writing:
                if not (inside(resolved) or resolved == "/dev/null"):
                    deny("open for writing outside the sandbox directory")
                if (flags or 0) & o_creat and not exists(resolved):
                    state["created"] += 1
                    if state["created"] > max_files:
                        deny("creating more than max_files files")
            elif not readable(resolved):
                deny("open " + resolved)
            return
        if event == "import":
            name = args[0]
            if _isinstance(name, _str) and name.partition(".")[0] in blocked_modules:
                deny("import " + name, _ImportError)
            return
        if event in denied_events or event.startswith(denied_prefixes):
            deny(event)
        spec = fs_events.get(event)
        if spec is not None:
            for path_i, dir_i in spec:
                path = args[path_i]
                if _isinstance(path, _int):
                    if event == "os.truncate":
                        continue  # ftruncate needs a descriptor opened for writing
                    deny(event + " on a descriptor")
                dir_fd = args[dir_i] if dir_i is not None else None
                if not inside(resolve(path, dir_fd)):
                    deny(event + " outside the sandbox directory")
            return
        if event == "os.kill":
            if args[0] != getpid():
                deny(event)
            return
        if event == "sqlite3.connect":
            db = args[0]
            if _isinstance(db, (_str, _bytes)):
                name = text(db)
                if name in ("", ":memory:"):
                    return
                if name.startswith("file:") or not inside(real(name)):
                    deny(event + " outside the sandbox directory")
            return

    return hook


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


if __name__ == "__main__":
    _child_main(sys.argv[1])  # never returns (os._exit)

# ---------------------------------------------------------------------------------------------
# Parent side. Imported below the child entry point so the sandbox process never loads them.
# ---------------------------------------------------------------------------------------------
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402

HARNESS_PATH = os.path.abspath(__file__)

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

    def __post_init__(self) -> None:
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


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of running one candidate against its tests.

    Attributes:
        passed: tests that finished without raising (counted from nonce-tagged records only).
        total: number of tests given (never reported by the child).
        status: one of `STATUSES`.
        outcomes: per test, "passed", the exception name that failed it ("AssertionError",
            "Timeout", ...) or "not_run".
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
        unknown = set(limit_overrides) - set(SandboxLimits.__dataclass_fields__)
        if unknown:
            raise TypeError(f"Unknown sandbox limits {sorted(unknown)}; see SandboxLimits.")
        limits = replace(limits, **limit_overrides)  # type: ignore[arg-type]
    total = len(test_srcs)
    if total == 0:
        return SandboxResult(passed=0, total=0, status="no_tests")
    if sys.platform != "linux":
        raise SandboxError("The code sandbox needs Linux (resource limits, /proc).")

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
        }
        cmd = [python or sys.executable, "-I", "-B", HARNESS_PATH, config_path]
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
        record_cap = 256 * (total + _RECORD_LIMIT_BLOCKED + 8)
        buffers = {
            proc.stdout.fileno(): bytearray(),
            proc.stderr.fileno(): bytearray(),
            read_fd: bytearray(),
        }
        caps = {proc.stdout.fileno(): cap, proc.stderr.fileno(): cap, read_fd: record_cap}
        cut = False
        deadline = start + limits.timeout_s
        timed_out = False
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
                    buf = buffers[key.fd]
                    room = caps[key.fd] - len(buf)
                    if room > 0:
                        buf += chunk[:room]
                    if len(chunk) > room and key.fd != read_fd:
                        cut = True
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
                    buf = buffers[key.fd]
                    room = caps[key.fd] - len(buf)
                    if room > 0:
                        buf += chunk[:room]
                    if len(chunk) > room and key.fd != read_fd:
                        cut = True
        duration = time.monotonic() - start
        rec = _parse_records(bytes(buffers[read_fd]), nonce, total)
        stdout = bytes(buffers[proc.stdout.fileno()]).decode("utf-8", "replace")
        stderr = bytes(buffers[proc.stderr.fileno()]).decode("utf-8", "replace")
        rc = proc.returncode
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
