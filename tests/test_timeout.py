"""Hard time limits (d1.tasks.timeout): the signal path (main thread), the watchdog path (other
threads), nesting, clean-up, and the per-answer uses (math-verify budget, Task.score_within)."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
import weakref

import pytest

from d1.tasks import Example, Score, Task
from d1.tasks.math_normalize import math_equal, verifiable
from d1.tasks.timeout import (
    TimeLimitExceeded,
    call_with_time_limit,
    check_timeout,
    time_limit,
)


def spin() -> None:
    while True:
        pass


def swallowing_spin() -> None:
    """Code that catches everything once (a careless parser): the limit re-fires."""
    with contextlib.suppress(BaseException):
        spin()
    spin()


def _timed(fn, *args, seconds):
    t0 = time.monotonic()
    out = call_with_time_limit(fn, *args, seconds=seconds, default="cut")
    return out, time.monotonic() - t0


@pytest.mark.parametrize(
    "fn",
    [
        spin,
        swallowing_spin,
        lambda: re.match(r"(a*)*b", "a" * 40),  # a catastrophic regex, inside C
        lambda: 9 ** (9**8),  # big-integer arithmetic, inside C
        lambda: time.sleep(30),
    ],
    ids=["loop", "swallowed", "regex", "bigint", "sleep"],
)
def test_main_thread_limit_stops_python_and_c_work(fn) -> None:
    out, spent = _timed(fn, seconds=0.1)
    assert out == ("cut", True) and spent < 1.0


def test_fast_calls_are_untouched_and_state_is_restored() -> None:
    before = signal.getsignal(signal.SIGALRM)
    timer = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout may have one running
    assert call_with_time_limit(sum, [1, 2], seconds=1.0, default=0) == (3, False)
    assert call_with_time_limit(sum, [1, 2], seconds=None, default=0) == (3, False)
    assert signal.getsignal(signal.SIGALRM) is before
    left, interval = signal.getitimer(signal.ITIMER_REAL)
    assert interval == timer[1] and timer[0] - 1.0 <= left <= timer[0]
    with pytest.raises(ZeroDivisionError):  # the call's own errors pass through
        call_with_time_limit(lambda: 1 / 0, seconds=1.0, default=0)


def test_an_outer_alarm_survives_and_is_given_back() -> None:
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        assert call_with_time_limit(spin, seconds=0.05, default=-1) == (-1, True)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0.2 < left < 0.5  # what remained of the outer timer
        time.sleep(0.6)
        assert fired == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_limits_nest_and_the_outer_one_wins() -> None:
    def many_inner_calls() -> int:
        n = 0
        while True:  # each inner call is cut; the outer limit must still end the loop
            assert call_with_time_limit(spin, seconds=0.02, default=None) == (None, True)
            n += 1

    out, spent = _timed(many_inner_calls, seconds=0.3)
    assert out == ("cut", True) and 0.25 < spent < 1.5

    def long_inner() -> tuple:  # an inner limit longer than the outer one ends with the outer
        return call_with_time_limit(spin, seconds=10.0, default="inner")

    out, spent = _timed(long_inner, seconds=0.1)
    assert out == ("cut", True) and spent < 1.0


def test_time_limit_context_reports_expiry() -> None:
    with time_limit(0.05) as limit:
        spin()
    assert limit.expired
    with time_limit(1.0) as limit:
        pass
    assert not limit.expired
    with pytest.raises(TimeLimitExceeded), time_limit(1.0):  # raised by hand: not its own
        raise TimeLimitExceeded


def test_other_threads_use_the_watchdog() -> None:
    results: dict[str, object] = {}

    def worker() -> None:
        results["cut"] = _timed(spin, seconds=0.1)
        results["nested"] = _timed(
            lambda: call_with_time_limit(spin, seconds=10.0, default="inner"), seconds=0.1
        )
        results["fast"] = call_with_time_limit(sum, [2, 2], seconds=0.1, default=0)
        time.sleep(0.2)  # nothing fires after the blocks ended
        results["alive"] = True

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    (out, spent), (nested, nested_spent) = results["cut"], results["nested"]
    assert out == ("cut", True) and spent < 1.0
    assert nested == ("cut", True) and nested_spent < 1.0
    assert results["fast"] == (4, False) and results["alive"] is True


def test_check_timeout() -> None:
    assert check_timeout(None, "t") is None and check_timeout(2, "t") == 2.0
    for bad in (0, -1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="t must be"):
            check_timeout(bad, "t")


def test_math_verify_is_only_asked_about_verifiable_answers_and_within_budget() -> None:
    for hazard in (
        "9^{9^{9^{9}}}",
        "99999999999!",
        "(n+1)!",
        "\\binom{10^{12}}{5 \\cdot 10^{11}}",
        "\\prod_{i=1}^{10^{6}} i",
        "(10^{1000})^{1000}",
        "((((((((1))))))))",
        "9**9**9",
        "x+" * 300,
    ):
        assert not verifiable(hazard), hazard
    for fine in ("\\frac{1}{2}", "2^{100}", "\\binom{5}{2}", "(3, \\frac{\\pi}{2})", "1000!"):
        assert verifiable(fine), fine
    assert math_equal("2/4", "\\frac{1}{2}")  # symbolic, through math-verify
    assert not math_equal("9^{9^{9}}", "\\frac{1}{2}")  # never reaches sympy
    # An answer that passes the filter but is slow to parse (6-deep brackets: ~0.3 s) is cut at
    # its budget and counts as not equivalent.
    t0 = time.monotonic()
    assert not math_equal("((((((1))))))", "1", timeout_s=0.01)
    assert time.monotonic() - t0 < 0.5
    assert math_equal("((((((1))))))", "1", timeout_s=None)


class _Slow(Task):
    name = "slow"

    def load(self, split="train", *, path=None, limit=None, seed=0):
        return []

    def user_message(self, example):
        return example.question

    def reward_functions(self):
        return {}

    def score(self, completion, example):
        if completion == "hang":
            spin()
        return Score(1.0, completion)


def test_score_within_gives_the_timeout_score() -> None:
    ex = Example("0", "q", "a")
    assert _Slow().score_within("ok", ex, 0.1).correct == 1.0
    cut = _Slow().score_within("hang", ex, 0.1)
    assert cut.correct == 0.0 and cut.parsed is None and cut.details == {"timeout": True}


def test_a_finalizer_past_the_deadline_is_not_interrupted(monkeypatch) -> None:
    """An exception cannot leave `__del__` (Python hands it to the unraisable hook), so the
    limit waits until the finalizer returns and then stops the code that called it."""
    import gc
    import sys

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    class SlowToDie:
        def __del__(self) -> None:
            end = time.monotonic() + 0.3
            while time.monotonic() < end:  # past the 0.1 s deadline, in a finalizer
                pass

    def make_garbage_then_spin() -> None:
        SlowToDie()  # dies here, its __del__ runs past the deadline
        gc.collect()
        spin()

    out, spent = _timed(make_garbage_then_spin, seconds=0.1)
    assert out == ("cut", True) and 0.3 <= spent < 1.5
    assert unraisable == []  # nothing was raised inside the finalizer

    def slow_gc_callback(phase: str, info: dict) -> None:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # past the deadline, inside the collector's callback
            pass

    def collect_then_spin() -> None:
        gc.collect()
        spin()

    gc.callbacks.append(slow_gc_callback)
    try:
        out, spent = _timed(collect_then_spin, seconds=0.1)
    finally:
        gc.callbacks.remove(slow_gc_callback)
    assert out == ("cut", True) and 0.3 <= spent < 2.0
    assert unraisable == []

    # A weakref callback runs from C: no frame says "finalizer", so the expiry fires inside
    # it and Python swallows it; it must not reach the unraisable hook, and the re-fire
    # still stops the code after it.
    def slow_callback() -> None:
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            pass

    class Owner:
        pass

    def finalize_then_spin() -> None:
        weakref.finalize(Owner(), slow_callback)  # the owner dies at once: the callback runs
        spin()

    out, spent = _timed(finalize_then_spin, seconds=0.1)
    assert out == ("cut", True) and 0.1 <= spent < 1.5
    assert unraisable == []
    assert sys.unraisablehook == unraisable.append  # put back after the limit
