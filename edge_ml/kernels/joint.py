"""A device's joint view: each field predicted from the others, in one pass per micro-batch.

A device is a few fields that arrive together (one JSON map, one firmware frame, or streams
grouped by ``[devices]`` patterns). A fault that matters on a machine often keeps every field
inside its own usual range while their relationship breaks (current up while flow drops). The
per-field views cannot see that; this one can:

- per device, an EWMA mean and covariance of its fields (learning rate ``JOINT_ALPHA``, never
  below ``1/(rows+1)``), turned into a correlation matrix with a small ridge;
- for a complete row ``z`` (each field standardized by that mean and deviation), the precision
  matrix ``P = R^-1`` gives every field's residual given all the others at once: the
  conditional residual of field ``j`` in standard deviations is ``(P z)_j / sqrt(P_jj)``
  (the leave-one-out regression of ``j`` on the rest, without fitting one per field);
- each residual is scored against that field's own running mean absolute residual (how rare
  for THIS device), and the level is the two-sided Gaussian tail of the largest, times the
  number of fields (a Bonferroni bound), on the levels' log scale (``calibration``);
- the contributing fields are the residuals' squared shares; the field with the largest gets
  an expected range: what the others predict for it, +- ``EXPECTED_Z`` conditional deviations.

Rows: a reading updates its field's carried value; the device is scored when every field has
a value newer than its last scoring (a JSON map: at its last field), so fields at different
rates are scored at the slowest one's rate, with the faster ones' last values. A value older
than ``stale_s`` seconds at scoring time is not fresh: the row waits for it. Each row is scored
before it is learned. ``JOINT_WARMUP`` rows are learned before levels are reported.

State per device ``d``: ``n_fields[d]``, ``last[d, F]``, ``last_ts[d, F]``, ``fresh[d, F]``,
``mean[d, F]``, ``cov[d, F, F]``, ``rows[d]``, ``rdev[d, F]``. No ``fastmath``: the residuals
must match the NumPy reference.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from edge_ml.kernels.calibration import probability_level
from edge_ml.kernels.explain import EXPECTED_Z

# Fields a device holds at most (the kernel's fixed matrix size).
MAX_DEVICE_FIELDS = 8
# Learning rate of the device's mean and covariance (about a day of 5-minute rows).
JOINT_ALPHA = 1.0 / 300.0
# Learning rate of each field's mean absolute conditional residual.
RDEV_ALPHA = 1.0 / 300.0
# Added to the correlation matrix's diagonal: two fields that move as one (r -> 1) must not
# make the inverse explode on a rounding error.
RIDGE = 1e-3
# Rows learned before the joint level is reported.
JOINT_WARMUP = 100
# Scaled residual beyond which a row's learning weight falls as (LEARN_CLIP / residual)^2.
LEARN_CLIP = 3.0
# Mean absolute deviation times sqrt(pi/2) estimates a Gaussian standard deviation.
DEV_MULT = 1.25
_SQRT2 = math.sqrt(2.0)


@njit(cache=True)
def invert(a, out, work):
    """``out = a^-1`` for a small symmetric positive definite ``a`` (Gauss-Jordan, pivoting).

    Written out rather than ``np.linalg.inv``: that imports SciPy's LAPACK (~15 MB resident)
    into a daemon that never needs it otherwise.
    """
    k = a.shape[0]
    for i in range(k):
        for j in range(k):
            work[i, j] = a[i, j]
            out[i, j] = 1.0 if i == j else 0.0
    for c in range(k):
        p = c
        for r in range(c + 1, k):
            if abs(work[r, c]) > abs(work[p, c]):
                p = r
        if p != c:
            for j in range(k):
                work[c, j], work[p, j] = work[p, j], work[c, j]
                out[c, j], out[p, j] = out[p, j], out[c, j]
        pivot = work[c, c]
        for j in range(k):
            work[c, j] /= pivot
            out[c, j] /= pivot
        for r in range(k):
            if r != c:
                f = work[r, c]
                if f != 0.0:
                    for j in range(k):
                        work[r, j] -= f * work[c, j]
                        out[r, j] -= f * out[c, j]


@njit(cache=True)
def score_row(x, mean, cov, rdev, k, rows, resid, expected):
    """Score row ``x`` (``k`` fields) of one device: the level, and into ``resid`` each field's
    conditional residual in deviations, into ``expected`` the range of the worst field.

    Returns ``(level, worst field, learning weight)``; level 0 (weight 1) while the device has
    learned fewer than ``JOINT_WARMUP`` rows.
    """
    sd = np.empty(k)
    z = np.empty(k)
    corr = np.empty((k, k))
    prec = np.empty((k, k))
    work = np.empty((k, k))
    for j in range(k):
        sd[j] = math.sqrt(max(cov[j, j], 0.0)) + 1e-9 * (abs(mean[j]) + 1.0)
        z[j] = (x[j] - mean[j]) / sd[j]
    for i in range(k):
        for j in range(k):
            corr[i, j] = cov[i, j] / (sd[i] * sd[j])
        corr[i, i] = 1.0 + RIDGE
    invert(corr, prec, work)
    worst = 0
    top = -1.0
    for j in range(k):
        pz = 0.0
        for i in range(k):
            pz += prec[j, i] * z[i]
        resid[j] = pz / math.sqrt(prec[j, j])
        if rows >= JOINT_WARMUP:
            scaled = abs(resid[j]) / max(DEV_MULT * rdev[j], 1e-6)
            if scaled > top:
                top = scaled
                worst = j
    # What the other fields predict for the worst one: z_j - (P z)_j / P_jj, in its units.
    cond_sd = 1.0 / math.sqrt(prec[worst, worst])
    predicted = mean[worst] + sd[worst] * (z[worst] - resid[worst] * cond_sd)
    half = EXPECTED_Z * sd[worst] * cond_sd * max(DEV_MULT * rdev[worst], 1e-6)
    expected[0] = predicted - half
    expected[1] = predicted + half
    if rows < JOINT_WARMUP:
        return 0.0, worst, 1.0
    p = min(1.0, k * math.erfc(top / _SQRT2))
    # A row far outside the relationship is learned with less weight (Huber-like): one faulty
    # row must not inflate the covariance so much that the next ones look ordinary.
    weight = min(1.0, (LEARN_CLIP / top) ** 2) if top > 0.0 else 1.0
    return probability_level(p), worst, weight


@njit(cache=True)
def learn_row(x, mean, cov, rdev, k, rows, resid, weight):
    """Learn row ``x`` into the device's mean, covariance and residual deviations, with the
    learning rates times ``weight``."""
    a = weight * max(JOINT_ALPHA, 1.0 / (rows + 1.0))
    delta = np.empty(k)
    for j in range(k):
        delta[j] = x[j] - mean[j]
        mean[j] += a * delta[j]
    for i in range(k):
        for j in range(k):
            cov[i, j] = (1.0 - a) * (cov[i, j] + a * delta[i] * delta[j])
    if rows >= 2:  # the first rows' covariance is not a model yet
        b = weight * max(RDEV_ALPHA, 1.0 / (rows - 1.0))
        for j in range(k):
            rdev[j] += b * (abs(resid[j]) - rdev[j])


@njit(cache=True)
def joint_batch(slot_device, slot_field, slots, values, ts, stale_s,
                n_fields, last, last_ts, fresh, mean, cov, rows, rdev):
    """Joint levels of a micro-batch, per reading in arrival order.

    ``slot_device[s]`` is the device of stream slot ``s`` (-1: none), ``slot_field[s]`` its
    field there. Per reading: ``device[i]`` scored on it (-1: none), ``level[i]``, the fields'
    conditional residuals ``resid[i, :]`` (in deviations), the worst field ``worst[i]`` and its
    expected range ``expected[i]``.
    """
    n = slots.shape[0]
    device = np.full(n, -1, dtype=np.int64)
    warming = np.zeros(n, dtype=np.uint8)
    level = np.zeros(n, dtype=np.float64)
    resid = np.zeros((n, MAX_DEVICE_FIELDS), dtype=np.float64)
    worst = np.zeros(n, dtype=np.int64)
    expected = np.full((n, 2), np.nan, dtype=np.float64)
    for i in range(n):
        s = slots[i]
        if s >= slot_device.shape[0]:
            continue
        d = slot_device[s]
        if d < 0:
            continue
        f = slot_field[s]
        last[d, f] = values[i]
        last_ts[d, f] = ts[i]
        fresh[d, f] = 1
        k = n_fields[d]
        ready = k >= 2
        for j in range(k):
            if fresh[d, j] == 0 or ts[i] - last_ts[d, j] > stale_s:
                ready = False
        if not ready:
            continue
        x = last[d, :k]
        r = resid[i, :k]
        level[i], worst[i], weight = score_row(x, mean[d], cov[d], rdev[d], k, rows[d], r,
                                               expected[i])
        learn_row(x, mean[d], cov[d], rdev[d], k, rows[d], r, weight)
        warming[i] = rows[d] < JOINT_WARMUP
        rows[d] += 1
        device[i] = d
        for j in range(k):
            fresh[d, j] = 0
    return device, level, resid, worst, expected, warming
