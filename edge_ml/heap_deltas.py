"""Half-space-tree masses as deltas, for checkpoints: most of a forest's bytes become zeros.

A forest's masses are ``[slots, trees, nodes, windows]`` in BFS layout (node ``i`` has
children ``2i + 1`` and ``2i + 2``; see :mod:`edge_ml.kernels.hst`). Every reading a tree
learns increments one node per level, root to leaf, so a node's mass is the sum of its
children's: the right child is known from its parent and its left sibling. Stored as
``parent - left - right``, it is 0 wherever that holds, which is everywhere in a healthy
forest: half the cells, and a forest was ~90 % of a checkpoint (1,000 streams: 5.1 MB raw,
2.1 MB compressed; 1.4 MB with deltas, 0.57 MB with the codec's stream axis last too).

The arithmetic wraps in the masses' own unsigned type, so the round trip is exact for any
array, whether or not the sum holds (a corrupt or foreign forest comes back as it went in).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _check(mass: npt.NDArray[np.unsignedinteger]) -> int:
    nodes = mass.shape[-2] if mass.ndim >= 2 else 0
    if mass.dtype.kind != "u" or nodes < 1 or (nodes + 1) & nodes:
        raise ValueError(f"not tree masses [..., 2**(h + 1) - 1, windows]: {mass.dtype}"
                         f"{list(mass.shape)}")
    return nodes


def node_deltas(mass: npt.NDArray[np.unsignedinteger],
                out: npt.NDArray[np.unsignedinteger] | None = None,
                ) -> npt.NDArray[np.unsignedinteger]:
    """``mass`` with each right child replaced by ``parent - left - right`` (wrapping).

    >>> m = np.array([[5, 0], [3, 0], [2, 0]], dtype=np.uint8)  # root 5 = 3 + 2
    >>> node_deltas(m)[:, 0].tolist()
    [5, 3, 0]
    """
    nodes = _check(mass)
    if out is None:
        deltas = mass.copy()
    else:  # a snapshot buffer the checkpointer reuses from one checkpoint to the next
        deltas = out
        deltas[...] = mass
    half = (nodes - 1) // 2
    deltas[..., 2::2, :] = mass[..., :half, :] - mass[..., 1::2, :] - mass[..., 2::2, :]
    return deltas


def masses_from_deltas(deltas: npt.NDArray[np.unsignedinteger],
                       ) -> npt.NDArray[np.unsignedinteger]:
    """The inverse of :func:`node_deltas`: rebuilt top down, a level at a time.

    >>> d = np.array([[5, 0], [3, 0], [0, 0]], dtype=np.uint8)
    >>> masses_from_deltas(d)[:, 0].tolist()
    [5, 3, 2]
    """
    nodes = _check(deltas)
    mass = deltas.copy()
    first = 1  # first node of the level being rebuilt; its parents' level is already whole
    while first < nodes:
        last = 2 * first  # the level holds nodes first .. 2 * first (inclusive)
        parents = slice((first - 1) // 2, first)
        mass[..., first + 1:last + 1:2, :] = (mass[..., parents, :]
                                              - mass[..., first:last:2, :]
                                              - deltas[..., first + 1:last + 1:2, :])
        first = last + 1
    return mass
