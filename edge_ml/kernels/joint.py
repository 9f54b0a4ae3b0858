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
- a fault that lasts (a valve closing for an hour) is a run of rows each only a little off,
  which the row's own level misses, and which the model would learn as normal within a few
  hundred rows. So the device also keeps **evidence**: a CUSUM of each row's squared
  Mahalanobis distance ``z' P z`` read as a chi-squared tail (scaled so that the device's own
  running 90th percentile distance reads as chi-squared's), in decades, gaining
  ``min(-log10 p, EVIDENCE_ROW_CAP) - EVIDENCE_DRIFT`` a row, between 0 and
  ``EVIDENCE_CAP``. The level is the larger of the row's own and ``evidence / 10``: rows
  that keep breaking the relationship keep the level (and the alert) up, and once they stop
  the evidence drains by about half a decade a row, so the alert resolves within ~10 rows. While
  the evidence is at least ``HOLD_EVIDENCE`` the device learns its covariance and residual
  scales at ``HOLD_WEIGHT`` of its rate (the fault is not learned as the new normal; a lasting
  change of the machine still is, ~20 times slower), and its means at the full rate from the
  row with every field more than ``IMPUTE_Z`` residual deviations off replaced by what the
  others predict for it: the fields go on following the load and their own slow drifts (a
  temperature), so that when the fault ends the model fits the machine as it is now.
  A device held on more than ``CHRONIC_OFF`` of its rows (a long EWMA) is one that a single
  Gaussian does not fit (modes of operation that switch every few rows: river's Shuttle); its
  evidence is set aside (level and hold) until that share falls under ``CHRONIC_ON``.

Rows: a reading updates its field's carried value; the device is scored when every field has
a value newer than its last scoring (a JSON map: at its last field), so fields at different
rates are scored at the slowest one's rate, with the faster ones' last values. A value older
than ``stale_s`` seconds at scoring time is not fresh: the row waits for it. Each row is scored
before it is learned. ``JOINT_WARMUP`` rows are learned before levels are reported.

The device's ranking score (a forest over the same rows) is ``kernels.device_forest``.

State per device ``d``: ``n_fields[d]``, ``last[d, F]``, ``last_ts[d, F]``, ``fresh[d, F]``,
``mean[d, F]``, ``cov[d, F, F]``, ``rows[d]``, ``rdev[d, F]``; the forest's ``mass[d, T, N, 2]``
(uint8), ``ref[d]``, ``count[d]``, ``first_window[d]``, ``forest_k[d]`` (the field count it was
grown for) and the scaling ``smean[d, F]``, ``sdev[d, F]``, ``srows[d]``. No ``fastmath``: the
residuals must match the NumPy reference, and the forest's scores river's.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from edge_ml.kernels.calibration import probability_level
from edge_ml.kernels.device_forest import JOINT_HEIGHT, JOINT_TREES, forest_score
from edge_ml.kernels.explain import EXPECTED_Z

# Fields a device holds at most (the kernel's fixed matrix size).
MAX_DEVICE_FIELDS = 16
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
# Rows before the residuals' deviations start learning: the first rows' covariance is not a
# model yet (a dozen rows of eight fields), and their huge residuals, averaged in at 1/n, would
# keep rdev inflated for hundreds of rows (a short run's whole scoring period).
RDEV_START = 30
# Sustained evidence (a CUSUM of the rows' tail probabilities, in decades): per row it gains
# the row's -log10 p less EVIDENCE_DRIFT, never below 0 nor above EVIDENCE_CAP; the device's
# level is the larger of the row's own and EVIDENCE / 10 (the levels' log scale). A fault that
# lasts keeps it up (and the alert open); back to normal, it drains by ~EVIDENCE_DRIFT a row.
EVIDENCE_DRIFT = 1.0
# Step (in log d2) of the running 90th percentile of a device's distances, at least.
Q90_STEP = 0.05
EVIDENCE_CAP = 10.0
EVIDENCE_ROW_CAP = 3.0
# The share of a device's rows held (an EWMA at CHRONIC_ALPHA) beyond which its evidence is
# set aside, and below which it is used again. The pump rig's longest faults (700 rows) reach
# 0.21; Shuttle, held on ~55% of its rows, passes 0.25 within ~1,500 rows.
CHRONIC_ALPHA = 1.0 / 3000.0
CHRONIC_OFF = 0.25
CHRONIC_ON = 0.05
# While the evidence is at least HOLD_EVIDENCE, the device learns its rows at most at
# HOLD_WEIGHT of the usual rate: a long fault is not learned as the new normal within the
# fault (at 1/300 a row it would be in a few hundred rows), yet a lasting change of the
# machine is, slowly (~1/HOLD_WEIGHT times longer).
HOLD_EVIDENCE = 2.0
HOLD_WEIGHT = 0.05
# While held, a field whose scaled residual is at least this is learned as the others predict
# it (on the pump rig: F1 0.906 -> 0.941, false alarms 7.8% -> 6.1%, mostly rows held open
# after a fault because a temperature had drifted while the means were held too).
IMPUTE_Z = 2.0
# Mean absolute deviation times sqrt(pi/2) estimates a Gaussian standard deviation.
DEV_MULT = 1.25
_SQRT2 = math.sqrt(2.0)
_HALF_GAMMA_3_2 = math.sqrt(math.pi) / 2.0  # Gamma(3/2)


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
def score_row(x, mean, cov, rdev, k, rows, resid, expected, predicted):
    """Score row ``x`` (``k`` fields) of one device: the level, and into ``resid`` each field's
    conditional residual in deviations, into ``expected`` the range of the worst field.

    Returns ``(level, worst field, learning weight, d2)``; level 0 (weight 1) while the device
    has learned fewer than ``JOINT_WARMUP`` rows. ``d2`` is the row's squared Mahalanobis
    distance ``z' P z`` (all fields' residuals at once, for the sustained evidence).
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
    d2 = 0.0
    for j in range(k):
        pz = 0.0
        for i in range(k):
            pz += prec[j, i] * z[i]
        resid[j] = pz / math.sqrt(prec[j, j])
        d2 += z[j] * pz
        # What the other fields predict for this one: z_j - (P z)_j / P_jj, in its units.
        predicted[j] = mean[j] + sd[j] * (z[j] - pz / prec[j, j])
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
        return 0.0, worst, 1.0, d2
    p = min(1.0, k * math.erfc(top / _SQRT2))
    # A row far outside the relationship is learned with less weight (Huber-like): one faulty
    # row must not inflate the covariance so much that the next ones look ordinary.
    weight = min(1.0, (LEARN_CLIP / top) ** 2) if top > 0.0 else 1.0
    return probability_level(p), worst, weight, d2


def _chi2_q90(k: int) -> float:
    """The 90th percentile of chi-squared with ``k`` degrees of freedom (bisection, in plain
    Python: no compilation at import)."""
    _sf = getattr(chi2_sf, "py_func", chi2_sf)  # the function itself under NUMBA_DISABLE_JIT
    lo, hi = 0.0, 200.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _sf(mid, k) > 0.1 else (lo, mid)
    return 0.5 * (lo + hi)


@njit(cache=True)
def chi2_sf(x, k):
    """``P(X > x)`` for ``X`` chi-squared with ``k`` (integer >= 1) degrees of freedom."""
    if x <= 0.0:
        return 1.0
    h = 0.5 * x
    if k % 2 == 0:
        term = 1.0
        total = 1.0
        for i in range(1, k // 2):
            term *= h / i
            total += term
        return math.exp(-h) * total
    total = math.erfc(math.sqrt(h))
    term = math.sqrt(h) * math.exp(-h) / _HALF_GAMMA_3_2
    for i in range(1, (k - 1) // 2 + 1):
        total += term
        term *= h / (i + 0.5)
    return total


@njit(cache=True)
def learn_row(x, mean, cov, rdev, k, rows, resid, weight, mean_weight):
    """Learn row ``x`` into the device's mean, covariance and residual deviations, with the
    learning rates times ``weight`` (the means': ``mean_weight``)."""
    a = weight * max(JOINT_ALPHA, 1.0 / (rows + 1.0))
    am = mean_weight * max(JOINT_ALPHA, 1.0 / (rows + 1.0))
    delta = np.empty(k)
    for j in range(k):
        delta[j] = x[j] - mean[j]
        mean[j] += am * delta[j]
    for i in range(k):
        for j in range(k):
            cov[i, j] = (1.0 - a) * (cov[i, j] + a * delta[i] * delta[j])
    if rows >= RDEV_START:  # the first rows' covariance is not a model yet
        b = weight * max(RDEV_ALPHA, 1.0 / (rows - RDEV_START + 1.0))
        for j in range(k):
            rdev[j] += b * (abs(resid[j]) - rdev[j])


@njit(cache=True, nogil=True)
def joint_batch(slot_device, slot_field, slots, values, ts, stale_s,
                n_fields, last, last_ts, fresh, mean, cov, rows, rdev,
                tree_of_k, tree_feature, tree_threshold, mass, ref, count, first_window,
                forest_k, smean, sdev, srows, evidence, d2q90, chronic, unfit):
    """Joint levels and scores of a micro-batch, per reading in arrival order.

    ``slot_device[s]`` is the device of stream slot ``s`` (-1: none), ``slot_field[s]`` its
    field there. Per reading: ``device[i]`` scored on it (-1: none), ``level[i]``, the fields'
    conditional residuals ``resid[i, :]`` (in deviations), the worst field ``worst[i]`` and its
    expected range ``expected[i]``; ``score[i]``, the device forest's raw score.
    ``tree_of_k[k]`` indexes the forest structure (``tree_feature``, ``tree_threshold``) of
    ``k`` fields; the caller builds it before a device of ``k`` fields is scored.
    """
    n = slots.shape[0]
    device = np.full(n, -1, dtype=np.int64)
    warming = np.zeros(n, dtype=np.uint8)
    level = np.zeros(n, dtype=np.float64)
    score = np.zeros(n, dtype=np.float64)
    resid = np.zeros((n, MAX_DEVICE_FIELDS), dtype=np.float64)
    worst = np.zeros(n, dtype=np.int64)
    expected = np.full((n, 2), np.nan, dtype=np.float64)
    walk = np.empty((JOINT_HEIGHT + 2, JOINT_TREES), dtype=np.int64)
    predicted = np.empty(MAX_DEVICE_FIELDS)
    learned = np.empty(MAX_DEVICE_FIELDS)
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
        instant, worst[i], weight, d2 = score_row(x, mean[d], cov[d], rdev[d], k, rows[d], r,
                                                  expected[i], predicted)
        mean_weight = weight
        xl = learned[:k]
        for j in range(k):
            xl[j] = x[j]
        if rows[d] >= JOINT_WARMUP:
            # The row's distance as a chi-squared tail, scaled so that the device's own 90th
            # percentile distance reads as chi-squared's: a device whose ordinary rows are far
            # from one Gaussian (several modes of operation: river's Shuttle) has a long tail
            # of distances, and only rows unusual for it build evidence.
            scaled = d2 * CHI2_Q90[k] / math.exp(d2q90[d])
            # At most EVIDENCE_ROW_CAP a row: evidence is what several rows say (one row far out
            # is the row's own level's to report).
            q = min(EVIDENCE_ROW_CAP, -math.log10(chi2_sf(scaled, k) + 1e-10))
            evidence[d] = min(EVIDENCE_CAP, max(0.0, evidence[d] + q - EVIDENCE_DRIFT))
            # A device that holds a large share of its rows does not fit one Gaussian at
            # all (river's Shuttle: its normal rows come from several clusters): its evidence
            # would hold it, and its alert, open for good. Its evidence is set aside until the
            # share falls back.
            held = 1.0 if evidence[d] >= HOLD_EVIDENCE else 0.0
            chronic[d] += CHRONIC_ALPHA * (held - chronic[d])
            if chronic[d] >= CHRONIC_OFF:
                unfit[d] = 1
            elif chronic[d] < CHRONIC_ON:
                unfit[d] = 0
            if unfit[d] == 1:
                evidence[d] = 0.0
            elif evidence[d] >= HOLD_EVIDENCE:
                weight = min(weight, HOLD_WEIGHT)
                # The means go on learning, from the row with each field that is off its
                # relationship replaced by what the others predict for it.
                mean_weight = 1.0
                for j in range(k):
                    if abs(r[j]) >= IMPUTE_Z * max(DEV_MULT * rdev[d, j], 1e-6):
                        xl[j] = predicted[j]
        level[i] = max(instant, evidence[d] / 10.0)
        if rows[d] >= RDEV_START:
            # Robbins-Monro on log d2 towards its 90th percentile; every row counts (not
            # Huber-weighted: the tail is what it measures), held rows at HOLD_WEIGHT.
            qw = HOLD_WEIGHT if evidence[d] >= HOLD_EVIDENCE else 1.0
            if rows[d] == RDEV_START:
                d2q90[d] = math.log(CHI2_Q90[k])
            step = qw * max(Q90_STEP, 1.0 / math.sqrt(rows[d] - RDEV_START + 1.0))
            above = 1.0 if math.log(max(d2, 1e-300)) > d2q90[d] else 0.0
            d2q90[d] += step * (above - 0.1)
        learn_row(xl, mean[d], cov[d], rdev[d], k, rows[d], r, weight, mean_weight)
        if forest_k[d] != k:  # a new field: a new forest over all of them, a new scaling
            mass[d] = 0
            ref[d] = 0
            count[d] = 0
            first_window[d] = 1
            srows[d] = 0
            smean[d] = 0.0
            sdev[d] = 0.0
            forest_k[d] = k
        t = tree_of_k[k]
        score[i] = forest_score(x, k, d, smean, sdev, srows, tree_feature[t], tree_threshold[t],
                                mass, ref, count, first_window, walk)
        warming[i] = rows[d] < JOINT_WARMUP
        rows[d] += 1
        device[i] = d
        for j in range(k):
            fresh[d, j] = 0
    return device, level, score, resid, worst, expected, warming


# chi-squared's 90th percentile per degrees of freedom (index k; 0 unused).
CHI2_Q90 = np.array([1.0] + [_chi2_q90(k) for k in range(1, MAX_DEVICE_FIELDS + 1)])
