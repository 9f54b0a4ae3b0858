"""Per-stream drift detection on a cheap summary of the values (river's Page-Hinkley).

What is watched is each reading's residual against the stream's time-of-day profile,
measured before the reading is learned (``profile_residual`` in the fused kernel): a daily
cycle is not a drift, a level that stays shifted is, until the profile has learned it.

Running a Python detector on every reading would cost more than the whole Numba hot path, so
each stream's values are summarised first, with NumPy per micro-batch: the mean of every
complete block of ``[model] drift_block`` scored readings (warm-up readings are skipped) is fed
once to that stream's river ``PageHinkley`` (both directions). Blocks are counted per stream
across micro-batches, so the block means do not depend on how readings were batched.

Scale: the first ``drift_min_blocks`` blocks after a (re)start only measure the stream's own
spread (mean within-block variance); later block means are fed in units of that spread, so one
``drift_threshold``/``drift_delta`` fits every stream whatever its unit. (The anomaly level was
tried first: the z-scored features adapt within ~100 readings to a new level, so the level of
a held shift does not stay high and never showed the change.)

Bound (defaults ``drift_block = 50``, ``drift_threshold = 5``, ``drift_delta = 0.5``,
``drift_min_blocks = 10``): a step of ``k`` sd in the block mean adds about ``k - 0.5`` per
block, so it is detected after ``ceil(5 / (k - 0.5))`` blocks: one block (50 readings) for a
step of 6 sd or more, 10 blocks for 1 sd; smaller steps are not drift. A stream must have
scored ``2 * drift_min_blocks`` blocks (1,000 readings) since its start or last reset before a
drift can be reported.

Reaction (``[model] drift_reaction``):

- ``"reset"`` (default): the stream's model, calibration and feature scaler start afresh
  (``detector.reset(slot)`` and the feature slot reset) at the end of the micro-batch in which
  the drift was found. The stream warms up again (no alerts; an open alert resolves after
  ``debounce`` readings) and learns the new regime as normal, so alerting on a permanent change
  stops at most one micro-batch after the detection above. The drift state restarts too (new
  reference spread from the new regime), so one change gives one drift event.
- ``"none"``: the event is recorded and published; the model keeps adapting on its own.

State is per-slot arrays (block accumulators, reference spread, Page-Hinkley sums) so it is
exported into checkpoints like every other stage; the river object is rebuilt from them when a
block ends.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import river

from edge_ml.kernels.blocks import block_batch
from edge_ml.records import DriftEvent
from edge_ml.slots import SlotArrays, SlotField


def _load_page_hinkley() -> Any:
    """river's ``PageHinkley`` class, loaded from its module file.

    ``from river.drift import PageHinkley`` would run ``river/drift/__init__.py``, which imports
    every river drift detector and, through them, SciPy: about 67 MB of resident memory for one
    small class. The module itself needs only ``river.base`` and ``river.stats``. It is loaded
    under a private name, so a later ``import river.drift`` elsewhere is unaffected.
    """
    path = Path(river.__file__).parent / "drift" / "page_hinkley.py"
    spec = importlib.util.spec_from_file_location("edge_ml._river_page_hinkley", path)
    if spec is None or spec.loader is None:  # pragma: no cover - a broken river install
        raise ImportError(f"cannot load river's PageHinkley from {path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PageHinkley


PageHinkley = _load_page_hinkley()

DETECTOR_NAME = "PageHinkley"
# Floor on a stream's reference spread, so a constant stream does not divide by zero.
MIN_SCALE = 1e-9


@dataclass(frozen=True)
class DriftParams:
    """The ``[model] drift_*`` settings."""

    block: int = 50
    threshold: float = 5.0
    delta: float = 0.5
    min_blocks: int = 10
    reaction: str = "reset"


class DriftMonitor:
    """Block means of each stream's values into one river Page-Hinkley per stream.

    Parameters
    ----------
    params
        Block size, Page-Hinkley threshold/delta/min_instances and the reaction.
    capacity
        Initial number of slots.

    Examples
    --------
    >>> m = DriftMonitor(DriftParams(block=2, threshold=5.0, delta=0.5, min_blocks=2))
    >>> slots = np.zeros(16, dtype=np.int64)
    >>> values = np.array([0.0, 1.0] * 6 + [20.0, 21.0] * 2)
    >>> found = m.update(slots, values, np.zeros(16, np.uint8), np.arange(16.0), ["s"])
    >>> [(slot, event.stream, event.ts) for slot, event in found]
    [(0, 's', 13.0)]
    """

    def __init__(self, params: DriftParams, capacity: int = 16) -> None:
        self.params = params
        self.state = SlotArrays(
            [
                SlotField("block_sum", np.float64),
                SlotField("block_sumsq", np.float64),
                SlotField("ref_var", np.float64),
                SlotField("ref_blocks", np.int64),
                SlotField("block_n", np.int64),
                SlotField("ph_n", np.float64),
                SlotField("ph_mean", np.float64),
                SlotField("ph_inc", np.float64),
                SlotField("ph_min_inc", np.float64, math.inf),
                SlotField("ph_dec", np.float64),
                SlotField("ph_max_dec", np.float64, -1.0),
            ],
            capacity,
        )
        # River detectors by slot; the arrays above stay the truth (checkpoints export them).
        self._detectors: dict[int, Any] = {}

    def grow(self, capacity: int) -> None:
        self.state.grow(capacity)

    def reset(self, slot: int) -> None:
        self.state.reset(slot)
        self._detectors.pop(slot, None)

    def _detector(self, slot: int) -> PageHinkley:
        """The stream's river detector; rebuilt from the state arrays only when not cached
        (after a restart or a checkpoint restore), since building one costs ~40 us a block."""
        cached = self._detectors.get(slot)
        if cached is not None:
            return cached
        p, s = self.params, self.state
        ph = PageHinkley(min_instances=p.min_blocks, delta=p.delta, threshold=p.threshold,
                         mode="both")
        ph._x_mean.n = float(s.ph_n[slot])
        ph._x_mean._mean = float(s.ph_mean[slot])
        ph._sum_increase = float(s.ph_inc[slot])
        ph._min_increase = float(s.ph_min_inc[slot])
        ph._sum_decrease = float(s.ph_dec[slot])
        ph._max_decrease = float(s.ph_max_dec[slot])
        self._detectors[slot] = ph
        return ph

    def _feed(self, slot: int, mean: float) -> tuple[bool, float]:
        """Feed one block mean; (drift detected, the detector's running mean)."""
        ph = self._detector(slot)
        ph.update(mean)
        s = self.state
        s.ph_n[slot] = ph._x_mean.n
        s.ph_mean[slot] = ph._x_mean._mean
        s.ph_inc[slot] = ph._sum_increase
        s.ph_min_inc[slot] = ph._min_increase
        s.ph_dec[slot] = ph._sum_decrease
        s.ph_max_dec[slot] = ph._max_decrease
        return bool(ph.drift_detected), float(ph._x_mean.get())

    def update(self, slots: np.ndarray, levels: np.ndarray, warming: np.ndarray,
               ts: np.ndarray, names: list[str]) -> list[tuple[int, DriftEvent]]:
        """Fold a micro-batch in; the drifts found, as ``(slot, event)`` in block order.

        A stream that drifts has its drift state reset (and the rest of its blocks in this
        batch ignored); the caller applies the model reaction.
        """
        st = self.state
        size = self.params.block
        # Block sums in a Numba loop: the NumPy group-by this replaces cost ~100 us per call
        # whatever the batch size, which dominated small micro-batches.
        block_slots, sums, sumsqs, last_ts = block_batch(
            slots, levels, warming, ts, st.block_sum, st.block_sumsq, st.block_n, size
        )
        found: list[tuple[int, DriftEvent]] = []
        drifted: set[int] = set()
        for k, slot in enumerate(block_slots.tolist()):
            if slot in drifted:
                continue
            mean = float(sums[k]) / size
            var = max(float(sumsqs[k]) / size - mean * mean, 0.0)
            if st.ref_blocks[slot] < self.params.min_blocks:
                # The stream's own scale: mean within-block variance of its first blocks.
                st.ref_var[slot] += (var - st.ref_var[slot]) / (st.ref_blocks[slot] + 1)
                st.ref_blocks[slot] += 1
                continue
            scale = max(math.sqrt(st.ref_var[slot]), MIN_SCALE)
            detected, running = self._feed(slot, mean / scale)
            if detected:
                drifted.add(slot)
                self.reset(slot)
                found.append((slot, DriftEvent(
                    names[slot], float(last_ts[k]), DETECTOR_NAME,
                    f"block mean {mean:.6g} over {size} readings = {mean / scale:.2f} sd "
                    f"(running mean {running:.2f} sd)",
                    self.params.reaction,
                )))
        return found
