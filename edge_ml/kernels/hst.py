"""Half-Space-Trees engine: river's scores from flat arrays, one stream slot per row.

A forest of ``T`` complete binary trees of height ``h`` is stored in BFS layout (node ``i`` has
children ``2i + 1`` and ``2i + 2``; root ``0``): ``2**h - 1`` internal nodes, then ``2**h``
leaves, ``2**(h + 1) - 1`` nodes in all. The structure (split feature and threshold of each
internal node) is shared by every stream; each stream slot ``s`` owns only its masses:

- ``split_feature``: ``int32[T, 2**h - 1]``, feature index of each internal node.
- ``split_threshold``: ``float64[T, 2**h - 1]``, go left when ``x[feature] < threshold``.
- ``mass``: ``uint16[S, 2, T, 2**(h + 1) - 1]`` (``uint32`` when ``window_size > 65535``), the
  two mass buffers of every slot. ``mass[s, ref[s]]`` is river's ``r_mass`` (reference window),
  ``mass[s, 1 - ref[s]]`` is river's ``l_mass`` (latest window).
- ``ref``: ``uint8[S]``, which index of axis 1 holds the reference window.
- ``count``: ``int32[S]``, readings learned in the current latest window.
- ``first_window``: ``uint8[S]``, 1 until the first pivot (the model scores 0.0 until then).

The pivot at the end of a window does not copy node by node as river does: flipping ``ref``
makes the latest buffer the reference, and the old reference buffer is zeroed to become the new
latest window. The result is the same masses river holds.

Every function here is ``@njit(cache=True)`` without fastmath: readings carry NaN for missing
features, and fastmath would let the compiler assume NaN never occurs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# River's early-stop fraction (``HalfSpaceTrees.size_limit``): scoring stops descending at the
# first node whose reference mass is below 10 % of the window, the "sizeLimit" of Tan et al.
SIZE_LIMIT_FRACTION = 0.1


@njit(cache=True)
def _child(split_feature, split_threshold, mass, slot, latest, tree, node, x):
    """Return the child of internal ``node`` that ``x`` goes down to.

    Parameters
    ----------
    split_feature, split_threshold
        Forest structure, see the module docstring.
    mass
        Mass buffers of all slots.
    slot, latest, tree, node
        Stream slot, index of its latest-window buffer, tree and internal node.
    x
        Reading, ``float64[F]``; NaN is a missing feature.

    Notes
    -----
    A missing feature follows river's rule: the child with the larger latest-window mass
    (``l_mass``), the left one on ties.
    """
    left = 2 * node + 1
    value = x[split_feature[tree, node]]
    if np.isnan(value):
        if mass[slot, latest, tree, left] < mass[slot, latest, tree, left + 1]:
            return left + 1
        return left
    if value < split_threshold[tree, node]:
        return left
    return left + 1


@njit(cache=True)
def hst_step(
    split_feature,
    split_threshold,
    mass,
    ref,
    count,
    first_window,
    slot,
    x,
    height,
    window_size,
    paper_score,
):
    """Score one reading of one stream, then learn it; pivot the window when it is full.

    Parameters
    ----------
    split_feature : int32[T, 2**height - 1]
        Feature index of each internal node (BFS layout).
    split_threshold : float64[T, 2**height - 1]
        Threshold of each internal node; ``x[f] < threshold`` goes left.
    mass : uint16 or uint32 [S, 2, T, 2**(height + 1) - 1]
        Mass buffers; updated in place.
    ref : uint8[S]
        Index of the reference-window buffer per slot; flipped in place at a pivot.
    count : int32[S]
        Readings learned in the current latest window per slot; updated in place.
    first_window : uint8[S]
        1 until the slot's first pivot; updated in place.
    slot : int
        Stream slot of this reading.
    x : float64[F]
        Feature vector with values in [0, 1]; NaN marks a missing feature.
    height : int
        Tree height ``h`` (``h + 1`` levels).
    window_size : int
        Readings per window.
    paper_score : bool
        False: river's ``HalfSpaceTrees.score_one``, ``1 - s / max_score`` where ``s`` sums
        ``r_mass * 2**depth`` over every node visited (stopping after the first node whose
        ``r_mass < 0.1 * window_size``) and ``max_score = T * window_size * (2**(h+1) - 1)``.
        True: the score of Tan et al. (2011), which counts the terminal node only (the first
        node with ``r_mass < 0.1 * window_size``, or the leaf): ``s = sum over trees of
        r_mass[terminal] * 2**depth(terminal)``. A terminal node above the leaves has
        ``r_mass < 0.1 * window_size`` and a leaf has ``r_mass <= window_size``, so each tree
        contributes at most ``window_size * 2**h``; the returned value is
        ``1 - s / (T * window_size * 2**h)``, in [0, 1] with high = anomalous like river's.

    Returns
    -------
    float
        The anomaly score of ``x`` computed before learning it; 0.0 during the first window.
    """
    n_trees = split_feature.shape[0]
    reference = ref[slot]
    latest = 1 - reference

    result = 0.0
    if first_window[slot] == 0:
        size_limit = SIZE_LIMIT_FRACTION * window_size
        total = 0.0
        for tree in range(n_trees):
            node = 0
            depth_pow = 1
            tree_score = 0.0
            stopped = False
            for _ in range(height):
                r = np.int64(mass[slot, reference, tree, node])
                if not paper_score:
                    tree_score += r * depth_pow
                if r < size_limit:
                    stopped = True
                    break
                node = _child(split_feature, split_threshold, mass, slot, latest, tree, node, x)
                depth_pow <<= 1
            if paper_score:
                tree_score = float(np.int64(mass[slot, reference, tree, node]) * depth_pow)
            elif not stopped:
                tree_score += np.int64(mass[slot, reference, tree, node]) * depth_pow
            total += tree_score
        if paper_score:
            max_score = float(n_trees * window_size * (1 << height))
        else:
            max_score = float(n_trees * window_size * ((1 << (height + 1)) - 1))
        result = 1.0 - total / max_score

    for tree in range(n_trees):
        node = 0
        for _ in range(height):
            mass[slot, latest, tree, node] += 1
            node = _child(split_feature, split_threshold, mass, slot, latest, tree, node, x)
        mass[slot, latest, tree, node] += 1

    filled = count[slot] + 1
    if filled == window_size:
        ref[slot] = latest
        mass[slot, reference] = 0
        first_window[slot] = 0
        filled = 0
    count[slot] = filled
    return result


@njit(cache=True)
def hst_batch(
    split_feature,
    split_threshold,
    mass,
    ref,
    count,
    first_window,
    slots,
    X,
    height,
    window_size,
    paper_score,
):
    """Run :func:`hst_step` over a micro-batch of readings from many streams, in arrival order.

    Parameters
    ----------
    split_feature, split_threshold, mass, ref, count, first_window
        As in :func:`hst_step`; the state arrays are updated in place.
    slots : int64[B]
        Stream slot of each reading.
    X : float64[B, F]
        Readings, one row each; NaN marks a missing feature.
    height, window_size, paper_score
        As in :func:`hst_step`.

    Returns
    -------
    float64[B]
        Score of each reading, computed before it was learned.
    """
    n = slots.shape[0]
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        out[i] = hst_step(
            split_feature,
            split_threshold,
            mass,
            ref,
            count,
            first_window,
            slots[i],
            X[i],
            height,
            window_size,
            paper_score,
        )
    return out
