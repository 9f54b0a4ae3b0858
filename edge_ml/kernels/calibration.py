"""Raw Half-Space-Trees scores and feature z-scores to one anomaly level in [0, 1].

The level is the largest of three tail probabilities, each put on the same log scale
(``-log10(p) / 10``, so 0.5 means p = 1e-5 and 1.0 means p <= 1e-10):

- the seasonal residual's two-sided Gaussian tail (a reading far from its time-of-day profile),
  or, when larger, the persistent view of the same residual (:func:`persistent_z`: a run of
  readings each only moderately far, as after a level shift); the caller passes the larger;
- the lower tail of the volatility z-score (the readings stopped moving: a stuck sensor);
- an anomaly likelihood of the HST score, as in Numenta's: the short moving average of the raw
  scores against the EWMA mean and deviation of the stream's own raw scores.

Calibrating per stream makes one threshold mean the same thing on very different streams.
"""

from __future__ import annotations

import math

import numpy as np
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
# Mean absolute deviation times ~1.25 estimates a Gaussian standard deviation.
DEV_MULT_P = 1.25


@njit(cache=True)
def probability_level(p):
    """A tail probability on the log scale of the levels, in [0, 1] (1e-10 or less -> 1)."""
    return min(1.0, max(0.0, -math.log(p + 1e-10) / LN_1E10))


@njit(cache=True)
def tail_level(z):
    """Two-sided Gaussian tail probability of ``z`` on the log scale, in [0, 1]."""
    return probability_level(math.erfc(abs(z) / _SQRT2))


@njit(cache=True)
def calibrate(cal_mean, cal_var, cal_n, short, short_sum, mtail, s, raw, season, z_volatility,
              warm, warming):
    """Level of slot ``s`` for raw HST score ``raw`` and seasonal level ``season``; learn ``raw``.

    The first ``warm`` raw scores are the model's first window, which it does not score (they
    are 0): they are kept out of the mean and variance, or the first real score would stand
    thousands of deviations above a mean of zeros and read as an anomaly on every stream (it
    did, whenever ``[model] warmup`` was set below the window). The likelihood waits for
    ``CAL_MIN_SCORES`` real scores. Its z is scaled by the model view's own tail ``mtail``
    (every episode learned, as the persistent view's: the short average makes them runs);
    a reading still ``warming`` up is not counted there. The likelihood's z is one-sided and
    the tail's constants two-sided Gaussian z: at these levels they differ by under 4 %.
    """
    n = cal_n[s]
    k = n % CAL_SHORT
    short_sum[s] += raw - short[s, k]
    short[s, k] = raw
    width = min(n + 1, CAL_SHORT)
    likelihood = 0.0
    if n >= warm + CAL_MIN_SCORES:
        z = (short_sum[s] / width - cal_mean[s]) / (math.sqrt(cal_var[s]) + 1e-9)
        unscaled = probability_level(0.5 * math.erfc(z / _SQRT2))
        likelihood = unscaled
        if not warming:
            scale = tail_scale(mtail, s, 0.0)
            if scale < 1.0 and z > 0.0:
                likelihood = probability_level(0.5 * math.erfc(z * scale / _SQRT2))
            episode_learn(mtail[s], unscaled, z, False)
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
    return max(season, quiet, likelihood)



# -- the persistent view: evidence that accumulates over consecutive readings ----------------
# A level shift or a slow drift moves many readings a little: each seasonal z-score alone may
# stay under the threshold while their run is far from anything the stream does. This view is
# an EWMA of the seasonal z-score, clipped so that one spike cannot carry it, scored against
# the running mean and mean absolute deviation of that EWMA on this stream: an autocorrelated
# (wandering) stream learns a wide spread and a white-noise one a narrow spread.
# Columns of the per-stream ``persist`` array:
P_EW = 0  # EWMA of the clipped seasonal z
P_MEAN = 1  # running mean of that EWMA
P_DEV = 2  # running mean absolute deviation of that EWMA
P_N = 3  # readings the view has learned
N_PERSIST = 4
# Weight of the newest z in the EWMA (about 10 readings; leave-one-group-out over 0.05-0.3).
P_ALPHA = 0.2
# |z| is clipped here first: a single spike moves the EWMA by at most P_ALPHA * P_CLIP.
P_CLIP = 3.0
# Learning rate of the EWMA's own mean and deviation (equal weights at first).
P_ALPHA_SD = 1.0 / 1000.0
# Readings learned before the view scores.
P_MIN = 100
# The EWMA's deviation is at least this share of what independent z-scores would give it
# (sqrt(alpha / (2 - alpha)) of a unit z): a stream whose z sat at 0 for a while (a flat
# stretch, a young profile) must not turn the next small move into an anomaly.
P_FLOOR = 0.5
_P_NULL_SD = math.sqrt(P_ALPHA / (2.0 - P_ALPHA))
_SQRT_PI = math.sqrt(math.pi)


@njit(cache=True)
def neglog_tail(z):
    """``-ln P(|Z| >= |z|)`` of a standard Gaussian, accurate far into the tail."""
    x = abs(z)
    if x < 8.0:
        return -math.log(max(math.erfc(x / _SQRT2), 1e-300))
    t = x / _SQRT2
    t2 = t * t
    return t2 + math.log(t * _SQRT_PI) - math.log(1.0 - 0.5 / t2 + 0.75 / (t2 * t2))


@njit(cache=True)
def persistent_z(persist, s, z_season):
    """The persistent view's z-score of stream ``s`` after seasonal z-score ``z_season``; learn.

    0 while the view is not scoring (its first ``P_MIN`` readings). A z-score of exactly 0 is a
    profile slot too young to score: the view neither scores nor learns it (an hourly stream's
    first days are mostly such readings).
    """
    if z_season == 0.0:
        return 0.0
    row = persist[s]
    c = min(max(z_season, -P_CLIP), P_CLIP)
    ew = row[P_EW] + P_ALPHA * (c - row[P_EW])
    row[P_EW] = ew
    n = row[P_N]
    d = ew - row[P_MEAN]
    zp = 0.0
    if n >= P_MIN:
        zp = d / max(DEV_MULT_P * row[P_DEV], P_FLOOR * _P_NULL_SD)
    a = max(P_ALPHA_SD, 1.0 / (n + 1.0))
    row[P_MEAN] += a * d
    if n > 0.0:
        row[P_DEV] += max(P_ALPHA_SD, 1.0 / n) * (abs(d) - row[P_DEV])
    row[P_N] = n + 1.0
    return zp


@njit(cache=True)
def persistent_tail(zp):
    """Level of a persistent-view z-score (its two-sided Gaussian tail, exact far out)."""
    return min(1.0, max(0.0, neglog_tail(zp) / LN_1E10))


# -- the stream's own tail: isolated extreme episodes (issue 13, round 5) --------------------
# A heavy-tailed sensor (log-normal, Student-t) puts readings far into a Gaussian's tail as its
# normal behaviour, and a fixed Gaussian level alerts on them all day. Each stream learns how
# often it has an *isolated* extreme episode (one reading at level >= TAIL_L0, the readings
# around it under it) and how far its peaks reach past Z0: the mean of ln(peak / Z0) is Hill's
# estimate of a Pareto tail index gamma. Such episodes come at lam per reading, so a peak
# beyond z* = Z0 (lam / TAIL_RATE)^gamma comes at TAIL_RATE; the seasonal z-score is
# scaled by Z_ALERT / z* when z* is past the alert's own z (never raised). A Gaussian stream's
# episodes are rarer than TAIL_RATE: its scale stays 1. Labelled anomalies in NAB come as runs
# of high readings, which are not learned: learning every exceedance explained them away
# (docs/benchmarks.md, rounds 1 and 5).
# The persistent view has a tail of its own (``ptail``, same columns, round 6), and so has the
# HST view (``mtail``, in :func:`calibrate`): their episodes are runs by nature (an EWMA, a
# short average), so all are learned. A mostly-zero counter's bursts raise both views every
# hundred readings or so and their tails learn the bursts as normal; a stream with a labelled
# level shift every few thousand readings barely moves from the prior (NAB unchanged,
# docs/benchmarks.md).
# Columns of the per-stream ``tail`` array:
T_N = 0  # scored readings
T_EPISODES = 1  # isolated episodes learned
T_LOG_EXCESS = 2  # sum of ln(peak / Z0) over them
T_PEAK = 3  # the open episode's peak |z| (Gaussian equivalent of its levels)
T_START = 4  # T_N when the last episode opened (0: none yet)
T_RUN = 5  # readings at >= TAIL_L0 in the open episode (0: none open)
N_TAIL = 6
# Episodes begin where an open alert resolves (``[alerts] resolve_threshold``'s default).
TAIL_L0 = 0.4
# The target: an alert from a stream's own normal extremes at most once per 10,000 readings.
TAIL_RATE = 1e-4
# Episodes open no closer together than the alert cooldown's default, and close this many
# readings after they opened, once under TAIL_L0.
TAIL_COOL = 150
TAIL_GAP = 10
# Prior: one episode at TAIL_RATE with a Gaussian's excess (1 / Z0^2). Leave one group out
# over 1, 2, 3 and 5 prior episodes chose 1 on every held-out group (docs/benchmarks.md).
TAIL_PRIOR = 1.0
# An episode opening blinds the counter for this many readings (no other opens within
# TAIL_COOL): a counter with a dead time counts m = r / (1 + r D) of events that come at r, so
# the reading's tail reads its rate as r = m / (1 - m D) (a Geiger counter's correction).
# Student-t3 extremes come every ~80 readings and were counted every ~250: its scale stayed
# twice too high (round 14). The persistent and HST views' episodes are runs that come in
# clusters (a level shift opens several), not at a steady rate; corrected too, NAB's W group
# lost 3 points (docs/benchmarks.md, round 14), so their rates stay as counted.
TAIL_DEAD = TAIL_COOL + 1.0


def _level_z(level):
    """The |z| whose two-sided Gaussian tail is ``1e-10 ** level`` (bisection; level <= 1)."""
    target = math.exp(-min(max(level, 0.0), 1.0) * LN_1E10)
    low, high = 0.0, 7.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        if math.erfc(mid / _SQRT2) > target:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


level_z = njit(cache=True)(_level_z)
TAIL_Z0 = _level_z(TAIL_L0)
TAIL_Z_ALERT = _level_z(0.5)  # the alert threshold's default
_TAIL_GAMMA0 = 1.0 / (TAIL_Z0 * TAIL_Z0)


@njit(cache=True)
def tail_scale(tail, s, dead):
    """Count a scored reading of stream ``s``; the scale of the z-scores whose extremes ``tail``
    learns, in (0, 1]. ``dead``: the readings an opening episode keeps the next from opening,
    for the dead-time correction of the counted rate (0: the rate as counted)."""
    row = tail[s]
    row[T_N] += 1.0
    episodes = row[T_EPISODES]
    lam = (episodes + TAIL_PRIOR) / (row[T_N] + TAIL_PRIOR / TAIL_RATE)
    # Counted, lam <= (N / dead + 1) / (N + 1 / TAIL_RATE) < 1 / dead (episodes open at least
    # dead readings apart); the floor only keeps a state from elsewhere from dividing by 0.
    lam = lam / max(1.0 - lam * dead, 1e-3)
    if lam <= TAIL_RATE:
        return 1.0
    gamma = (row[T_LOG_EXCESS] + TAIL_PRIOR * _TAIL_GAMMA0) / (episodes + TAIL_PRIOR)
    return min(1.0, TAIL_Z_ALERT / (TAIL_Z0 * (lam / TAIL_RATE) ** gamma))


@njit(cache=True)
def seasonal_views(persist, tail, ptail, shoulder, s, z_season, warming, shoulder_floor):
    """``(level, unscaled, shift)`` of stream ``s``: the seasonal view's level, the larger of
    the tails of the seasonal z-score and of the persistent z-score, each scaled by its own
    tail (:func:`tail_scale`: the isolated extremes of the reading at their dead-time corrected
    rate, the episodes of the persistent view); the same unscaled; and whether the persistent
    view gave the level (a run of readings off their profile, not one reading far off it).
    Learn the persistent view, its tail ``ptail`` and the reading's ``shoulder`` (the
    reading's ``tail`` learns in :func:`tail_learn`, once the level of every view is known).
    The persistent z is never scaled by the reading's tail: that cost level-shift recall
    (docs/benchmarks.md, round 5). With ``shoulder_floor`` under 1 the reading's z is also
    scaled by its shoulder (:func:`shoulder_scale`), never below that floor.

    A reading still ``warming`` up is not counted in the tails (its level is not reported).
    """
    zp = persistent_z(persist, s, z_season)
    reading = tail_level(z_season)
    run = persistent_tail(zp)
    unscaled = max(reading, run)
    if warming:
        return unscaled, unscaled, False
    scale = tail_scale(tail, s, TAIL_DEAD)
    shoulder_learn(shoulder[s], z_season)
    if shoulder_floor < 1.0:
        scale = min(scale, shoulder_scale(shoulder[s], shoulder_floor))
    pscale = tail_scale(ptail, s, 0.0)
    # Scored first, then learned; every episode of the persistent view counts (isolated=False).
    episode_learn(ptail[s], run, zp, False)
    # Each tail is computed once more only where its scale moved it.
    if scale != 1.0:
        reading = tail_level(z_season * scale)
    if pscale != 1.0:
        run = persistent_tail(zp * pscale)
    return max(reading, run), unscaled, run > reading


@njit(cache=True)
def tail_learn(tail, s, level, z_season):
    """Learn a scored reading's unscaled ``level`` (and seasonal ``z_season``) into the tail:
    its isolated extreme episodes only."""
    episode_learn(tail[s], level, z_season, True)


@njit(cache=True)
def episode_learn(row, level, z, isolated):
    """Learn one scored reading (its ``level`` and z-score ``z``) into a tail ``row``: episodes
    open at TAIL_L0 and close TAIL_GAP readings on, once under it, their peak the largest
    Gaussian-equivalent |z|; with ``isolated``, only episodes of a single reading at >= TAIL_L0
    are learned."""
    since = row[T_N] - row[T_START] if row[T_START] > 0.0 else math.inf
    if level >= TAIL_L0:
        peak = max(level_z(level), abs(z))  # a bisection: only for the rare high reading
        if row[T_RUN] == 0.0:
            if since > TAIL_COOL:
                row[T_START] = row[T_N]
                row[T_PEAK] = peak
                row[T_RUN] = 1.0
        else:
            row[T_PEAK] = max(row[T_PEAK], peak)
            row[T_RUN] += 1.0
    elif row[T_RUN] > 0.0 and since > TAIL_GAP:
        if row[T_RUN] == 1.0 or not isolated:
            row[T_EPISODES] += 1.0
            row[T_LOG_EXCESS] += math.log(max(row[T_PEAK], TAIL_Z0) / TAIL_Z0)
        row[T_RUN] = 0.0


# -- the stream's shoulder: a heavy tail told within hundreds of readings (round 16) --------
# The reading's tail above learns from isolated readings past |z| 3.89, which a Gaussian
# stream has once in 10,000 readings, and its prior is worth 10,000 readings: a heavy-tailed
# stream is scored as a Gaussian one for its first days (Student-t3: 18.5 false alerts / 10k
# in its first 5,000 readings). Its shoulder, the readings past SH_Z (level 0.2: |z| 2.58, a
# Gaussian's 1 %), shows a heavy tail within hundreds of readings, the way SPOT fits a tail
# over a moderate threshold (Siffer et al., KDD 2017). Each isolated exceedance (both
# neighbours under SH_Z: a run belongs to the persistent view) adds its log excess
# ln(|z| / SH_Z), censored at ln(TAIL_Z0 / SH_Z) so that one giant spike cannot set the index;
# Hill's estimate of the Pareto index with censoring is the sum of the censored excesses over
# the uncensored count. Extrapolated with that index, the exceedances' rate gives z*, the |z|
# the stream passes at TAIL_RATE; the same estimator on a Gaussian stream gives SH_ZSTAR0. The
# reading's z is scaled by the episode tail's own margin times SH_ZSTAR0 / z*, at most 1.
#
# Off by default (``[model] heavy_tail_floor = 1``): the shoulder learns on every stream, and
# scales only when the floor is set under 1, never below it. On NAB's spiky streams it also
# learns extremes that were labelled (realKnownCause -7 without a floor), and leave one group
# out could not choose a floor (docs/benchmarks.md, rounds 15 and 16). An operator whose
# heavy-tailed sensors raise false alerts can set it; so can a held-out evaluation.
# Columns of the per-stream ``shoulder`` array:
SH_SEEN = 0  # scored readings learned (a z of 0, a slot too young, is not one)
SH_COUNT = 1  # isolated exceedances of SH_Z
SH_LOG = 2  # the sum of their censored log excesses
SH_UNCENSORED = 3  # how many of them were under the censoring point
SH_PREV = 4  # |z| of the reading before
SH_PENDING = 5  # 1 + the log excess of an exceedance waiting for its next reading (0: none)
N_SHOULDER = 6
SH_LEVEL = 0.2
SH_Z = _level_z(SH_LEVEL)
# Censoring point: the episode tail's own threshold (its readings are its evidence).
SH_CAP = math.log(TAIL_Z0 / SH_Z)
# Prior: this many readings of a Gaussian stream (its isolated exceedances, their excesses).
SH_PRIOR_READINGS = 1000.0


def _gaussian_shoulder(u, cap):
    """A Gaussian stream's rate of isolated exceedances of |z| > ``u``, the mean log excess
    ln(|z| / u) of its exceedances censored at ``cap``, and their uncensored share (once, at
    import: the uncensored part by the trapezoid rule, the rest from erfc)."""
    v = u * math.exp(cap)
    p_u, p_v = math.erfc(u / _SQRT2), math.erfc(v / _SQRT2)
    x = np.linspace(u, v, 200001)
    f = np.log(x / u) * np.exp(-0.5 * x * x)
    body = float(np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(x)))
    mass = math.sqrt(0.5 * math.pi)  # the integral of exp(-x^2 / 2) past u is mass * erfc
    excess = (body / mass + cap * p_v) / p_u
    return p_u * (1.0 - p_u) ** 2, excess, 1.0 - p_v / p_u


SH_RATE0, SH_EXCESS0, SH_UNCENSORED0 = _gaussian_shoulder(SH_Z, SH_CAP)
_SH_GAMMA0 = SH_EXCESS0 / SH_UNCENSORED0
SH_ZSTAR0 = SH_Z * (SH_RATE0 / TAIL_RATE) ** _SH_GAMMA0
_SH_MARGIN = TAIL_Z_ALERT / TAIL_Z0  # the episode tail's scale maps z* to the alert's z


@njit(cache=True)
def shoulder_learn(row, z):
    """Learn a scored reading's seasonal ``z`` into a stream's shoulder ``row``: an exceedance
    of SH_Z is counted once the reading after it is back under SH_Z."""
    a = abs(z)
    if a == 0.0:
        return
    row[SH_SEEN] += 1.0
    if row[SH_PENDING] > 0.0:
        if a <= SH_Z:
            excess = row[SH_PENDING] - 1.0
            row[SH_COUNT] += 1.0
            row[SH_LOG] += min(excess, SH_CAP)
            if excess < SH_CAP:
                row[SH_UNCENSORED] += 1.0
        row[SH_PENDING] = 0.0
    if a > SH_Z and row[SH_PREV] <= SH_Z:
        row[SH_PENDING] = 1.0 + math.log(a / SH_Z)
    row[SH_PREV] = a


@njit(cache=True)
def shoulder_scale(row, floor):
    """The scale of a stream's z-scores its shoulder ``row`` gives, in [``floor``, 1]."""
    prior = SH_PRIOR_READINGS * SH_RATE0
    rate = (row[SH_COUNT] + prior) / (row[SH_SEEN] + SH_PRIOR_READINGS)
    gamma = (row[SH_LOG] + prior * SH_EXCESS0) / (row[SH_UNCENSORED] + prior * SH_UNCENSORED0)
    z_star = SH_Z * (rate / TAIL_RATE) ** max(gamma, _SH_GAMMA0)
    return max(floor, min(1.0, _SH_MARGIN * SH_ZSTAR0 / z_star))


# -- warm-up: how long a stream learns before it is scored -----------------------------------
# ``[model] warmup`` readings at most; but a stream past WARM_EARLY_SHARE of them that has
# also covered WARM_SPAN_S since its first reading is scored as soon as the reading's
# time-of-day slot is grown. At 300 readings an hourly stream waited 12.5 days (NAB scores a
# file from 15 % of its readings on: an hourly metric of 1,500 readings from reading 225);
# now 100 readings, 4 days. Streams sampled every 5 minutes or faster reach 300 readings
# before 2 days, so their warm-up is unchanged: scoring 5-minute streams from reading 100-150
# cost NAB's realAWSCloudwatch 2-3.5 points (an alert 17 hours into
# iio_us-east-1_i-a2eb1cd9_NetworkIn whose cooldown hid its labelled anomaly). A share of
# 1/6 (50 readings) added false alerts on the suite's hourly streams (docs/benchmarks.md).
WARM_EARLY_SHARE = 1.0 / 3.0
WARM_SPAN_S = 2.0 * 86400.0


def warm_early(warmup: int) -> int:
    """Readings after which a stream may leave warm-up early (see warming_up)."""
    return int(warmup * WARM_EARLY_SHARE)


@njit(cache=True)
def warming_up(seen, z_season, span_s, warmup, early, warm_span_s):
    """Whether a stream's ``seen``-th reading, ``span_s`` after its first, is still warming up
    (its level not used): ``warmup`` readings, or fewer once the stream has ``early`` of them,
    ``warm_span_s`` of history, and a time-of-day slot grown enough to score the reading
    (``z_season`` not 0)."""
    if seen > warmup:
        return False
    return seen <= early or span_s < warm_span_s or z_season == 0.0
