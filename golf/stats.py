"""Small-sample statistics for golf's studies: means with t-intervals, Welch's test, a line fit.

Why this module exists: a study in golf has three to five seeds per cell, so every claim it makes ("TTT
gains 0.002 bpb", "the gain grows linearly with epochs") must carry a Student-t interval and a p-value
(STYLE principle 8), not a normal approximation. The report (`golf.report`) takes every number in its
tables from here, so there is one place to check.

Why no scipy: golf's dependency list stays short, and the one special function needed — the Student-t
distribution — fits in a page. The CDF comes from the regularized incomplete beta function,

    P(T <= t) = 1 - I_x(v/2, 1/2) / 2   for t >= 0,  with  x = v / (v + t^2),

and symmetry for t < 0. I_x(a, b) is evaluated with its continued fraction (modified Lentz method), which
converges quickly for x < (a + 1) / (a + b + 2); beyond that the symmetry I_x(a, b) = 1 - I_{1-x}(b, a)
moves the evaluation back into the fast region. The quantile inverts the CDF with Newton steps kept
inside a bisection bracket, so it cannot diverge. The tests check both against textbook t-table values
and the closed forms that exist for v = 1, 2, 3 and 6.

Conventions: every function returns plain Python floats in a dict; a quantity that is undefined for the
data (a standard deviation from one value, a slope from one distinct x) is NaN, never an exception, so a
report over an incomplete study still renders. Bad arguments (a confidence of 1.5, a NaN value, df <= 0)
raise `GolfError`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from golf.errors import GolfError

NAN = float("nan")

# Continued-fraction control. 1e-15 is a few ulps of float64: the fraction stops when a further term
# changes the value by less than that. The iteration cap is generous because the number of terms grows
# like sqrt(a + b); df = 1e7 (a = 5e6) still converges in a few thousand terms.
_CF_EPS = 1e-15
_CF_TINY = 1e-300
_CF_MAX_TERMS = 20_000

# Above this many degrees of freedom the t distribution is the normal one to better than 1e-7 in the
# CDF, and the continued fraction would need ever more terms; switch to the normal closed form.
_DF_NORMAL = 1e7


# ---------------------------------------------------------------------------------------------------
# Special functions
# ---------------------------------------------------------------------------------------------------


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b), without the prefactor x^a (1-x)^b / (a B(a, b)).

    I_x(a, b) = prefactor * 1 / (1 + d1 / (1 + d2 / (1 + ...))) with
        d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))
        d_{2m}   =  m (b - m) x / ((a + 2m - 1)(a + 2m))
    evaluated front to back with the modified Lentz method (numerator terms d_j, all denominators 1).
    """
    # g = 1 + d1/(1 + d2/(1 + ...)), Lentz state: f the running value, c and d the two ratios.
    f = 1.0
    c = 1.0
    d = 0.0
    for j in range(1, _CF_MAX_TERMS + 1):
        m = j // 2
        if j % 2 == 1:  # odd term d_{2m+1}
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:  # even term d_{2m}
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + num * d
        d = _CF_TINY if abs(d) < _CF_TINY else d  # Lentz: never divide by an exact zero
        c = 1.0 + num / c
        c = _CF_TINY if abs(c) < _CF_TINY else c
        d = 1.0 / d
        delta = c * d
        f *= delta
        if abs(delta - 1.0) < _CF_EPS:
            return 1.0 / f
    raise RuntimeError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc_regularized(a: float, b: float, x: float, one_minus_x: float | None = None) -> float:
    """Regularized incomplete beta I_x(a, b) = B(x; a, b) / B(a, b), for a, b > 0 and 0 <= x <= 1.

    `one_minus_x` may be passed when the caller can compute 1 - x without cancellation (the t CDF can:
    1 - v/(v+t^2) = t^2/(v+t^2)); it keeps full precision when x is close to 1.
    """
    xc = 1.0 - x if one_minus_x is None else one_minus_x
    if x <= 0.0:
        return 0.0
    if xc <= 0.0:
        return 1.0
    # log of the prefactor x^a (1-x)^b / (a B(a, b)), B from log-gamma so large a, b do not overflow.
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    if x < (a + 1.0) / (a + b + 2.0):
        log_pre = a * math.log(x) + b * math.log(xc) - math.log(a) - log_beta
        return math.exp(log_pre) * _beta_cf(a, b, x)
    # Slow region for the fraction: use I_x(a, b) = 1 - I_{1-x}(b, a).
    log_pre = b * math.log(xc) + a * math.log(x) - math.log(b) - log_beta
    return 1.0 - math.exp(log_pre) * _beta_cf(b, a, xc)


def _normal_cdf(z: float) -> float:
    # Phi(z) = erfc(-z / sqrt 2) / 2; erfc keeps the lower tail accurate far from zero.
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _normal_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _check_df(df: float, where: str) -> float:
    df = float(df)
    if not (df > 0.0 or math.isnan(df)):
        raise GolfError(f"{where}: degrees of freedom must be > 0, got {df}")
    return df


def _vectorized(scalar_fn: Callable[[float, float], float]) -> Callable:
    """Let a scalar (x, df) function take arrays too: floats in, float out; arrays in, array out."""

    def wrapper(x, df):
        if np.ndim(x) == 0 and np.ndim(df) == 0:
            return scalar_fn(float(x), float(df))
        return np.vectorize(scalar_fn, otypes=[float])(x, df)

    wrapper.__name__ = scalar_fn.__name__.lstrip("_")
    wrapper.__doc__ = scalar_fn.__doc__
    return wrapper


def _student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom (df > 0, may be fractional or inf).

    For t >= 0:  P(T <= t) = 1 - I_x(df/2, 1/2) / 2  with  x = df / (df + t^2)
    (the upper tail is half the incomplete beta; the lower tail follows by symmetry). The tail is
    computed directly, not as 1 - CDF, so small p-values keep their relative precision.
    """
    df = _check_df(df, "student_t_cdf")
    if math.isnan(t) or math.isnan(df):
        return NAN
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    if df > _DF_NORMAL:
        return _normal_cdf(t)
    t2 = t * t
    # x = df/(df + t^2) and 1 - x = t^2/(df + t^2), both without cancellation.
    tail = 0.5 * betainc_regularized(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def _student_t_pdf(t: float, df: float) -> float:
    # f(t) = Gamma((v+1)/2) / (sqrt(v pi) Gamma(v/2)) * (1 + t^2/v)^(-(v+1)/2), in logs.
    if df > _DF_NORMAL:
        return _normal_pdf(t)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))


def _student_t_ppf(q: float, df: float) -> float:
    """The t with P(T <= t) = q (the quantile, inverse CDF); q in [0, 1], df > 0.

    Solves CDF(t) = q for the lower tail (q < 1/2, t < 0) and mirrors it for q > 1/2. The root is first
    bracketed by doubling, then refined by Newton steps (derivative = the t density) that fall back to
    bisection whenever a step would leave the bracket; stops at a relative width of 1e-14.
    """
    df = _check_df(df, "student_t_ppf")
    q = float(q)
    if math.isnan(q) or math.isnan(df):
        return NAN
    if not 0.0 <= q <= 1.0:
        raise GolfError(f"student_t_ppf: probability must be in [0, 1], got {q}")
    if q == 0.5:
        return 0.0
    if q == 0.0:
        return -math.inf
    if q == 1.0:
        return math.inf
    # Solve in the lower tail: p = min(q, 1-q) < 1/2, root t < 0; the sign is restored at the end.
    p = min(q, 1.0 - q)
    lo, hi = -1.0, 0.0  # invariant: cdf(lo) <= p < cdf(hi)
    while _student_t_cdf(lo, df) > p:
        hi, lo = lo, 2.0 * lo
        if lo < -1e300:  # p is below anything a float t can reach
            return -math.inf if q < 0.5 else math.inf
    t = 0.5 * (lo + hi)
    for _ in range(200):
        err = _student_t_cdf(t, df) - p
        if err > 0:
            hi = t
        else:
            lo = t
        dens = _student_t_pdf(t, df)
        step_t = t - err / dens if dens > 0 else math.nan
        # Newton if it stays strictly inside the bracket, otherwise bisect.
        t_new = step_t if lo < step_t < hi else 0.5 * (lo + hi)
        if abs(t_new - t) <= 1e-14 * max(1.0, abs(t)) or hi - lo <= 1e-14 * max(1.0, abs(lo)):
            t = t_new
            break
        t = t_new
    return t if q < 0.5 else -t


student_t_cdf = _vectorized(_student_t_cdf)
student_t_ppf = _vectorized(_student_t_ppf)


# ---------------------------------------------------------------------------------------------------
# Estimators and tests
# ---------------------------------------------------------------------------------------------------


def _as_values(values: Sequence[float], name: str) -> np.ndarray:
    """float64 1-D array of finite values; NaN/inf are refused so a missing metric is never averaged."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise GolfError(f"{name}: values must be finite numbers (drop missing runs first), "
                        f"got {arr.tolist()}")
    return arr


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise GolfError(f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence}")
    return confidence


def mean_std_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean, sample standard deviation and the two-sided Student-t confidence interval of the mean.

        mean       = sum(x) / n
        std        = sqrt(sum((x - mean)^2) / (n - 1))          (ddof = 1, the unbiased variance)
        half_width = t_{(1 + confidence)/2, n - 1} * std / sqrt(n)
        ci         = [mean - half_width, mean + half_width]

    n = 1 gives the mean and NaN for std and the interval (one seed says nothing about spread); n = 0
    gives NaN everywhere. Returns {n, mean, std, ci_low, ci_high, half_width, confidence}.
    """
    confidence = _check_confidence(confidence)
    x = _as_values(values, "mean_std_ci")
    n = int(x.size)
    out = {"n": n, "mean": NAN, "std": NAN, "ci_low": NAN, "ci_high": NAN, "half_width": NAN,
           "confidence": confidence}
    if n == 0:
        return out
    mean = float(x.sum() / n)
    out["mean"] = mean
    if n < 2:
        return out
    std = float(math.sqrt(np.sum((x - mean) ** 2) / (n - 1)))
    t_crit = _student_t_ppf(0.5 + confidence / 2.0, n - 1)
    half_width = t_crit * std / math.sqrt(n)
    out.update(std=std, half_width=half_width, ci_low=mean - half_width, ci_high=mean + half_width)
    return out


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's two-sample t-test of equal means, two-sided, without assuming equal variances.

        se^2 = s_a^2 / n_a + s_b^2 / n_b                       (s^2 with ddof = 1)
        t    = (mean_a - mean_b) / se
        df   = se^4 / ((s_a^2/n_a)^2 / (n_a - 1) + (s_b^2/n_b)^2 / (n_b - 1))   (Welch-Satterthwaite)
        p    = 2 * P(T_df > |t|)

    Each sample needs at least two values; otherwise, or when both samples have zero spread (se = 0),
    t/df/p are NaN (t is +-inf when the means differ with zero spread). Returns {t, df, p_value,
    mean_diff, n_a, n_b}.
    """
    xa = _as_values(a, "welch_t_test (a)")
    xb = _as_values(b, "welch_t_test (b)")
    na, nb = int(xa.size), int(xb.size)
    out = {"t": NAN, "df": NAN, "p_value": NAN, "mean_diff": NAN, "n_a": na, "n_b": nb}
    if na == 0 or nb == 0:
        return out
    diff = float(xa.mean() - xb.mean())
    out["mean_diff"] = diff
    if na < 2 or nb < 2:
        return out
    # Per-sample squared standard errors of the mean.
    va = float(np.var(xa, ddof=1)) / na
    vb = float(np.var(xb, ddof=1)) / nb
    se2 = va + vb
    if se2 == 0.0:
        out["t"] = math.copysign(math.inf, diff) if diff != 0 else NAN
        return out
    t = diff / math.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    out.update(t=t, df=df, p_value=min(1.0, 2.0 * _student_t_cdf(-abs(t), df)))
    return out


def one_sample_t_test(values: Sequence[float], mu: float = 0.0) -> dict:
    """Student's one-sample t-test of mean = mu, two-sided.

        t  = (mean - mu) / (s / sqrt(n))        (s with ddof = 1)
        df = n - 1
        p  = 2 * P(T_df > |t|)

    Used on one number per seed (e.g. each seed's slope), so that the test's n is the number of
    independent runs, not the number of correlated points inside them. Fewer than two values, or zero
    spread, leave t/p NaN (t is +-inf when the mean differs from mu with zero spread). Returns {t, df,
    p_value, mean, n}.
    """
    x = _as_values(values, "one_sample_t_test")
    n = int(x.size)
    out = {"t": NAN, "df": n - 1, "p_value": NAN, "mean": NAN, "n": n}
    if n == 0:
        return out
    mean = float(x.mean())
    out["mean"] = mean
    if n < 2:
        return out
    se = math.sqrt(float(np.var(x, ddof=1)) / n)
    diff = mean - mu
    if se == 0.0:
        out["t"] = math.copysign(math.inf, diff) if diff != 0 else NAN
        return out
    t = diff / se
    out.update(t=t, p_value=min(1.0, 2.0 * _student_t_cdf(-abs(t), n - 1)))
    return out


def linear_fit(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> dict:
    """Ordinary least squares y = intercept + slope * x, with the slope's standard error, CI and p-value.

        Sxx = sum((x - x_mean)^2),  Sxy = sum((x - x_mean)(y - y_mean))
        slope = Sxy / Sxx,  intercept = y_mean - slope * x_mean
        SSE = sum((y - intercept - slope x)^2),  s^2 = SSE / (n - 2)
        slope_se = sqrt(s^2 / Sxx),  intercept_se = sqrt(s^2 (1/n + x_mean^2 / Sxx))
        slope CI = slope +- t_{(1 + confidence)/2, n - 2} * slope_se
        p_value  = 2 * P(T_{n-2} > |slope / slope_se|)        (H0: slope = 0)
        r2 = 1 - SSE / SST,  SST = sum((y - y_mean)^2)

    Fewer than two distinct x values leave everything NaN; exactly two points give the slope and
    intercept but NaN errors (no residual degrees of freedom). Returns {n, slope, intercept, slope_se,
    intercept_se, slope_ci_low, slope_ci_high, r2, p_value, df, confidence}.
    """
    confidence = _check_confidence(confidence)
    xs = _as_values(x, "linear_fit (x)")
    ys = _as_values(y, "linear_fit (y)")
    if xs.size != ys.size:
        raise GolfError(f"linear_fit: x and y need the same length, got {xs.size} and {ys.size}")
    n = int(xs.size)
    out = {"n": n, "slope": NAN, "intercept": NAN, "slope_se": NAN, "intercept_se": NAN,
           "slope_ci_low": NAN, "slope_ci_high": NAN, "r2": NAN, "p_value": NAN, "df": n - 2,
           "confidence": confidence}
    if n < 2:
        return out
    # Centre first: sums of centred products are exact for an exact line and avoid cancellation.
    x_mean, y_mean = float(xs.mean()), float(ys.mean())
    dx, dy = xs - x_mean, ys - y_mean
    sxx = float(np.sum(dx * dx))
    if sxx == 0.0:
        return out
    slope = float(np.sum(dx * dy)) / sxx
    intercept = y_mean - slope * x_mean
    resid = dy - slope * dx  # y - (intercept + slope x), written in centred form
    sse = float(np.sum(resid * resid))
    sst = float(np.sum(dy * dy))
    out.update(slope=slope, intercept=intercept, r2=(1.0 - sse / sst) if sst > 0 else NAN)
    if n < 3:
        return out
    s2 = sse / (n - 2)  # residual variance
    slope_se = math.sqrt(s2 / sxx)
    t_crit = _student_t_ppf(0.5 + confidence / 2.0, n - 2)
    if slope_se > 0:
        p_value = min(1.0, 2.0 * _student_t_cdf(-abs(slope / slope_se), n - 2))
    else:  # points exactly on a line: the slope is known without error
        p_value = 0.0 if slope != 0 else NAN
    out.update(slope_se=slope_se, intercept_se=math.sqrt(s2 * (1.0 / n + x_mean * x_mean / sxx)),
               slope_ci_low=slope - t_crit * slope_se, slope_ci_high=slope + t_crit * slope_se,
               p_value=p_value)
    return out


# ---------------------------------------------------------------------------------------------------
# Paired designs: runs that share a base (same seed, same split) are compared within the pair
# ---------------------------------------------------------------------------------------------------


def paired_t_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, power: float = 0.8) -> dict:
    """Paired t-test of mean(a - b) = 0, two-sided, with the CI of the mean difference and its MDE.

    a[i] and b[i] are one unit's two measurements (e.g. the gain on adapted half A and on held-out half B
    of one run, or two strategies on one seed's base model). Pairing removes the units' shared noise, which
    an unpaired (Welch) test would count as spread. `mde` is the smallest true mean difference this design
    detects with probability `power` at two-sided level 1 - confidence (`paired_mde` of the observed sd).
    Returns {n, mean_diff, sd_diff, t, df, p_value, ci_low, ci_high, mde}.
    """
    xa = _as_values(a, "paired_t_test (a)")
    xb = _as_values(b, "paired_t_test (b)")
    if xa.size != xb.size:
        raise GolfError(f"paired_t_test: a and b need the same length (one pair per unit), got {xa.size} and {xb.size}")
    d = xa - xb
    test = one_sample_t_test(d)
    ci = mean_std_ci(d, confidence)
    return {"n": test["n"], "mean_diff": test["mean"], "sd_diff": ci["std"], "t": test["t"], "df": test["df"],
            "p_value": test["p_value"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
            "mde": paired_mde(ci["std"], test["n"], 1.0 - confidence, power)}


def paired_mde(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of a two-sided paired (one-sample) t-test with n units of spread sd:

        mde = (t_{1 - alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)

    the usual approximation to the noncentral-t solution (it is a little optimistic for n < 5: the power
    reached at this effect is then a few points under `power`; tests/test_stats.py measures it with
    scipy's noncentral t). NaN for n < 2 or an unknown sd. A claim of "no effect" is only as strong as this.
    """
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise GolfError(f"paired_mde: alpha {alpha} and power {power} must be in (0, 1)")
    if n < 2 or sd is None or not math.isfinite(sd):
        return NAN
    df = n - 1
    return (_student_t_ppf(1.0 - alpha / 2.0, df) + _student_t_ppf(power, df)) * sd / math.sqrt(n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment for a family of tests (controls the family-wise error rate).

    Sort the m finite p-values ascending, p_(1) <= ... <= p_(m); adjusted p_(i) = max over j <= i of
    min(1, (m - j + 1) p_(j)). A NaN p-value (a test the data cannot make) stays NaN and does not count in m.
    Returned in the input order.
    """
    p = [float(v) if v is not None else NAN for v in p_values]
    finite = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(finite)
    out = [NAN] * len(p)
    running = 0.0
    for rank, (value, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * value))
        out[i] = running
    return out


# page_trend_test's default: exact below this many within-block arrangements, else this many seeded draws
PAGE_PERMUTATIONS = 20_000


def page_trend_test(blocks: Sequence[Sequence[float]], permutations: int = PAGE_PERMUTATIONS,
                    seed: int = 0) -> dict:
    """Page's L test for a monotone increasing trend across k ordered conditions, in n blocks.

    `blocks[i][j]` is block i's (e.g. one seed and split's base model) value under condition j (e.g. the
    j-th epoch count, in increasing order). Values are ranked within each block (ties averaged), and

        L = sum_j j * R_j,   R_j = the sum over blocks of the ranks of condition j   (j = 1..k)

    is large when the values rise with j. This is a test of trend that uses only the order within each
    block, so a saturating curve counts as a trend just as a straight line does, and blocks with different
    levels are compared only with themselves. Two p-values (one-sided, H1: increasing):
    `p_value` by permutation (ranks shuffled within each block): exact, over every one of the (k!)^n
    arrangements (ties keep their averaged ranks), where there are at most `permutations` of them (up to 5
    blocks of 3 conditions, 3 of 4, 2 of 5), else from `permutations` seeded draws (reproducible reports),
    and `p_normal` by the normal approximation
    E[L] = n k (k+1)^2 / 4, Var[L] = n k^2 (k+1) (k^2 - 1) / 144 (tie-free). For a decreasing trend pass
    the negated values. Returns {n, k, L, p_value, p_normal, z}.
    """
    x = np.asarray(blocks, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2:
        raise GolfError(f"page_trend_test: need an n x k table with k >= 2 conditions, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise GolfError("page_trend_test: every block needs a finite value for every condition")
    n, k = x.shape
    ranks = np.apply_along_axis(_average_ranks, 1, x)
    weights = np.arange(1, k + 1, dtype=float)
    L = float((ranks * weights).sum())
    mean = n * k * (k + 1) ** 2 / 4.0
    var = n * k * k * (k + 1) * (k * k - 1) / 144.0
    z = (L - mean) / math.sqrt(var)
    if math.factorial(k) ** n <= permutations:
        # Every arrangement: block i contributes sum_j w_j * ranks[i, perm(j)] for each of the k! orders,
        # and the null distribution of L is every sum of one contribution per block.
        orders = np.array(list(itertools.permutations(range(k))))
        null = np.zeros(1)
        for row in ranks:
            null = np.add.outer(null, (row[orders] * weights).sum(axis=1)).ravel()
        p_perm = float(np.count_nonzero(null >= L - 1e-9) / null.size)
    else:
        rng = np.random.default_rng(seed)
        draws = rng.permuted(np.broadcast_to(ranks, (permutations, n, k)).copy(), axis=2)
        null = (draws * weights).sum(axis=(1, 2))
        p_perm = float((1 + np.count_nonzero(null >= L - 1e-9)) / (permutations + 1))
    return {"n": n, "k": k, "L": L, "p_value": p_perm, "p_normal": 1.0 - _normal_cdf(z), "z": z}


def _average_ranks(row: np.ndarray) -> np.ndarray:
    """Ranks 1..k of a row, ties sharing the average of the ranks they span."""
    order = np.argsort(row, kind="stable")
    ranks = np.empty(row.size, dtype=float)
    ranks[order] = np.arange(1, row.size + 1, dtype=float)
    for value in np.unique(row):
        tied = row == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks
