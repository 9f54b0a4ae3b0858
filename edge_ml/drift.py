"""Per-stream drift detection on a cheap summary of the anomaly level (river's Page-Hinkley).

Running a Python detector on every reading would cost more than the whole Numba hot path, so
each stream's anomaly levels are summarised first, with NumPy per micro-batch: the mean level of
every complete block of ``[model] drift_block`` scored readings (warm-up readings are skipped)
is fed once to that stream's river ``PageHinkley`` (mode ``"up"``: only a rise of the mean level
matters). Blocks are counted per stream across micro-batches, so the block means do not depend
on how readings were batched.

Why the level and not the value: the level is already normalised per stream (about uniform on
[0, 1], mean ~0.5, in a stable regime), so one threshold fits every stream whatever its unit.
A new regime (a level shift, a changed noise amplitude) keeps the level near 1 for as long as
the model has not adapted; that is what the test detects.

Bound (defaults ``drift_block = 50``, ``drift_threshold = 2.0``, ``drift_delta = 0.05``,
``drift_min_blocks = 10``): with the level near 1 after a change against a running mean near
0.5, each block adds about ``1 - 0.5 - delta = 0.45`` to the Page-Hinkley sum, so the change is
detected after ``ceil(threshold / 0.45) = 5`` blocks, i.e. **about 250 readings** of the stream
(longer if the mean level rises less). A stream must have scored ``drift_min_blocks`` blocks
(500 readings) since its start or its last reset before a drift can be reported. Anomalies
shorter than ~4 blocks (200 readings) at full level do not count as drift.

Reaction (``[model] drift_reaction``):

- ``"reset"`` (default): the stream's model, calibration and feature scaler start afresh
  (``detector.reset(slot)`` and the feature slot reset) at the end of the micro-batch in which
  the drift was found. The stream warms up again (no alerts; an open alert resolves after
  ``debounce`` readings) and learns the new regime as normal. Alerting on a permanent change
  thus stops after about 250 readings plus ``debounce``; it raises at most one drift event
  (the detector is also reset and warm-up readings are not fed to it).
- ``"none"``: the event is recorded and published; the model keeps adapting on its own.

State is per-slot arrays (block accumulators and the Page-Hinkley sums) so it is exported into
checkpoints like every other stage; the river object is rebuilt from them when a block ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from river.drift import PageHinkley

from edge_ml.records import DriftEvent
from edge_ml.slots import SlotArrays, SlotField

DETECTOR_NAME = "PageHinkley"


@dataclass(frozen=True)
class DriftParams:
    """The ``[model] drift_*`` settings."""

    block: int = 50
    threshold: float = 2.0
    delta: float = 0.05
    min_blocks: int = 10
    reaction: str = "reset"


class DriftMonitor:
    """Block means of each stream's anomaly level into one river Page-Hinkley per stream.

    Parameters
    ----------
    params
        Block size, Page-Hinkley threshold/delta/min_instances and the reaction.
    capacity
        Initial number of slots.

    Examples
    --------
    >>> m = DriftMonitor(DriftParams(block=2, threshold=0.5, delta=0.0, min_blocks=2))
    >>> slots = np.zeros(12, dtype=np.int64)
    >>> levels = np.array([0.5] * 8 + [1.0] * 4)
    >>> found = m.update(slots, levels, np.zeros(12, np.uint8), np.arange(12.0), ["s"])
    >>> [(slot, event.stream, event.ts) for slot, event in found]
    [(0, 's', 11.0)]
    """

    def __init__(self, params: DriftParams, capacity: int = 16) -> None:
        self.params = params
        self.state = SlotArrays(
            [
                SlotField("block_sum", np.float64),
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

    def grow(self, capacity: int) -> None:
        self.state.grow(capacity)

    def reset(self, slot: int) -> None:
        self.state.reset(slot)

    def _detector(self, slot: int) -> PageHinkley:
        p, s = self.params, self.state
        ph = PageHinkley(min_instances=p.min_blocks, delta=p.delta, threshold=p.threshold,
                         mode="up")
        ph._x_mean.n = float(s.ph_n[slot])
        ph._x_mean._mean = float(s.ph_mean[slot])
        ph._sum_increase = float(s.ph_inc[slot])
        ph._min_increase = float(s.ph_min_inc[slot])
        ph._sum_decrease = float(s.ph_dec[slot])
        ph._max_decrease = float(s.ph_max_dec[slot])
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
        keep = np.flatnonzero(warming == 0)
        if not len(keep):
            return []
        order = keep[np.argsort(slots[keep], kind="stable")]
        s, lv, t = slots[order], levels[order], ts[order]
        n = len(s)
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
        st = self.state
        size = self.params.block
        ordinal = st.block_n[s] + (np.arange(n) - starts[group])
        block = ordinal // size
        # Sorted by (slot, block), so keys rise along the array.
        key = group.astype(np.int64) * (int(block.max()) + 1) + block
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        sums = np.bincount(inverse, weights=lv)
        counts = np.bincount(inverse).astype(np.int64)
        key_slot, key_block = s[first], block[first]
        carried = key_block == 0
        sums[carried] += st.block_sum[key_slot[carried]]
        counts[carried] += st.block_n[key_slot[carried]]
        last_ts = t[np.r_[first[1:], n] - 1]
        st.block_sum[s[starts]] = 0.0
        st.block_n[s[starts]] = 0
        partial = counts < size
        st.block_sum[key_slot[partial]] = sums[partial]
        st.block_n[key_slot[partial]] = counts[partial]
        found: list[tuple[int, DriftEvent]] = []
        drifted: set[int] = set()
        for k in np.flatnonzero(~partial).tolist():
            slot = int(key_slot[k])
            if slot in drifted:
                continue
            mean = float(sums[k]) / size
            detected, running = self._feed(slot, mean)
            if detected:
                drifted.add(slot)
                self.state.reset(slot)
                found.append((slot, DriftEvent(
                    names[slot], float(last_ts[k]), DETECTOR_NAME,
                    f"mean level {mean:.3f} over {size} readings "
                    f"(running mean {running:.3f})",
                    self.params.reaction,
                )))
        return found
