"""Per-stream features, O(1) per reading: z-scores of each reading against its own history.

Four z-scores per reading, each computed *before* the reading is learned, so an anomaly is
judged against history it is not part of:

0. ``z_season``: the residual against a time-of-day profile (``bins`` slots over ``period_s``
   seconds, each an EWMA of the level and of the absolute deviation) plus a level offset shared
   by all slots, scaled by the slot's deviation. Most sensor streams have a daily cycle; a
   reading that is ordinary at noon may be an anomaly at midnight. A slot with fewer than
   ``MIN_BIN_COUNT`` readings is judged against the slot before it when that one has enough
   (a fast stream entering a new half hour), else ``z_season`` is 0. A young slot's scale
   leans on the deviation pooled over the stream's slots until the stream's readings have
   covered the slot's width (``slot_scale``).
1. ``z_value``: the value against an EWMA mean and mean absolute deviation of the stream.
2. ``z_diff``: the first difference against an EWMA mean and mean absolute deviation of the
   differences.
3. ``z_volatility``: how the recent spread of the differences (about 10 readings) compares with
   the long one, as a log ratio scored against its own history. Strongly negative when a
   sensor freezes on one value. Used by the calibration only, not by the trees.

And ``z[Z_RESIDUAL]``, the residual ``z[0]`` was scaled from (not a z-score).

Every scale is a mean absolute deviation (times ``DEV_MULT``), not a standard deviation: the
square in a variance lets a few outliers inflate the scale and squeeze all ordinary readings
into a narrow band of feature values, where the trees cannot tell them apart (Shuttle ROC-AUC
0.966 with variances, 0.988 with absolute deviations, same forest; docs/benchmarks.md).

State per stream slot ``s`` (leading axis): ``prof_mean``, ``prof_dev``, ``prof_n`` (``[s,
bins]``), ``offset``, ``mean``, ``dev``, ``dmean``, ``ddev``, ``vol``, ``lr_mean``,
``lr_dev``, ``prev``, ``seen``.

The constants were chosen once on the NAB subset and are the same for every stream (see
docs/benchmarks.md); none is tuned per file.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# z-scores computed per reading; the first N_FEATURES of them feed the trees. z_volatility
# goes to the calibration only: as a tree feature it changed the forest's random structure and
# raised false alarms without finding stuck sensors any better than its own tail does.
N_Z = 5
# z[Z_RESIDUAL] is not a z-score: the residual z[0] was scaled from (what the usual range of
# an explanation is built on; for a young slot, the residual against the slot before it).
Z_RESIDUAL = 4
N_FEATURES = 3
FEATURE_NAMES = ("z_season", "z_value", "z_diff")

# Learning rate of a profile slot's mean and absolute deviation (never below 1/(count+1), so a
# young slot averages its first readings equally).
ALPHA_BIN = 0.02
# On a stream sampled faster than this, a slot learns ALPHA_BIN per SLOT_RATE_INTERVAL_S of
# time, not per reading (scaled by the stream's mean interval so far): it remembers about 50 s,
# as a 1 Hz stream's does. At 2 % a reading, a 20 Hz stream's profile was a 2.5 s moving
# average that learned a slow fault before any view saw it (the demo fleet's drifts: 29 of 96
# found over 60 replayed fleets, 92 with this; docs/benchmarks.md, round 17). Streams at 1 Hz
# or slower (all of NAB and of the calibration suite) learn as before. Learning per minute
# instead (round 15) found the same drifts but stopped a slot following a 10-minute cycle: the
# issue's -12 dip on a 1 Hz sine scored 0.33 instead of 1.0.
SLOT_RATE_INTERVAL_S = 1.0
# Learning rate of the offset shared by all slots: follows slow level changes without letting
# one slot's noise move the others.
ALPHA_OFFSET = 0.005
# Mean absolute deviation times sqrt(pi/2) ~ 1.25 estimates a Gaussian standard deviation.
DEV_MULT = 1.25
# A slot's scale is at least this share of the stream's overall deviation: a slot that happened
# to see near-constant readings must not turn ordinary noise into huge z-scores.
SD_FLOOR_FRAC = 0.2
# Learning rate of the overall mean/deviation (about two days of 5-minute readings).
ALPHA_SD = 1.0 / 600.0
# Readings a profile slot needs before its residual is trusted.
MIN_BIN_COUNT = 3
# Learning rate of the short-horizon deviation of the differences (about 10 readings): a stuck
# sensor or a noise burst changes it within a few readings, while the long one barely moves.
VOL_ALPHA = 0.1
# log(short / long deviation) is scored against its own running mean and mean absolute
# deviation (learned at ALPHA_SD): a quantised sensor whose differences are often exactly 0
# learns that a quiet stretch is ordinary; a noisy sensor that suddenly repeats one value does
# not. Its scale never drops below VOL_MIN_DEV (a steady Gaussian stream gives about 0.15).
VOL_MIN_DEV = 0.05
# What a quiet stretch teaches those statistics is winsorised: a log ratio counts as at most
# VOL_CLIP_Z scales below their mean, once VOL_CLIP_AFTER log ratios are learned. Learned as
# it came, a stuck sensor's run of collapsing ratios widened the spread within seconds on a
# young stream, and its z-score turned back before the stuck view alerted (peak level 0.47
# on the demo's first fleet; 75 of 89 stuck values found over 60 replayed demo fleets, 89
# with this). 5, the mildest of 2-5 measured, finds them all as 3 and 4 do: NAB and every
# calibration-suite kind's false alerts are identical, the suite's stuck values .84 -> .86;
# at 2 NAB's rogue_agent_key_hold gained 3 false alerts, at 3 and 4 the suite's sparse and
# quantised counters 1-3 (docs/benchmarks.md, round 17). A sensor that stays stuck is still
# learned, over hundreds of readings instead of tens.
VOL_CLIP_Z = 5.0
VOL_CLIP_AFTER = 30
# Weight, in residuals, of the stream's pooled slot deviation in each slot's scale (see
# slot_scale). At 3, pure noise sampled once a minute raised 0 alerts per 5,000 readings
# instead of 2.7, and the NAB score went up a point; at 10, NAB lost 2 (a seasonal stream's
# young slots then lean on a pool that mixes quiet and busy hours).
POOL_WEIGHT = 3.0
# Features for the trees: 0.5 + 0.5 * tanh(z / SQUASH) puts |z| <= 3 in the middle of [0, 1]
# and leaves the trees' outer half-spaces to outliers.
SQUASH = 6.0


@njit(cache=True)
def slot_alpha(ts, t_first, age):
    """A profile slot's learning rate per reading on a stream that has seen ``age`` readings
    since its first at ``t_first``, before this one at ``ts``: ``ALPHA_BIN``, lowered in
    proportion to the mean interval when that is shorter than ``SLOT_RATE_INTERVAL_S``."""
    if age < 2 or not ts > t_first:  # no interval yet, or a clock that went back (or NaN)
        return ALPHA_BIN
    return ALPHA_BIN * min(1.0, (ts - t_first) / age / SLOT_RATE_INTERVAL_S)


@njit(cache=True)
def season_bin(ts, period_s, bins):
    """The time-of-day profile slot of time ``ts``, in ``0 .. bins - 1``."""
    b = int((ts % period_s) / period_s * bins)
    # Clamp: rounding can give a phase of exactly 1.0 (and a negative ts a negative one).
    return min(max(b, 0), bins - 1)


# Residuals an EWMA at ALPHA_BIN effectively averages (its variance is a plain mean's of this
# many).
_M_EWMA = (2.0 - ALPHA_BIN) / ALPHA_BIN


@njit(cache=True)
def slot_scale(prof_mean_dev, prof_n, s, b, covered):
    """Deviation to expect of a residual in profile slot ``b`` of stream ``s``.

    A young slot's own deviation comes from a handful of residuals and is often far too small
    (pure noise sampled once a minute raised ~3 alerts per 5,000 readings, at slots' first
    readings), so it is shrunk toward the deviation pooled over the stream's slots, as if the
    pool were ``POOL_WEIGHT`` more residuals. The slot's own residuals count in proportion to
    the share of the slot's width they have ``covered`` (1 once the stream is a period old):
    a fast stream's first readings of a new slot all come from its first seconds, and their
    deviation, from two or three residuals, gave z-scores with tails 100 times a Gaussian's
    (a false alert on ~3 % of 1 Hz streams at every new half hour of their first day). It is
    also widened by ``sqrt(1 + 1/n)``: the slot's mean is itself an estimate from ``n``
    readings.
    """
    pooled = 0.0
    used = 0.0
    for j in range(prof_n.shape[1]):
        # Each slot weighs in by the residuals its deviation averages (its second reading on,
        # at most what the EWMA holds): a young slot's few residuals must not drag the pool of
        # a young stream, which has only two or three slots, down with its own deviation.
        w = min(prof_n[s, j] - 1.0, _M_EWMA)
        if w > 0.0:
            pooled += w * prof_mean_dev[s, j]
            used += w
    n = prof_n[s, b]
    own = prof_mean_dev[s, b]
    if used > 0.0:
        weight = (n - 1.0) * covered
        own = (weight * own + POOL_WEIGHT * pooled / used) / (weight + POOL_WEIGHT)
    return own * math.sqrt(1.0 + 1.0 / n)


# A stream whose mean sampling interval is at least this share of a slot's width visits each
# slot with one reading (an hourly metric: one a day per half-hour slot). Its slot's deviation
# then comes from as many independent residuals as the slot has days, and the slot's z-score is
# read as a Student t (see slot_z).
ONE_PER_VISIT = 0.9


@njit(cache=True)
def student_as_gaussian(t, nu):
    """The Gaussian z-score with the tail probability of Student's t statistic ``t`` with
    ``nu`` degrees of freedom (Wallace 1959). For nu >= 3 it is within 2 % of the exact value
    up to z = 3.1 and errs low beyond, by 3.5 % at most up to t = 100."""
    z = (8.0 * nu + 1.0) / (8.0 * nu + 3.0) * math.sqrt(nu * math.log1p(t * t / nu))
    return z if t >= 0.0 else -z


@njit(cache=True)
def slot_z(res, prof_mean_dev, prof_n, s, b, covered, floor_sd, one_per_visit):
    """The z-score of residual ``res`` in profile slot ``b`` of stream ``s``.

    The slot's scale (``slot_scale``) averages ``(n - 1) x covered`` of its own residuals and
    ``POOL_WEIGHT`` pooled ones. On a stream with one reading per slot visit
    (``one_per_visit``), a young slot's scale is an estimate from a handful of days, and
    ``res / scale`` is a Student t with that many degrees of freedom, not a Gaussian z: read
    as a Gaussian, a 1,500-reading hourly metric raised 3.9 false alerts / 10k in its first
    weeks (docs/benchmarks.md, round 12). On faster streams the same reading cost NAB's
    realAWSCloudwatch files (14 days of 5-minute readings) 6-10 points, so they keep the
    Gaussian reading. A scale raised to ``floor_sd`` is read the same way: the floor stands in
    for a young slot's estimate that came out too small.
    """
    t = res / max(DEV_MULT * slot_scale(prof_mean_dev, prof_n, s, b, covered), floor_sd)
    if not one_per_visit:
        return t
    return student_as_gaussian(t, (prof_n[s, b] - 1.0) * covered + POOL_WEIGHT)


@njit(cache=True)
def slot_covered(ts, t_first, period_s, bins, back):
    """Share of the width of the slot ``back`` slots before ``ts``'s own that the stream's
    readings span, in [0, 1]: 1 once the stream is a period old (its slots have each been
    visited whole), else the part of the slot's width after the stream's first reading
    ``t_first`` and before ``ts``."""
    age = ts - t_first
    if not age < period_s:  # (a NaN t_first counts as old)
        return 1.0
    width = period_s / bins
    into = ts % period_s - season_bin(ts, period_s, bins) * width  # seconds into ts's slot
    end = ts if back == 0 else ts - into - (back - 1) * width
    start = ts - into - back * width
    return min(max((end - max(start, t_first)) / width, 0.0), 1.0)


@njit(cache=True)
def value_floor(m):
    """The smallest scale a stream of mean ``m`` is divided by (a constant stream has none)."""
    return 1e-6 * (abs(m) + 1.0)


@njit(cache=True)
def slot_floor_sd(mean, dev, s):
    """The least deviation a profile slot of stream ``s`` is scaled with: ``SD_FLOOR_FRAC`` of
    the stream's overall deviation."""
    return max(SD_FLOOR_FRAC * (DEV_MULT * dev[s]), value_floor(mean[s]))


@njit(cache=True)
def slot_before_z(prof_mean, prof_mean_dev, prof_n, offset, s, b, v, ts, period_s, t_first,
                  floor_sd, one_per_visit):
    """``(grown, z, residual)`` of value ``v`` against the profile slot just before slot ``b``
    of stream ``s``: whether that slot has ``MIN_BIN_COUNT`` readings to judge by, the z-score
    and the residual it was scaled from (0, 0 when not grown). Learns nothing."""
    a = (b - 1) % prof_n.shape[1]
    if prof_n[s, a] < MIN_BIN_COUNT:
        return False, 0.0, 0.0
    res = v - prof_mean[s, a] - offset[s]
    covered = slot_covered(ts, t_first, period_s, prof_n.shape[1], 1)
    return True, slot_z(res, prof_mean_dev, prof_n, s, a, covered, floor_sd, one_per_visit), res


@njit(cache=True)
def feature_update(prof_mean, prof_mean_dev, prof_n, offset, mean, dev, dmean, ddev, vol,
                   lr_mean, lr_dev, prev, seen, s, v, ts, b, period_s, t_first, age, z):
    """Write the four z-scores of value ``v`` (time ``ts``, profile slot ``b``: its
    :func:`season_bin`) for stream slot ``s`` into ``z``; learn. ``t_first`` is the time of the
    stream's first reading and ``age`` the readings it has had since (before this one; a drift
    reset restarts ``seen``, not the age): with them the profile's learning rate follows the
    stream's sampling interval (:func:`slot_alpha`).

    Returns the profile residual, before ``v`` is learned: what the drift monitor watches (a
    daily cycle is not a drift; a level that stays shifted is, until the profile has learned
    it). A slot not yet visited falls back to the stream's running mean; 0 for a stream's first
    two readings. The residual ``z[0]`` was scaled from is ``z[Z_RESIDUAL]``: for a young slot
    scored by the grown slot before it, the residual against that one.
    """
    n = seen[s]
    d = v - prev[s] if n > 0 else 0.0
    m = mean[s]
    sd = DEV_MULT * dev[s]
    floor = value_floor(m)
    res = v - prof_mean[s, b] - offset[s]
    z[0] = 0.0
    z[1] = 0.0
    z[2] = 0.0
    z[3] = 0.0
    z[Z_RESIDUAL] = res
    if n >= 2:
        floor_sd = slot_floor_sd(mean, dev, s)
        # (a NaN t_first: not known to be slow)
        one_per_visit = ts - t_first >= n * ONE_PER_VISIT * period_s / prof_n.shape[1]
        if prof_n[s, b] >= MIN_BIN_COUNT:
            covered = slot_covered(ts, t_first, period_s, prof_n.shape[1], 0)
            z[0] = slot_z(res, prof_mean_dev, prof_n, s, b, covered, floor_sd, one_per_visit)
        else:
            # A slot too young to score: judge the reading by the slot just before it, when
            # that one is grown (a fast stream walking into a new half hour). Without this the
            # first readings of every new slot of a stream's first day were not scored at all:
            # a -20 dip on a 1 Hz sine scored 0.05 there and 1.0 four readings later.
            grown, z_before, res_before = slot_before_z(prof_mean, prof_mean_dev, prof_n,
                                                        offset, s, b, v, ts, period_s,
                                                        t_first, floor_sd, one_per_visit)
            if grown:
                z[0] = z_before
                z[Z_RESIDUAL] = res_before
        z[1] = (v - m) / max(sd, floor)
        z[2] = (d - dmean[s]) / max(DEV_MULT * ddev[s], floor)
    log_ratio = math.log((vol[s] + floor) / (ddev[s] + floor))
    if n >= 3:
        z[3] = (log_ratio - lr_mean[s]) / max(DEV_MULT * lr_dev[s], VOL_MIN_DEV)
    # Learn the profile slot and the shared offset.
    count = prof_n[s, b]
    if count == 0:
        prof_mean[s, b] = v - offset[s]
    else:
        a = max(slot_alpha(ts, t_first, age), 1.0 / (count + 1.0))
        prof_mean_dev[s, b] += a * (abs(res) - prof_mean_dev[s, b])
        prof_mean[s, b] += a * res
    prof_n[s, b] = count + 1
    if count + 1 > MIN_BIN_COUNT:
        offset[s] += ALPHA_OFFSET * res
    # Learn the overall statistics (equal weights at first, then exponential forgetting). The
    # first reading has no deviation (and the first difference is 0 by definition), so each
    # deviation averages only the deviations there are.
    a = max(ALPHA_SD, 1.0 / (n + 1.0))
    delta = v - m
    mean[s] = m + a * delta
    if n > 0:
        dev[s] += max(ALPHA_SD, 1.0 / n) * (abs(delta) - dev[s])
    ddelta = d - dmean[s]
    dmean[s] += a * ddelta
    if n > 1:
        ddev[s] += max(ALPHA_SD, 1.0 / (n - 1.0)) * (abs(ddelta) - ddev[s])
        vol[s] += max(VOL_ALPHA, 1.0 / (n - 1.0)) * (abs(ddelta) - vol[s])
    if n >= 3:
        a_lr = max(ALPHA_SD, 1.0 / (n - 2.0))
        lr_delta = log_ratio - lr_mean[s]
        if n >= VOL_CLIP_AFTER:
            lr_delta = max(lr_delta, -VOL_CLIP_Z * max(DEV_MULT * lr_dev[s], VOL_MIN_DEV))
        lr_mean[s] += a_lr * lr_delta
        lr_dev[s] += a_lr * (abs(lr_delta) - lr_dev[s])
    prev[s] = v
    seen[s] = n + 1
    if n < 2:
        return 0.0
    return v - m if count == 0 else res


@njit(cache=True)
def squash(z, x):
    """Features for the trees in [0, 1] from the first ``len(x)`` z-scores."""
    for j in range(x.shape[0]):
        x[j] = 0.5 + 0.5 * math.tanh(z[j] / SQUASH)


@njit(cache=True)
def features_batch(slots, values, ts, period_s, first_ts, age, prof_mean, prof_mean_dev, prof_n,
                   offset, mean, dev, dmean, ddev, vol, lr_mean, lr_dev, prev, seen):
    """z-scores ``Z[B, 4]``, tree features ``X[B, 3]`` and profile residuals ``R[B]`` of a
    batch, learning in order. ``first_ts`` holds each stream's first reading time (NaN: taken
    from this batch) and ``age`` the readings it has had since (counted here)."""
    n_readings = slots.shape[0]
    Z = np.empty((n_readings, N_Z), dtype=np.float64)
    X = np.empty((n_readings, N_FEATURES), dtype=np.float64)
    R = np.empty(n_readings, dtype=np.float64)
    for i in range(n_readings):
        s = slots[i]
        if math.isnan(first_ts[s]):
            first_ts[s] = ts[i]
        b = season_bin(ts[i], period_s, prof_n.shape[1])
        R[i] = feature_update(prof_mean, prof_mean_dev, prof_n, offset, mean, dev, dmean, ddev,
                              vol, lr_mean, lr_dev, prev, seen, s, values[i], ts[i], b,
                              period_s, first_ts[s], age[s], Z[i])
        age[s] += 1.0
        squash(Z[i], X[i])
    return Z, X, R
