"""Per-stream running statistics of a micro-batch (counts and last values), in arrival order."""

from __future__ import annotations

from numba import njit


@njit(cache=True)
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
