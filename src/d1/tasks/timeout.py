"""Hard wall-clock limits for reward and scoring calls.

A reward that never returns stalls a whole RL step, so diffu-GRPO scores each completion under
`time_limit` (`grpo.reward_timeout_s`), evaluation scores each answer under
`SCORE_TIMEOUT_S`, and the MATH scorer bounds math-verify with it. The parsers are linear-time
by construction; the limit is the backstop for what they call (sympy) and for bugs.

How the limit interrupts the call:

- In the main thread on POSIX, a kernel timer (`setitimer(ITIMER_REAL)`) delivers SIGALRM and
  the handler raises `TimeLimitExceeded`. A kernel timer fires even while C code holds the GIL,
  and CPython checks for signals inside long regex matches and big-integer arithmetic, so this
  stops everything but a single non-interruptible C call. A worker process would also stop
  that, but costs a process start and a pickle of every task and example per call, and a
  timed-out worker must be respawned; the parsers here never make such calls.
- Elsewhere (another thread, or no SIGALRM), a watchdog thread raises the exception in the
  calling thread with `PyThreadState_SetAsyncExc`: that stops Python code (sympy, the ANTLR
  LaTeX parser, our loops) at the next bytecode, not a long C call.

Limits nest: an inner limit never outlives the outer one (nor a SIGALRM timer that was
already running, e.g. pytest-timeout's: the block ends at its deadline and that timer fires
right after, its handler restored), and an exceeded outer limit passes
through inner `time_limit` blocks instead of being taken for theirs. `TimeLimitExceeded`
derives from `BaseException` so that the `except Exception` blocks of parsers (math-verify,
sympy, ours) cannot swallow it; the timer re-fires every `REFIRE_S` until the block exits, in
case some code swallows it anyway.

math-verify has its own timeouts (`parse(parsing_timeout=)`, `verify(timeout_seconds=)`): whole
seconds, through `signal.alarm`, whose `alarm(0)` on return would cancel this module's timer;
the MATH scorer therefore passes None to math-verify and bounds it with `time_limit`, which is
the same mechanism with float seconds.
"""

from __future__ import annotations

import ctypes
import gc
import heapq
import itertools
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "REFIRE_S",
    "REWARD_TIMEOUT_S",
    "SCORE_TIMEOUT_S",
    "Limit",
    "TimeLimitExceeded",
    "call_with_time_limit",
    "check_timeout",
    "time_limit",
]

T = TypeVar("T")

# Re-raise period after a deadline, for code that swallowed the first exception.
REFIRE_S = 0.01
# Default per-call limit of the RL reward pipeline (`grpo.reward_timeout_s`): well-formed
# reward calls take milliseconds (a MATH comparison < 1 s, with its own 2 s budget inside).
REWARD_TIMEOUT_S = 5.0
# Per-answer limit of evaluation scoring (`d1 eval`, `d1 score`): far above any legitimate
# scorer call (the slowest of d1's 1,500 MATH500 answers takes 0.6 s through math-verify on a
# loaded 2-core machine), so it never changes a real score.
SCORE_TIMEOUT_S = 10.0


class TimeLimitExceeded(BaseException):
    """Raised inside a `time_limit` block when its time is up (a BaseException on purpose)."""


def check_timeout(value: Any, name: str) -> float | None:
    """A validated timeout in seconds: a finite number > 0, or None (no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds > 0 or null, got {value!r}.")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number of seconds > 0 or null, got {value}.")
    return value


@dataclass
class Limit:
    """State of one `time_limit` block; `expired` is True after it was cut short."""

    deadline: float
    expired: bool = False


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.stack: list[Limit] = []
        self.saved_handler: Any = None
        self.saved_timer: tuple[float, float] = (0.0, 0.0)
        self.saved_at = 0.0
        self.uses_signal = False


_state = _ThreadState()
_HAS_ALARM = os.name == "posix" and hasattr(signal, "setitimer")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# -- signal path (main thread, POSIX) ------------------------------------------------------------


# Frames an exception cannot leave: Python swallows it there and hands it to the unraisable
# hook (finalizers), or the hook itself is running. The re-fire catches the code after them.
_UNRAISABLE_CODE = frozenset({"__del__", "unraisable_hook", "unraisablehook"})


def _in_finalizer(frame: Any, depth: int = 32) -> bool:
    """Whether `frame` runs inside a finalizer, a garbage-collector callback or the unraisable
    hook (anywhere an exception is swallowed instead of propagating)."""
    gc_callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None and depth > 0:
        code = frame.f_code
        if code.co_name in _UNRAISABLE_CODE or code in gc_callbacks:
            return True
        frame, depth = frame.f_back, depth - 1
    return False


def _handler(signum: int, frame: Any) -> None:
    stack = _state.stack
    if stack and time.monotonic() >= stack[-1].deadline and not _in_finalizer(frame):
        raise TimeLimitExceeded(f"time limit exceeded after {time.monotonic():.3f}")


def _arm(deadline: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 1e-6), REFIRE_S)


class _Blocked:
    """SIGALRM blocked while the limit stack is edited, so the handler sees a consistent stack."""

    def __enter__(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})

    def __exit__(self, *exc: object) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})


def _signal_enter(limit: Limit) -> None:
    st = _state
    with _Blocked():
        if not st.stack:
            st.saved_handler = signal.signal(signal.SIGALRM, _handler)
            st.saved_timer = signal.getitimer(signal.ITIMER_REAL)
            st.saved_at = time.monotonic()
            if st.saved_timer[0] > 0:  # someone else's alarm (pytest-timeout...) comes first
                limit.deadline = min(limit.deadline, st.saved_at + st.saved_timer[0])
        st.stack.append(limit)
        _arm(limit.deadline)


def _signal_exit(limit: Limit) -> None:
    st = _state
    with _Blocked():
        if limit in st.stack:
            del st.stack[st.stack.index(limit) :]
        if st.stack:
            _arm(st.stack[-1].deadline)
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, st.saved_handler)
        value, interval = st.saved_timer
        if value > 0:  # someone else's timer was running: give it back what is left of it
            left = value - (time.monotonic() - st.saved_at)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), interval)


# -- watchdog path (other threads, or no SIGALRM) ------------------------------------------------


class _Watchdog:
    """One daemon thread that raises `TimeLimitExceeded` in threads past their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadlines: dict[int, float] = {}  # thread id -> innermost deadline
        self._heap: list[tuple[float, int, int]] = []
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None

    def set(self, tid: int, deadline: float | None) -> None:
        with self._cond:
            if deadline is None:
                self._deadlines.pop(tid, None)
            else:
                self._deadlines[tid] = deadline
                heapq.heappush(self._heap, (deadline, next(self._counter), tid))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="d1-time-limit", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, tid = heapq.heappop(self._heap)
                    current = self._deadlines.get(tid)
                    if current is not None and current <= now:
                        _async_raise(tid, TimeLimitExceeded)
                        # re-fire until the thread leaves the block
                        heapq.heappush(self._heap, (now + REFIRE_S, next(self._counter), tid))
                timeout = self._heap[0][0] - now if self._heap else None
                self._cond.wait(timeout)


def _async_raise(tid: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(tid), ctypes.py_object(exc) if exc is not None else None
    )


_watchdog = _Watchdog()


def _watchdog_enter(limit: Limit) -> None:
    _state.stack.append(limit)
    _watchdog.set(threading.get_ident(), limit.deadline)


def _watchdog_exit(limit: Limit) -> None:
    st = _state
    if limit in st.stack:
        del st.stack[st.stack.index(limit) :]
    tid = threading.get_ident()
    _watchdog.set(tid, st.stack[-1].deadline if st.stack else None)
    _async_raise(tid, None)  # drop an exception fired after the block's code finished


# -- swallowed expiries --------------------------------------------------------------------------


class _UnraisableFilter:
    """While any limit is active (any thread), `sys.unraisablehook` drops `TimeLimitExceeded`.

    An expiry that fires inside code Python calls from C and whose exceptions it swallows (a
    weakref callback, a finalizer `_in_finalizer` cannot see) is handed to the unraisable hook,
    where test runners report it as an error; the re-fire stops the code after it anyway. The
    hook in place when the first limit starts is wrapped and put back when the last one ends
    (if nobody replaced it meanwhile).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._previous: Any = None

    def _hook(self, unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, TimeLimitExceeded):
            self._previous(unraisable)

    def enter(self) -> None:
        with self._lock:
            self._active += 1
            if self._active == 1:
                self._previous = sys.unraisablehook
                sys.unraisablehook = self._hook

    def exit(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                if sys.unraisablehook == self._hook:
                    sys.unraisablehook = self._previous
                self._previous = None


_unraisable_filter = _UnraisableFilter()


# -- public API ----------------------------------------------------------------------------------


@contextmanager
def time_limit(seconds: float | None) -> Iterator[Limit]:
    """Cut the block short after `seconds` of wall time (None or inf: no limit of its own).

    The block's own expiry is swallowed and reported by the yielded `Limit.expired`; an
    enclosing limit's expiry propagates. Usage:

        with time_limit(1.0) as limit:
            value = slow()
        if limit.expired:
            value = fallback
    """
    now = time.monotonic()
    own = math.inf if seconds is None else now + max(float(seconds), 0.0)
    outer = _state.stack[-1].deadline if _state.stack else math.inf
    limit = Limit(min(own, outer))
    if limit.deadline == math.inf:  # nothing to enforce
        yield limit
        return
    use_signal = _HAS_ALARM and _in_main_thread()
    enter, leave = (
        (_signal_enter, _signal_exit) if use_signal else (_watchdog_enter, _watchdog_exit)
    )
    _unraisable_filter.enter()
    enter(limit)
    try:
        yield limit
    except TimeLimitExceeded:
        now = time.monotonic()
        if now >= outer:  # the enclosing limit's time is up too: it is theirs
            raise
        if now < limit.deadline:  # not ours (raised by hand): pass it on
            raise
        limit.expired = True
    finally:
        # Retry: a re-fire may interrupt the bookkeeping itself (watchdog path only; the
        # signal path blocks SIGALRM while it edits the stack).
        for _ in range(100):
            try:
                leave(limit)
                break
            except TimeLimitExceeded:
                continue
        _unraisable_filter.exit()


def call_with_time_limit(
    fn: Callable[..., T], *args: Any, seconds: float | None, default: T
) -> tuple[T, bool]:
    """`(fn(*args), False)`, or `(default, True)` when it ran past `seconds`."""
    outer = _state.stack[-1].deadline if _state.stack else math.inf
    try:
        with time_limit(seconds) as limit:
            result = fn(*args)
    except TimeLimitExceeded:
        # Fired in the instant between the end of the block and its clean-up (the limit was
        # up, the enclosing one is not): the call is over, and counted as timed out.
        if time.monotonic() >= outer:
            raise
        return default, True
    if limit.expired:
        return default, True
    return result, False
