"""Each stream's value scale: its raw units, their logarithm, or a count's root (issue 13).

A log-normal sensor (a cost, a rate, a concentration: noise that multiplies, not adds) puts
readings far into a Gaussian's upper tail as a matter of course. Every z-score downstream is
read against a Gaussian tail, so in raw units such a stream alerts all day (the calibration
suite's log-normal kind: 17.6 false alerts / 10,000 readings after round 9, the worst kind);
its logarithm is Gaussian. No tail estimator fixed that without costing NAB's labelled spikes
(docs/benchmarks.md, rounds 5 and 7), because it had to tell ordinary extremes from anomalous
ones by their rate; the scale tells them apart by the shape of the stream's whole distribution.
An overdispersed counter (mentions every 5 minutes: a gamma-distributed rate, then Poisson) is
the same problem in whole numbers, which may be 0: its square root, as Anscombe's transform
``2 sqrt(x + 3/8)``, makes its spread nearly even and its upper tail nearly Gaussian
(round 14).

Each stream decides from its first ``SCALE_READINGS`` finite readings (all warm-up at the
default ``[model] warmup``):

- logarithmic when every one was positive, not all were whole numbers, their skewness was
  above ``RAW_SKEW_MIN`` (clearly right-skewed) and the skewness of their logarithms within
  ``LOG_SKEW_MAX`` of 0 (the logarithm makes them symmetric);
- root when every one was a whole number >= 0, fewer than half were 0, their skewness was
  above ``ROOT_SKEW_MIN`` and their roots' skewness smaller in size (the root makes them
  more symmetric). A mostly-zero counter's bursts stay raw: its roots are no more symmetric
  and the bursts' sizes would be squeezed together;
- raw otherwise (a negative reading, a fractional one among zeros, a symmetric stream).

Fifty readings misjudge one log-normal stream in eight: their logarithms' skewness misses the
test by chance. A stream of positive fractional readings that stayed raw so takes a second
look at ``SECOND_LOOK_READINGS`` (the log test only, over all its readings so far) and turns
logarithmic then if it passes.

The caller restarts the stream's learning at the reading where it turned. On a log stream a
reading at or below zero (an outage, a negative glitch) is scored at a floor ``LOG_FLOOR_SDS``
below the smallest reading of the decision: far below anything the stream did, so an anomaly,
not an error. On a root stream the transform is extended to negative readings as an odd
function (a negative count is scored below 0, never an error).

Moments are learned with Welford/Terriberry updates (central, so a stream of values near 1e6
with a spread of 1 keeps its skewness exact). State per stream: ``N_SCALE`` floats.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Columns of the per-stream ``scale`` array.
S_N = 0  # positive readings learned while undecided
S_MEAN = 1  # their mean, second and third central moment sums
S_M2 = 2
S_M3 = 3
S_LMEAN = 4  # the same of their natural logarithms
S_LM2 = 5
S_LM3 = 6
S_MIN = 7  # the smallest of them (the log scale's floor is a share of it)
S_MODE = 8  # UNDECIDED, RAW, LOG, ROOT or RAW_PENDING
S_FLOOR = 9  # a log stream's lowest scored value (a logarithm)
S_FRACTIONAL = 10  # 1 once a learned reading was not a whole number
S_RMEAN = 11  # the mean, second and third central moment sums of their roots
S_RM2 = 12
S_RM3 = 13
S_ZEROS = 14  # learned readings that were 0 (a log scale is then out)
N_SCALE = 15

UNDECIDED = 0.0
RAW = 1.0
LOG = 2.0
ROOT = 3.0
# Scored raw, the log test still to be taken again at SECOND_LOOK_READINGS (an older build
# reads it as raw for good).
RAW_PENDING = 4.0

# Readings the decision waits for. The stream's learning restarts at a switch (its age kept),
# so the decision must come early: at 100, NAB's one stream that turns logarithmic there
# (iio NetworkIn, 5-minute) lost a labelled window to its shorter profile; at 50 no NAB stream
# turns and a log-normal (sigma 1) stream does 87 % of the time (docs/benchmarks.md, round
# 10). A wrong turn is cheap: the right-skewed positive streams that pass the test by chance
# (exponential 18 %, gamma 33 %) have a lighter tail below, in logarithms, than above, raw.
SCALE_READINGS = 50
# The second look of a positive fractional stream that stayed raw. A log-normal (sigma 1)
# stream passes the log test 87 % of the time at 50 readings and more than 99 % at 200 (the
# logarithms' skewness has a sampling spread of sqrt(6 / n): 0.35, then 0.17). Anomaly-free
# log-normal streams, a few of them misjudged at 50, raised 1.53 false alerts / 10k (40 once
# a minute), 3.67 (60 hourly) and 1.35 (20 at 20 Hz) without it and 0.43, 0.44 and 0.27 with
# it (docs/benchmarks.md, round 18). It comes within the default warm-up of a stream read
# every 5 minutes or faster, so that the restart costs such a stream no scored reading. No
# NAB stream turns at 200 or at 500 (NAB and the calibration suite are identical to a build
# without it); at 300 iio_us-east-1_i-a2eb1cd9_NetworkIn turns and its restarted profile
# misses a labelled window. Counts take no second look: turning NAB's elb_request_count_8c0756
# to roots at 200 or 500 lost a labelled burst.
SECOND_LOOK_READINGS = 200
# Raw skewness a log stream must exceed (an exponential distribution has 2, a Gaussian 0).
RAW_SKEW_MIN = 1.0
# Skewness its logarithms must stay within (a log-normal stream's is 0; an exponential's -1.1,
# a Pareto's well above 0; a Poisson stream's readings are not all positive).
LOG_SKEW_MAX = 0.5
# A log stream's readings are scored no lower than this many standard deviations (of the
# decision's logarithms) below the smallest of them: zero, a negative glitch or a reading of
# 1e-9 on a stream of tens is then an alert whatever its spread, and never -inf.
LOG_FLOOR_SDS = 4.0
# Raw skewness a root stream must exceed: the log scale's own (docs/benchmarks.md, round 14:
# lower thresholds turn more of the suite's mention counters, and NAB's elb_request_count,
# whose labelled burst a root scale lowers under the threshold).
ROOT_SKEW_MIN = RAW_SKEW_MIN
# Anscombe's offset: the root of a Poisson count has a variance near 1/4 from a mean of ~1 up.
ROOT_OFFSET = 0.375
_ROOT_ZERO = math.sqrt(ROOT_OFFSET)


@njit(cache=True)
def moments_learn(row, at, x, n):
    """Fold ``x`` into the mean / M2 / M3 at ``row[at:at + 3]``, ``n`` values before it."""
    n1 = n + 1.0
    delta = x - row[at]
    delta_n = delta / n1
    term1 = delta * delta_n * n
    row[at] += delta_n
    row[at + 2] += term1 * delta_n * (n1 - 2.0) - 3.0 * delta_n * row[at + 1]
    row[at + 1] += term1


@njit(cache=True)
def skewness(n, m2, m3):
    """Sample skewness ``g1`` from ``n`` values' central moment sums (0 for a constant)."""
    if m2 <= 0.0:
        return 0.0
    return math.sqrt(n) * m3 / m2 ** 1.5


@njit(cache=True)
def count_root(v):
    """Anscombe's root of a count, ``2 (sqrt(v + 3/8) - sqrt(3/8))`` (0 at 0), extended to
    negative ``v`` as an odd function: monotone, so a negative glitch scores below 0."""
    if v >= 0.0:
        return 2.0 * (math.sqrt(v + ROOT_OFFSET) - _ROOT_ZERO)
    return -2.0 * (math.sqrt(ROOT_OFFSET - v) - _ROOT_ZERO)


@njit(cache=True)
def count_unroot(y):
    """The inverse of :func:`count_root`."""
    if y >= 0.0:
        r = 0.5 * y + _ROOT_ZERO
        return r * r - ROOT_OFFSET
    r = -0.5 * y + _ROOT_ZERO
    return ROOT_OFFSET - r * r


@njit(cache=True)
def scale_learn(row, v, readings, second_look):
    """Learn ``v`` into the ``row`` of a stream still deciding (``UNDECIDED`` or
    ``RAW_PENDING``), deciding at ``readings`` readings (``SCALE_READINGS`` in the pipeline) and,
    for a positive fractional stream that stayed raw then, again at ``second_look``
    (``SECOND_LOOK_READINGS``); True when it turned logarithmic or root now."""
    if v != math.floor(v):
        row[S_FRACTIONAL] = 1.0
    if v < 0.0 or (v == 0.0 and row[S_FRACTIONAL]) or (row[S_FRACTIONAL] and row[S_ZEROS]):
        row[S_MODE] = RAW  # neither the logarithm nor a count's root can hold it: raw for good
        return False
    n = row[S_N]
    row[S_MIN] = v if n == 0.0 else min(row[S_MIN], v)
    moments_learn(row, S_MEAN, v, n)
    moments_learn(row, S_RMEAN, count_root(v), n)
    if v == 0.0:
        row[S_ZEROS] += 1.0
    elif row[S_ZEROS] == 0.0:
        moments_learn(row, S_LMEAN, math.log(v), n)
    n += 1.0
    row[S_N] = n
    pending = row[S_MODE] == RAW_PENDING
    if n < (second_look if pending else readings):
        return False
    raw_skew = skewness(n, row[S_M2], row[S_M3])
    if row[S_FRACTIONAL]:
        log_skew = skewness(n, row[S_LM2], row[S_LM3])
        if raw_skew > RAW_SKEW_MIN and abs(log_skew) < LOG_SKEW_MAX:
            row[S_MODE] = LOG
            row[S_FLOOR] = math.log(row[S_MIN]) - LOG_FLOOR_SDS * math.sqrt(row[S_LM2] / n)
            return True
        if not pending and second_look > readings:
            row[S_MODE] = RAW_PENDING
            return False
    elif (not pending and 2.0 * row[S_ZEROS] < n and raw_skew > ROOT_SKEW_MIN
          and abs(skewness(n, row[S_RM2], row[S_RM3])) < raw_skew):
        row[S_MODE] = ROOT
        return True
    row[S_MODE] = RAW
    return False


@njit(cache=True)
def scaled_value(row, v):
    """``v`` on the scale of the stream with state ``row`` (non-finite values pass unchanged)."""
    if not math.isfinite(v):
        return v
    if row[S_MODE] == ROOT:
        return count_root(v)
    if row[S_MODE] != LOG:
        return v
    if v <= 0.0:
        return row[S_FLOOR]
    return max(math.log(v), row[S_FLOOR])


@njit(cache=True, nogil=True)
def scale_batch(scale, slots, values, out):
    """Each reading's value on its stream's scale into ``out``; undecided streams learn.

    Returns the indices of the readings at which a stream turned logarithmic or root, in
    order: the reading itself and every later one of that stream are on the new scale.
    """
    switched = np.empty(slots.shape[0], dtype=np.int64)
    k = 0
    for i in range(slots.shape[0]):
        row = scale[slots[i]]
        v = values[i]
        if ((row[S_MODE] == UNDECIDED or row[S_MODE] == RAW_PENDING) and math.isfinite(v)
                and scale_learn(row, v, SCALE_READINGS, SECOND_LOOK_READINGS)):
            switched[k] = i
            k += 1
        out[i] = scaled_value(row, v)
    return switched[:k]


@njit(cache=True)
def unscale_range(scale, slots, expected):
    """The usual ranges ``expected[i] = [low, high]`` back in the streams' own units."""
    for i in range(slots.shape[0]):
        mode = scale[slots[i], S_MODE]
        if mode == LOG:
            expected[i, 0] = math.exp(expected[i, 0])
            expected[i, 1] = math.exp(expected[i, 1])
        elif mode == ROOT:  # a count's usual range ends at 0 at the lowest
            expected[i, 0] = max(count_unroot(expected[i, 0]), 0.0)
            expected[i, 1] = max(count_unroot(expected[i, 1]), 0.0)
