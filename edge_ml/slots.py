"""Struct-of-arrays state indexed by stream slot, grown by doubling.

Every stage that keeps per-stream state (feature windows, calibration, alerts, stream
statistics) declares its arrays once as :class:`SlotField` and gets growth, per-slot reset and
checkpoint export/restore from :class:`SlotArrays`. NumPy only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np

# Buffers reused from one checkpoint snapshot to the next, by key. Freshly allocated arrays
# of tens of MB cost a page fault per 4 KB on first touch: that, not the copy, was most of the
# worker's pause at a checkpoint (about 55 ms against 6 ms into warm buffers, 1,000 streams).
SnapshotPool = dict[str, np.ndarray]


def snapshot(array: np.ndarray, pool: SnapshotPool | None, key: str) -> np.ndarray:
    """A copy of ``array``, written into ``pool[key]`` when that buffer fits."""
    if pool is None:
        return array.copy()
    out = pool.get(key)
    if out is None or out.shape != array.shape or out.dtype != array.dtype:
        out = pool[key] = np.empty_like(array)
    np.copyto(out, array)
    return out


def place_rows(array: np.ndarray, incoming: np.ndarray, rows: list[int],
               size: int) -> np.ndarray:
    """``array``'s rows grown to ``size``, with ``incoming``'s rows put at ``rows`` (how another
    state's streams or devices are grafted onto these). New rows not in ``rows`` are zeros.
    Raises ValueError naming both shapes when the rows do not fit.

    >>> place_rows(np.array([1.0, 2.0]), np.array([9.0]), [2], 3)
    array([1., 2., 9.])
    """
    if incoming.shape != (len(rows), *array.shape[1:]) or incoming.dtype != array.dtype:
        raise ValueError(f"{incoming.dtype}{incoming.shape} does not fit "
                         f"{array.dtype}{array.shape}")
    out = np.zeros((size, *array.shape[1:]), dtype=array.dtype)
    out[:len(array)] = array
    out[rows] = incoming
    return out


@dataclass(frozen=True)
class SlotField:
    """One per-slot array: its name, trailing shape, dtype and the value of a fresh slot."""

    name: str
    dtype: type | np.dtype
    fill: float | int = 0
    shape: tuple[int, ...] = ()


def _allocate(spec: SlotField, capacity: int) -> np.ndarray:
    """A fresh array for ``capacity`` slots.

    Zero-filled fields come from ``np.zeros`` (calloc: the kernel maps pages on first write), so
    the spare half left by a doubling costs no resident memory until streams arrive;
    ``np.full`` would write, and so keep resident, every page of it.
    """
    shape = (capacity, *spec.shape)
    if spec.fill == 0:
        return np.zeros(shape, dtype=spec.dtype)
    return np.full(shape, spec.fill, dtype=spec.dtype)


class SlotArrays:
    """Named arrays sharing a leading slot axis; attribute access returns the array itself."""

    def __init__(self, fields: Iterable[SlotField], capacity: int = 16) -> None:
        self._fields = {f.name: f for f in fields}
        self._arrays = {f.name: _allocate(f, capacity) for f in self._fields.values()}
        self.capacity = capacity

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["_arrays"][name]
        except KeyError:
            raise AttributeError(name) from None

    def grow(self, capacity: int) -> bool:
        """Make room for ``capacity`` slots (doubling); True when the arrays were reallocated.

        Callers must re-read array attributes after a grow: the old arrays are not resized.
        """
        new = max(self.capacity, 1)
        while new < capacity:
            new *= 2
        if new == self.capacity:
            return False
        for name, old in self._arrays.items():
            spec = self._fields[name]
            grown = _allocate(spec, new)
            grown[: self.capacity] = old
            self._arrays[name] = grown
        self.capacity = new
        return True

    def reset(self, slot: int, keep: Collection[str] = ()) -> None:
        """Give one slot its fresh values again, except in the arrays named in ``keep``."""
        for name, array in self._arrays.items():
            if name not in keep:
                array[slot] = self._fields[name].fill

    def export(self, used: int, pool: SnapshotPool | None = None,
               prefix: str = "") -> dict[str, np.ndarray]:
        """Copies of the first ``used`` slots of every array, for a checkpoint.

        With a ``pool``, the copies go into buffers kept from the previous export.
        """
        return {name: snapshot(array[:used], pool, prefix + name)
                for name, array in self._arrays.items()}

    def restore(self, arrays: dict[str, np.ndarray], absent_ok: Collection[str] = ()) -> None:
        """Load exported arrays (any number of used slots), checking names, shapes and dtypes.

        Fields named in ``absent_ok`` (state an older checkpoint did not have yet) may be
        missing: their slots take the field's fill value.
        """
        missing = set(self._fields) - set(arrays) - set(absent_ok)
        if missing:
            raise ValueError(f"missing arrays: {sorted(missing)}")
        used = {len(a) for a in arrays.values()}
        if len(used) > 1:
            raise ValueError("arrays disagree on the number of slots")
        n = used.pop() if used else 0
        self.grow(n)
        for name, spec in self._fields.items():
            if name not in arrays:
                self._arrays[name][:] = spec.fill
                continue
            array = arrays[name]
            if array.shape[1:] != spec.shape or array.dtype != np.dtype(spec.dtype):
                raise ValueError(
                    f"{name}: expected {np.dtype(spec.dtype)}{spec.shape}, "
                    f"got {array.dtype}{array.shape[1:]}"
                )
            self._arrays[name][:n] = array
            self._arrays[name][n:] = spec.fill
