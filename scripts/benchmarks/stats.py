"""The statistics every report prints: mean and sd over seeds, paired 95% t-intervals, and the
verdict an interval supports ("better", "worse", "level", "cannot tell")."""

import math
import statistics

# Student t 0.975 quantiles by degrees of freedom (tables); beyond 30, t95() expands around z.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
T95.update({10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110})
T95.update({18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060})
T95.update({26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042})


def t95(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (Cornish-Fisher past the
    table: within 0.001 of the exact value there, unlike the normal 1.96)."""
    if df in T95:
        return T95[df]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None), len(values)


def interval(values):
    """Mean and 95% t-interval half-width (None with fewer than 2 values)."""
    m, sd, n = mean_sd(values)
    if n < 2:
        return m, None, n
    return m, t95(n - 1) * sd / math.sqrt(n), n


def verdict(ci, scale, equivalence):
    """Words a paired interval supports: better, worse, level (inside +-equivalence of ``scale``),
    or cannot be told apart at this precision."""
    m, half, n = ci
    if m is None or half is None:
        return "-"
    if m - half > 0:
        return "better"
    if m + half < 0:
        return "worse"
    if scale and -equivalence * scale <= m - half and m + half <= equivalence * scale:
        return "level"
    return "cannot tell"
