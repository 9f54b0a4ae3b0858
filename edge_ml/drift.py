"""Per-stream drift detection on a cheap summary of the values (river's Page-Hinkley).

What is watched is each reading's residual against the stream's time-of-day profile,
measured before the reading is learned (``feature_update`` returns it): a daily
cycle is not a drift, a level that stays shifted is, until the profile has learned it.

Each stream's values are summarised first: the mean of every complete block of
``[model] drift_block`` scored readings (warm-up readings are skipped) is fed once to that
stream's two-sided Page-Hinkley test. Blocks are counted per stream across micro-batches, so
the block means do not depend on how readings were batched. Both run in one Numba kernel
(:func:`edge_ml.kernels.page_hinkley.drift_batch`), which repeats river's ``PageHinkley.update``
operation for operation (tests compare the two): river's class in Python cost ~25 us a block,
a sixth of replay time, and its import ~90 ms and ~10 MB in every process.

Scale: the first ``drift_min_blocks`` blocks after a (re)start only measure the stream's own
spread: the mean within-block variance, or the variance of the blocks' means if that is
larger (a stream that wanders slower than a block, such as a 10-minute sine read at 1 Hz, has
tight blocks whose means swing widely, and that swing is its normal behaviour). Later block
means are fed in units of that spread, so one ``drift_threshold``/``drift_delta`` fits every
stream whatever its unit. The variance of the block means keeps learning from each later block
once it is scored (an exponentially weighted variance over about 100 blocks,
``kernels.page_hinkley.SPREAD_ALPHA``): the reference blocks come from a young profile, whose
residuals swing more than a grown one's (docs/benchmarks.md, round 12). (The anomaly level
was tried first: the z-scored features adapt within ~100 readings to a new level, so the
level of a held shift does not stay high and never showed the change.) A wander slower than
the reference itself (``drift_min_blocks`` blocks) is not seen by it: a slowly wandering
AR(1) stream is still reset now and then (docs/benchmarks.md, round 8).

Bound (defaults ``drift_block = 50``, ``drift_threshold = 5``, ``drift_delta = 0.5``,
``drift_min_blocks = 10``): a step of ``k`` sd (of that scale) in the block mean adds about
``k - 0.5`` per block, so it is detected after ``ceil(5 / (k - 0.5))`` blocks: one block (50
readings) for a step of 6 sd or more, 10 blocks for 1 sd; smaller steps are not drift. A
stream must have scored ``2 * drift_min_blocks`` blocks (1,000 readings) since its start or
last reset before a drift can be reported.

Reaction (``[model] drift_reaction``):

- ``"reset"`` (default): the stream's model, calibration and feature scaler start afresh
  (``detector.reset(slot)`` and the feature slot reset; how the stream's slot visits begin,
  the time of its first reading and the tails of its seasonal and persistent z-scores are
  kept, ``model.detector.KEPT_THROUGH_DRIFT``) from the reading after the one that completed
  the drifting block. The stream warms up again (no alerts; an open alert resolves after
  ``debounce`` readings), for the early share of the warm-up once it has run for the
  warm-up's time span (100 readings by default), and learns the new regime as normal. The
  drift state restarts too (new reference spread from the new regime), so one change gives
  one drift event.
- ``"none"``: the event is recorded and published; the model keeps adapting on its own.

The reaction applies exactly there whatever the batching: the pipeline cuts each micro-batch
after every reading that could complete a block (:meth:`DriftMonitor.piece_end`), so a drift
is always found at the last reading of a piece. A replay chunk of 8,192 readings gives the
daemon's levels, alerts and drift events; before, the reset waited for the end of the batch
and the batch's later blocks went untested (docs/benchmarks.md, round 11).

State is per-slot arrays (block accumulators, reference spread, Page-Hinkley sums) so it is
exported into checkpoints like every other stage. ``ref_mean`` and ``ref_mean_m2`` came with
checkpoint schema 9: an older checkpoint's streams get zeros (their scale is the within-block
spread alone, as it was, until their next reset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_ml.kernels.page_hinkley import drift_batch, next_block_end
from edge_ml.records import DriftEvent
from edge_ml.slots import SlotArrays, SlotField

DETECTOR_NAME = "PageHinkley"
# Floor on a stream's reference spread, so a constant stream does not divide by zero.
MIN_SCALE = 1e-9
# river's PageHinkley default forgetting factor (the expression river uses).
PH_ALPHA = 1 - 0.0001


@dataclass(frozen=True)
class DriftParams:
    """The ``[model] drift_*`` settings."""

    block: int = 50
    threshold: float = 5.0
    delta: float = 0.5
    min_blocks: int = 10
    reaction: str = "reset"


class DriftMonitor:
    """Block means of each stream's values into one Page-Hinkley test per stream.

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
                SlotField("ref_mean", np.float64),
                SlotField("ref_mean_m2", np.float64),
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

    def grow(self, capacity: int) -> None:
        self.state.grow(capacity)

    def reset(self, slot: int) -> None:
        self.state.reset(slot)

    def piece_end(self, slots: np.ndarray, start: int) -> int:
        """Where the piece of a batch from ``start`` must end for a drift's reaction to apply
        from the next reading: after the first reading that could complete a block."""
        return int(next_block_end(slots, start, self.state.block_n, int(self.params.block)))

    def update(self, slots: np.ndarray, levels: np.ndarray, warming: np.ndarray,
               ts: np.ndarray, names: list[str]) -> list[tuple[int, DriftEvent]]:
        """Fold a micro-batch in; the drifts found, as ``(slot, event)`` in block order.

        A stream that drifts has its drift state reset (and the rest of its blocks in this
        batch ignored); the caller applies the model reaction.
        """
        st, p = self.state, self.params
        found, means, scales, running, block_slots, last_ts = drift_batch(
            slots, levels, warming, ts, st.block_sum, st.block_sumsq, st.block_n, st.ref_var,
            st.ref_mean, st.ref_mean_m2, st.ref_blocks, st.ph_n, st.ph_mean, st.ph_inc,
            st.ph_min_inc, st.ph_dec, st.ph_max_dec, int(p.block), int(p.min_blocks),
            float(p.delta), float(p.threshold), PH_ALPHA, MIN_SCALE,
        )
        if not len(found):
            return []
        events: list[tuple[int, DriftEvent]] = []
        for k, mean, scale, run in zip(found.tolist(), means.tolist(), scales.tolist(),
                                       running.tolist(), strict=True):
            slot = int(block_slots[k])
            self.reset(slot)
            events.append((slot, DriftEvent(
                names[slot], float(last_ts[k]), DETECTOR_NAME,
                f"block mean {mean:.6g} over {p.block} readings = {mean / scale:.2f} sd "
                f"(running mean {run:.2f} sd)",
                p.reaction,
            )))
        return events
