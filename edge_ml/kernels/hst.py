"""Half-Space-Trees engine: river's scores from flat arrays, one stream slot per row.

A forest of ``T`` complete binary trees of height ``h`` is stored in BFS layout (node ``i`` has
children ``2i + 1`` and ``2i + 2``; root ``0``): ``2**h - 1`` internal nodes, then ``2**h``
leaves, ``2**(h + 1) - 1`` nodes in all. The structure (split feature and threshold of each
internal node) is shared by every stream; each stream slot ``s`` owns only its masses:

- ``split_feature``: ``[T, 2**h - 1]``, feature index of each internal node, of the smallest
  unsigned integer type that holds the feature count (``uint8`` up to 256 features). Unsigned
  indices spare Numba the negative-index wraparound it emits for signed ones.
- ``split_threshold``: ``float64[T, 2**h - 1]``, go left when ``x[feature] < threshold``. Kept
  float64: a float32 threshold would send readings near a split down river's other branch.
- ``mass``: ``uint8[S, T, 2**(h + 1) - 1, 2]`` while ``window_size <= 255``, ``uint16`` up to
  65535, ``uint32`` above (a node's mass never exceeds the window size); the two mass buffers
  of every slot, interleaved per node. ``mass[s, :, :, ref[s]]`` is river's ``r_mass``
  (reference window), ``mass[s, :, :, 1 - ref[s]]`` is river's ``l_mass`` (latest window).
  Interleaving puts a node's two masses in one cache line: scoring reads the reference mass of
  the node it increments, and tall trees (height 15: 1.6 MB of masses per buffer per stream)
  miss the cache at most levels. It costs ~10 % at height 8, where everything is cached and
  the strided views index a little slower; it saves ~20 % at height 15.
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


# Above this many mass cells per buffer (2**13, a few KB to tens of KB), a pivot zeroes only the
# subtrees the window visited instead of the whole buffer: a node's latest mass is at least its
# children's, so every unvisited node sits below a zero. At height 15 one window of 250
# readings touches at most 250 * 16 of a tree's 65,535 nodes.
# Pruning also leaves untouched pages of a large, lazily zero-allocated state unmapped.
PRUNED_ZERO_MIN_CELLS = 1 << 13

# Levels a pruned pivot clears by plain slicing: the first 2**8 - 1 nodes of a tree are a few
# hundred contiguous bytes, cheaper to zero than to search. Below them, visited nodes are found
# level by level from the nonzero nodes of the level above (at most ``window_size`` per level).
PRUNED_ZERO_SLICED_LEVELS = 8

# Node indices are uint64 so that Numba emits no negative-index wraparound on the hot path;
# this constant keeps the arithmetic unsigned (uint64 + int64 would promote to float64).
_ONE = np.uint64(1)


@njit(cache=True)
def _child(split_feature, split_threshold, latest_mass, tree, node, x):
    """Return the child of internal ``node`` that ``x`` goes down to.

    Parameters
    ----------
    split_feature, split_threshold
        Forest structure, see the module docstring.
    latest_mass
        The slot's latest-window masses (river's ``l_mass``), ``[T, n_nodes]`` (a strided view).
    tree, node
        Tree and internal node.
    x
        Reading, ``float64[F]``; NaN is a missing feature.

    Notes
    -----
    A missing feature follows river's rule: the child with the larger latest-window mass, the
    left one on ties. Otherwise ``x[f] < threshold`` goes left; the comparison is turned into
    an offset rather than a branch, as a reading's path is unpredictable.
    """
    left = node + node + _ONE
    value = x[split_feature[tree, node]]
    if np.isnan(value):
        return left + np.uint64(latest_mass[tree, left] < latest_mass[tree, left + _ONE])
    return left + np.uint64(value >= split_threshold[tree, node])


@njit(cache=True)
def _zero_visited(buffer, height, window_size):
    """Zero every nonzero mass of one slot's buffer, skipping subtrees whose root is zero.

    Parameters
    ----------
    buffer
        One slot's mass buffer, ``[T, 2**(height + 1) - 1]`` (a strided view of ``mass``),
        zeroed in place.
    height
        Tree height.
    window_size
        Readings per window: no level holds more nonzero nodes.

    Notes
    -----
    The top ``PRUNED_ZERO_SLICED_LEVELS`` levels are zeroed as one slice. Below, the nonzero
    nodes of each level are listed from their parents' (a breadth-first frontier, appended
    without a branch); unlike a depth-first stack, the frontier's nodes are independent, so
    the loads overlap instead of forming one chain (4x faster at height 15).
    """
    sliced = min(height, PRUNED_ZERO_SLICED_LEVELS)
    first = (1 << sliced) - 1
    bound = min(1 << height, window_size) + 2  # frontier entries, plus one speculative write
    frontier = np.empty(bound, dtype=np.int64)
    following = np.empty(bound, dtype=np.int64)
    for tree in range(buffer.shape[0]):
        masses = buffer[tree]
        if masses[0] == 0:
            continue
        n = 0
        for node in range(first, 2 * first + 1):
            frontier[n] = node
            n += np.int64(masses[node] != 0)
        masses[:first] = 0
        for _ in range(sliced, height):
            m = 0
            for i in range(n):
                node = frontier[i]
                masses[node] = 0
                left = 2 * node + 1
                following[m] = left
                m += np.int64(masses[left] != 0)
                following[m] = left + 1
                m += np.int64(masses[left + 1] != 0)
            frontier, following = following, frontier
            n = m
        for i in range(n):
            masses[frontier[i]] = 0


@njit(cache=True)
def hst_step_into(
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
    walk,
):
    """Score one reading of one stream, then learn it; pivot the window when it is full.

    Parameters
    ----------
    split_feature : uint8, uint16 or uint32 [T, 2**height - 1]
        Feature index of each internal node (BFS layout); any integer type works, unsigned is
        faster.
    split_threshold : float64[T, 2**height - 1]
        Threshold of each internal node; ``x[f] < threshold`` goes left.
    mass : uint8, uint16 or uint32 [S, T, 2**(height + 1) - 1, 2]
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
    walk : int64[height + 2, T]
        Scratch space, overwritten: rows ``0 .. height`` hold each tree's path (its node at
        each depth), row ``height + 1`` whether its score is still accumulating. The caller
        allocates it once per batch (:func:`edge_ml.kernels.fused.detect_batch`).

    Returns
    -------
    float
        The anomaly score of ``x`` computed before learning it; 0.0 during the first window.
    """
    n_trees = split_feature.shape[0]
    reference = ref[slot]
    latest = 1 - reference
    reference_mass = mass[slot, :, :, reference]
    latest_mass = mass[slot, :, :, latest]
    scoring = first_window[slot] == 0
    # River stops at ``r_mass < 0.1 * window_size`` (a float); for an integer mass that is
    # exactly ``r_mass < ceil(0.1 * window_size)``, an integer compare without a conversion.
    size_limit = np.int64(np.ceil(SIZE_LIMIT_FRACTION * window_size))
    # One walk per tree scores and learns. River walks twice, but both walks follow the same
    # path: the missing-feature rule compares the children's latest masses, and when the choice
    # is made at a node, learning has incremented only that node and its ancestors.
    # Trees advance one level at a time: their walks are independent, so the CPU overlaps them
    # instead of running one long chain of dependent loads per tree. The early stop is
    # arithmetic (``open_walk``), not a branch, because where a walk stops is unpredictable.
    # Once every tree's score is final, the remaining levels only learn and skip the reference
    # buffer.
    # Every score term is an integer and the sum stays below 2**53 (T * window_size *
    # 2**(h + 1)), so the int64 total converts to exactly river's float sum.
    path = walk
    open_walk = walk[height + 1]
    start = np.int64(scoring)
    for tree in range(n_trees):
        path[0, tree] = 0
        open_walk[tree] = start
    total = 0
    any_open = start
    depth = 0
    while depth < height and any_open:
        any_open = 0
        here = path[depth]
        there = path[depth + 1]
        for tree in range(n_trees):
            node = np.uint64(here[tree])
            still = open_walk[tree]
            r = np.int64(reference_mass[tree, node])
            stop = np.int64(r < size_limit)
            if paper_score:
                total += (still & stop) * (r << depth)
            else:
                total += still * (r << depth)
            still = still & (1 - stop)
            open_walk[tree] = still
            any_open |= still
            latest_mass[tree, node] += 1
            there[tree] = _child(split_feature, split_threshold, latest_mass, tree, node, x)
        depth += 1
    while depth < height:
        here = path[depth]
        there = path[depth + 1]
        for tree in range(n_trees):
            node = np.uint64(here[tree])
            latest_mass[tree, node] += 1
            there[tree] = _child(split_feature, split_threshold, latest_mass, tree, node, x)
        depth += 1
    here = path[height]
    for tree in range(n_trees):
        node = np.uint64(here[tree])
        if any_open:
            total += open_walk[tree] * (np.int64(reference_mass[tree, node]) << height)
        latest_mass[tree, node] += 1

    result = 0.0
    if scoring:
        if paper_score:
            max_score = float(n_trees * window_size * (1 << height))
        else:
            max_score = float(n_trees * window_size * ((1 << (height + 1)) - 1))
        result = 1.0 - float(total) / max_score

    filled = count[slot] + 1
    if filled == window_size:
        ref[slot] = latest
        if reference_mass.size >= PRUNED_ZERO_MIN_CELLS:
            _zero_visited(reference_mass, height, window_size)
        else:
            reference_mass[:] = 0
        first_window[slot] = 0
        filled = 0
    count[slot] = filled
    return result


@njit(cache=True)
def hst_unlearn(mass, ref, count, slot, walk, height):
    """Take back what :func:`hst_step_into` just learned for ``slot``: one off each node on the
    path it left in ``walk``, and the reading off the window's count. Not when that step
    pivoted the window (``count`` is back at 0): the reading is then in the reference window,
    which the scores read; it stays learned. Returns whether it was taken back.

    For a reading the calibration found anomalous (:func:`edge_ml.kernels.fused.detect_batch`):
    the trees must not learn an anomaly as normal (issue 13).
    """
    if count[slot] == 0:
        return False
    latest = 1 - ref[slot]
    for depth in range(height + 1):
        for tree in range(walk.shape[1]):
            mass[slot, tree, walk[depth, tree], latest] -= 1
    count[slot] -= 1
    return True
