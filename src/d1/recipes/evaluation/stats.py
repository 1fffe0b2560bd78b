"""Summary statistics for honest evaluation (docs/method.md §7: several seeds, mean and spread).

Pure functions, no third-party dependencies (the Student t quantile is computed here from the
regularised incomplete beta function, so scipy is not needed).

Which interval is reported (`summarize`):
- two or more seeds: the mean across seeds with a Student t interval, n - 1 degrees of freedom,
  `mean +- t_{1-a/2, n-1} * s / sqrt(n)` where `s` is the sample standard deviation (n - 1
  denominator). This is the spread a reader should expect from re-running the whole experiment.
- a single seed: an interval over examples (sampling noise of the finite test set only):
  the Wilson score interval when every per-example score is 0 or 1, otherwise (fractional
  scores such as Sudoku's cell accuracy) a Student t interval over the per-example scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; raises on an empty sequence."""
    if len(values) == 0:
        raise ValueError("mean() of an empty sequence: evaluate at least one seed/example.")
    return math.fsum(values) / len(values)


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 denominator); NaN for fewer than two values."""
    n = len(values)
    if n < 2:
        return float("nan")
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std) for reporting a spread over seeds: the std of a single value is 0
    (nothing varies yet), where `sample_std` says NaN (undefined)."""
    return mean(values), (sample_std(values) if len(values) > 1 else 0.0)


def format_mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """`mean ± std` of `values` times `scale` (default: fractions as percent); "-" if empty."""
    if len(values) == 0:
        return "-"
    m, s = mean_spread(values)
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the CDF of a Beta(a, b) variable at x."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}.")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); use symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, dof: float) -> float:
    """CDF of Student's t distribution with `dof` degrees of freedom."""
    if dof <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {dof}.")
    tail = 0.5 * regularized_incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, dof: float) -> float:
    """Inverse CDF of Student's t (bisection on the CDF; accurate to ~1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}.")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_quantile(1.0 - p, dof)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, dof) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student t interval for the mean: mean +- t_{(1+c)/2, n-1} * s / sqrt(n). Needs n >= 2."""
    n = len(values)
    if n < 2:
        raise ValueError("A t interval needs at least two values (seeds or examples).")
    m, s = mean(values), sample_std(values)
    half = student_t_quantile((1.0 + confidence) / 2.0, n - 1) * s / math.sqrt(n)
    return m - half, m + half


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion `successes / n`."""
    if n <= 0:
        raise ValueError("A Wilson interval needs n >= 1 examples.")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n], got {successes} of {n}.")
    z = NormalDist().inv_cdf((1.0 + confidence) / 2.0)
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


@dataclass
class Summary:
    """Mean, spread and a confidence interval of one metric.

    Attributes:
        mean: mean across seeds (or the single seed's value).
        std: sample standard deviation across seeds; NaN with one seed.
        n_seeds: number of seeds (independent runs) summarised.
        ci_low, ci_high: the confidence interval (see `ci_method`).
        ci_method: "t-seeds" (Student t across seeds), "wilson-examples" or "t-examples"
            (single seed: interval over examples), or "none" (nothing to build it from).
        confidence: the interval's confidence level.
        values: the per-seed values, in seed order.
    """

    mean: float
    std: float
    n_seeds: int
    ci_low: float
    ci_high: float
    ci_method: str
    confidence: float
    values: list[float]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def summarize(
    per_seed: Sequence[float],
    per_example: Sequence[float] | None = None,
    confidence: float = 0.95,
) -> Summary:
    """Summarise one metric over seeds (see the module docstring for the interval used).

    Args:
        per_seed: the metric's value for each seed.
        per_example: with a single seed, that seed's per-example scores (used for the
            interval over examples); ignored with two or more seeds.
        confidence: the interval's confidence level.
    """
    values = [float(v) for v in per_seed]
    m = mean(values)
    if len(values) >= 2:
        lo, hi = t_interval(values, confidence)
        method = "t-seeds"
    elif per_example is not None and len(per_example) >= 1:
        ex = [float(v) for v in per_example]
        if all(v in (0.0, 1.0) for v in ex):
            lo, hi = wilson_interval(sum(ex), len(ex), confidence)
            method = "wilson-examples"
        elif len(ex) >= 2:
            lo, hi = t_interval(ex, confidence)
            method = "t-examples"
        else:
            lo, hi, method = float("nan"), float("nan"), "none"
    else:
        lo, hi, method = float("nan"), float("nan"), "none"
    return Summary(
        mean=m,
        std=sample_std(values),
        n_seeds=len(values),
        ci_low=lo,
        ci_high=hi,
        ci_method=method,
        confidence=confidence,
        values=values,
    )


def format_pct(x: float, digits: int = 1) -> str:
    """A fraction as a percentage string; NaN prints as an en dash."""
    return "–" if x is None or math.isnan(x) else f"{100 * x:.{digits}f}"


def format_summary(s: Summary, digits: int = 1) -> str:
    """`mean ± std [lo, hi]` in percent, for tables (std and CI omitted when undefined)."""
    out = format_pct(s.mean, digits)
    if s.n_seeds >= 2:
        out += f" ± {format_pct(s.std, digits)}"
    if not math.isnan(s.ci_low):
        out += f" [{format_pct(s.ci_low, digits)}, {format_pct(s.ci_high, digits)}]"
    return out
