"""Per-stream windowed features and their online scaling into [0, 1] (state only).

The arithmetic lives in :mod:`edge_ml.kernels.window`; this module owns the arrays it runs on.
"""

from __future__ import annotations

import numpy as np

from edge_ml.kernels.window import FEATURE_NAMES, N_FEATURES, features_batch
from edge_ml.slots import SlotArrays, SlotField

__all__ = ["FEATURE_NAMES", "FeatureState"]


class FeatureState:
    """Ring buffers, running sums and scaler statistics for every stream slot.

    Parameters
    ----------
    window
        Readings in the rolling window (``[features] window``).
    capacity
        Initial number of slots.
    """

    names = FEATURE_NAMES

    def __init__(self, window: int, capacity: int = 16) -> None:
        self.window = window
        self.arrays = SlotArrays(
            [
                SlotField("ring", np.float64, 0.0, (window,)),
                SlotField("ring_pos", np.int64),
                SlotField("ring_n", np.int64),
                SlotField("win_sum", np.float64),
                SlotField("win_sumsq", np.float64),
                SlotField("prev", np.float64),
                SlotField("shift", np.float64),
                SlotField("smean", np.float64, 0.0, (N_FEATURES,)),
                SlotField("svar", np.float64, 0.0, (N_FEATURES,)),
                SlotField("sn", np.int64),
            ],
            capacity,
        )

    @property
    def n_features(self) -> int:
        return N_FEATURES

    def kernel_args(self) -> tuple[np.ndarray, ...]:
        """The arrays in the order the kernels take them."""
        a = self.arrays
        return (a.ring, a.ring_pos, a.ring_n, a.win_sum, a.win_sumsq, a.prev, a.shift,
                a.smean, a.svar, a.sn)

    def update(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Scaled features ``X[B, n_features]`` of a batch, learning the windows as it goes."""
        return features_batch(slots, values, *self.kernel_args())
