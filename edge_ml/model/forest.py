"""Half-space-tree forest on the Numba engine: river's tree structure, per-stream masses.

The structure is river's: :func:`_padded_tree` repeats ``river.tree.padded.make_padded_tree``
draw for draw (same ``random.Random`` calls in the same order), so a river ``HalfSpaceTrees``
with the same seed and integer feature keys holds identical trees; tests/test_hst_engine.py
checks that against river's own builder. It is repeated rather than imported because importing
anything under ``river.tree`` runs that package's ``__init__``, which loads every river tree
model and SciPy: about 70 MB of resident memory in a daemon that never uses them. Streams share
the structure and keep only their masses (:class:`ForestState`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ForestState", "TreeStructure", "feature_dtype", "mass_dtype"]

# River's HalfSpaceTrees builds each tree with ``padding=0.15``: split points are drawn away
# from the outer 15 % of a node's range on each side, so no split is too narrow.
RIVER_PADDING = 0.15

# Largest windows whose masses fit in uint8 and uint16: a node's mass never exceeds the window
# size. River's default window (250) fits uint8, which halves the per-stream state.
UINT8_MAX_WINDOW = 255
UINT16_MAX_WINDOW = 65535


def feature_dtype(n_features: int) -> np.dtype:
    """Smallest unsigned type indexing ``n_features`` features: uint8, uint16 or uint32.

    Parameters
    ----------
    n_features
        Feature-vector length.

    Returns
    -------
    numpy.dtype
        The dtype of :attr:`TreeStructure.split_feature`. Unsigned, because Numba emits
        negative-index wraparound for signed indices; small, to keep the shared structure
        cache-friendly.
    """
    if n_features <= 1 << 8:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16 if n_features <= 1 << 16 else np.uint32)


# A split node: (feature, threshold, left, right); leaves are None.
_Node = tuple[int, float, Any, Any]


def _padded_tree(limits: dict[int, tuple[float, float]], height: int, padding: float,
                 rng: random.Random) -> _Node | None:
    """River's ``make_padded_tree``, split for split: the same draws, in the same order.

    A feature is drawn weighted by the width of its current limits, a threshold uniformly inside
    the limits less ``padding`` on each side; then the left subtree (upper limit = threshold) is
    built before the right one (lower limit = threshold).
    """
    if height == 0:
        return None
    on = rng.choices(population=list(limits.keys()),
                     weights=[limits[i][1] - limits[i][0] for i in limits])[0]
    low, high = limits[on]
    at = rng.uniform(low + padding * (high - low), high - padding * (high - low))
    limits[on] = (low, at)
    left = _padded_tree(limits, height - 1, padding, rng)
    limits[on] = (at, high)
    right = _padded_tree(limits, height - 1, padding, rng)
    limits[on] = (low, high)
    return (on, at, left, right)


def _flatten_bfs(root: _Node, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Flatten one padded tree into BFS arrays of its internal nodes.

    Parameters
    ----------
    root
        Root of a complete tree of height ``height``.
    height
        Tree height.

    Returns
    -------
    tuple of numpy.ndarray
        ``(feature int64[2**height - 1], threshold float64[2**height - 1])``.
    """
    n_internal = 2**height - 1
    feature = np.empty(n_internal, dtype=np.int64)
    threshold = np.empty(n_internal, dtype=np.float64)
    level = [root]
    index = 0
    for _ in range(height):
        next_level = []
        for node in level:
            feature[index], threshold[index], left, right = node
            index += 1
            next_level.extend((left, right))
        level = next_level
    return feature, threshold


@dataclass(frozen=True)
class TreeStructure:
    """Split features and thresholds of a forest, shared by every stream.

    Parameters
    ----------
    n_features
        Feature-vector length ``F``; features are the integers ``0 .. F - 1``.
    n_trees
        Number of trees ``T``.
    height
        Tree height ``h``: ``2**h - 1`` internal nodes and ``2**h`` leaves per tree.
    seed
        Seed of the ``random.Random`` the trees were drawn from.
    split_feature
        ``[T, 2**h - 1]`` of :func:`feature_dtype` (``uint8`` up to 256 features), BFS layout
        (children of node ``i`` are ``2i + 1``, ``2i + 2``).
    split_threshold
        ``float64[T, 2**h - 1]``, same layout; ``x[f] < threshold`` goes left.
    """

    n_features: int
    n_trees: int
    height: int
    seed: int
    split_feature: np.ndarray
    split_threshold: np.ndarray

    @classmethod
    def from_river(cls, n_features: int, n_trees: int, height: int, seed: int) -> TreeStructure:
        """Build the trees exactly as river's ``HalfSpaceTrees.learn_one`` does.

        River builds its trees on the first ``learn_one`` from that sample's sorted keys, each
        limited to (0, 1), with ``padding=0.15`` and one ``random.Random(seed)`` shared by the
        ``n_trees`` builds in order. With keys ``0 .. n_features - 1`` the trees here are those of
        ``HalfSpaceTrees(n_trees, height, seed=seed)`` fed ``{i: x_i}``.

        Parameters
        ----------
        n_features
            Feature-vector length.
        n_trees
            Number of trees.
        height
            Tree height (at least 1).
        seed
            Random seed.

        Returns
        -------
        TreeStructure
            The flattened structure.
        """
        if n_features < 1 or n_trees < 1 or height < 1:
            raise ValueError(
                f"need n_features, n_trees, height >= 1, got {n_features}, {n_trees}, {height}"
            )
        rng = random.Random(seed)
        features = []
        thresholds = []
        for _ in range(n_trees):
            root = _padded_tree({i: (0.0, 1.0) for i in range(n_features)}, height,
                                RIVER_PADDING, rng)
            assert root is not None  # height >= 1
            feature, threshold = _flatten_bfs(root, height)
            features.append(feature)
            thresholds.append(threshold)
        split_feature = np.ascontiguousarray(np.stack(features), dtype=feature_dtype(n_features))
        split_threshold = np.ascontiguousarray(np.stack(thresholds), dtype=np.float64)
        split_feature.flags.writeable = False
        split_threshold.flags.writeable = False
        return cls(n_features, n_trees, height, seed, split_feature, split_threshold)

    @property
    def n_nodes(self) -> int:
        """Nodes per tree, internal and leaves: ``2**(h + 1) - 1``."""
        return 2 ** (self.height + 1) - 1


def mass_dtype(window_size: int) -> np.dtype:
    """Smallest mass dtype for a window: uint8 up to 255, uint16 up to 65535, else uint32.

    Parameters
    ----------
    window_size
        Readings per window; no node mass can exceed it.

    Returns
    -------
    numpy.dtype
        ``uint8``, ``uint16`` or ``uint32``.
    """
    if window_size <= UINT8_MAX_WINDOW:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16 if window_size <= UINT16_MAX_WINDOW else np.uint32)


class ForestState:
    """Per-stream masses of a half-space-tree forest, one slot per stream.

    Parameters
    ----------
    structure
        Shared tree structure.
    window_size
        Readings per window (river's ``window_size``).
    capacity
        Initial number of stream slots.

    Notes
    -----
    ``mass`` is ``[capacity, T, n_nodes, 2]`` of :func:`mass_dtype`: both windows' masses of a
    node side by side, ``mass[s, :, :, ref[s]]`` the reference window (see
    :mod:`edge_ml.kernels.hst`).
    """

    _ARRAY_NAMES = ("mass", "ref", "count", "first_window")

    def __init__(self, structure: TreeStructure, window_size: int, capacity: int = 16) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.structure = structure
        self.window_size = int(window_size)
        self.mass = np.zeros(
            (capacity, structure.n_trees, structure.n_nodes, 2), dtype=mass_dtype(window_size)
        )
        self.ref = np.zeros(capacity, dtype=np.uint8)
        self.count = np.zeros(capacity, dtype=np.int32)
        self.first_window = np.ones(capacity, dtype=np.uint8)

    @property
    def capacity(self) -> int:
        """Number of stream slots currently allocated."""
        return int(self.ref.shape[0])

    @property
    def bytes_per_stream(self) -> int:
        """Bytes of model state owned by one stream slot (masses, ref, count, first_window)."""
        per_slot = self.mass[0].nbytes if self.capacity else 0
        return per_slot + self.ref.itemsize + self.count.itemsize + self.first_window.itemsize

    def grow(self, capacity: int) -> None:
        """Make room for at least ``capacity`` slots, doubling; existing slots keep their state.

        Parameters
        ----------
        capacity
            Number of slots needed.
        """
        new = self.capacity
        while new < capacity:
            new *= 2
        if new == self.capacity:
            return
        old = self.capacity
        mass = np.zeros((new, *self.mass.shape[1:]), dtype=self.mass.dtype)
        mass[:old] = self.mass
        ref = np.zeros(new, dtype=np.uint8)
        ref[:old] = self.ref
        count = np.zeros(new, dtype=np.int32)
        count[:old] = self.count
        first_window = np.ones(new, dtype=np.uint8)
        first_window[:old] = self.first_window
        self.mass, self.ref, self.count, self.first_window = mass, ref, count, first_window

    def reset(self, slot: int) -> None:
        """Give one stream a fresh model: empty windows, warming up again.

        Parameters
        ----------
        slot
            Stream slot to reset.
        """
        self.mass[slot] = 0
        self.ref[slot] = 0
        self.count[slot] = 0
        self.first_window[slot] = 1

    def export(self) -> dict[str, np.ndarray]:
        """Return the state as plain arrays (copies) for a checkpoint.

        Returns
        -------
        dict of str to numpy.ndarray
            ``mass``, ``ref``, ``count`` and ``first_window``.
        """
        return {name: getattr(self, name).copy() for name in self._ARRAY_NAMES}

    @classmethod
    def restore(
        cls, structure: TreeStructure, window_size: int, arrays: dict[str, np.ndarray]
    ) -> ForestState:
        """Rebuild a state from :meth:`export` arrays, checking shapes and dtypes.

        Parameters
        ----------
        structure
            The structure the state was learned with.
        window_size
            The window size the state was learned with.
        arrays
            Output of :meth:`export`.

        Returns
        -------
        ForestState
            A state that continues exactly where the exported one stopped.

        Raises
        ------
        ValueError
            If an array is missing or its shape, dtype or values do not fit the structure.
        """
        missing = [name for name in cls._ARRAY_NAMES if name not in arrays]
        if missing:
            raise ValueError(f"forest state is missing arrays: {', '.join(missing)}")
        mass = np.asarray(arrays["mass"])
        capacity = mass.shape[0] if mass.ndim == 4 else -1
        if mass.dtype != mass_dtype(window_size):
            raise ValueError(
                f"forest state array 'mass' has dtype {mass.dtype}, but window_size "
                f"{window_size} keeps masses as {mass_dtype(window_size)}: the checkpoint was "
                "written with another window size or by an engine with another mass dtype"
            )
        if mass.shape[1:] == (2, structure.n_trees, structure.n_nodes):
            raise ValueError(
                "forest state array 'mass' has the old [slots, 2, trees, nodes] layout; this "
                "engine keeps [slots, trees, nodes, 2] (both windows of a node side by side)"
            )
        expected = {
            "mass": ((capacity, structure.n_trees, structure.n_nodes, 2), mass_dtype(window_size)),
            "ref": ((capacity,), np.dtype(np.uint8)),
            "count": ((capacity,), np.dtype(np.int32)),
            "first_window": ((capacity,), np.dtype(np.uint8)),
        }
        for name, (shape, dtype) in expected.items():
            array = np.asarray(arrays[name])
            if array.shape != shape or array.dtype != dtype:
                raise ValueError(
                    f"forest state array {name!r}: expected {dtype}{list(shape)}, "
                    f"got {array.dtype}{list(array.shape)} (n_trees={structure.n_trees}, "
                    f"height={structure.height}, window_size={window_size})"
                )
        if capacity < 1:
            raise ValueError("forest state has no slots")
        ref = np.asarray(arrays["ref"])
        count = np.asarray(arrays["count"])
        if ref.max() > 1 or count.min() < 0 or count.max() >= window_size:
            raise ValueError(
                f"forest state has out-of-range ref or count values for window_size {window_size}"
            )
        if mass.max() > window_size:
            raise ValueError(f"forest state has a node mass above window_size {window_size}")
        state = cls(structure, window_size, capacity=1)
        for name in cls._ARRAY_NAMES:
            setattr(state, name, np.array(arrays[name], copy=True, order="C"))
        return state
