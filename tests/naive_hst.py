"""Slow pure-Python reference of the half-space-tree walk over the engine's BFS arrays.

It mirrors river's ``_walk_score`` / ``_walk_learn`` node by node, on explicit ``r_mass`` and
``l_mass`` lists and a river-style pivot (copy latest into reference, zero latest), so it checks
the engine's buffer-flip pivot as well as the paper-score variant, which river does not have.

Also here: the engine's kernel (:func:`~edge_ml.kernels.hst.hst_step_into`) run over a batch of
readings on its own, without the features and calibration that
:func:`~edge_ml.kernels.fused.detect_batch` wraps around it in the product, so the engine can be
compared with river and with :class:`NaiveForest` reading by reading.
"""

from __future__ import annotations

import math

import numpy as np

from edge_ml.kernels.hst import hst_step_into
from edge_ml.model.forest import ForestState


def hst_step(split_feature, split_threshold, mass, ref, count, first_window, slot, x, height,
             window_size, paper_score) -> float:
    """One reading through the kernel, with scratch of its own."""
    walk = np.empty((height + 2, split_feature.shape[0]), dtype=np.int64)
    return hst_step_into(split_feature, split_threshold, mass, ref, count, first_window, slot, x,
                         height, window_size, paper_score, walk)


def hst_batch(split_feature, split_threshold, mass, ref, count, first_window, slots, X, height,
              window_size, paper_score) -> np.ndarray:
    """Readings of many streams through the kernel in arrival order, one scratch for all of
    them (as detect_batch calls it); the state arrays are updated in place."""
    walk = np.empty((height + 2, split_feature.shape[0]), dtype=np.int64)
    out = np.empty(len(slots), dtype=np.float64)
    for i, slot in enumerate(slots.tolist()):
        out[i] = hst_step_into(split_feature, split_threshold, mass, ref, count, first_window,
                               slot, X[i], height, window_size, paper_score, walk)
    return out


def score_learn(state: ForestState, slots: np.ndarray, X: np.ndarray,
                paper_score: bool = False) -> np.ndarray:
    """Score each reading before learning it, in arrival order, on ``state``'s arrays.

    Shapes and slots are checked first: the kernel itself does not bounds-check.
    """
    slots = np.ascontiguousarray(slots, dtype=np.int64)
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != state.structure.n_features or X.shape[0] != len(slots):
        raise ValueError(
            f"X must have shape ({len(slots)}, {state.structure.n_features}), got {X.shape}"
        )
    if len(slots) and (slots.min() < 0 or slots.max() >= state.capacity):
        raise IndexError(f"slot out of range [0, {state.capacity})")
    s = state.structure
    return hst_batch(s.split_feature, s.split_threshold, state.mass, state.ref, state.count,
                     state.first_window, slots, X, s.height, state.window_size, bool(paper_score))


class NaiveForest:
    """One stream's forest, kept in Python lists.

    Parameters
    ----------
    split_feature, split_threshold
        Structure arrays ``[T, 2**h - 1]`` in BFS layout.
    height
        Tree height.
    window_size
        Readings per window.
    """

    def __init__(
        self, split_feature: np.ndarray, split_threshold: np.ndarray, height: int, window_size: int
    ) -> None:
        self.feature = split_feature.tolist()
        self.threshold = split_threshold.tolist()
        self.height = height
        self.window_size = window_size
        n_trees = len(self.feature)
        n_nodes = 2 ** (height + 1) - 1
        self.r_mass = [[0] * n_nodes for _ in range(n_trees)]
        self.l_mass = [[0] * n_nodes for _ in range(n_trees)]
        self.counter = 0
        self.first_window = True

    def _child(self, tree: int, node: int, x: list[float]) -> int:
        """Child of ``node`` for ``x``; NaN follows the larger ``l_mass``, left on ties."""
        left, right = 2 * node + 1, 2 * node + 2
        value = x[self.feature[tree][node]]
        if math.isnan(value):
            lm = self.l_mass[tree]
            return right if lm[left] < lm[right] else left
        return left if value < self.threshold[tree][node] else right

    def score(self, x: list[float], paper: bool = False) -> float:
        """River's ``score_one`` (or the paper's terminal-node score) for ``x``."""
        if self.first_window:
            return 0.0
        size_limit = 0.1 * self.window_size
        total = 0.0
        for tree in range(len(self.feature)):
            node, depth_pow, tree_score = 0, 1, 0.0
            terminal = None
            for _ in range(self.height):
                r = self.r_mass[tree][node]
                tree_score += r * depth_pow
                if r < size_limit:
                    terminal = r * depth_pow
                    break
                node = self._child(tree, node, x)
                depth_pow <<= 1
            else:
                terminal = self.r_mass[tree][node] * depth_pow
                tree_score += terminal
            total += terminal if paper else tree_score
        n_trees = len(self.feature)
        if paper:
            return 1 - total / (n_trees * self.window_size * 2**self.height)
        return 1 - total / (n_trees * self.window_size * (2 ** (self.height + 1) - 1))

    def learn(self, x: list[float]) -> None:
        """River's ``learn_one``: walk and count, pivot when the window is full."""
        for tree in range(len(self.feature)):
            node = 0
            for _ in range(self.height):
                self.l_mass[tree][node] += 1
                node = self._child(tree, node, x)
            self.l_mass[tree][node] += 1
        self.counter += 1
        if self.counter == self.window_size:
            self.r_mass = self.l_mass
            self.l_mass = [[0] * len(m) for m in self.r_mass]
            self.first_window = False
            self.counter = 0
