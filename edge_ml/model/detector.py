"""The model stage: scaled features in, calibrated anomaly levels out, learning as it goes.

Two backends behind one small interface (:class:`Detector`):

- ``numba`` (default): the fused kernel :func:`edge_ml.kernels.fused.detect_batch` over a
  shared Half-Space-Trees structure with per-stream masses (:mod:`edge_ml.model.forest`).
- ``river``: one river ``HalfSpaceTrees`` per stream, scored then learned reading by reading.
  Slow; kept as the reference the Numba engine is checked against.

Both are prequential: each reading is scored before it is learned.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge_ml.kernels.calibration import (
    CAL_SHORT,
    N_PERSIST,
    N_SHOULDER,
    N_TAIL,
    WARM_SPAN_S,
    calibrate,
    seasonal_views,
    shoulder_scale,
    tail_learn,
    warm_early,
    warming_up,
)
from edge_ml.kernels.discrete import N_DISCRETE, discrete_rescale
from edge_ml.kernels.explain import expected_range, level_view
from edge_ml.kernels.fused import NOT_LEARNED_LEVEL, detect_batch, young_visit_slot_before
from edge_ml.kernels.heap_deltas import arrays_with_deltas, arrays_with_masses
from edge_ml.kernels.runs import N_RUNS, run_level
from edge_ml.kernels.visits import N_VISIT, visit_rescale
from edge_ml.kernels.window import Z_RESIDUAL, season_bin
from edge_ml.model.forest import ForestState, TreeStructure
from edge_ml.slots import SlotArrays, SlotField, SnapshotPool, snapshot


@dataclass(frozen=True)
class ModelParams:
    """What a model is: everything a checkpoint must match to be loaded into it (but for
    ``SCORING_ONLY``)."""

    backend: str
    n_trees: int
    height: int
    window_size: int
    seed: int
    warmup: int
    paper_score: bool
    n_features: int
    # How far a stream's shoulder may lower its z-scores (1: not at all; ``[model]
    # heavy_tail_floor``).
    heavy_tail_floor: float = 1.0


# How the model scores, not what it is: every stream learns its shoulder whatever the floor, so
# a checkpoint loads under any floor (and one written before the floor existed loads at all).
SCORING_ONLY = ("heavy_tail_floor",)


@dataclass(frozen=True)
class Detection:
    """Per-reading outputs of the model stage for one micro-batch."""

    levels: np.ndarray  # float64[B], anomaly level in [0, 1]; 0 while warming up
    raw: np.ndarray  # float64[B], the HST score before calibration
    warming: np.ndarray  # uint8[B], 1 while the stream is warming up
    residual: np.ndarray  # float64[B], value minus its time-of-day profile, before learning
    # Why (edge_ml.kernels.explain): the view code that gave each level, and the stream's usual
    # range [low, high] at that time of day (NaN while its profile slot is too young).
    view: np.ndarray  # int8[B]
    expected: np.ndarray  # float64[B, 2]


class FeatureSource(Protocol):
    """What the model needs from the feature stage (``edge_ml.features.FeatureState``)."""

    period_s: float
    bins: int
    arrays: Any

    def kernel_args(self) -> tuple[np.ndarray, ...]: ...
    def update(self, slots: np.ndarray, values: np.ndarray, ts: np.ndarray,
               first_ts: np.ndarray, age: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class Detector(Protocol):
    params: ModelParams
    state: SlotArrays  # per-stream calibration state (_calibration_arrays)

    def grow(self, capacity: int) -> None: ...
    def process(
        self, features: FeatureSource, slots: np.ndarray, values: np.ndarray, ts: np.ndarray
    ) -> Detection: ...
    def reset(self, slot: int, keep: Collection[str] = ()) -> None: ...
    def export(self, used: int, pool: SnapshotPool | None = None) -> dict[str, np.ndarray]: ...
    def restore(self, arrays: dict[str, np.ndarray], absent_ok: Collection[str] = ()) -> None:
        ...


# What a drift reset keeps of a stream's calibration state: how its slot visits begin
# (kernels.visits) is the shape of its wander, which a new level does not change. Relearned
# after each reset, it gave a wandering AR(1) stream back most of the false alerts the visits
# had removed (docs/benchmarks.md, round 11). The time of its first reading: a stream that
# has run for days is not new, so its warm-up after a reset is the shorter one of a stream
# past the warm-up's time span (kernels.calibration.warming_up: 100 readings, not 300; NAB
# artificialWithAnomaly +1.8, realKnownCause +0.5, suite +1.2, realAWSCloudwatch -0.1). And
# the tails of its seasonal and persistent z-scores: how often the stream's own extremes come,
# in units of its own spread, is the shape of its noise, not its level (realAWSCloudwatch
# +0.8, artificialWithAnomaly +0.4; docs/benchmarks.md, round 12). The HST view's tail
# (``mtail``) restarts with the forest whose scores it describes. The reading's shoulder is
# the shape of its noise too. Its age in readings: with the time of its first reading, its
# sampling interval, which a fast stream's profile learns by (kernels.window.slot_alpha). And
# how its readings repeat (kernels.runs): a new level does not change how a sensor reports.
KEPT_THROUGH_DRIFT = ("visit", "first_ts", "age_readings", "tail", "ptail", "shoulder", "runs")


def _calibration_arrays(capacity: int) -> SlotArrays:
    return SlotArrays(
        [
            SlotField("cal_mean", np.float64),
            SlotField("cal_var", np.float64),
            SlotField("cal_n", np.int64),
            SlotField("short", np.float64, 0.0, (CAL_SHORT,)),
            SlotField("short_sum", np.float64),
            SlotField("persist", np.float64, 0.0, (N_PERSIST,)),
            SlotField("first_ts", np.float64, math.nan),  # time of the stream's first reading
            SlotField("age_readings", np.float64),  # readings since then
            SlotField("discrete", np.float64, 0.0, (N_DISCRETE,)),  # kernels.discrete
            SlotField("tail", np.float64, 0.0, (N_TAIL,)),  # the stream's own extremes
            SlotField("ptail", np.float64, 0.0, (N_TAIL,)),  # its persistent view's episodes
            SlotField("mtail", np.float64, 0.0, (N_TAIL,)),  # its HST view's episodes
            SlotField("visit", np.float64, 0.0, (N_VISIT,)),  # kernels.visits
            SlotField("shoulder", np.float64, 0.0, (N_SHOULDER,)),  # its moderate extremes
            SlotField("runs", np.float64, 0.0, (N_RUNS,)),  # its runs of equal readings
        ],
        capacity,
    )


class NumbaDetector:
    """Half-Space Trees in Numba, one fused kernel call per micro-batch."""

    def __init__(self, params: ModelParams, capacity: int = 16) -> None:
        self.params = params
        self.structure = TreeStructure.from_river(
            params.n_features, params.n_trees, params.height, params.seed
        )
        self.forest = ForestState(self.structure, params.window_size, capacity)
        self.state = _calibration_arrays(capacity)

    def grow(self, capacity: int) -> None:
        self.forest.grow(capacity)
        self.state.grow(capacity)

    def process(self, features: FeatureSource, slots: np.ndarray, values: np.ndarray,
                ts: np.ndarray) -> Detection:
        f, s, p = self.forest, self.state, self.params
        levels, raw, warming, residual, view, expected = detect_batch(
            slots, values, ts, features.period_s,
            *features.kernel_args(),
            self.structure.split_feature, self.structure.split_threshold,
            f.mass, f.ref, f.count, f.first_window, p.height, p.window_size, p.paper_score,
            s.cal_mean, s.cal_var, s.cal_n, s.short, s.short_sum, s.persist, s.tail, s.ptail,
            s.mtail,
            s.first_ts, s.age_readings, p.warmup, warm_early(p.warmup), WARM_SPAN_S, s.discrete,
            s.visit, s.shoulder, p.heavy_tail_floor, s.runs,
        )
        return Detection(levels, raw, warming, residual, view, expected)

    def reset(self, slot: int, keep: Collection[str] = ()) -> None:
        """A fresh model and calibration for ``slot``, but for the state arrays in ``keep``."""
        self.forest.reset(slot)
        self.state.reset(slot, keep)

    def export(self, used: int, pool: SnapshotPool | None = None) -> dict[str, np.ndarray]:
        # Copy only the used slots: the forest is allocated by doubling, and copying every
        # allocated slot first doubled the checkpoint pause of the worker.
        arrays = {
            f"forest.{name}": snapshot(getattr(self.forest, name)[:used], pool, f"forest.{name}")
            for name in self.forest._ARRAY_NAMES
        }
        # Masses leave as deltas (edge_ml.kernels.heap_deltas): half the cells become zeros, and a
        # checkpoint of 1,000 streams shrinks from 2.4 to ~0.8 MB (issue 15).
        arrays_with_deltas(arrays, "forest.mass")
        arrays.update(self.state.export(used, pool, "detector."))
        return arrays

    def restore(self, arrays: dict[str, np.ndarray], absent_ok: Collection[str] = ()) -> None:
        arrays = arrays_with_masses(arrays, "forest.mass")  # schema 5 stores deltas
        forest = {
            k.removeprefix("forest."): v for k, v in arrays.items() if k.startswith("forest.")
        }
        used = len(forest.get("ref", ()))
        capacity = max(self.forest.capacity, used)
        restored = ForestState.restore(self.structure, self.params.window_size, forest)
        restored.grow(capacity)
        self.forest = restored
        self.state.restore({k: v for k, v in arrays.items() if not k.startswith("forest.")},
                           absent_ok)
        self.state.grow(capacity)


class RiverDetector:
    """One river ``HalfSpaceTrees`` per stream: the slow reference backend."""

    def __init__(self, params: ModelParams, capacity: int = 16) -> None:
        self.params = params
        # Imported here: river.anomaly loads SciPy (~70 MB), which the numba backend never needs.
        from river.anomaly import HalfSpaceTrees

        self._hst = HalfSpaceTrees
        self.models: list[Any] = []
        self.state = _calibration_arrays(capacity)

    def _model(self, slot: int) -> Any:
        while len(self.models) <= slot:
            p = self.params
            self.models.append(
                self._hst(
                    n_trees=p.n_trees, height=p.height, window_size=p.window_size, seed=p.seed
                )
            )
        return self.models[slot]

    def grow(self, capacity: int) -> None:
        self.state.grow(capacity)

    def process(self, features: FeatureSource, slots: np.ndarray, values: np.ndarray,
                ts: np.ndarray) -> Detection:
        if self.params.paper_score:
            raise ValueError("the river backend has no paper_score variant")
        n = len(slots)
        levels = np.zeros(n, dtype=np.float64)
        raw = np.zeros(n, dtype=np.float64)
        warming = np.zeros(n, dtype=np.uint8)
        residual = np.zeros(n, dtype=np.float64)
        view = np.zeros(n, dtype=np.int8)
        expected = np.empty((n, 2), dtype=np.float64)
        s = self.state
        f = features.arrays
        # The same per-reading rules as the fused kernel, one reading at a time in Python: this
        # backend is the slow reference, not a hot path.
        for i, slot in enumerate(slots.tolist()):
            b = season_bin(ts[i], features.period_s, features.bins)
            t_first = ts[i] if math.isnan(s.first_ts[slot]) else s.first_ts[slot]
            before, z_before, res_before = young_visit_slot_before(
                s.visit, s.discrete, f.prof_mean, f.prof_mean_dev, f.prof_n, f.offset, f.mean,
                f.dev, slot, b, values[i], ts[i], features.period_s, t_first)
            Z, X, R = features.update(slots[i:i + 1], values[i:i + 1], ts[i:i + 1], s.first_ts,
                                      s.age_readings)
            residual[i] = R[0]
            Z[0, 0] = discrete_rescale(s.discrete, slot, values[i], Z[0, Z_RESIDUAL], Z[0, 0])
            Z[0, 0] = visit_rescale(s.visit, slot, b, Z[0, 0], f.prof_n[slot, b])
            if before and Z[0, 0] != 0.0 and abs(z_before) < abs(Z[0, 0]):
                Z[0, 0], Z[0, Z_RESIDUAL] = z_before, res_before
            expected_range(values[i], Z[0, Z_RESIDUAL], Z[0, 0], expected[i])
            model = self._model(slot)
            x = dict(enumerate(X[0].tolist()))
            raw[i] = model.score_one(x)
            warmup = self.params.warmup
            warm = warming_up(f.seen[slot], Z[0, 0], ts[i] - s.first_ts[slot], warmup,
                              warm_early(warmup), WARM_SPAN_S)
            season, unscaled, shift = seasonal_views(s.persist, s.tail, s.ptail, s.shoulder,
                                                     slot, Z[0, 0], warm,
                                                     self.params.heavy_tail_floor)
            run = run_level(s.runs, slot, values[i])
            level = max(calibrate(s.cal_mean, s.cal_var, s.cal_n, s.short, s.short_sum, s.mtail,
                                  slot, raw[i], season, Z[0, 3], self.params.window_size, warm),
                        run)
            view[i] = level_view(level, season, shift, Z[0, 3], run)
            # As the fused kernel: an anomalous reading is not learned, unless learning it
            # completes the window (the kernel cannot take a pivot back).
            pivots = model.counter + 1 == model.window_size
            if warm or level < NOT_LEARNED_LEVEL or pivots:
                model.learn_one(x)
            if warm:
                warming[i] = 1
            else:
                levels[i] = level
                tail_learn(s.tail, slot, max(level, unscaled), Z[0, 0])
        return Detection(levels, raw, warming, residual, view, expected)

    def reset(self, slot: int, keep: Collection[str] = ()) -> None:
        if slot < len(self.models):
            self.models[slot] = self._hst(
                n_trees=self.params.n_trees, height=self.params.height,
                window_size=self.params.window_size, seed=self.params.seed,
            )
        self.state.reset(slot, keep)

    def export(self, used: int, pool: SnapshotPool | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError("checkpoints need the numba backend")

    def restore(self, arrays: dict[str, np.ndarray], absent_ok: Collection[str] = ()) -> None:
        raise NotImplementedError("checkpoints need the numba backend")


# A stream whose shoulder alone would at least halve its z-scores reads as heavy-tailed: any
# ``heavy_tail_floor`` under 1 changes its levels (replay reports how many streams are).
HEAVY_TAIL_SCALE = 0.5


def heavy_tailed(state: SlotArrays, used: int) -> np.ndarray:
    """Which of the first ``used`` streams read as heavy-tailed by their shoulder."""
    shoulder = state.shoulder
    return np.array([shoulder_scale(shoulder[i], 0.0) <= HEAVY_TAIL_SCALE for i in range(used)],
                    dtype=bool)


def make_detector(params: ModelParams, capacity: int = 16) -> Detector:
    """The detector for ``params.backend``."""
    if params.backend == "river":
        return RiverDetector(params, capacity)
    return NumbaDetector(params, capacity)


def describe(params: ModelParams) -> dict[str, Any]:
    """What a checkpoint of this model records, and must match to be loaded into it."""
    return {k: getattr(params, k) for k in ModelParams.__dataclass_fields__
            if k not in SCORING_ONLY}
