"""The sandbox's seccomp-BPF filter (kernel level, child side, x86_64 and aarch64 Linux).

Why it exists next to the audit hook (`d1.sandbox.audit`): the audit hook sees only Python's
audited calls, and RLIMIT_NPROC is not enforced for root (the usual user in training
containers), so only the kernel stops a fork bomb or an `execve` reached through a freshly
loaded extension module. Where the filter cannot be installed the run goes on with the audit
hook alone (`SandboxResult.seccomp` is False).
"""

from __future__ import annotations

import os
import sys

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


def install_seccomp() -> bool:
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
