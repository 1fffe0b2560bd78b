"""Summary statistics (d1.recipes.evaluation.stats) against hand-computed / closed-form values."""

from __future__ import annotations

import math

import pytest

from d1.recipes.evaluation.stats import (
    format_mean_std,
    format_summary,
    mean,
    mean_spread,
    regularized_incomplete_beta,
    sample_std,
    student_t_cdf,
    student_t_quantile,
    summarize,
    t_interval,
    wilson_interval,
)


def test_mean_and_sample_std_by_hand() -> None:
    xs = [0.70, 0.74, 0.78]
    assert mean(xs) == pytest.approx(0.74)
    # deviations -0.04, 0, 0.04 -> sum sq 0.0032, / (n-1)=2 -> 0.0016 -> sqrt 0.04
    assert sample_std(xs) == pytest.approx(0.04)
    assert math.isnan(sample_std([0.5]))
    with pytest.raises(ValueError, match="empty"):
        mean([])


def test_t_quantile_closed_forms() -> None:
    # dof 1 is Cauchy: q(p) = tan(pi (p - 1/2)); dof 2: q(p) = (2p - 1) / sqrt(2 p (1 - p)).
    for p in (0.6, 0.9, 0.975, 0.995):
        assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert student_t_quantile(p, 2) == pytest.approx(
            (2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9
        )
    # Printed tables (two-sided 95 %): dof 4 -> 2.776, 10 -> 2.228, 30 -> 2.042.
    assert student_t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert student_t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-6)
    assert student_t_quantile(0.975, 30) == pytest.approx(2.042272, abs=1e-6)
    # Large dof tends to the normal quantile 1.959964.
    assert student_t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    assert student_t_quantile(0.025, 4) == pytest.approx(-2.776445, abs=1e-6)


def test_t_cdf_and_incomplete_beta_closed_forms() -> None:
    # I_x(1, 1) = x;  I_x(a, 1) = x^a;  t(1) CDF = 1/2 + atan(t)/pi.
    assert regularized_incomplete_beta(1, 1, 0.3) == pytest.approx(0.3)
    assert regularized_incomplete_beta(2.5, 1, 0.7) == pytest.approx(0.7**2.5)
    for t in (-3.0, -0.5, 0.0, 1.2, 8.0):
        assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)


def test_t_interval_by_hand() -> None:
    lo, hi = t_interval([0.70, 0.74, 0.78])
    half = 4.302652729911275 * 0.04 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n)
    assert lo == pytest.approx(0.74 - half)
    assert hi == pytest.approx(0.74 + half)
    with pytest.raises(ValueError, match="two values"):
        t_interval([0.5])


def test_wilson_interval_by_hand() -> None:
    # 7 of 10, z = 1.959964: center (0.7 + z^2/20) / (1 + z^2/10) = 0.644493,
    # half z sqrt(0.021 + z^2/400) / (1 + z^2/10) = 0.247715.
    lo, hi = wilson_interval(7, 10)
    assert lo == pytest.approx(0.396778, abs=1e-6)
    assert hi == pytest.approx(0.892209, abs=1e-6)
    lo0, hi0 = wilson_interval(0, 20)
    assert lo0 == pytest.approx(0.0, abs=1e-12) and hi0 == pytest.approx(0.161125, abs=1e-6)
    with pytest.raises(ValueError):
        wilson_interval(3, 0)


def test_summarize_chooses_interval() -> None:
    s = summarize([0.70, 0.74, 0.78])
    assert s.ci_method == "t-seeds" and s.n_seeds == 3
    assert s.std == pytest.approx(0.04)
    assert format_summary(s) == "74.0 ± 4.0 [64.1, 83.9]"

    s1 = summarize([0.7], per_example=[1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    assert s1.ci_method == "wilson-examples"
    assert (s1.ci_low, s1.ci_high) == pytest.approx((0.396778, 0.892209), abs=1e-6)
    assert math.isnan(s1.std)

    frac = [0.5, 1.0, 0.75, 0.25]
    s2 = summarize([mean(frac)], per_example=frac)
    assert s2.ci_method == "t-examples"
    assert (s2.ci_low, s2.ci_high) == pytest.approx(t_interval(frac))

    s3 = summarize([0.3])
    assert s3.ci_method == "none" and format_summary(s3) == "30.0"


def test_mean_spread_and_its_format_hand_computed() -> None:
    # [0.1, 0.2, 0.6]: mean 0.3, deviations -0.2, -0.1, 0.3 -> squares 0.14 / 2 -> std sqrt(0.07)
    m, sd = mean_spread([0.1, 0.2, 0.6])
    assert m == pytest.approx(0.3) and sd == pytest.approx(0.07**0.5)
    assert format_mean_std([0.1, 0.2, 0.6]) == "30.0 ± 26.5"
    assert format_mean_std([0.1234], 1, 3) == "0.123 ± 0.000"  # one seed: no spread yet
    assert mean_spread([0.5]) == (0.5, 0.0)
    assert format_mean_std([]) == "-"
