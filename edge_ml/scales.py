"""Each stream's value scale, before the features: raw units or their logarithm (state only).

The choice and the arithmetic live in :mod:`edge_ml.kernels.scale`; this module owns the
arrays. Alerts, statistics and the devices' joint view keep the raw values; the features and
the model see the scaled ones, and a usual range comes back in raw units.
"""

from __future__ import annotations

import numpy as np

from edge_ml.kernels.scale import LOG, N_SCALE, RAW, S_MODE, scale_batch, unscale_range
from edge_ml.slots import SlotArrays, SlotField

SCALE_NAMES = {RAW: "raw", LOG: "log"}


class ValueScales:
    """Per-stream scale decisions (``scale``: ``N_SCALE`` floats a stream)."""

    def __init__(self, capacity: int = 16) -> None:
        self.arrays = SlotArrays([SlotField("scale", np.float64, 0.0, (N_SCALE,))], capacity)

    def apply(self, slots: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(values on their streams' scales, indices where a stream turned logarithmic)``."""
        out = np.empty_like(values)
        switched = scale_batch(self.arrays.scale, slots, values, out)
        return out, switched

    def unscale_range(self, slots: np.ndarray, expected: np.ndarray) -> None:
        """Usual ranges ``[low, high]`` computed on the scale, back in raw units (in place)."""
        unscale_range(self.arrays.scale, slots, expected)

    def settle(self, used: int) -> None:
        """Mark the first ``used`` streams raw for good (state from before scales existed:
        their models learned raw values, and a switch would restart them)."""
        self.arrays.scale[:used, S_MODE] = RAW

    def logarithmic(self, slot: int) -> bool:
        return bool(self.arrays.scale[slot, S_MODE] == LOG)

    def names(self, slots: np.ndarray) -> list[str | None]:
        """``"log"``, ``"raw"`` or None (still deciding) for each slot, as stored."""
        return [SCALE_NAMES.get(mode) for mode in self.arrays.scale[slots, S_MODE].tolist()]
