"""Raw Half-Space-Trees scores and feature z-scores to one anomaly level in [0, 1].

The level is the largest of three tail probabilities, each put on the same log scale
(``-log10(p) / 10``, so 0.5 means p = 1e-5 and 1.0 means p <= 1e-10):

- the seasonal residual's two-sided Gaussian tail (a reading far from its time-of-day profile);
- the lower tail of the volatility z-score (the readings stopped moving: a stuck sensor);
- an anomaly likelihood of the HST score, as in Numenta's: the short moving average of the raw
  scores against the EWMA mean and deviation of the stream's own raw scores.

Calibrating per stream makes one threshold mean the same thing on very different streams.
"""

from __future__ import annotations

import math

from numba import njit

# ln(1e10): level 1.0 <=> tail probability 1e-10.
LN_1E10 = 23.025850929940457
# Learning rate of the raw-score mean and variance.
CAL_ALPHA = 0.005
# Raw scores averaged before the likelihood (a lone high score among normal ones is noise).
CAL_SHORT = 5
# Real raw scores learned before their likelihood is trusted.
CAL_MIN_SCORES = 30
_SQRT2 = math.sqrt(2.0)
# The log ratio of a short to a long mean absolute deviation has a lower tail much heavier than
# a Gaussian's (a few small differences in a row are common), so its z-score is halved before
# the Gaussian tail is read. A stuck sensor still drives it far past that within ~15 readings.
QUIET_Z_DIVISOR = 2.0


@njit(cache=True)
def probability_level(p):
    """A tail probability on the log scale of the levels, in [0, 1] (1e-10 or less -> 1)."""
    return min(1.0, max(0.0, -math.log(p + 1e-10) / LN_1E10))


@njit(cache=True)
def tail_level(z):
    """Two-sided Gaussian tail probability of ``z`` on the log scale, in [0, 1]."""
    return probability_level(math.erfc(abs(z) / _SQRT2))


@njit(cache=True)
def calibrate(cal_mean, cal_var, cal_n, short, short_sum, s, raw, z_season, z_volatility, warm):
    """Level of slot ``s`` for raw HST score ``raw`` and seasonal z-score; learn ``raw``.

    The first ``warm`` raw scores are the model's first window, which it does not score (they
    are 0): they are kept out of the mean and variance, or the first real score would stand
    thousands of deviations above a mean of zeros and read as an anomaly on every stream (it
    did, whenever ``[model] warmup`` was set below the window). The likelihood waits for
    ``CAL_MIN_SCORES`` real scores.
    """
    n = cal_n[s]
    k = n % CAL_SHORT
    short_sum[s] += raw - short[s, k]
    short[s, k] = raw
    width = min(n + 1, CAL_SHORT)
    likelihood = 0.0
    if n >= warm + CAL_MIN_SCORES:
        z = (short_sum[s] / width - cal_mean[s]) / (math.sqrt(cal_var[s]) + 1e-9)
        likelihood = probability_level(0.5 * math.erfc(z / _SQRT2))
    if n >= warm:
        scored = n - warm  # real scores learned before this one
        if scored == 0:
            cal_mean[s] = raw
        a = max(CAL_ALPHA, 1.0 / (scored + 1.0))
        delta = raw - cal_mean[s]
        cal_mean[s] += a * delta
        cal_var[s] = (1.0 - a) * (cal_var[s] + a * delta * delta)
    cal_n[s] = n + 1
    # Only a collapse of volatility (a stuck or frozen sensor) counts here: a burst of noise
    # already shows in the other views, a quiet stretch shows in none of them.
    quiet = tail_level(min(z_volatility, 0.0) / QUIET_Z_DIVISOR)
    return max(tail_level(z_season), quiet, likelihood)
