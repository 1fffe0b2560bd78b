"""The sandbox's audit hook (`sys.addaudithook`, child side): the Python-level policy.

Installed by the child harness (`d1.sandbox.harness`) after the resource limits and the seccomp
filter, before any untrusted code, and irrevocable. It refuses creating processes, importing
`ctypes` / `cffi` / sub-interpreters / CPython's test modules, every `ctypes` call, sockets,
signalling other processes, raising resource limits, writes (and creating, deleting, renaming,
linking, chmod-ing) outside the sandbox directory, opening `/proc` and `/dev` (but for a few
harmless files: `/proc/self/fd` would expose the result socket, `/proc/self/mem` the nonce),
relative `os.open`, `sqlite3` outside the directory and its extensions, tracing/profiling and
the `gc` object walkers. See the package docstring (`d1/sandbox/__init__.py`) for what this
does and does not guarantee.
"""

from __future__ import annotations

import os
import sys

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

RECORD_LIMIT_BLOCKED = 32  # at most this many "blocked" records per run
# Every result record (nonce, line, newline) is at most this long: the parent's buffer holds
# this much per record, so a long path or exception name chosen by the candidate can neither
# grow it nor crowd out the records that follow.
RECORD_BYTES = 256


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


def make_audit_hook(root: str, report, max_files: int):
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
        if state["blocked"] < RECORD_LIMIT_BLOCKED:
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
