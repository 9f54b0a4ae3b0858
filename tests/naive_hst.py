"""Slow pure-Python reference of the half-space-tree walk over the engine's BFS arrays.

It mirrors river's ``_walk_score`` / ``_walk_learn`` node by node, on explicit ``r_mass`` and
``l_mass`` lists and a river-style pivot (copy latest into reference, zero latest), so it checks
the engine's buffer-flip pivot as well as the paper-score variant, which river does not have.
"""

from __future__ import annotations

import math

import numpy as np


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
