"""Detection quality of the shipped defaults: NAB subset (three profiles) and river's Shuttle.

NAB: every CSV under ``--nab DIR/data`` is replayed through the product's own pipeline
(``edge_ml.pipeline.replay_tree``, the code behind ``edge-ml replay``) with the default config,
then scored by ``edge_ml.evaluate`` against ``DIR/labels/combined_windows.json``: the score at
the best single corpus threshold (NAB's protocol) and the score of the pipeline's own alert
decisions (no threshold tuned on the answers).

Shuttle: the nine features are scaled like the pipeline scales its features (z-score against a
running mean and variance, then ``0.5 + 0.5 tanh(z / 6)``) and scored by the Numba
Half-Space-Trees engine at the default parameters, prequentially; ROC-AUC of the raw score.

Usage: python benchmarks/detection_quality.py --nab ../shared/data/nab
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from river import datasets, metrics

from edge_ml.config import parse_config
from edge_ml.evaluate import evaluate, format_report
from edge_ml.kernels.window import ALPHA_SD, SQUASH
from edge_ml.model.forest import ForestState, TreeStructure
from edge_ml.pipeline import replay_tree


def nab(nab_dir: Path) -> None:
    config = parse_config({})
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        results = replay_tree(config, nab_dir / "data", Path(out))
        rows = sum(r.rows for _, r in results)
        print(f"replayed {len(results)} files, {rows} rows in {time.perf_counter() - started:.1f}s")
        report = evaluate(out, nab_dir / "labels" / "combined_windows.json")
    print(format_report(report))


def shuttle() -> float:
    config = parse_config({}).model
    structure = TreeStructure.from_river(9, config.n_trees, config.height, config.seed)
    forest = ForestState(structure, config.window_size, capacity=1)
    mean = np.zeros(9)
    var = np.zeros(9)
    auc = metrics.ROCAUC()
    slot = np.zeros(1, dtype=np.int64)
    for n, (x, y) in enumerate(datasets.Shuttle()):
        v = np.array([x[f"f{i}"] for i in range(1, 10)], dtype=np.float64)
        sd = np.sqrt(var)
        z = np.where(sd > 0, (v - mean) / np.where(sd > 0, sd, 1.0), 0.0) if n > 1 else 0 * v
        features = 0.5 + 0.5 * np.tanh(z / SQUASH)
        score = float(forest.score_learn(slot, features[None, :])[0])
        auc.update(bool(y), score)
        a = max(ALPHA_SD, 1.0 / (n + 1.0))
        delta = v - mean
        mean += a * delta
        var = (1.0 - a) * (var + a * delta * delta)
    value = auc.get()
    print(f"Shuttle ROC-AUC (Numba HST, {config.n_trees} trees, height {config.height}, "
          f"window {config.window_size}): {value:.4f}")
    return value if math.isfinite(value) else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, required=True, help="the NAB folder (data/, labels/)")
    args = parser.parse_args()
    nab(args.nab)
    shuttle()


if __name__ == "__main__":
    main()
