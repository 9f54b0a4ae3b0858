"""Runs of equal readings: how rare a run is for the stream that makes it (a frozen sensor).

A sensor that freezes repeats its last reading. The stuck view of the calibration (the lower
tail of the volatility z-score, ``kernels.calibration``) sees the differences collapse, but it
learns the quiet stretch as it goes and peaks near the threshold: a value held for 10 hours on
a traffic, occupancy or count stream was found in 17 of 37 NAB-style windows
(``benchmarks/heldout_like.py``, docs/benchmarks.md round 19). Whether a run of equal readings
is rare is a property of the stream: a continuous sensor almost never repeats a reading, a
quantised one often does. So each stream learns, from its own finished runs:

- ``r``, how often a change of value is followed by a repeat (prior: none of
  ``RUN_PRIOR_CHANGES`` changes), and ``q``, how often a repeat is followed by another (prior:
  one of ``RUN_PRIOR_REPEATS``); a run of ``k`` repeats then has probability ``r q^(k-1)``;
- the longest run it has finished. A run no longer than that is not news: a quantised sensor
  dwells at the top of its cycle longer than a geometric tail allows (its false alerts went
  0.17 -> 1.06 / 10k without this). A longer run is a record, about ``1 / (runs + 1)`` of the
  stream's runs, and rare by ``q`` for each repeat beyond it.

A run of zeros is not scored (it is learned): a counter or an idle sensor rests at 0 for hours,
and NAB's ``rogue_agent_key_hold`` (half zeros) raised four false alerts on its first long zero
runs. A stream stopped at 0 leaves its profile, which the other views score.

The run in progress teaches nothing until it ends, so a frozen sensor does not make its own
freeze ordinary while it lasts. The level is the run's probability on the calibration's log
scale (:func:`~edge_ml.kernels.calibration.probability_level`: 0.5 is 1e-5), as every view's.

A run is scored once the stream has changed value ``RUN_MIN_CHANGES`` times: a frozen sensor is
one that was moving. A stream constant from its first reading (NAB's ``art_flatline``, a status
that never changes) is not scored; otherwise every one of its readings scored 1.0, and NAB's
best-threshold optimiser could not place a threshold (pooled 68.8 -> 0).

State per stream, ``runs[s, :]`` (zeros: nothing learned). A stream restored from a checkpoint
written before it learns again, and scores a run after ``RUN_MIN_CHANGES`` changes, as a new
stream does within its warm-up.
"""

from __future__ import annotations

import math

from numba import njit

from edge_ml.kernels.calibration import probability_level

RUN_PREV = 0  # the last finite value
RUN_LENGTH = 1  # repeats in the run in progress (readings equal to the one before)
RUN_SEEN = 2  # finite readings learned
RUN_CHANGES = 3  # finished runs (a value, then a reading unlike it) ...
RUN_REPEATED = 4  # ... of which a repeat followed the value
RUN_REPEATS = 5  # repeats in those runs (all but the first of a run's were continued)
RUN_LONGEST = 6  # the longest finished run, in repeats
N_RUNS = 7
RUN_PRIOR_CHANGES = 100.0
RUN_PRIOR_REPEATS = 2.0
RUN_MIN_CHANGES = 100


@njit(cache=True)
def run_learn(row, v):
    """Learn finite reading ``v`` into a stream's ``row``: extend the run in progress, or
    finish it and start another."""
    if row[RUN_SEEN] > 0.0 and v == row[RUN_PREV]:
        row[RUN_LENGTH] += 1.0
    else:
        if row[RUN_SEEN] > 0.0:
            run = row[RUN_LENGTH]
            row[RUN_CHANGES] += 1.0
            if run >= 1.0:
                row[RUN_REPEATED] += 1.0
                row[RUN_REPEATS] += run
                row[RUN_LONGEST] = max(row[RUN_LONGEST], run)
        row[RUN_LENGTH] = 0.0
    row[RUN_PREV] = v
    row[RUN_SEEN] += 1.0


@njit(cache=True)
def run_probability(row):
    """Probability of the run in progress in a stream's ``row`` (1: no run, or not news)."""
    run = row[RUN_LENGTH]
    longest = row[RUN_LONGEST]
    if (run < 1.0 or run <= longest or row[RUN_PREV] == 0.0
            or row[RUN_CHANGES] < RUN_MIN_CHANGES):
        return 1.0
    r = (row[RUN_REPEATED] + 1.0) / (row[RUN_CHANGES] + RUN_PRIOR_CHANGES)
    continued = row[RUN_REPEATS] - row[RUN_REPEATED]  # each run's repeats after its first
    q = (continued + 1.0) / (row[RUN_REPEATS] + RUN_PRIOR_REPEATS)
    if longest == 0.0:
        return r * q ** (run - 1.0)
    return r * q ** (run - longest - 1.0) / (row[RUN_REPEATED] + 1.0)


@njit(cache=True)
def run_level(runs, s, v):
    """Learn reading ``v`` of stream ``s`` and return the level of the run it is in (0 for a
    non-finite reading, which neither extends nor ends a run)."""
    if not math.isfinite(v):
        return 0.0
    row = runs[s]
    run_learn(row, v)
    return probability_level(run_probability(row))
