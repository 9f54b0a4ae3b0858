"""Per-stream block sums for the drift monitor, in arrival order, O(1) per reading."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def block_batch(slots, values, warming, ts, block_sum, block_sumsq, block_n, size):
    """Add each reading (warming ones skipped) to its stream's open block of ``size`` readings.

    Returns the blocks completed in this batch, in the order they completed:
    ``(slot int64[K], sum float64[K], sum_of_squares float64[K], last_ts float64[K])``; the
    partial blocks stay in ``block_sum``, ``block_sumsq``, ``block_n``.
    """
    n = slots.shape[0]
    # A reading can complete at most one block (blocks carried from earlier batches complete
    # with fewer than ``size`` readings here), so ``n`` bounds the count.
    out_slot = np.empty(n, dtype=np.int64)
    out_sum = np.empty(out_slot.shape[0], dtype=np.float64)
    out_sumsq = np.empty(out_slot.shape[0], dtype=np.float64)
    out_ts = np.empty(out_slot.shape[0], dtype=np.float64)
    k = 0
    for i in range(n):
        if warming[i]:
            continue
        s = slots[i]
        v = values[i]
        block_sum[s] += v
        block_sumsq[s] += v * v
        block_n[s] += 1
        if block_n[s] == size:
            out_slot[k] = s
            out_sum[k] = block_sum[s]
            out_sumsq[k] = block_sumsq[s]
            out_ts[k] = ts[i]
            k += 1
            block_sum[s] = 0.0
            block_sumsq[s] = 0.0
            block_n[s] = 0
    return out_slot[:k], out_sum[:k], out_sumsq[:k], out_ts[:k]
