"""False alerts per 10,000 readings by a stream's age, on the suite's anomaly-free kinds.

The suite's streams are 15,000 readings long, so its figures are mostly their first days, while
the per-stream tails are still learning. This replays longer streams of the same generators
(``calibration_suite.KINDS``, shipped defaults, one fresh pipeline per stream) and prints the
rate in each stretch of a stream's life.

Usage: python benchmarks/false_alerts_by_age.py [--seeds 4] [--readings 60000]
       [--kinds student_t3,mention_counts_5min,sparse_counter,ar1_temperature]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import tempfile
from pathlib import Path

import numpy as np
from calibration_suite import KINDS, replay, write_csv

from edge_ml.config import parse_config

DEFAULT_KINDS = "student_t3,mention_counts_5min,sparse_counter,ar1_temperature"


def rates_by_age(kind: str, seeds: int, readings: int, edges: list[int]) -> list[float]:
    """False alerts per 10,000 readings in each stretch ``[edges[i], edges[i + 1])``."""
    generate, _ = KINDS[kind]
    config = parse_config({})
    counts = np.zeros(len(edges) - 1)
    with tempfile.TemporaryDirectory() as folder:
        source, out = Path(folder) / "stream.csv", Path(folder) / "stream.out.csv"
        for seed in range(seeds):  # the suite's anomaly-free seeds
            ts, values, _ = generate(readings, np.random.default_rng(1000 + seed))
            write_csv(source, ts, values)
            counts += np.histogram(replay(config, source, out), bins=edges)[0]
    return [1e4 * c / (seeds * (high - low))
            for c, (low, high) in zip(counts, itertools.pairwise(edges), strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="anomaly-free streams per kind")
    parser.add_argument("--readings", type=int, default=60000, help="readings per stream")
    parser.add_argument("--kinds", default=DEFAULT_KINDS, help="comma-separated suite kinds")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # replay's per-file drift lines
    edges = [e for e in (0, 5000, 15000, 30000) if e < args.readings] + [args.readings]
    print(f"false alerts per 10,000 readings by age ({args.seeds} seeds, shipped defaults):")
    stretches = "".join(f"{f'{a}-{b}':>14s}" for a, b in itertools.pairwise(edges))
    print(f"  {'kind':24s}{stretches}")
    for kind in args.kinds.split(","):
        rates = rates_by_age(kind, args.seeds, args.readings, edges)
        print(f"  {kind:24s}" + "".join(f"{r:14.2f}" for r in rates))


if __name__ == "__main__":
    main()
