"""Windowed features per stream, O(1) per reading, over struct-of-arrays state.

State per stream slot ``s`` (leading axis of every array):

- ``ring[s, W]``: the last W values (a ring buffer), ``ring_pos[s]`` next write position,
  ``ring_n[s]`` values held (<= W).
- ``win_sum[s]``, ``win_sumsq[s]``: running sum and sum of squares over the ring. They are
  recomputed exactly each time the ring wraps (every W readings, so still O(1) amortised) to keep
  the floating-point error of add-and-subtract from accumulating forever.
- ``prev[s]``: the previous value.
- ``shift[s]``: the stream's first value. Sums are kept of ``v - shift`` so that a sensor
  reporting 1e9 + small noise does not lose its variance to cancellation in
  ``sumsq/n - mean**2``.

Features are computed against the window *before* the current value enters it, so a spike is
measured against history it is not part of.
"""

from __future__ import annotations

import numpy as np
from numba import njit

N_FEATURES = 4
FEATURE_NAMES = ("value", "deviation", "rolling_std", "rate_of_change")


@njit(cache=True)
def window_update(ring, ring_pos, ring_n, win_sum, win_sumsq, prev, shift, s, v, out):
    """Write the features of value ``v`` for slot ``s`` into ``out[:4]``, then add ``v``."""
    n = ring_n[s]
    if n == 0 and ring_pos[s] == 0:
        shift[s] = v
    c = v - shift[s]
    if n > 0:
        mean = win_sum[s] / n
        var = win_sumsq[s] / n - mean * mean
        if var < 0.0:  # rounding can push a zero variance slightly negative
            var = 0.0
        out[0] = v
        out[1] = c - mean
        out[2] = np.sqrt(var)
        out[3] = v - prev[s]
    else:
        out[0] = v
        out[1] = 0.0
        out[2] = 0.0
        out[3] = 0.0
    width = ring.shape[1]
    pos = ring_pos[s]
    if n == width:
        old = ring[s, pos] - shift[s]
        win_sum[s] -= old
        win_sumsq[s] -= old * old
    else:
        ring_n[s] = n + 1
    ring[s, pos] = v
    win_sum[s] += c
    win_sumsq[s] += c * c
    pos += 1
    if pos == width:
        pos = 0
        total = 0.0
        total_sq = 0.0
        for i in range(width):
            d = ring[s, i] - shift[s]
            total += d
            total_sq += d * d
        win_sum[s] = total
        win_sumsq[s] = total_sq
    ring_pos[s] = pos
    prev[s] = v


# Readings the scaler's running mean and variance remember (EWMA horizon).
SCALER_HORIZON = 1000.0
# z-scores are squashed with tanh(z / SQUASH): |z| = 2 maps to about 0.27/0.73, so ordinary
# readings fill the middle of [0, 1] and the trees' outer half-spaces are left to outliers.
SQUASH = 4.0


@njit(cache=True)
def standard_scale(smean, svar, sn, s, x):
    """Squash ``x`` in place into [0, 1] by its z-score against slot ``s``'s own history.

    The z-score uses the running mean and variance *before* ``x`` is learned, then ``x`` is
    learned (equal weights until SCALER_HORIZON readings, exponential forgetting after). Unlike
    a global min-max, one outlier does not squeeze every later reading into a corner.
    """
    n = sn[s]
    alpha = 1.0 / (n + 1.0) if n + 1.0 < SCALER_HORIZON else 1.0 / SCALER_HORIZON
    for j in range(x.shape[0]):
        xj = x[j]
        mean = smean[s, j]
        var = svar[s, j]
        if n > 1 and var > 0.0:
            z = (xj - mean) / np.sqrt(var)
            x[j] = 0.5 + 0.5 * np.tanh(z / SQUASH)
        else:
            x[j] = 0.5
        delta = xj - mean
        smean[s, j] = mean + alpha * delta
        svar[s, j] = (1.0 - alpha) * (var + alpha * delta * delta)
    sn[s] = n + 1


@njit(cache=True)
def features_batch(slots, values, ring, ring_pos, ring_n, win_sum, win_sumsq, prev, shift, smean,
                   svar, sn):
    """Scaled feature vectors ``X[B, 4]`` for a micro-batch, updating the state in order."""
    n_readings = slots.shape[0]
    X = np.empty((n_readings, N_FEATURES), dtype=np.float64)
    for i in range(n_readings):
        s = slots[i]
        window_update(ring, ring_pos, ring_n, win_sum, win_sumsq, prev, shift, s, values[i], X[i])
        standard_scale(smean, svar, sn, s, X[i])
    return X
