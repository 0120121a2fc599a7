"""golf.stats against textbook t-table values, closed forms of the t CDF, and hand-computed examples."""

import itertools
import math

import numpy as np
import pytest

from golf import stats
from golf.errors import GolfError
from golf.stats import linear_fit, mean_std_ci, one_sample_t_test, student_t_cdf, student_t_ppf, welch_t_test

# ----------------------------------------------------------------------------------------------------
# Student t: quantiles from printed t-tables (6 decimals as printed)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q, df, table",
    [
        (0.975, 2, 4.302653),
        (0.975, 10, 2.228139),
        (0.975, 3, 3.182446),
        (0.975, 30, 2.042272),
        (0.95, 5, 2.015048),
        (0.995, 1, 63.656741),
        (0.995, 4, 4.604095),
        (0.9, 20, 1.325341),
        (0.025, 3, -3.182446),  # lower tail = minus the upper one
        (0.975, math.inf, 1.959964),  # df -> infinity: the normal quantile
    ],
)
def test_ppf_matches_t_table(q, df, table):
    assert student_t_ppf(q, df) == pytest.approx(table, abs=5e-7)


# Closed forms of the t CDF for small df (textbook, derived by integrating the density):
def cdf_df1(t):  # Cauchy
    return 0.5 + math.atan(t) / math.pi


def cdf_df2(t):
    return 0.5 + t / (2.0 * math.sqrt(2.0 + t * t))


def cdf_df3(t):  # odd df: 1/2 + (theta + sin(theta) cos(theta)) / pi, theta = atan(t / sqrt 3)
    th = math.atan(t / math.sqrt(3.0))
    return 0.5 + (th + math.sin(th) * math.cos(th)) / math.pi


def cdf_df6(t):  # even df: 1/2 + t/(2 sqrt(v+t^2)) * sum_j C(2j,j)/4^j * (v/(v+t^2))^j, j < v/2
    x = 6.0 / (6.0 + t * t)
    return 0.5 + t / (2.0 * math.sqrt(6.0 + t * t)) * (1.0 + 0.5 * x + 0.375 * x * x)


@pytest.mark.parametrize("df, closed", [(1, cdf_df1), (2, cdf_df2), (3, cdf_df3), (6, cdf_df6)])
@pytest.mark.parametrize("t", [-7.5, -2.0, -0.3, 0.0, 0.1, 1.0, 2.5, 12.0])
def test_cdf_matches_closed_forms(df, closed, t):
    assert student_t_cdf(t, df) == pytest.approx(closed(t), abs=1e-13)


def test_cdf_far_tail_keeps_relative_precision():
    # Cauchy: P(T < -x) = atan(1/x)/pi exactly; at x = 1e6 that is 3.1830988...e-7, and 1 - CDF(x) computed
    # naively would keep only ~9 significant digits. We ask for 1e-10 relative.
    x = 1e6
    assert student_t_cdf(-x, 1) == pytest.approx(math.atan(1.0 / x) / math.pi, rel=1e-10)
    # df = 3 at t = -40: the odd-df closed form in atan(sqrt3/40) avoids cancellation.
    th = math.atan(math.sqrt(3.0) / 40.0)  # pi/2 - atan(40/sqrt 3)
    tail = (th - math.sin(th) * math.cos(th)) / math.pi
    assert student_t_cdf(-40.0, 3) == pytest.approx(tail, rel=1e-9)


@pytest.mark.parametrize("df", [0.7, 1, 2.5, 4.41, 9, 57.3, 1e4])
@pytest.mark.parametrize("q", [1e-9, 0.001, 0.05, 0.31, 0.5, 0.8, 0.975, 0.999999])
def test_ppf_inverts_cdf(q, df):
    t = student_t_ppf(q, df)
    assert student_t_cdf(t, df) == pytest.approx(q, rel=1e-10, abs=1e-15)
    assert student_t_cdf(-t, df) + student_t_cdf(t, df) == pytest.approx(1.0, abs=1e-14)  # symmetry


def test_large_df_approaches_normal():
    phi_196 = 0.5 * math.erfc(-1.96 / math.sqrt(2))
    assert student_t_cdf(1.96, 1e6) == pytest.approx(phi_196, abs=1e-6)
    assert student_t_cdf(1.96, 1e5) < student_t_cdf(1.96, 1e6)  # heavier tails at fewer df


def test_cdf_ppf_edges_and_arrays():
    assert student_t_ppf(0.5, 3) == 0.0
    assert student_t_ppf(0.0, 3) == -math.inf and student_t_ppf(1.0, 3) == math.inf
    assert student_t_cdf(math.inf, 2) == 1.0 and student_t_cdf(-math.inf, 2) == 0.0
    assert math.isnan(student_t_cdf(math.nan, 2)) and math.isnan(student_t_ppf(0.9, math.nan))
    got = student_t_cdf(np.array([-1.0, 0.0, 1.0]), 1)
    np.testing.assert_allclose(got, [0.25, 0.5, 0.75], atol=1e-15)  # Cauchy quartiles at -1, 0, 1
    np.testing.assert_allclose(student_t_ppf([0.25, 0.75], 1), [-1.0, 1.0], atol=1e-12)
    with pytest.raises(GolfError, match="degrees of freedom"):
        student_t_cdf(1.0, 0)
    with pytest.raises(GolfError, match="probability"):
        student_t_ppf(1.5, 3)


# ----------------------------------------------------------------------------------------------------
# mean_std_ci
# ----------------------------------------------------------------------------------------------------


def test_mean_std_ci_by_hand():
    s = mean_std_ci([1, 2, 3, 4])
    # mean = 10/4 = 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; var = 5/3; std = 1.2909944
    # se = std/sqrt(4) = 0.6454972; t_{0.975,3} = 3.182446 (table); half width = 2.0542603
    assert s["n"] == 4
    assert s["mean"] == 2.5
    assert s["std"] == pytest.approx(math.sqrt(5 / 3), rel=1e-15)
    assert s["half_width"] == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, abs=1e-6)
    assert s["ci_low"] == pytest.approx(2.5 - 2.0542603, abs=1e-6)
    assert s["ci_high"] == pytest.approx(2.5 + 2.0542603, abs=1e-6)


def test_mean_std_ci_other_confidence_and_constant_values():
    # 90% on [10, 12]: mean 11, std sqrt(2), se = sqrt(2)/sqrt(2) = 1, t_{0.95,1} = 6.313752 (table)
    s = mean_std_ci([10.0, 12.0], confidence=0.90)
    assert (s["mean"], s["std"]) == (11.0, pytest.approx(math.sqrt(2)))
    assert s["half_width"] == pytest.approx(6.313752, abs=1e-6)
    flat = mean_std_ci([1.2244, 1.2244, 1.2244])
    assert flat["std"] == 0.0 and flat["ci_low"] == flat["ci_high"] == pytest.approx(1.2244)


def test_mean_std_ci_one_or_no_value_is_nan_not_error():
    one = mean_std_ci([1.2172])
    assert one["n"] == 1 and one["mean"] == 1.2172
    assert all(math.isnan(one[k]) for k in ("std", "ci_low", "ci_high", "half_width"))
    none = mean_std_ci([])
    assert none["n"] == 0 and math.isnan(none["mean"])


def test_mean_std_ci_rejects_bad_input():
    with pytest.raises(GolfError, match="finite"):
        mean_std_ci([1.0, math.nan])
    with pytest.raises(GolfError, match="confidence"):
        mean_std_ci([1.0, 2.0], confidence=95)


# ----------------------------------------------------------------------------------------------------
# Welch
# ----------------------------------------------------------------------------------------------------


def t_pdf(t, v):
    norm = math.gamma((v + 1) / 2) / (math.sqrt(v * math.pi) * math.gamma(v / 2))
    return norm * (1 + t * t / v) ** (-(v + 1) / 2)


def two_sided_p_by_quadrature(t, v, n=20_001):
    # Independent of the incomplete beta: p = 1 - 2 * integral_0^|t| pdf, Simpson's rule on n points.
    xs = np.linspace(0.0, abs(t), n)
    ys = np.array([t_pdf(x, v) for x in xs])
    h = xs[1] - xs[0]
    integral = h / 3 * (ys[0] + ys[-1] + 4 * ys[1:-1:2].sum() + 2 * ys[2:-1:2].sum())
    return 1.0 - 2.0 * integral


def test_welch_equal_variances_integer_df():
    a, b = [1, 2, 3, 4], [3, 4, 5, 6]
    # means 2.5 and 4.5; both variances 5/3; s^2/n = 5/12 each; se = sqrt(10/12) = 0.9128709
    # t = -2 / 0.9128709 = -2.1908902
    # df = (10/12)^2 / (2 * (5/12)^2 / 3) = (100/144) / (50/432) = 6
    r = welch_t_test(a, b)
    assert r["t"] == pytest.approx(-2 / math.sqrt(10 / 12), rel=1e-14)
    assert r["df"] == pytest.approx(6.0, rel=1e-14)
    assert r["mean_diff"] == -2.0
    # p = 2 (1 - F_6(2.1908902)) with the even-df closed form: x = 6/10.8 = 5/9,
    # F = 1/2 + t/(2 sqrt 10.8) (1 + 5/18 + 0.375 * 25/81) = 0.96450617, p = 0.07098765
    assert r["p_value"] == pytest.approx(2 * (1 - cdf_df6(abs(r["t"]))), rel=1e-12)
    assert r["p_value"] == pytest.approx(0.0709877, abs=1e-7)


def test_welch_unequal_variances_fractional_df():
    a, b = [1, 2, 3, 4], [3, 5, 7, 9]
    # var_a = 5/3, var_b = 20/3; s^2/n: 5/12 and 20/12; se^2 = 25/12; t = (2.5 - 6)/sqrt(25/12) = -2.4248711
    # df = (25/12)^2 / ((5/12)^2/3 + (20/12)^2/3) = (625/144) / (425/432) = 1875/425 = 4.4117647
    r = welch_t_test(a, b)
    assert r["t"] == pytest.approx(-3.5 / math.sqrt(25 / 12), rel=1e-14)
    assert r["df"] == pytest.approx(1875 / 425, rel=1e-14)
    assert r["p_value"] == pytest.approx(two_sided_p_by_quadrature(r["t"], r["df"]), abs=1e-9)
    swapped = welch_t_test(b, a)
    assert swapped["t"] == -r["t"] and swapped["p_value"] == pytest.approx(r["p_value"], rel=1e-15)


def test_welch_degenerate_samples_are_nan():
    assert math.isnan(welch_t_test([1.0], [2.0, 3.0])["p_value"])
    zero_spread = welch_t_test([1.0, 1.0], [2.0, 2.0])
    assert zero_spread["t"] == -math.inf and math.isnan(zero_spread["p_value"])
    identical = welch_t_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert identical["t"] == 0.0 and identical["p_value"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------
# linear_fit
# ----------------------------------------------------------------------------------------------------


def test_linear_fit_exact_line():
    x = [0, 1, 2, 3, 4]
    r = linear_fit(x, [1 + 2 * xi for xi in x])  # y = 1 + 2x exactly
    assert r["slope"] == 2.0 and r["intercept"] == 1.0
    assert r["slope_se"] == 0.0 and r["r2"] == 1.0 and r["p_value"] == 0.0
    assert r["slope_ci_low"] == r["slope_ci_high"] == 2.0


def test_linear_fit_noisy_by_hand():
    x, y = [0, 1, 2, 3, 4], [1, 3, 2, 5, 4]
    # x_mean = 2, y_mean = 3; Sxx = 4+1+0+1+4 = 10; Sxy = (-2)(-2)+(-1)(0)+0(-1)+1(2)+2(1) = 8
    # slope = 0.8, intercept = 3 - 1.6 = 1.4; fitted 1.4 2.2 3.0 3.8 4.6; residuals -0.4 0.8 -1 1.2 -0.6
    # SSE = 0.16+0.64+1+1.44+0.36 = 3.6; SST = 4+0+1+4+1 = 10; R^2 = 0.64
    # s^2 = 3.6/3 = 1.2; slope_se = sqrt(1.2/10) = 0.3464102; t = 0.8/0.3464102 = 2.3094011 (df 3)
    # CI = 0.8 +- 3.182446 * 0.3464102 = [-0.3024317, 1.9024317]
    r = linear_fit(x, y)
    assert r["slope"] == pytest.approx(0.8, rel=1e-14)
    assert r["intercept"] == pytest.approx(1.4, rel=1e-14)
    assert r["r2"] == pytest.approx(0.64, rel=1e-13)
    assert r["slope_se"] == pytest.approx(math.sqrt(0.12), rel=1e-14)
    assert r["intercept_se"] == pytest.approx(math.sqrt(1.2 * (1 / 5 + 4 / 10)), rel=1e-14)
    assert r["slope_ci_low"] == pytest.approx(-0.3024317, abs=1e-6)
    assert r["slope_ci_high"] == pytest.approx(1.9024317, abs=1e-6)
    # p = 2 (1 - F_3(2.3094011)) with the df = 3 closed form.
    assert r["p_value"] == pytest.approx(2 * (1 - cdf_df3(0.8 / math.sqrt(0.12))), rel=1e-12)


def test_linear_fit_degenerate_inputs():
    flat = linear_fit([2, 2, 2], [1, 2, 3])
    assert math.isnan(flat["slope"]) and math.isnan(flat["p_value"])
    two = linear_fit([0, 1], [1.0, 3.0])
    assert two["slope"] == 2.0 and math.isnan(two["slope_se"]) and math.isnan(two["p_value"])
    with pytest.raises(GolfError, match="same length"):
        linear_fit([0, 1, 2], [1, 2])


def test_one_sample_t_by_hand():
    # 1..7 against mu = 0: mean 4, s^2 = 28/6, s^2/n = 2/3, t = 4 / sqrt(2/3) = sqrt(24), df = 6
    r = one_sample_t_test([1, 2, 3, 4, 5, 6, 7])
    assert r["t"] == pytest.approx(math.sqrt(24), rel=1e-14) and r["df"] == 6 and r["mean"] == 4.0
    assert r["p_value"] == pytest.approx(2 * (1 - cdf_df6(math.sqrt(24))), rel=1e-12)
    # shifting the data and mu together changes nothing; the sign of t follows mean - mu
    shifted = one_sample_t_test([11, 12, 13, 14, 15, 16, 17], mu=10)
    assert shifted["t"] == pytest.approx(r["t"], rel=1e-12)
    assert one_sample_t_test([1, 2, 3], mu=5)["t"] < 0


def test_one_sample_t_degenerate():
    assert math.isnan(one_sample_t_test([0.3])["p_value"])  # one seed: no spread, no test
    assert one_sample_t_test([2.0, 2.0, 2.0])["t"] == math.inf
    assert math.isnan(one_sample_t_test([0.0, 0.0], mu=0.0)["t"])


# ---------------------------------------------------------------------------------------------------
# Paired designs, checked against scipy (an implementation nobody here wrote; a test-only dependency)
# ---------------------------------------------------------------------------------------------------



@pytest.fixture
def scipy_stats():
    return pytest.importorskip("scipy.stats")  # in the [dev] extra; only these reference checks need it


def test_paired_t_test_matches_scipy(scipy_stats):
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 0.02, 9)
    b = a + rng.normal(0.004, 0.003, 9)  # shared noise: pairing sees a clear shift, Welch does not
    ours = stats.paired_t_test(a, b)
    ref = scipy_stats.ttest_rel(a, b)
    assert ours["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert ours["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (ours["ci_low"], ours["ci_high"]) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    assert ours["p_value"] < 0.01 < stats.welch_t_test(a, b)["p_value"]


@pytest.mark.parametrize("n", [3, 5, 9, 15])
def test_paired_mde_reaches_its_power_under_the_noncentral_t(n, scipy_stats):
    sd, alpha = 0.01, 0.05
    mde = stats.paired_mde(sd, n, alpha, 0.8)
    df, crit = n - 1, scipy_stats.t.ppf(1 - alpha / 2, n - 1)
    nc = mde / (sd / np.sqrt(n))
    power = scipy_stats.nct.sf(crit, df, nc) + scipy_stats.nct.cdf(-crit, df, nc)
    assert 0.72 <= power <= 0.81, power  # the approximation is a little optimistic at small n
    assert math.isnan(stats.paired_mde(sd, 1)) and math.isnan(stats.paired_mde(float("nan"), 5))


def test_holm_matches_the_step_down_definition_and_keeps_nan():
    p = [0.01, 0.04, 0.03, float("nan"), 0.005]
    adj = stats.holm(p)
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 0.02, 0.03, 0.06, 0.06 (monotone), NaN stays NaN
    assert adj[4] == pytest.approx(0.02) and adj[0] == pytest.approx(0.03)
    assert adj[2] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06) and math.isnan(adj[3])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]


def test_page_trend_test_matches_scipy(scipy_stats):
    rng = np.random.default_rng(11)
    base = rng.normal(0, 1, (6, 1))
    table = base + np.array([0.0, 0.1, 0.35, 0.4, 0.9]) + rng.normal(0, 0.3, (6, 5))
    ours = stats.page_trend_test(table, permutations=40_000)
    exact = scipy_stats.page_trend_test(table, method="exact")
    asym = scipy_stats.page_trend_test(table, method="asymptotic")
    assert ours["L"] == pytest.approx(exact.statistic)
    assert ours["p_normal"] == pytest.approx(asym.pvalue, rel=1e-9)
    assert abs(ours["p_value"] - exact.pvalue) < 0.004
    flat = stats.page_trend_test(rng.normal(0, 1, (6, 5)))
    assert flat["p_value"] > 0.05
    # (k!)^n arrangements within the draw budget: every one counted, so the p is scipy's exact one, to rounding
    for shape in ((3, 3), (3, 4), (5, 3), (2, 5)):
        small = rng.normal(0, 1, shape) + np.linspace(0, 1.5, shape[1])
        assert stats.page_trend_test(small)["p_value"] == pytest.approx(
            scipy_stats.page_trend_test(small, method="exact").pvalue, rel=1e-9)
    assert stats.page_trend_test([[1, 2, 3]] * 3)["p_value"] == pytest.approx(1 / 216)  # the smallest attainable
    # with ties (scipy's exact method assumes none): every within-block order of the averaged ranks, counted
    tied = [[1.0, 1.0, 2.0], [0.5, 0.7, 0.7], [3.0, 1.0, 3.0]]
    ranks = [[1.5, 1.5, 3.0], [1.0, 2.5, 2.5], [2.5, 1.0, 2.5]]
    observed = sum(j * r for row in ranks for j, r in zip((1, 2, 3), row))
    null = [sum(j * row[o[j - 1]] for row, o in zip(ranks, orders) for j in (1, 2, 3))
            for orders in itertools.product(itertools.permutations(range(3)), repeat=3)]
    assert stats.page_trend_test(tied)["p_value"] == pytest.approx(sum(v >= observed - 1e-9 for v in null) / 216)
    with pytest.raises(GolfError, match="finite value"):
        stats.page_trend_test([[1.0, float("nan")], [1.0, 2.0]])
