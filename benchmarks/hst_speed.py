"""River's HalfSpaceTrees vs the Numba engine: time per reading, agreement, memory, JIT cache.

Run ``.venv/bin/python benchmarks/hst_speed.py`` (``--quick`` for a < 1 minute smoke run).
Both sides see the same readings (4 features in [0, 1]: a drifting cluster, 2 % outliers,
3 % NaN gaps that river sees as missing keys) and are timed in CPU seconds of this process
(``time.process_time``), so other work on a shared machine inflates neither much. Per-reading
times include the window pivots (every 250 readings per stream). The engine is fed in
micro-batches of 256 readings, as the daemon's are: :func:`hst_batch` below runs the product's
kernel ``edge_ml.kernels.hst.hst_step_into`` over each, the loop the daemon's fused kernel
(``edge_ml.kernels.fused.detect_batch``) runs without its features and calibration.

Last line: ``speedup_defaults=<x> speedup_paper=<y> max_abs_diff=<d> bytes_per_stream=<b>``,
where the speedups are river / engine per reading for one stream at (10, 8, 250) and at the
paper's (25, 15, 250) configuration (Tan et al. 2011), ``max_abs_diff`` the largest score
difference over every reading both scored, ``bytes_per_stream`` the engine's state at defaults.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np
from numba import njit
from river.anomaly import HalfSpaceTrees

from edge_ml.kernels.hst import hst_step_into
from edge_ml.model.forest import ForestState, TreeStructure

N_FEATURES = 4
WINDOW = 250
BATCH = 256  # readings per hst_batch call, a daemon micro-batch
SEED = 42


# Not cached: Numba keys a cache on this file alone, and a cached loop would go on running an
# older hst_step_into after the kernel changed (see edge_ml.kernels).
@njit
def hst_batch(split_feature, split_threshold, mass, ref, count, first_window, slots, X, height,
              window_size, paper_score):
    """Score then learn each reading of a micro-batch, in arrival order; one scratch for all."""
    out = np.empty(slots.shape[0], dtype=np.float64)
    walk = np.empty((height + 2, split_feature.shape[0]), dtype=np.int64)
    for i in range(slots.shape[0]):
        out[i] = hst_step_into(split_feature, split_threshold, mass, ref, count, first_window,
                               slots[i], X[i], height, window_size, paper_score, walk)
    return out


def score_learn(state: ForestState, slots: np.ndarray, X: np.ndarray) -> np.ndarray:
    """River's scores of ``X`` on ``state``, learning each reading after scoring it."""
    s = state.structure
    return hst_batch(s.split_feature, s.split_threshold, state.mass, state.ref, state.count,
                     state.first_window, np.ascontiguousarray(slots, dtype=np.int64),
                     np.ascontiguousarray(X, dtype=np.float64), s.height, state.window_size,
                     False)


def make_readings(n: int, seed: int) -> np.ndarray:
    """Sensor-like readings in [0, 1] with NaN gaps; the first row is complete.

    Parameters
    ----------
    n
        Number of readings.
    seed
        Random seed.

    Returns
    -------
    numpy.ndarray
        ``float64[n, N_FEATURES]``.
    """
    rng = np.random.default_rng(seed)
    centre = 0.3 + 0.4 * np.sin(np.linspace(0, 40, n))[:, None]
    X = np.clip(centre + 0.08 * rng.standard_normal((n, N_FEATURES)), 0.0, 1.0)
    outliers = rng.random(n) < 0.02
    X[outliers] = rng.random((int(outliers.sum()), N_FEATURES))
    X[rng.random(X.shape) < 0.03] = np.nan
    X[0] = 0.5
    return X


def as_dicts(X: np.ndarray) -> list[dict[int, float]]:
    """River's view of readings: NaN is a missing key."""
    return [{i: float(v) for i, v in enumerate(x) if not np.isnan(v)} for x in X]


def river_run(
    n_trees: int, height: int, streams: list[np.ndarray]
) -> tuple[list[np.ndarray], float, int]:
    """Feed each stream's readings to its own river model, interleaved round-robin.

    Returns
    -------
    tuple
        Scores per stream, CPU seconds per reading (model building excluded), readings.
    """
    models = [HalfSpaceTrees(n_trees, height, WINDOW, seed=SEED) for _ in streams]
    dicts = [as_dicts(X) for X in streams]
    for model, d in zip(models, dicts, strict=True):  # build the trees outside the timing
        model.learn_one(d[0])
    scores = [np.empty(len(X) - 1) for X in streams]
    n = len(streams[0]) - 1
    start = time.process_time()
    for i in range(n):
        for s, model in enumerate(models):
            x = dicts[s][i + 1]
            scores[s][i] = model.score_one(x)
            model.learn_one(x)
    elapsed = time.process_time() - start
    return scores, elapsed / (n * len(streams)), n * len(streams)


@functools.cache
def structure_for(n_trees: int, height: int) -> TreeStructure:
    """River's trees for (n_trees, height), built once (about 11 s at height 15)."""
    return TreeStructure.from_river(N_FEATURES, n_trees, height, SEED)


def engine_run(
    n_trees: int, height: int, streams: list[np.ndarray], repeats: int = 3
) -> tuple[list[np.ndarray], float]:
    """Feed the same interleaving to the engine (first reading learned untimed, as river's).

    Returns
    -------
    tuple
        Scores per stream (after the first reading) and the best CPU seconds per reading.
    """
    structure = structure_for(n_trees, height)
    n_streams, n = len(streams), len(streams[0])
    X = np.stack(streams, axis=1).reshape(n * n_streams, N_FEATURES)
    slots = np.tile(np.arange(n_streams, dtype=np.int64), n)
    warm = ForestState(structure, WINDOW, capacity=1)  # compile (or load) outside the timing
    score_learn(warm, slots[:1] * 0, X[:1])
    best = np.inf
    out = np.empty(len(X))
    for _ in range(repeats):
        state = ForestState(structure, WINDOW, capacity=n_streams)
        out[:n_streams] = score_learn(state, slots[:n_streams], X[:n_streams])
        start = time.process_time()
        for a in range(n_streams, len(X), BATCH):
            out[a : a + BATCH] = score_learn(state, slots[a : a + BATCH], X[a : a + BATCH])
        best = min(best, time.process_time() - start)
    per_stream = out.reshape(n, n_streams).T
    return [per_stream[s, 1:] for s in range(n_streams)], best / (len(X) - n_streams)


def river_model_bytes(n_trees: int, height: int) -> tuple[int, str]:
    """Memory of one river model after its first learn_one (tracemalloc, or RSS growth)."""
    x = {i: 0.5 for i in range(N_FEATURES)}
    if height <= 10:
        tracemalloc.start()
        model = HalfSpaceTrees(n_trees, height, WINDOW, seed=SEED)
        model.learn_one(x)
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return size, "tracemalloc"
    # Too big for tracemalloc: peak-RSS growth of a fresh process building one model. The peak
    # is the process's VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent
    # (the spawning benchmark itself, GBs after the 1,000-stream rows), which hid the growth.
    code = (
        "import re; from river.anomaly import HalfSpaceTrees as H\n"
        "def hwm():\n"
        "    with open('/proc/self/status') as f:\n"
        "        return int(re.search(r'VmHWM:\\s+(\\d+)', f.read()).group(1))\n"
        "b = hwm()\n"
        f"m = H({n_trees}, {height}, {WINDOW}, seed={SEED}); m.learn_one({x!r})\n"
        "print(hwm() - b)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout) * 1024, "peak-RSS growth of a fresh process"


CACHE_PROBE = """
import time
t0 = time.perf_counter()
import numpy as np
from edge_ml.kernels.hst import hst_step_into
from edge_ml.model.forest import ForestState, TreeStructure
t1 = time.perf_counter()
state = ForestState(TreeStructure.from_river(4, 10, 8, 0), 250, capacity=2)
s = state.structure
walk = np.empty((s.height + 2, s.n_trees), dtype=np.int64)
hst_step_into(s.split_feature, s.split_threshold, state.mass, state.ref, state.count,
              state.first_window, 0, np.full(4, 0.5), s.height, 250, False, walk)
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""


def jit_cache_probe() -> list[tuple[float, float]]:
    """Import time and first-call time of two fresh processes sharing an empty Numba cache."""
    runs = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", CACHE_PROBE],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            imp, first = done.stdout.split()
            runs.append((float(imp), float(first)))
    return runs


def main() -> None:
    """Run the measurements and print the table and the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    args = parser.parse_args()
    quick = args.quick

    # (n_trees, height, streams, river readings/stream, engine readings/stream)
    plan = [
        (10, 8, 1, 2_000 if quick else 20_000, 50_000 if quick else 200_000),
        (10, 8, 1000, 0 if quick else 300, 100 if quick else 500),
        (25, 15, 1, 750 if quick else 3_000, 5_000 if quick else 50_000),
        (25, 15, 20 if quick else 1000, 0, 300),
    ]
    if quick:
        plan[1] = (10, 8, 50, 260, 1000)
    rows = []
    max_diff = 0.0
    ratios: dict[tuple[int, int], float] = {}
    for n_trees, height, n_streams, n_river, n_engine in plan:
        streams = [make_readings(n_engine + 1, 1000 * s + height) for s in range(n_streams)]
        # One repeat when the state is large (1000 streams at (25, 15) is ~3.3 GB virtual).
        repeats = 3 if n_streams * n_trees * 2 ** (height + 2) < 10**8 else 1
        _, t_engine = engine_run(n_trees, height, streams, repeats)
        river_note = "-"
        t_river = np.nan
        if n_river:
            scores, t_river, _ = river_run(n_trees, height, [X[: n_river + 1] for X in streams])
            ours, _ = engine_run(n_trees, height, [X[: n_river + 1] for X in streams], 1)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(scores, ours, strict=True))
            max_diff = max(max_diff, diff)
            river_note = f"{n_river * n_streams:,} readings, max |diff| {diff:.1e}"
            if n_streams == 1:
                ratios[(n_trees, height)] = t_river / t_engine
        elif n_trees == 25:
            river_note = "not run: see 1-stream river row (one model ~GBs to build)"
        rows.append((n_trees, height, n_streams, t_river, t_engine, river_note))
        print(
            f"({n_trees},{height},{WINDOW}) streams={n_streams}: river "
            f"{t_river * 1e6:.2f} us, engine {t_engine * 1e6:.3f} us, "
            f"x{t_river / t_engine:.0f}  [{river_note}]",
            flush=True,
        )

    defaults = ForestState(structure_for(10, 8), WINDOW)
    paper = ForestState(structure_for(25, 15), WINDOW)
    river_defaults, how_defaults = river_model_bytes(10, 8)
    river_paper, how_paper = (0, "skipped in --quick") if quick else river_model_bytes(25, 15)
    cache_runs = jit_cache_probe()

    print()
    print("| config (T, h, window) | streams | river us/reading | engine us/reading | speedup |")
    print("| --- | --- | --- | --- | --- |")
    for n_trees, height, n_streams, t_river, t_engine, _ in rows:
        river_cell = "n/a" if np.isnan(t_river) else f"{t_river * 1e6:.2f}"
        speed = "n/a" if np.isnan(t_river) else f"{t_river / t_engine:.0f}x"
        if np.isnan(t_river) and (n_trees, height) in ratios:
            river_1 = next(r[3] for r in rows if r[:3] == (n_trees, height, 1))
            speed = f"~{river_1 / t_engine:.0f}x vs 1-stream river"
        print(
            f"| ({n_trees}, {height}, {WINDOW}) | {n_streams:,} | {river_cell} | "
            f"{t_engine * 1e6:.3f} | {speed} |"
        )
    print()
    print(
        f"state per stream: engine {defaults.bytes_per_stream:,} B at (10, 8, 250), "
        f"{paper.bytes_per_stream:,} B at (25, 15, 250) ({defaults.mass.dtype} masses); "
        "river model "
        f"{river_defaults / 1e6:.2f} MB at (10, 8) ({how_defaults}), "
        + (
            f"{river_paper / 1e6:.0f} MB at (25, 15) ({how_paper})"
            if river_paper
            else f"(25, 15) {how_paper}"
        )
    )
    print(
        "JIT cache (fresh NUMBA_CACHE_DIR, two processes): import s / first call s = "
        + ", ".join(f"{imp:.2f} / {first:.2f}" for imp, first in cache_runs)
    )
    print(
        f"speedup_defaults={ratios[(10, 8)]:.0f} speedup_paper={ratios[(25, 15)]:.0f} "
        f"max_abs_diff={max_diff:.1e} bytes_per_stream={defaults.bytes_per_stream}"
    )


if __name__ == "__main__":
    main()
