"""Scale floors for discrete streams: counts, quantised sensors, mostly-zero counters.

A seasonal z-score divides a residual by a deviation learned from the stream's own residuals.
On a discrete stream that deviation can collapse below what the data can resolve: a slot of a
quantised sensor that saw the same grid value a few times, a Poisson slot that saw mostly
zeros, a counter that is 0 for hours between bursts. The next ordinary step then scores as a
huge z. The floors here come from the data's own structure, learned online per stream, never
from a constant fitted to a benchmark:

- a stream on a grid of step ``q`` (the smallest nonzero |difference| seen so far: a
  continuous sensor's shrinks toward 0 and its floor with it): a residual's scale is at least
  ``q / 2``, the largest noise a run of identical grid readings cannot rule out;
- a stream of non-negative integers (every value so far) is a count whose median reading is
  0 (more zeros than not, so a spread learned mostly from zeros is ~0): at least the spread of
  its own nonzero values;
- a count's z-score is at most its Poisson z on Anscombe's variance-stabilised scale,
  ``2 (sqrt(v + 3/8) - sqrt(mu + 3/8))`` against the level ``mu`` it was judged against: a
  count is never judged rarer than a Poisson count would be.

Each only ever lowers ``|z|``, never flips its sign, and leaves an unscored z (0) at 0. Only
the seasonal view reads the result: the trees see the staged features unchanged.

State per stream, ``discrete[s, :]`` (zeros: unknown, learned again from the next reading, so
an older checkpoint is upgraded with zeros).
"""

from __future__ import annotations

import math

from numba import njit

from edge_ml.kernels.scale import count_root

D_N = 0  # readings learned
D_NONCOUNT = 1  # 1 once a value was negative or not an integer
D_Q = 2  # grid step: the smallest nonzero |difference| so far (0: none yet)
D_PREV = 3  # the last value
D_ZERO = 4  # running share of readings that are exactly 0
D_NZ_MEAN = 5  # running mean of the nonzero values
D_NZ_DEV = 6  # running mean absolute deviation of the nonzero values
D_NZ_N = 7  # nonzero values learned
N_DISCRETE = 8
# Learning rate of the running shares and means (equal weights at first), as the stream's
# overall statistics in kernels.window (about two days of 5-minute readings).
D_ALPHA = 1.0 / 600.0
# Mean absolute deviation times sqrt(pi/2) estimates a Gaussian standard deviation.
D_DEV_MULT = 1.25
# Readings learned before any floor applies (a grid and integrality need a few values).
D_MIN = 10
# Share of the grid step a residual's scale is at least: 1 / sqrt(12) is the rounding's own
# deviation; 1 / 2 the largest noise a run of identical grid readings cannot rule out.
GRID_SHARE = 0.5


@njit(cache=True)
def discrete_floor(discrete, s, v, residual):
    """The smallest scale (standard-deviation units) a residual of stream ``s`` may be divided
    by, from what the stream's discrete structure shows (0 when none applies)."""
    row = discrete[s]
    if row[D_N] < D_MIN:
        return 0.0
    floor = row[D_Q] * GRID_SHARE
    if row[D_NONCOUNT] == 0.0 and row[D_ZERO] > 0.5:
        floor = max(floor, D_DEV_MULT * row[D_NZ_DEV])
    return floor


@njit(cache=True)
def discrete_learn(discrete, s, v):
    """Learn value ``v`` of stream ``s`` (after it was scored)."""
    if not math.isfinite(v):
        return
    row = discrete[s]
    n = row[D_N]
    if v < 0.0 or abs(v - round(v)) > 1e-9 * max(1.0, abs(v)):
        row[D_NONCOUNT] = 1.0
    if n > 0.0:
        step = abs(v - row[D_PREV])
        if step > 1e-12 * max(1.0, abs(v)) and (row[D_Q] == 0.0 or step < row[D_Q]):
            row[D_Q] = step
    a = max(D_ALPHA, 1.0 / (n + 1.0))
    row[D_ZERO] += a * ((1.0 if v == 0.0 else 0.0) - row[D_ZERO])
    if v != 0.0:
        # The nonzero values learn at their own count (equal weights at first).
        k = row[D_NZ_N]
        d = v - row[D_NZ_MEAN]
        row[D_NZ_MEAN] += max(D_ALPHA, 1.0 / (k + 1.0)) * d
        if k > 0.0:
            row[D_NZ_DEV] += max(D_ALPHA, 1.0 / k) * (abs(d) - row[D_NZ_DEV])
        row[D_NZ_N] = k + 1.0
    row[D_PREV] = v
    row[D_N] = n + 1.0


@njit(cache=True)
def discrete_z(discrete, s, v, residual, z):
    """``z`` (a seasonal z-score of ``residual``) rescaled so its scale is at least the
    stream's discrete floor. A z of 0 (unscored) stays 0. Learns nothing."""
    out = z
    if z != 0.0 and residual != 0.0:
        floor = discrete_floor(discrete, s, v, residual)
        scale = abs(residual / z)
        if floor > scale:
            out = residual / floor
        row = discrete[s]
        # A negative reading on a count stream is no count (and has no square root).
        if row[D_N] >= D_MIN and row[D_NONCOUNT] == 0.0 and v >= 0.0:
            # A count: its deviation from the level mu it was judged against is at most as
            # rare as a Poisson(mu) count's, read on Anscombe's variance-stabilised scale
            # 2 sqrt(x + 3/8) (unit deviation; a Gaussian z on the raw scale made a 5 against
            # a mean of 0.7, P = 8e-4, look like p = 5e-6).
            mu = max(v - residual, 0.0)
            za = count_root(v) - count_root(mu)
            if abs(za) < abs(out):
                out = za
    return out


@njit(cache=True)
def discrete_rescale(discrete, s, v, residual, z):
    """:func:`discrete_z`, then learn ``v``."""
    out = discrete_z(discrete, s, v, residual, z)
    discrete_learn(discrete, s, v)
    return out
