"""Detection quality of the shipped defaults: NAB subset (three profiles) and river's Shuttle.

NAB: every CSV under ``--nab DIR/data`` is replayed through the product's own pipeline
(``edge_ml.replay.replay_tree``, the code behind ``edge-ml replay``) with the default config,
then scored by ``edge_ml.evaluate`` against ``DIR/labels/combined_windows.json``: the score at
the best single corpus threshold (NAB's protocol) and the score of the pipeline's own alert
decisions (no threshold tuned on the answers).

Shuttle: the nine features are scaled like the pipeline scales its ``z_value`` feature (against
a running mean and mean absolute deviation, ``edge_ml.kernels.window``, then
``0.5 + 0.5 tanh(z / 6)``) and scored by the Numba Half-Space-Trees engine at the default
parameters, prequentially; exact ROC-AUC of the raw score. ``--shuttle-seeds`` also reports the
spread over other forest seeds (the default seed is one draw of a random forest structure).

Cost: the NAB replay rate is printed (rows/s through the whole offline pipeline), and the
fused kernel alone (``edge_ml.kernels.fused.detect_batch``, features + HST + calibration) is
timed on all NAB rows, one stream at a time, in microseconds per reading.

Usage: python benchmarks/detection_quality.py --nab ../shared/data/nab
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from river import datasets
from scipy.stats import rankdata

from edge_ml.config import parse_config
from edge_ml.evaluate import evaluate, format_report
from edge_ml.features import FeatureState
from edge_ml.kernels.hst import hst_step_into
from edge_ml.kernels.window import ALPHA_SD, DEV_MULT, N_FEATURES, SQUASH
from edge_ml.model.detector import make_detector
from edge_ml.model.forest import ForestState, TreeStructure
from edge_ml.pipeline import model_params
from edge_ml.replay import replay_tree


def nab(nab_dir: Path) -> None:
    config = parse_config({})
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        results = replay_tree(config, nab_dir / "data", Path(out))
        rows = sum(r.rows for _, r in results)
        print(f"replayed {len(results)} files, {rows} rows in {time.perf_counter() - started:.1f}s")
        report = evaluate(out, nab_dir / "labels" / "combined_windows.json")
    print(format_report(report))


def shuttle_features() -> tuple[np.ndarray, np.ndarray]:
    """Shuttle's nine features scaled as the pipeline scales ``z_value``, and the labels."""
    rows, labels = [], []
    for x, y in datasets.Shuttle():
        rows.append([x[f"f{i}"] for i in range(1, 10)])
        labels.append(bool(y))
    values = np.array(rows, dtype=np.float64)
    out = np.full_like(values, 0.5)
    mean = np.zeros(9)
    dev = np.zeros(9)
    for n, v in enumerate(values):
        if n >= 2:
            floor = 1e-6 * (np.abs(mean) + 1.0)
            out[n] = 0.5 + 0.5 * np.tanh((v - mean) / np.maximum(DEV_MULT * dev, floor) / SQUASH)
        delta = v - mean
        mean += max(ALPHA_SD, 1.0 / (n + 1.0)) * delta
        if n > 0:
            dev += max(ALPHA_SD, 1.0 / n) * (np.abs(delta) - dev)
    return out, np.array(labels)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC-AUC (Mann-Whitney, ties count half).

    river's ``metrics.ROCAUC`` bins scores into 10 thresholds by default, an approximation that
    read 0.963 where the exact value was 0.966.
    """
    ranks = rankdata(scores)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def shuttle(extra_seeds: int = 0) -> float:
    config = parse_config({}).model
    features, labels = shuttle_features()
    seeds = [config.seed, *range(1, extra_seeds + 1)]
    values = []
    for seed in seeds:
        structure = TreeStructure.from_river(9, config.n_trees, config.height, seed)
        forest = ForestState(structure, config.window_size, capacity=1)
        # Score then learn each row, on the engine's kernel alone (no features, no calibration).
        walk = np.empty((structure.height + 2, structure.n_trees), dtype=np.int64)
        scores = np.array([
            hst_step_into(structure.split_feature, structure.split_threshold, forest.mass,
                          forest.ref, forest.count, forest.first_window, 0, x, structure.height,
                          config.window_size, False, walk)
            for x in features
        ])
        values.append(roc_auc(scores, labels))
    value = values[0]
    print(f"Shuttle ROC-AUC (Numba HST, {config.n_trees} trees, height {config.height}, "
          f"window {config.window_size}, seed {config.seed}): {value:.4f}")
    if extra_seeds:
        print(f"  over seeds {seeds}: mean {np.mean(values):.4f}, min {np.min(values):.4f}, "
              f"max {np.max(values):.4f}")
    return value if math.isfinite(value) else 0.0


def kernel_cost(nab_dir: Path, repeats: int = 3) -> float:
    """Microseconds per reading of the fused kernel over every NAB row (one stream per file)."""
    config = parse_config({})
    batches = []
    for path in sorted((nab_dir / "data").rglob("*.csv")):
        stamps, values = [], []
        for line in path.read_text().splitlines()[1:]:
            stamp, value = line.split(",")[:2]
            stamps.append(stamp[:19])
            values.append(float(value))
        ts = np.array(stamps, dtype="datetime64[s]").astype(np.float64)
        batches.append((ts, np.array(values)))
    best = math.inf
    for _ in range(repeats):
        elapsed = 0.0
        features = FeatureState(config.features.season_s, config.features.season_bins,
                                capacity=len(batches))
        detector = make_detector(model_params(config, N_FEATURES), capacity=len(batches))
        for i, (ts, values) in enumerate(batches):
            slots = np.full(len(values), i, dtype=np.int64)
            started = time.perf_counter()
            detector.process(features, slots, values, ts)
            elapsed += time.perf_counter() - started
        best = min(best, elapsed)
    rows = sum(len(v) for _, v in batches)
    us = best / rows * 1e6
    m = config.model
    print(f"fused kernel ({m.n_trees} trees, height {m.height}): {us:.2f} us/reading "
          f"({rows} readings, best of {repeats})")
    return us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, required=True, help="the NAB folder (data/, labels/)")
    parser.add_argument("--shuttle-seeds", type=int, default=0,
                        help="also score Shuttle with forest seeds 1..N (spread over structures)")
    args = parser.parse_args()
    nab(args.nab)
    kernel_cost(args.nab)
    shuttle(args.shuttle_seeds)


if __name__ == "__main__":
    main()
