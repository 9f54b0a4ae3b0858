"""Per-stream features and their scaling into [0, 1] (state only).

The arithmetic lives in :mod:`edge_ml.kernels.window`; this module owns the arrays it runs on.
"""

from __future__ import annotations

import numpy as np

from edge_ml.kernels.window import FEATURE_NAMES, N_FEATURES, features_batch
from edge_ml.slots import SlotArrays, SlotField

__all__ = ["FEATURE_NAMES", "FeatureState"]


class FeatureState:
    """Time-of-day profiles and running statistics for every stream slot.

    Parameters
    ----------
    period_s
        Length of the seasonal cycle (``[features] season_s``, a day by default).
    bins
        Profile slots per cycle (``[features] season_bins``).
    capacity
        Initial number of stream slots.
    """

    names = FEATURE_NAMES

    def __init__(self, period_s: float = 86400.0, bins: int = 48, capacity: int = 16) -> None:
        self.period_s = float(period_s)
        self.bins = int(bins)
        self.arrays = SlotArrays(
            [
                SlotField("prof_mean", np.float64, 0.0, (bins,)),
                SlotField("prof_mean_dev", np.float64, 0.0, (bins,)),
                SlotField("prof_n", np.int64, 0, (bins,)),
                SlotField("offset", np.float64),
                SlotField("mean", np.float64),
                SlotField("dev", np.float64),
                SlotField("dmean", np.float64),
                SlotField("ddev", np.float64),
                SlotField("vol", np.float64),
                SlotField("lr_mean", np.float64),
                SlotField("lr_dev", np.float64),
                SlotField("prev", np.float64),
                SlotField("seen", np.int64),
            ],
            capacity,
        )

    @property
    def n_features(self) -> int:
        return N_FEATURES

    def describe(self) -> dict[str, object]:
        return {"names": list(self.names), "season_s": self.period_s, "season_bins": self.bins}

    def kernel_args(self) -> tuple[np.ndarray, ...]:
        """The state arrays in the order the kernels take them (after ``period_s``)."""
        a = self.arrays
        return (a.prof_mean, a.prof_mean_dev, a.prof_n, a.offset, a.mean, a.dev, a.dmean, a.ddev,
                a.vol, a.lr_mean, a.lr_dev, a.prev, a.seen)

    def update(self, slots: np.ndarray, values: np.ndarray, ts: np.ndarray,
               first_ts: np.ndarray, age: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """z-scores, tree features and profile residuals of a batch, learning as it goes.

        ``first_ts`` is each stream's first reading time and ``age`` the readings it has had
        since, both kept by the model stage through drift resets (NaN and 0 for a new stream:
        set and counted here).
        """
        return features_batch(slots, values, ts, self.period_s, first_ts, age,
                              *self.kernel_args())
