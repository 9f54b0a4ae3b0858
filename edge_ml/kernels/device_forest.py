"""A device's ranking score: one Half-Space-Trees forest per device over all its fields.

The device's **score** (for ranking rows, not for alerting): the raw Half-Space-Trees score of
the row over all its fields, each scaled as the per-stream views scale a value (against a
running mean and mean absolute deviation, squashed into (0, 1) by ``tanh``), by one forest per
device (``JOINT_TREES`` trees of height ``JOINT_HEIGHT``, window ``JOINT_WINDOW``). The
Gaussian model of ``kernels.joint`` ranks rows whose anomaly is a broken linear relationship;
the forest ranks rows that sit in a rare region of the fields' joint distribution (river's
Shuttle: ROC-AUC 0.59 for the conditional residuals, 0.99 for the forest). The raw score is not
calibrated (it is not comparable across devices, and a level of 1.0 would tie every strong
anomaly): it is reported beside the level, unsaturated, and does not raise alerts. A forest is
grown for the device's field count; a device that gains a field starts a new one (and a new
scaling). ``kernels.joint.joint_batch`` calls :func:`forest_score` once per scored row.

State per device ``d``: the forest's ``mass[d, T, N, 2]`` (uint8), ``ref[d]``, ``count[d]``,
``first_window[d]``, and the scaling ``smean[d, F]``, ``sdev[d, F]``, ``srows[d]``
(``kernels.joint`` keeps ``forest_k[d]``, the field count the forest was grown for).
No ``fastmath``: the scores must match river's (``tests/test_joint.py``).
"""

from __future__ import annotations

import math
import random

import numpy as np
from numba import njit

from edge_ml.kernels.hst import hst_step_into

# Mean absolute deviation times sqrt(pi/2) estimates a Gaussian standard deviation.
DEV_MULT = 1.25
# The device's forest. On Shuttle (9 fields, seeds 0-5 of this builder) 20 trees of height 8,
# window 150 gave ROC-AUC 0.9927 mean / 0.9903 min; height 7 at window 250 (the per-stream
# forest's shape) 0.9858 / 0.9774. Masses: 20 * 511 * 2 bytes = 20 KB per device (uint8).
JOINT_TREES = 20
JOINT_HEIGHT = 8
JOINT_WINDOW = 150
JOINT_SEED = 42
# River's padding of split points (away from the outer 15 % of a node's range).
TREE_PADDING = 0.15
# The forest's scaling of each field: running mean and mean absolute deviation at this rate,
# then 0.5 + 0.5 tanh(z / SCALE_SQUASH) (as the per-stream z_value feature).
SCALE_ALPHA = 1.0 / 600.0
SCALE_SQUASH = 6.0


def device_trees(k: int, n_trees: int = JOINT_TREES, height: int = JOINT_HEIGHT,
                 seed: int = JOINT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Split features (uint8) and thresholds of a forest over ``k`` features in (0, 1), BFS.

    River's padded draw, as ``edge_ml.model.forest`` does it (which devices may not import): a
    feature weighted by the width of its current limits, a threshold uniform inside them less
    ``TREE_PADDING`` on each side, the left subtree drawn before the right one.
    """
    rng = random.Random(seed)
    n_internal = 2**height - 1
    feature = np.zeros((n_trees, n_internal), dtype=np.uint8)
    threshold = np.zeros((n_trees, n_internal), dtype=np.float64)

    def grow(tree: int, node: int, depth: int, limits: list[list[float]]) -> None:
        if depth == height:
            return
        on = rng.choices(range(k), weights=[hi - lo for lo, hi in limits])[0]
        lo, hi = limits[on]
        at = rng.uniform(lo + TREE_PADDING * (hi - lo), hi - TREE_PADDING * (hi - lo))
        feature[tree, node], threshold[tree, node] = on, at
        limits[on] = [lo, at]
        grow(tree, 2 * node + 1, depth + 1, limits)
        limits[on] = [at, hi]
        grow(tree, 2 * node + 2, depth + 1, limits)
        limits[on] = [lo, hi]

    for tree in range(n_trees):
        grow(tree, 0, 0, [[0.0, 1.0] for _ in range(k)])
    return feature, threshold


@njit(cache=True)
def forest_score(x, k, d, smean, sdev, srows, tree_feature, tree_threshold, mass, ref, count,
                 first_window, walk):
    """The device forest's raw score of row ``x`` (``k`` fields), then learn it; 0.0 while
    its first window fills. The fields are scaled before the forest sees them, then the
    scaling learns the row."""
    xs = np.empty(k)
    m = smean[d]
    dev = sdev[d]
    n = srows[d]
    for j in range(k):
        if n >= 2:
            floor = 1e-6 * (abs(m[j]) + 1.0)
            xs[j] = 0.5 + 0.5 * math.tanh((x[j] - m[j]) / max(DEV_MULT * dev[j], floor)
                                          / SCALE_SQUASH)
        else:
            xs[j] = 0.5
    raw = hst_step_into(tree_feature, tree_threshold, mass, ref, count, first_window, d, xs,
                        JOINT_HEIGHT, JOINT_WINDOW, False, walk)
    a = max(SCALE_ALPHA, 1.0 / (n + 1.0))
    b = max(SCALE_ALPHA, 1.0 / n) if n > 0 else 0.0
    for j in range(k):
        delta = x[j] - m[j]
        m[j] += a * delta
        dev[j] += b * (abs(delta) - dev[j])
    srows[d] = n + 1
    return raw
