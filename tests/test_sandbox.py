"""The code sandbox (d1.sandbox): counting, limits and hostile programs.

Every hostile program below is written so that only a *successful* hostile action could make
its test pass; each must score 0 and leave the host (files, processes, sockets) untouched.
All runs are bounded: short timeouts, bounded loops, small allocations refused by RLIMIT_AS.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import d1.sandbox.harness  # noqa: F401  (tests reach private helpers as sandbox.<module>.<name>)
from d1 import sandbox
from d1.sandbox import SandboxJob, SandboxLimits, run_many, run_tests

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")


@pytest.fixture(autouse=True, params=["auto", "pytest"])
def runner(request, monkeypatch):
    """Every test runs twice: with the default runner ("auto": exec for assert snippets,
    real pytest for `__d1_call__` tests) and with every job forced through real pytest."""
    for name in ("run_tests", "run_many"):
        fn = getattr(sandbox, name)
        monkeypatch.setitem(globals(), name, functools.partial(fn, runner=request.param))
    return request.param


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def session_alive(pid: int) -> list[int]:
    """Live (non-zombie) processes whose process group or session is `pid`."""
    return sandbox.parent._session_members(pid)


# -- counting ------------------------------------------------------------------------------


def test_correct_solution_scores_one():
    r = run_tests(
        "def add(a, b):\n    return a + b\n", ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    )
    assert (r.passed, r.total, r.status) == (2, 2, "passed")
    assert r.fraction == 1.0 and r.all_passed
    assert r.outcomes == ("passed", "passed")


def test_partial_solution_counts_each_test_independently():
    # Wrong for negative inputs only: tests 0 and 2 pass, 1 and 3 fail -> 2/4 by hand.
    code = "def absval(x):\n    return x\n"
    tests = [
        "assert absval(3) == 3",
        "assert absval(-3) == 3",
        "assert absval(0) == 0",
        "assert absval(-1) == 1",
    ]
    r = run_tests(code, tests)
    assert (r.passed, r.total, r.status) == (2, 4, "failed")
    assert r.fraction == 0.5
    assert r.outcomes == ("passed", "AssertionError", "passed", "AssertionError")


def test_tests_run_on_separate_namespace_copies_and_setup_is_shared():
    # Test 0 rebinds a global; test 1 must not see it. Setup defines a helper both use.
    code = "LIMIT = 10\ndef ok(x):\n    return x < LIMIT\n"
    setup = "def check_all(xs):\n    return all(ok(x) for x in xs)\n"
    tests = ["LIMIT = 0\nassert check_all([1, 2])", "assert LIMIT == 10 and check_all([9])"]
    r = run_tests(code, tests, setup=setup)
    assert r.outcomes == ("passed", "passed")


def test_syntax_error_scores_zero():
    r = run_tests("def f(:\n    return 1\n", ["assert f() == 1"])
    assert (r.passed, r.status, r.error) == (0, "syntax_error", "SyntaxError")
    r = run_tests("x = 1\x00\n", ["assert x == 1"])  # a NUL byte cannot be compiled
    assert (r.passed, r.status) == (0, "syntax_error")
    r = run_tests('x = "\ud800"\n', ["assert x"])  # a lone surrogate (decoded model output)
    assert (r.passed, r.status) == (0, "syntax_error")


def test_exception_at_import_and_broken_setup_score_zero():
    r = run_tests("raise ValueError('boom')\ndef f():\n    return 1\n", ["assert f() == 1"])
    assert (r.passed, r.status, r.error) == (0, "error", "ValueError")
    r = run_tests("def f():\n    return 1\n", ["assert f() == 1"], setup="import no_such_module_x")
    assert (r.passed, r.status, r.error) == (0, "error", "ModuleNotFoundError")


def test_no_tests_and_bad_arguments():
    assert run_tests("x = 1", []).status == "no_tests"
    assert run_tests("x = 1", []).fraction == 0.0
    with pytest.raises(ValueError, match=r"Unknown sandbox limit\(s\) \['timeout'\]"):
        run_tests("x = 1", ["pass"], timeout=3)
    with pytest.raises(ValueError, match="runner must be one of"):
        SandboxLimits(runner="bogus")
    # Pytest-style tests need the pytest runner: forcing exec would fail each with NameError.
    with pytest.raises(ValueError, match="runner 'exec' cannot run pytest-style tests"):
        run_tests("x = 1", ["__d1_call__('test_x')"], runner="exec")
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=8)
    with pytest.raises(TypeError, match=r"tests\[1\]"):
        run_tests("x = 1", ["pass", 3])  # type: ignore[list-item]


# -- time, memory, output ------------------------------------------------------------------


def test_infinite_loop_is_killed_by_the_wall_clock():
    t0 = time.monotonic()
    r = run_tests("def f():\n    while True:\n        pass\n", ["assert f() == 1"], timeout_s=1.5)
    assert (r.passed, r.status) == (0, "timeout")
    assert time.monotonic() - t0 < 10
    assert session_alive(r.pid) == []


def test_per_test_alarm_keeps_the_credit_of_the_other_tests():
    code = "def f(x):\n    while x:\n        pass\n    return 1\n"
    tests = ["assert f(0) == 1", "assert f(1) == 1", "assert f(0) == 1"]
    r = run_tests(code, tests, timeout_s=6, test_timeout_s=0.5)
    assert r.outcomes == ("passed", "Timeout", "passed")
    assert (r.passed, r.status) == (2, "failed")


def test_alarm_cannot_be_swallowed_by_except_exception():
    # The timeout is a BaseException; `except Exception` inside the candidate cannot hide it.
    code = src(
        """
        def f():
            while True:
                try:
                    while True:
                        pass
                except Exception:
                    pass
        """
    )
    r = run_tests(code, ["f()", "assert 1"], timeout_s=6, test_timeout_s=0.5)
    assert r.outcomes == ("Timeout", "passed")


def test_memory_bomb_allocation_is_refused():
    code = src(
        """
        def big_bytes():
            return len(bytearray(2 * 1024**3))
        def big_list():
            return len([0] * (10**9))
        """
    )
    r = run_tests(code, ["assert big_bytes() > 0", "assert big_list() > 0"], memory_mb=256)
    assert r.outcomes == ("MemoryError", "MemoryError")
    assert r.passed == 0 and r.status == "failed"


def test_huge_output_is_capped_and_does_not_affect_the_result():
    code = "print('x' * 10_000_000)\ndef f():\n    return 1\n"
    r = run_tests(code, ["assert f() == 1"], max_output_bytes=1000)
    assert (r.passed, r.status) == (1, "passed")
    assert len(r.stdout) == 1000 and r.truncated


def test_endless_output_is_capped_and_stopped():
    code = "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n"
    r = run_tests(code, ["pass"], timeout_s=1.5, max_output_bytes=5000)
    assert r.status == "timeout" and r.passed == 0
    assert len(r.stdout) == 5000 and r.truncated


def test_file_size_limit():
    code = src(
        """
        def write(n):
            with open("big.bin", "wb") as f:
                f.write(b"0" * n)
            return True
        """
    )
    r = run_tests(code, ["assert write(1000)", "assert write(3 * 1024 * 1024)"], max_file_mb=1)
    assert r.outcomes == ("passed", "OSError")  # EFBIG, not a killed process


# -- processes -----------------------------------------------------------------------------


def test_fork_bomb_is_stopped_and_leaves_no_process(tmp_path):
    # Bounded "bomb": at most 20 forks, each child would sleep 30 s. The test passes only if
    # all 20 forks succeeded.
    marker = tmp_path / "forked"
    code = src(
        f"""
        import os, time
        pids = []
        for _ in range(20):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                open({str(marker)!r}, "a").close()
                time.sleep(30)
                os._exit(0)
            pids.append(pid)

        def bomb():
            return len(pids)
        """
    )
    r = run_tests(code, ["assert bomb() == 20"])
    assert (r.passed, r.status) == (0, "failed")
    assert "os.fork" in r.blocked
    assert not marker.exists()
    assert session_alive(r.pid) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(r.pid, 0)


def test_every_route_to_a_new_process_is_refused(tmp_path):
    marker = tmp_path / "spawned"
    code = src(
        f"""
        import os, sys
        MARK = {str(marker)!r}
        CMD = ["/bin/sh", "-c", "touch " + MARK]

        def via_system():
            return os.system("touch " + MARK) == 0

        def via_subprocess():
            import subprocess
            return subprocess.run(CMD).returncode == 0

        def via_posix_spawn():
            pid = os.posix_spawn("/bin/sh", CMD, {{}})
            return os.waitpid(pid, 0)[1] == 0

        def via_exec():
            os.execv("/bin/sh", CMD)

        def via_multiprocessing():
            import multiprocessing
            p = multiprocessing.Process(target=open, args=(MARK, "w"))
            p.start()
            p.join()
            return p.exitcode == 0

        def via_pty():
            import pty
            pid, fd = pty.fork()
            if pid == 0:
                open(MARK, "w").close()
                os._exit(0)
            return True

        def via_fresh_posixsubprocess():
            # Reload the C module through its loader (no audit event) to get the real fork_exec.
            import importlib.machinery, importlib.util, _posixsubprocess as p0
            loader = importlib.machinery.ExtensionFileLoader("_posixsubprocess", p0.__file__)
            spec = importlib.util.spec_from_file_location(
                "_posixsubprocess", p0.__file__, loader=loader
            )
            m = importlib.util.module_from_spec(spec)
            r, w = os.pipe()
            args = [b"/bin/sh", b"-c", ("touch " + MARK).encode()]
            pid = m.fork_exec(args, [b"/bin/sh"], True, (w,), None, None, -1, -1, -1, -1, -1,
                              -1, r, w, True, False, -1, None, None, None, -1, None, False)
            return pid > 0

        def via_ctypes():
            import ctypes
            return ctypes.CDLL(None).fork() >= 0
        """
    )
    routes = [
        "system",
        "subprocess",
        "posix_spawn",
        "exec",
        "multiprocessing",
        "pty",
        "fresh_posixsubprocess",
        "ctypes",
    ]
    r = run_tests(code, [f"assert via_{name}()" for name in routes], timeout_s=10)
    assert r.passed == 0, dict(zip(routes, r.outcomes, strict=True))
    assert all(o in ("PermissionError", "ImportError") for o in r.outcomes), r.outcomes
    assert r.seccomp  # this test machine is Linux x86_64/aarch64
    time.sleep(0.2)
    assert not marker.exists()
    assert session_alive(r.pid) == []


def test_the_fresh_posixsubprocess_route_is_what_seccomp_adds():
    # Without the kernel filter, a C module reloaded through its loader can still fork: this is
    # the documented hole of the audit-only mode (the child runs /bin/true and exits).
    code = src(
        """
        import importlib.machinery, importlib.util, os

        def spawn():
            import _posixsubprocess as p0
            loader = importlib.machinery.ExtensionFileLoader("_posixsubprocess", p0.__file__)
            spec = importlib.util.spec_from_file_location(
                "_posixsubprocess", p0.__file__, loader=loader
            )
            m = importlib.util.module_from_spec(spec)
            r, w = os.pipe()
            return m.fork_exec([b"/bin/true"], [b"/bin/true"], True, (w,), None, None, -1, -1,
                               -1, -1, -1, -1, r, w, True, False, -1, None, None, None, -1,
                               None, False)
        """
    )
    with_filter, without = (
        run_many(
            [SandboxJob(code, ("assert spawn() > 0",))] * 2,
            max_workers=1,
        ),
        run_tests(code, ["assert spawn() > 0"], seccomp=False),
    )
    assert with_filter[0].seccomp and with_filter[0].outcomes == ("PermissionError",)
    assert not without.seccomp and without.outcomes == ("passed",)
    assert session_alive(without.pid) == []


def test_session_kill_reaps_a_real_process_tree():
    # Trusted helper: a session leader with three sleeping children (bounded: 3 x 60 s sleeps).
    script = src(
        """
        import os, sys, time
        for _ in range(3):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        assert len(session_alive(proc.pid)) == 4
        sandbox.parent._terminate_session(proc.pid)
        proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while session_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session_alive(proc.pid) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def test_user_task_count_counts_threads_of_the_user():
    # Used for RLIMIT_NPROC when not root (the limit is then this count + max_tasks).
    import threading

    before = sandbox.harness._user_task_count(os.getuid())
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        assert sandbox.harness._user_task_count(os.getuid()) >= before + 3 - 2  # others may exit
        assert sandbox.harness._user_task_count(os.getuid()) >= 4  # this process: main + 3 threads
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_signalling_other_processes_is_refused():
    code = f"import os\ndef hit():\n    os.kill({os.getpid()}, 0)\n    return True\n"
    r = run_tests(code, ["assert hit()"])
    assert r.outcomes == ("PermissionError",) and "os.kill" in r.blocked


# -- network -------------------------------------------------------------------------------


def test_no_network():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    code = src(
        f"""
        import socket

        def connect():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", {port}))
            s.sendall(b"hello")
            return True

        def create_connection():
            socket.create_connection(("127.0.0.1", {port}), timeout=1)
            return True

        def resolve():
            return bool(socket.getaddrinfo("localhost", {port}))

        def urllib_get():
            import urllib.request
            return urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=1) is not None
        """
    )
    try:
        tests = ["assert connect()", "assert create_connection()", "assert resolve()"]
        r = run_tests(code, [*tests, "assert urllib_get()"])
        assert r.passed == 0
        assert r.outcomes[:3] == ("PermissionError",) * 3
        with pytest.raises(TimeoutError):
            server.accept()  # nobody connected
    finally:
        server.close()


# -- files ---------------------------------------------------------------------------------


def test_writes_outside_the_sandbox_are_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    sentinel = outside / "sentinel.txt"
    sentinel.write_text("keep")
    target = outside / "written.txt"
    code = src(
        f"""
        import os, pathlib, shutil, sqlite3, stat
        OUT = {str(outside)!r}
        SENTINEL = {str(sentinel)!r}
        TARGET = {str(target)!r}

        def builtin_open():
            open(TARGET, "w").write("x")
            return True

        def pathlib_write():
            pathlib.Path(TARGET).write_text("x")
            return True

        def os_open_absolute():
            os.close(os.open(TARGET, os.O_WRONLY | os.O_CREAT))
            return True

        def os_open_dir_fd():
            # A dir_fd is invisible to the audit hook: relative os.open is refused.
            d = os.open(OUT, os.O_RDONLY)
            os.close(os.open("written.txt", os.O_WRONLY | os.O_CREAT, dir_fd=d))
            return True

        def opener_dir_fd():
            d = os.open(OUT, os.O_RDONLY)
            open("written.txt", "w", opener=lambda p, f: os.open(p, f, dir_fd=d)).write("x")
            return True

        def remove_sentinel():
            os.remove(SENTINEL)
            return True

        def rename_sentinel_in():
            os.rename(SENTINEL, "stolen.txt")
            return True

        def hardlink_then_write():
            os.link(SENTINEL, "link.txt")
            open("link.txt", "w").write("overwritten")
            return True

        def symlink_then_write():
            os.symlink(SENTINEL, "sym.txt")
            open("sym.txt", "w").write("overwritten")
            return True

        def chmod_sentinel():
            os.chmod(SENTINEL, 0o777)
            return True

        def shutil_copy_out():
            open("local.txt", "w").write("x")
            shutil.copy("local.txt", TARGET)
            return True

        def rmtree_out():
            shutil.rmtree(OUT)
            return True

        def sqlite_out():
            sqlite3.connect(TARGET).execute("create table t (x)")
            return True

        def device_node():
            # A character device (1, 3) is /dev/null: harmless even if it were allowed.
            os.mknod("dev", stat.S_IFCHR | 0o666, os.makedev(1, 3))
            open("dev", "w").write("x")
            return True
        """
    )
    routes = [
        "builtin_open",
        "pathlib_write",
        "os_open_absolute",
        "os_open_dir_fd",
        "opener_dir_fd",
        "remove_sentinel",
        "rename_sentinel_in",
        "hardlink_then_write",
        "symlink_then_write",
        "chmod_sentinel",
        "shutil_copy_out",
        "rmtree_out",
        "sqlite_out",
        "device_node",
    ]
    r = run_tests(code, [f"assert {name}()" for name in routes], timeout_s=10)
    assert r.passed == 0, dict(zip(routes, r.outcomes, strict=True))
    assert all(o == "PermissionError" for o in r.outcomes), dict(
        zip(routes, r.outcomes, strict=True)
    )
    assert sorted(p.name for p in outside.iterdir()) == ["sentinel.txt"]
    assert sentinel.read_text() == "keep"
    assert oct(sentinel.stat().st_mode & 0o777) != oct(0o777)


def test_resolver_matches_realpath(tmp_path, monkeypatch):
    base = os.path.realpath(tmp_path)
    os.makedirs(f"{base}/a/b/c")
    os.symlink(f"{base}/a/b", f"{base}/abs_link")  # absolute
    os.symlink("b/c", f"{base}/a/rel_link")  # relative
    os.symlink("../rel_link", f"{base}/a/b/up_link")  # relative, through ..
    os.symlink(f"{base}/abs_link", f"{base}/chain")  # link to a link
    os.symlink(f"{base}/loop1", f"{base}/loop2")
    os.symlink(f"{base}/loop2", f"{base}/loop1")
    real = sandbox.audit._make_resolver(lambda reason: (_ for _ in ()).throw(OSError(reason)))
    monkeypatch.chdir(f"{base}/a")
    paths = [
        f"{base}/abs_link/c",
        f"{base}/a/rel_link",
        f"{base}/a/b/up_link/x",
        f"{base}/chain/../b/./c//",
        f"{base}/missing/../a/missing.txt",
        "rel_link/new.txt",
        "../abs_link",
        "b/../../chain",
        "/",
        "/..",
        "//etc/../tmp",
    ]
    for p in paths:
        assert real(p) == os.path.realpath(p), p
    with pytest.raises(OSError, match="loop"):
        real(f"{base}/loop1/x")


def test_patching_path_helpers_and_builtins_cannot_unlock_an_outside_write(tmp_path):
    target = tmp_path / "out.txt"
    code = src(
        f"""
        import builtins, os, posixpath
        def escape():
            inside = os.getcwd() + "/fine.txt"
            builtins.isinstance = lambda *a: True
            builtins.any = lambda *a: False
            builtins.bool = lambda *a: False
            posixpath.realpath = os.path.realpath = lambda p, **k: inside
            posixpath._joinrealpath = lambda *a, **k: (inside, True)
            posixpath.isabs = os.path.isabs = lambda p: True
            os.fsdecode = lambda p: inside
            os.path.lexists = lambda p: True
            open({str(target)!r}, "w").write("x")
            return True
        """
    )
    r = run_tests(code, ["assert escape()"])
    assert r.outcomes == ("PermissionError",)
    assert not target.exists()


def test_device_nodes_are_refused_without_seccomp_too():
    # Audit-only mode: mknod itself succeeds (no audit event) but opening the node is refused.
    code = src(
        """
        import os, stat
        def device_node():
            os.mknod("dev", stat.S_IFCHR | 0o666, os.makedev(1, 3))
            open("dev", "w").write("x")
            return True
        """
    )
    r = run_tests(code, ["assert device_node()"], seccomp=False)
    assert r.outcomes == ("PermissionError",)


def test_reading_proc_and_the_result_pipe_is_refused():
    code = src(
        """
        import os
        def read_fds():
            for n in range(3, 64):
                try:
                    with open(f"/proc/self/fd/{n}", "rb") as f:
                        f.read(1)
                except FileNotFoundError:
                    continue
            return True
        def read_mem():
            open("/proc/self/mem", "rb").close()
            return True
        def read_environ():
            open(f"/proc/{os.getppid()}/environ", "rb").read()
            return True
        """
    )
    r = run_tests(code, ["assert read_fds()", "assert read_mem()", "assert read_environ()"])
    assert r.outcomes == ("PermissionError",) * 3


def test_writes_inside_the_sandbox_still_work():
    code = src(
        """
        import os, tempfile, shutil, pathlib
        def roundtrip():
            pathlib.Path("a/b").mkdir(parents=True)
            with open("a/b/x.txt", "w") as f:
                f.write("hi")
            shutil.copy("a/b/x.txt", "a/y.txt")
            os.rename("a/y.txt", "a/z.txt")
            with tempfile.NamedTemporaryFile("w", delete=False) as t:
                t.write("tmp")
            data = open("a/z.txt").read() + open(t.name).read()
            shutil.rmtree("a")
            os.remove(t.name)
            return data
        """
    )
    r = run_tests(code, ["assert roundtrip() == 'hitmp'"])
    assert r.outcomes == ("passed",), (r.outcomes, r.blocked)


def test_temporary_directory_is_removed_even_if_made_unwritable():
    code = src(
        """
        import os
        os.makedirs("locked/inner")
        open("locked/inner/f", "w").close()
        os.chmod("locked/inner", 0)
        os.chmod("locked", 0)
        print(os.getcwd())
        def f():
            return 1
        """
    )
    r = run_tests(code, ["assert f() == 1"])
    assert r.passed == 1
    workdir = r.stdout.strip()
    assert workdir.startswith(("/", "d1-sandbox-")) and "d1-sandbox-" in workdir
    assert not os.path.exists(workdir)


def test_the_job_file_and_nonce_never_reach_the_candidate(monkeypatch):
    monkeypatch.setattr(sandbox.parent.secrets, "token_hex", lambda n: "NONCE1234567890abcdef")
    monkeypatch.setenv("D1_TEST_SECRET_TOKEN", "s3cret")  # must not reach the candidate
    code = src(
        """
        import os, sys
        seen = [repr(sys.argv), repr(dict(os.environ)), repr(os.listdir("."))]
        for name in os.listdir("."):
            if os.path.isfile(name):
                seen.append(open(name, errors="replace").read())
        print("\\n".join(seen))
        def f():
            return 1
        """
    )
    r = run_tests(code, ["assert f() == 1"])
    assert r.passed == 1
    assert "NONCE1234567890abcdef" not in r.stdout
    assert r.stdout.splitlines()[2] == "[]"  # the job file (tests, nonce) is already deleted
    assert "HOME" in r.stdout and os.environ.get("PATH", "") != ""
    # The parent's environment (tokens, keys) is not passed on; the child gets only the
    # sandbox's own fixed variables (whatever the parent's values of those are).
    own = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL")
    own += ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    # pytest's own: the sandbox sets the first, the child's pytest sets its version.
    own += ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_VERSION")
    for key in os.environ:
        if key not in own:
            assert f"'{key}':" not in r.stdout


# -- reward hacking ------------------------------------------------------------------------


def test_exit_before_the_tests_does_not_pass():
    r = run_tests("import sys\nsys.exit(0)\n", ["pass"])
    assert (r.passed, r.status, r.error) == (0, "error", "SystemExit")
    r = run_tests("import os\nos._exit(0)\n", ["pass"])
    assert (r.passed, r.status) == (0, "crashed")
    code = "import sys\ndef f():\n    sys.exit(0)\n"
    r = run_tests(code, ["assert f() == 1", "assert f() == 2"])
    assert r.outcomes == ("SystemExit", "SystemExit") and r.passed == 0
    code = "import os\ndef f():\n    os._exit(0)\n"
    r = run_tests(code, ["assert f() == 1", "assert True"])
    assert r.passed == 0 and r.status == "crashed"


def test_fake_records_and_output_do_not_count():
    code = src(
        """
        import atexit, os, sys
        FAKE = b"ready\\npass 0\\npass 1\\ndone\\n"
        for fd in range(0, 256):
            try:
                os.write(fd, FAKE)
            except OSError:
                pass
        print("pass 0\\npass 1\\nALL TESTS PASSED")
        atexit.register(lambda: [os.write(fd, FAKE) for fd in (1, 2)])

        def f():
            return 0
        """
    )
    r = run_tests(code, ["assert f() == 1", "assert f() == 2"])
    assert (r.passed, r.status) == (0, "failed")


def test_long_records_cannot_crowd_out_the_verdicts():
    """Records whose text the candidate chooses (blocked paths, exception names) are cut to a
    bounded length, so a correct solution that first tries many long forbidden paths still
    passes, and a failure with a huge exception name still counts as a failure."""
    code = src(
        """
        for _ in range(40):
            try:
                open("/proc/" + "a" * 2000)
            except OSError:
                pass

        def f():
            return 1

        def g():
            raise type("E" * 5000, (Exception,), {})()
        """
    )
    r = run_tests(code, ["assert f() == 1", "g()"])
    assert (r.passed, r.status, r.truncated) == (1, "failed", False)
    assert r.outcomes[0] == "passed" and r.outcomes[1].startswith("EEEE")
    assert len(r.outcomes[1]) < 256


def test_monkeypatching_the_harness_does_not_count():
    code = src(
        """
        import builtins, os, signal, sys
        main = sys.modules["__main__"]
        for name, value in list(vars(main).items()):   # every harness function and constant
            if callable(value) and not isinstance(value, type):
                setattr(main, name, lambda *a, **k: None)
        builtins.exec = lambda *a, **k: None
        builtins.compile = lambda *a, **k: None
        builtins.BaseException = type("NotIt", (Exception,), {})
        builtins.type = lambda *a: int
        builtins.dict = lambda *a, **k: {}
        os.write = lambda fd, data: len(data)
        os._exit = lambda code: None
        signal.setitimer = lambda *a: (0.0, 0.0)
        sys.modules["solution"] = None

        def f():
            raise SystemExit(0)      # fail by exiting from inside the test

        def g():
            return 1                 # a genuinely correct function still counts
        """
    )
    r = run_tests(code, ["assert f() == 1", "assert g() == 1", "assert g() == 2"])
    assert r.outcomes == ("SystemExit", "passed", "AssertionError")
    assert (r.passed, r.total) == (1, 3)


def test_monkeypatching_os_write_used_by_tests_cannot_forge():
    # The candidate swaps out modules the harness imported; tests still run for real.
    code = src(
        """
        import sys, types
        fake = types.ModuleType("os")
        fake.write = lambda *a: 0
        sys.modules["os"] = fake
        def f():
            return 0
        """
    )
    r = run_tests(code, ["assert f() == 1"])
    assert r.passed == 0 and r.status == "failed"


def test_monkeypatching_what_the_tests_use_is_undone_before_each_test():
    code = src(
        """
        import builtins, math, pytest

        builtins.sorted = lambda xs, **k: "SORTED"
        math.isclose = lambda *a, **k: True

        class NoRaise:                       # swallows everything, even "no exception"
            def __init__(self, *a, **k):
                pass
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                return True

        pytest.raises = NoRaise

        def f(xs):
            return "SORTED"                  # only right under the fake `sorted`

        def g():
            return 1.0                       # only "close" to 2.0 under the fake `isclose`

        def h():
            math.isclose = lambda *a, **k: True   # patched during a test
            return 2.0

        def must_raise():
            return None                      # should raise ValueError, does not
        """
    )
    setup = "import math\nimport pytest\n"
    tests = [
        "assert f([3, 1]) == sorted([3, 1])",
        "assert math.isclose(g(), 2.0)",
        "assert h() == 2.0",
        "assert math.isclose(g(), 2.0)",
        "with pytest.raises(ValueError):\n    must_raise()",
    ]
    r = run_tests(code, tests, setup=setup, timeout_s=30)
    assert r.outcomes == ("AssertionError", "AssertionError", "passed", "AssertionError", "Failed")
    assert r.passed == 1


def test_introspection_routes_are_refused():
    code = src(
        """
        import gc, sys
        def objects():
            return len(gc.get_objects()) > 0
        def frames():
            return len(sys._current_frames()) > 0
        def trace():
            sys.settrace(lambda *a: None)
            return True
        """
    )
    r = run_tests(code, ["assert objects()", "assert frames()", "assert trace()"])
    assert r.outcomes == ("PermissionError",) * 3


# -- still a normal Python -----------------------------------------------------------------


def test_ordinary_stdlib_features_work():
    code = src(
        """
        import collections, dataclasses, enum, functools, heapq, threading, warnings
        P = collections.namedtuple("P", "x y")
        class C(enum.Enum):
            A = 1
        @dataclasses.dataclass
        class D:
            x: int
        warnings.warn("fine")
        @functools.lru_cache(None)
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        def threads():
            out = []
            ts = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return sorted(out)
        """
    )
    tests = [
        "assert P(1, 2).y + C.A.value + D(3).x == 6",
        "assert fib(80) == 23416728348467685",
        "assert threads() == [0, 1, 2, 3]",
        "import heapq\nassert heapq.nsmallest(2, [5, 1, 4]) == [1, 4]",
    ]
    r = run_tests(code, tests)
    assert r.outcomes == ("passed",) * 4, (r.outcomes, r.stderr)


def test_pytest_style_runner():
    code = src(
        """
        def add(a, b):
            return a + b
        def greet(name):
            print(f"hi {name}")
        """
    )
    setup = src(
        """
        import pytest
        import unittest
        from solution import add, greet

        @pytest.fixture
        def base():
            return 10

        @pytest.fixture
        def plus_one(base):
            yield base + 1

        def test_plain():
            assert add(1, 2) == 3

        @pytest.mark.parametrize("a,b,expected", [(1, 2, 3), pytest.param(2, 2, 4), (0, 0, 0)])
        def test_param(a, b, expected):
            assert add(a, b) == expected

        @pytest.mark.parametrize("a", [1, 2])
        @pytest.mark.parametrize("b", [10, 20])
        def test_product(a, b):
            assert add(a, b) == a + b

        @pytest.mark.parametrize("x", [1, 2, 3])
        def test_param_one_fails(x):
            assert add(x, x) != 4

        def test_capsys(capsys):
            greet("bob")
            assert capsys.readouterr().out == "hi bob\\n"

        def test_tmp_path(tmp_path):
            (tmp_path / "f.txt").write_text("abc")
            assert (tmp_path / "f.txt").read_text() == "abc"

        def test_fixtures(base, plus_one):
            assert add(base, plus_one) == 21

        def test_monkeypatch(monkeypatch):
            import os
            monkeypatch.setenv("D1_X", "1")
            assert os.environ["D1_X"] == "1"

        class TestPlain:
            def setup_method(self, method):
                self.k = 5
            def test_k(self):
                assert add(self.k, 1) == 6

        class TestUnittest(unittest.TestCase):
            def setUp(self):
                self.v = 2
            def test_v(self):
                self.assertEqual(add(self.v, 2), 4)

        @pytest.mark.skip(reason="not today")
        def test_skipped():
            assert False
        """
    )
    items = [
        ("test_plain()", "passed"),
        ("__d1_call__('test_param')", "passed"),
        ("__d1_call__('test_product')", "passed"),
        ("__d1_call__('test_param_one_fails')", "AssertionError"),
        ("__d1_call__('test_capsys')", "passed"),
        ("__d1_call__('test_tmp_path')", "passed"),
        ("__d1_call__('test_fixtures')", "passed"),
        ("__d1_call__('test_monkeypatch')", "passed"),
        ("__d1_call__('TestPlain', 'test_k')", "passed"),
        ("__d1_call__('TestUnittest', 'test_v')", "passed"),
        ("__d1_call__('test_skipped')", "Skipped"),  # no evidence of correctness
        ("__d1_call__('test_missing')", "KeyError"),
    ]
    r = run_tests(code, [t for t, _ in items], setup=setup, timeout_s=30)
    assert r.outcomes == tuple(o for _, o in items), (r.outcomes, r.stderr[-2000:])


def test_run_many_keeps_order_and_bounds_workers(monkeypatch):
    jobs = [
        SandboxJob(f"def f():\n    return {i}\n", ("assert f() == 1", "assert f() >= 0"))
        for i in range(4)
    ]
    results = run_many(jobs, max_workers=64)
    assert [r.passed for r in results] == [1, 2, 1, 1]
    assert sandbox.available_cpus() >= 1
    # The pool never exceeds the cores: with one core allowed, runs are sequential.
    monkeypatch.setattr(sandbox.parent, "available_cpus", lambda: 1)
    assert [r.passed for r in run_many(jobs[:2], max_workers=8)] == [1, 2]


def test_missing_pytest_names_the_code_extra(monkeypatch):
    # This interpreter "without pytest": a job that needs it fails before starting a child.
    monkeypatch.setattr(sandbox.parent, "_pytest_installed", lambda: False)
    with pytest.raises(sandbox.SandboxError, match=r'pip install "d1\[code\]"'):
        sandbox.run_tests("x = 1", ["__d1_call__('test_x')"], setup="def test_x():\n    pass\n")
    # Assert snippets run without pytest under the default runner.
    assert sandbox.run_tests("x = 1", ["assert x == 1"]).passed == 1
    # Another interpreter without pytest: the child says so and the parent names the extra.
    bare = "/usr/bin/python3"
    has_pytest = os.path.exists(bare) and (
        subprocess.run([bare, "-c", "import pytest"], capture_output=True, check=False).returncode
        == 0
    )
    if not os.path.exists(bare) or has_pytest:
        pytest.skip("no interpreter without pytest on this machine")
    with pytest.raises(sandbox.SandboxError, match=r'pip install "d1\[code\]"'):
        sandbox.run_tests("x = 1", ["assert x == 1"], runner="pytest", python=bare)


def test_patching_pytest_itself_does_not_count():
    # Under the pytest runner the candidate shares the interpreter with pytest: patching its
    # report classes at load time is undone before each test, and a test body that patches
    # them and then fails is still seen failing by the runner's own call of the body.
    code = src(
        """
        import _pytest.reports, _pytest.runner

        def forged_init(self, *a, **k):
            self.__dict__.update(outcome="passed", longrepr=None, when=k.get("when", "call"))
            self.__dict__.update(nodeid="x", location=("x", 0, "x"), keywords={}, sections=[])
            self.__dict__.update(user_properties=[], duration=0.0, start=0.0, stop=0.0)

        _pytest.reports.TestReport.__init__ = forged_init
        _pytest.reports.BaseReport.passed = property(lambda self: True)
        _pytest.reports.BaseReport.failed = property(lambda self: False)

        def patch_then_fail():
            _pytest.reports.TestReport.__init__ = forged_init
            _pytest.runner.CallInfo.__init__ = lambda self, *a, **k: None
            raise AssertionError("wrong")

        def right():
            return 1
        """
    )
    setup = src(
        """
        from solution import patch_then_fail, right

        def test_wrong():
            assert patch_then_fail() == 1

        def test_wrong_again():
            assert right() == 2

        def test_right():
            assert right() == 1
        """
    )
    tests = ["__d1_call__('test_wrong')", "__d1_call__('test_wrong_again')"]
    tests += ["__d1_call__('test_right')"]
    r = run_tests(code, tests, setup=setup, timeout_s=30)
    assert r.outcomes[0] != "passed"  # its report machinery is broken, its failure stands
    assert r.outcomes[1:] == ("AssertionError", "passed"), (r.outcomes, r.stderr[-2000:])
    assert r.passed == 1


def test_a_collection_error_runs_nothing_as_on_the_command_line():
    setup = src(
        """
        import pytest

        def test_ok():
            assert True

        @pytest.mark.parametrize("x", [1, 2], ids=["only-one"])  # 2 sets, 1 id
        def test_bad(x):
            assert x
        """
    )
    r = run_tests("x = 1", ["__d1_call__('test_ok')", "__d1_call__('test_bad')"], setup=setup)
    assert r.outcomes == ("CollectError", "CollectError") and r.passed == 0
