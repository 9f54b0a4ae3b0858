"""Young profile slots on a fast stream's first day: seasonal z-score tails, and the alerts.

A 1 Hz stream walks into a new half-hour slot of its time-of-day profile every 30 minutes of
its first day. Part 1 feeds ``--streams`` streams of the load publisher's kind (unit Gaussian
noise plus a small sine, ``benchmarks/publisher.py``), each starting at a random second, through
the feature stage for ``--seconds`` seconds and prints, by the reading's age in its slot, how
often the seasonal z-score is beyond 4 and 5 compared with a Gaussian's two-sided tail (1.0 is
calibrated). Part 2 runs the whole pipeline (``Pipeline.process_readings``, shipped defaults) on
1,000 such streams at 1 Hz from 07:05 UTC for ``--pipeline-seconds`` and counts the alerts that
open in the first minute of a slot against the rest.

Runs against any checkout: ``cd <tree> && PYTHONPATH=$PWD .venv/bin/python
benchmarks/young_slots.py`` (before and after in one sitting; the script copes with the
feature stage's signature before ``first_ts`` was passed to it).
"""

from __future__ import annotations

import argparse
import logging
import math
import time

import numpy as np

from edge_ml.config import parse_config
from edge_ml.features import FeatureState
from edge_ml.pipeline import Pipeline

START = 1_764_918_300.0  # 2025-12-05 07:05:00 UTC: a slot boundary 25 minutes in
SLOT_S = 1800.0
AGES = (0, 1, 2, 3, 4, 6, 11, 31, 101, 301)
GAUSS_4, GAUSS_5 = math.erfc(4 / math.sqrt(2)), math.erfc(5 / math.sqrt(2))


def publisher_values(k: int, phase: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 0.3 * np.sin(k / 50.0 + phase) + rng.normal(0.0, 1.0, len(phase))


def z_tails(streams: int, seconds: int) -> list[tuple[int, int, float, float, float]]:
    """Per age bucket: readings, rms z, P(|z| > 4) and P(|z| > 5) over a Gaussian's."""
    rng = np.random.default_rng(7)
    state = FeatureState(capacity=streams)
    state.arrays.grow(streams)
    slots = np.arange(streams, dtype=np.int64)
    first_ts = np.full(streams, np.nan)
    age = np.zeros(streams)
    phase = rng.uniform(0, 2 * math.pi, streams)
    offset = rng.integers(0, int(SLOT_S), streams).astype(np.float64)
    edges = np.array([*AGES, 10**9])
    count, sq, over4, over5 = (np.zeros(len(AGES)) for _ in range(4))
    for k in range(seconds):
        ts = START + k + offset
        values = publisher_values(k, phase, rng)
        try:
            z = state.update(slots, values, ts, first_ts, age)[0][:, 0]
        except TypeError:  # a build before the feature stage took the age, or first_ts
            try:
                z = state.update(slots, values, ts, first_ts)[0][:, 0]
            except TypeError:
                z = state.update(slots, values, ts)[0][:, 0]
        if k < 600:  # past the publisher streams' 300-reading warm-up and their first slot
            continue
        age = np.minimum((ts - START + 300.0) % SLOT_S, k)  # seconds since entering the slot
        bucket = np.searchsorted(edges, age, side="right") - 1
        z = np.abs(z)
        np.add.at(count, bucket, 1)
        np.add.at(sq, bucket, z * z)
        np.add.at(over4, bucket, z > 4.0)
        np.add.at(over5, bucket, z > 5.0)
    return [(AGES[i], int(count[i]), math.sqrt(sq[i] / count[i]),
             over4[i] / count[i] / GAUSS_4, over5[i] / count[i] / GAUSS_5)
            for i in range(len(AGES)) if count[i]]


def alerts(streams: int, seconds: int) -> tuple[int, int, float]:
    """Alerts opened in the first minute of a slot, elsewhere, and readings per second."""
    rng = np.random.default_rng(1)
    names = [f"sensors/load/s{i}" for i in range(streams)]
    phase = rng.uniform(0, 2 * math.pi, streams)
    pipeline = Pipeline(parse_config({}))
    early = late = 0
    started = time.perf_counter()
    for k in range(seconds):
        ts = np.full(streams, START + k)
        out = pipeline.process_readings(names, ts, publisher_values(k, phase, rng))
        opened = sum(1 for event in out.events if event.state == "open")
        if (k + 300) % SLOT_S < 60:
            early += opened
        else:
            late += opened
    return early, late, streams * seconds / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=5400)
    parser.add_argument("--pipeline-seconds", type=int, default=3600,
                        help="1,000 streams from 07:05 (0: skip part 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"seasonal z by age in slot ({args.streams} streams x {args.seconds} s at 1 Hz, "
          "first day; tail ratios over a Gaussian's, 1.0 = calibrated):")
    print("  age >= s   readings   rms z   P(|z|>4)   P(|z|>5)")
    for age, n, rms, r4, r5 in z_tails(args.streams, args.seconds):
        print(f"  {age:8d} {n:10d} {rms:7.2f} {r4:10.1f} {r5:10.1f}")
    if args.pipeline_seconds:
        early, late, rate = alerts(1000, args.pipeline_seconds)
        per_10k = 1e4 * (early + late) / (1000 * args.pipeline_seconds)
        print(f"pipeline, 1,000 streams x {args.pipeline_seconds} s: alerts opened in a slot's "
              f"first minute {early}, later {late} ({per_10k:.2f} per 10k readings; "
              f"{rate:,.0f} readings/s)")
        print(f"summary: first_minute_alerts={early} other_alerts={late}")


if __name__ == "__main__":
    main()
