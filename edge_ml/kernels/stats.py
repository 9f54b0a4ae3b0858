"""Per-stream running statistics of a micro-batch (counts and last values), in arrival order."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def record_batch(slots, ts, values, levels, warming, readings, first_ts, last_ts, last_value,
                 last_level, last_warming):
    """Count each reading and keep the latest ts, value, level and warm-up flag per slot.

    Written as a loop because NumPy's fancy assignment does not promise that the last of
    several writes to the same slot wins.
    """
    for i in range(slots.shape[0]):
        s = slots[i]
        if readings[s] == 0:
            first_ts[s] = ts[i]
        readings[s] += 1
        last_ts[s] = ts[i]
        last_value[s] = values[i]
        last_level[s] = levels[i]
        last_warming[s] = warming[i]


@njit(cache=True, nogil=True)
def recent_batch(slots, ts, levels, warming, ring, minute, steps):
    """Per slot, the maximum level of each of the last ``ring.shape[1]`` minutes (a ring).

    ``ring`` uint8[slots, cells]: 0 = no scored reading that minute, else
    ``1 + round(level * steps)``; ``minute`` int64[slots]: the newest minute (epoch minutes)
    the ring holds, 0 for none. A reading in a newer minute first blanks the cells of the
    minutes skipped over; one older than the ring's hour, a warming-up one (its level is
    no score yet) or a non-finite one is left out.
    """
    cells = ring.shape[1]
    for i in range(slots.shape[0]):
        level = levels[i]
        if warming[i] or not np.isfinite(level) or not np.isfinite(ts[i]):
            continue
        s = slots[i]
        m = np.int64(np.floor(ts[i] / 60.0))
        newest = minute[s]
        if m > newest:
            if newest == 0 or m - newest >= cells:
                ring[s, :] = 0
            else:
                for k in range(newest + 1, m + 1):
                    ring[s, k % cells] = 0
            minute[s] = m
            newest = m
        if m <= newest - cells:
            continue
        q = 1 + np.int64(np.round(min(max(level, 0.0), 1.0) * steps))
        c = m % cells
        if q > ring[s, c]:
            ring[s, c] = q
