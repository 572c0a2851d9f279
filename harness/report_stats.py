"""The report's statistics: mean ± std and t-interval over seeds, Welch's test against the baseline,
Holm's adjustment across one table's comparisons, and the resolution of a test set.

* mean ± sample standard deviation (ddof = 1); 95% CI = scipy's t-interval (n − 1 degrees of freedom);
  n = 1 gives no std and no CI.
* Difference to the baseline: scipy's ``ttest_ind(a, b, equal_var=False)`` (Welch), its two-sided
  p-value and ``.confidence_interval(0.95)`` of (mean a − mean b).
* Every algorithm of one dataset × network table is compared with the same baseline: the p-values of
  that table are adjusted together by Holm's step-down method (family-wise error ≤ 0.05), and a
  difference is *significant* when its adjusted p < 0.05.
* Resolution: one test example is 100 / n_test percentage points; accuracies are printed with the
  fewest decimals whose last digit is no coarser than that (digits, 360 test images: 0.28 pp → 1 decimal).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


def _finite(values) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def mean_std_ci(values) -> dict:
    """n, mean, sample std and the t-interval of the mean of the finite values."""
    x = _finite(values)
    n = int(x.size)
    out = {"n": n, "mean": float(x.mean()) if n else math.nan, "std": math.nan, "ci_low": math.nan,
           "ci_high": math.nan}
    if n >= 2:
        std = float(x.std(ddof=1))
        out["std"] = std
        if std > 0:
            low, high = stats.t.interval(CONFIDENCE, n - 1, loc=out["mean"], scale=std / math.sqrt(n))
            out.update(ci_low=float(low), ci_high=float(high))
        else:
            out.update(ci_low=out["mean"], ci_high=out["mean"])
    return out


def welch(a, b) -> dict:
    """mean a − mean b, Welch's 95% CI and two-sided p (NaN when n < 2 in either or no variance)."""
    a, b = _finite(a), _finite(b)
    out = {"diff": float(a.mean() - b.mean()) if a.size and b.size else math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    if a.size < 2 or b.size < 2 or (a.var() == 0 and b.var() == 0):
        return out
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(CONFIDENCE)
    out.update(ci_low=float(ci.low), ci_high=float(ci.high), p=float(res.pvalue))
    return out


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values (same order; NaN stays NaN and is not counted as a comparison)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if not m:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    steps = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return out


def resolution_pp(n_test) -> float:
    """One test example in percentage points (NaN when the test-set size is unknown)."""
    return 100.0 / n_test if n_test and np.isfinite(n_test) and n_test > 0 else math.nan


def decimals_for(n_test, default: int = 2) -> int:
    """Decimals of a percentage that the test set resolves: the smallest d with 10^-d ≤ 100 / n_test."""
    res = resolution_pp(n_test)
    return max(0, math.ceil(-math.log10(res))) if math.isfinite(res) else default
