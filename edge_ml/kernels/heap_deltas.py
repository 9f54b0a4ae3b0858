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
Kernels, not NumPy slicing: the right children are every other node, and NumPy's strided
passes over them took 50 ms for 1,000 streams on the worker thread, these take a few.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit


@njit(cache=True)
def _deltas_in_place(mass, mask):
    """Right children of ``mass`` as ``parent - left - right``, wrapped by ``mask`` (the
    dtype's all-ones: two's complement makes ``& mask`` the modulo of a negative too).

    Children before parents: a node is read as a parent only before its own delta is written.
    """
    rows, nodes, windows = mass.shape
    for r in range(rows):
        for parent in range((nodes - 1) // 2 - 1, -1, -1):
            right = 2 * parent + 2
            for w in range(windows):
                delta = (np.int64(mass[r, parent, w]) - np.int64(mass[r, right - 1, w])
                         - np.int64(mass[r, right, w]))
                mass[r, right, w] = delta & mask


@njit(cache=True)
def _masses_in_place(deltas, mask):
    """Undo :func:`_deltas_in_place`; parents come first in BFS order, so each is
    whole before its right child is rebuilt from it."""
    rows, nodes, windows = deltas.shape
    for r in range(rows):
        for parent in range((nodes - 1) // 2):
            right = 2 * parent + 2
            for w in range(windows):
                mass = (np.int64(deltas[r, parent, w]) - np.int64(deltas[r, right - 1, w])
                        - np.int64(deltas[r, right, w]))
                deltas[r, right, w] = mass & mask


def _rows(mass: npt.NDArray[np.unsignedinteger]) -> tuple[tuple[int, ...], int]:
    nodes = mass.shape[-2] if mass.ndim >= 2 else 0
    if mass.dtype.kind != "u" or mass.dtype.itemsize > 4 or nodes < 1 or (nodes + 1) & nodes:
        raise ValueError(f"not tree masses [..., 2**(h + 1) - 1, windows]: {mass.dtype}"
                         f"{list(mass.shape)}")
    return (-1, nodes, mass.shape[-1]), int(np.iinfo(mass.dtype).max)


def node_deltas(mass: npt.NDArray[np.unsignedinteger],
                out: npt.NDArray[np.unsignedinteger] | None = None,
                ) -> npt.NDArray[np.unsignedinteger]:
    """``mass`` with each right child replaced by ``parent - left - right`` (wrapping).

    ``out`` may be ``mass`` itself (the checkpointer's snapshot buffer, turned in place).

    >>> m = np.array([[5, 0], [3, 0], [2, 0]], dtype=np.uint8)  # root 5 = 3 + 2
    >>> node_deltas(m)[:, 0].tolist()
    [5, 3, 0]
    """
    shape, mask = _rows(mass)
    if out is None:
        out = np.array(mass, order="C")
    elif out is not mass:
        np.copyto(out, mass)
    if not out.flags.c_contiguous:  # reshape would copy, and the deltas would go nowhere
        raise ValueError("node_deltas needs a C-contiguous output")
    _deltas_in_place(out.reshape(shape), mask)
    return out


def masses_from_deltas(deltas: npt.NDArray[np.unsignedinteger],
                       ) -> npt.NDArray[np.unsignedinteger]:
    """The inverse of :func:`node_deltas`, as a new array.

    >>> d = np.array([[5, 0], [3, 0], [0, 0]], dtype=np.uint8)
    >>> masses_from_deltas(d)[:, 0].tolist()
    [5, 3, 2]
    """
    shape, mask = _rows(deltas)
    mass = np.array(deltas, order="C")  # a copy: what a decode hands over stays as it was
    _masses_in_place(mass.reshape(shape), mask)
    return mass


def arrays_with_deltas(arrays: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    """A checkpoint's ``arrays`` with the masses under ``key`` turned into deltas, in place
    in that array, under ``key + "_deltas"`` (schema 5 on)."""
    masses = arrays.pop(key)
    arrays[key + "_deltas"] = node_deltas(masses, out=masses)
    return arrays


def arrays_with_masses(arrays: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    """The inverse of :func:`arrays_with_deltas` on a copy of the dict; a checkpoint from
    before schema 5 holds the masses under ``key`` already and is returned as it is."""
    if key + "_deltas" not in arrays:
        return arrays
    arrays = dict(arrays)
    arrays[key] = masses_from_deltas(np.asarray(arrays.pop(key + "_deltas")))
    return arrays
