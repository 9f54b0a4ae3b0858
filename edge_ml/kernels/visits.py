"""The first readings of a profile slot's visit, judged by how that stream's visits begin.

A fast stream walks through a time-of-day slot once a day: a 1-minute stream spends 30
readings in a half-hour slot, then leaves it for a day. On a stream whose level wanders with
no daily cycle of its own (a room temperature, an AR(1) walk), the slot's mean is what the
level was a day ago, and its deviation comes from within its visits, where the readings
follow each other closely. The first readings of each visit then stand several deviations
off (the slot's stale mean), and the next few less and less as the slot learns: issue 13's
suite raised 13.8 false alerts per 10,000 readings on such a stream, every one at the start
of a visit, and none that a labelled anomaly explained.

So each stream learns, per position ``k`` of a visit (its first ``VISIT_POSITIONS``
readings), the mean |z_season| there, and the same in the rest of its visits (the steady
part); a seasonal z-score at position ``k`` is divided by their ratio when that is above
``VISIT_MARGIN``. A slot's first visit (the stream's first day: no day-old mean to be stale)
is left out of the positions' means. A stream whose visits begin like their steady part
(white noise, a real daily cycle) keeps its z-scores. A stream with at most
``VISIT_POSITIONS`` readings a visit (5-minute and slower sampling: every NAB file) has no
steady part and is never rescaled. Each |z| is clipped at ``VISIT_CLIP`` before it is
learned, so that a burst or a spike cannot carry a position's mean (without the clip, a
mostly-zero counter's bursts lowered a stuck value's z enough to miss it). Only the seasonal
view reads the result; the trees see the staged features unchanged.

Until a stream has learned that ratio (its first ``VISIT_MIN_VISITS`` visits to slots
visited before: the first ten hours of its second day at 1-minute sampling), and while a slot
is young (its second visit after the profile started or a drift reset restarted it), a visit's
first readings are judged by the less alarming of their own slot and the slot just before it
(:func:`judged_by_slot_before`; the caller compares). The slot before was visited a moment
ago: a wandering level is where it left it, while the reading's own slot holds yesterday's.
A real daily cycle is judged by its own slot whenever that is the nearer one, and a reading
far from both (a spike, a step) stays far. On the suite's wandering AR(1) temperature this
took the false alerts from 4.28 to 0.78 / 10k (12 seeds): on its second day and on the day
after each drift reset. Every labelled anomaly of the suite was found as before, and no NAB
file changes (none has a steady part). Doing it at every visit also took AR(1) to 0.78, but
lost a stuck value and a slow drift; comparing before the positions learn (so that they learn
the smaller |z|) left the ratio too small later (AR(1) 3.89) (docs/benchmarks.md, round 13).

State per stream, ``visit[s, :]`` (zeros: unknown, learned again; an older checkpoint is
upgraded with zeros).
"""

from __future__ import annotations

from numba import njit

from edge_ml.kernels.window import ALPHA_BIN

V_SLOT = 0  # the profile slot of the last reading, plus 1 (0: none yet)
V_K = 1  # readings into the current visit before this one
V_VISITS = 2  # visits begun to a slot visited before
V_STEADY_N = 3  # steady readings learned
V_MEAN = 4  # mean clipped |z| at positions 0 .. VISIT_POSITIONS - 1 of a visit
VISIT_POSITIONS = 7
V_STEADY = V_MEAN + VISIT_POSITIONS  # mean clipped |z| in the rest of the visits
N_VISIT = V_STEADY + 1
# |z| is clipped here before it is learned (the value of the persistent view's clip,
# kernels.calibration.P_CLIP; 2 and no clip measured in docs/benchmarks.md, round 7).
VISIT_CLIP = 3.0
# A position's ratio is used only beyond this: a mean over ~100 visits of a heavy-tailed |z|
# (Student-t3) strays ~10 % from the steady one by chance, and dividing by that noise cost
# the suite's t3 and log-normal streams false alerts and a detection. Leave one group out
# over 1, 1.25 and 1.5 (docs/benchmarks.md, round 7); an AR(1) walk's first readings run
# ~1.8 times its steady part.
VISIT_MARGIN = 1.25
# Visits begun (to slots visited before), and steady readings learned, before the ratio is
# used (after 5 or 10 visits, a young ratio cost the suite a stuck counter's detection).
VISIT_MIN_VISITS = 20
VISIT_MIN_STEADY = 100
# Learning rates: a position learns once a visit at a profile slot's rate
# (kernels.window.ALPHA_BIN), the steady part once a reading at the stream statistics'
# (kernels.window.ALPHA_SD); both average their first values equally.
VISIT_ALPHA = 0.02
STEADY_ALPHA = 1.0 / 600.0
# A profile slot is young while its mean still averages its readings equally (fewer than
# 1 / ALPHA_BIN of them): on a fast stream, its second visit after the profile (re)started.
# After a drift reset the visits' ratio is kept but the profile is new, and its second day
# raised most of the AR(1) stream's false alerts that the young ratio alone left (1.67 ->
# 0.78 / 10k). Twice that (100 readings, the third visit too) lost a stuck value and a slow
# drift (docs/benchmarks.md, round 13).
YOUNG_SLOT_READINGS = 1.0 / ALPHA_BIN


@njit(cache=True)
def visit_rescale(visit, s, b, z, slot_readings):
    """Seasonal z-score ``z`` of stream ``s``'s reading in profile slot ``b`` (which has now
    learned ``slot_readings`` readings, this one included), divided by how much larger |z|
    runs at this position of a visit than in the steady part (when more than
    ``VISIT_MARGIN`` times); learn.

    A slot's first visit (the stream's first day) is neither rescaled nor learned: its
    first readings are judged by the slot before it, with no day-old mean to be stale, and
    averaging them in made the positions' means lag a whole day behind the pattern.
    Only ever lowers |z|, never flips its sign, and leaves an unscored z (0) at 0 (not
    learned either).
    """
    row = visit[s]
    if row[V_SLOT] != b + 1.0:
        row[V_SLOT] = b + 1.0
        row[V_K] = 0.0
    else:
        row[V_K] += 1.0
    # The slot's first visit: every reading the slot has learned is this visit's (or fewer,
    # when the profile restarted part-way through it: a drift reset keeps this state).
    first_visit = slot_readings <= row[V_K] + 1.0
    if row[V_K] == 0.0 and not first_visit:
        row[V_VISITS] += 1.0
    if z == 0.0 or z != z:  # not scored (or NaN: left for the caller's checks)
        return z
    k = int(row[V_K])
    a = min(abs(z), VISIT_CLIP)
    if k >= VISIT_POSITIONS:
        row[V_STEADY_N] += 1.0
        row[V_STEADY] += max(STEADY_ALPHA, 1.0 / row[V_STEADY_N]) * (a - row[V_STEADY])
        return z
    if first_visit:
        return z
    j = V_MEAN + k
    out = z
    if row[V_VISITS] > VISIT_MIN_VISITS and row[V_STEADY_N] > VISIT_MIN_STEADY:
        ratio = row[j] / max(row[V_STEADY], 1e-9)
        if ratio > VISIT_MARGIN:
            out = z / ratio
    row[j] += max(VISIT_ALPHA, 1.0 / max(row[V_VISITS], 1.0)) * (a - row[j])
    return out


@njit(cache=True)
def judged_by_slot_before(visit, s, b, slot_readings):
    """Whether stream ``s``'s next reading, in profile slot ``b`` (which has learned
    ``slot_readings`` readings, not this one yet), is to be judged by the less alarming of its
    own slot and the slot before it: one of the first ``VISIT_POSITIONS`` readings of a visit
    to a slot visited before, on a stream with a steady part (more than ``VISIT_POSITIONS``
    readings a visit), while the visits' ratio :func:`visit_rescale` uses is not learned yet or
    the slot is young (``YOUNG_SLOT_READINGS``). Learns nothing (call it before the reading is
    learned anywhere)."""
    row = visit[s]
    k = 0.0 if row[V_SLOT] != b + 1.0 else row[V_K] + 1.0
    if k >= VISIT_POSITIONS or slot_readings <= k:  # the steady part, or the slot's first visit
        return False
    visits = row[V_VISITS] + (1.0 if k == 0.0 else 0.0)
    young = visits <= VISIT_MIN_VISITS or slot_readings < YOUNG_SLOT_READINGS
    return row[V_STEADY_N] > VISIT_MIN_STEADY and young
