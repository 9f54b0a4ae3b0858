"""Each stream's value scale, before the features: raw units, their logarithm or a count's
root (state only).

The choice and the arithmetic live in :mod:`edge_ml.kernels.scale`; this module owns the
arrays. Alerts, statistics and the devices' joint view keep the raw values; the features and
the model see the scaled ones, and a usual range comes back in raw units.
"""

from __future__ import annotations

import numpy as np

from edge_ml.kernels.scale import (
    LOG,
    N_SCALE,
    RAW,
    ROOT,
    S_MODE,
    UNDECIDED,
    scale_batch,
    unscale_range,
)
from edge_ml.slots import SlotArrays, SlotField

# A stream awaiting its second look (RAW_PENDING) has no name yet: it is still deciding.
SCALE_NAMES = {RAW: "raw", LOG: "log", ROOT: "root"}
# Columns of a stream's scale row in checkpoints of schema 10 (before the count root).
_SCALE_COLUMNS_V10 = 11


class ValueScales:
    """Per-stream scale decisions (``scale``: ``N_SCALE`` floats a stream)."""

    def __init__(self, capacity: int = 16) -> None:
        self.arrays = SlotArrays([SlotField("scale", np.float64, 0.0, (N_SCALE,))], capacity)

    def apply(self, slots: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(values on their streams' scales, indices where a stream turned log or root)``."""
        out = np.empty_like(values)
        switched = scale_batch(self.arrays.scale, slots, values, out)
        return out, switched

    def unscale_range(self, slots: np.ndarray, expected: np.ndarray) -> None:
        """Usual ranges ``[low, high]`` computed on the scale, back in raw units (in place)."""
        unscale_range(self.arrays.scale, slots, expected)

    def restore(self, arrays: dict[str, np.ndarray], schema_version: int) -> None:
        """Load a checkpoint's scales. Schema 10 rows lack the count root's columns: a decided
        stream keeps its decision, and one still deciding starts its decision again (its
        moments were learned under the older rule, which stopped at a zero)."""
        if schema_version == 10 and "scale" in arrays:
            old = np.asarray(arrays["scale"])
            if old.ndim != 2 or old.shape[1] != _SCALE_COLUMNS_V10:
                raise ValueError(f"scale: expected {_SCALE_COLUMNS_V10} columns in schema 10, "
                                 f"got shape {old.shape}")
            scale = np.zeros((old.shape[0], N_SCALE), dtype=np.float64)
            scale[:, :_SCALE_COLUMNS_V10] = old
            scale[scale[:, S_MODE] == UNDECIDED] = 0.0
            arrays = {**arrays, "scale": scale}
        self.arrays.restore(arrays)

    def settle(self, used: int) -> None:
        """Mark the first ``used`` streams raw for good (state from before scales existed:
        their models learned raw values, and a switch would restart them)."""
        self.arrays.scale[:used, S_MODE] = RAW

    def logarithmic(self, slot: int) -> bool:
        return bool(self.arrays.scale[slot, S_MODE] == LOG)

    def names(self, slots: np.ndarray) -> list[str | None]:
        """``"log"``, ``"root"``, ``"raw"`` or None (still deciding) for each slot, as stored."""
        return [SCALE_NAMES.get(mode) for mode in self.arrays.scale[slots, S_MODE].tolist()]
