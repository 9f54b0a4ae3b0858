"""The drift monitor's kernel: per-stream block sums and a Page-Hinkley test on block means.

Readings are summed into blocks per stream (:func:`block_batch`); each completed block's mean
goes to that stream's two-sided Page-Hinkley test (:func:`drift_batch`). In arrival order,
O(1) per reading. :mod:`edge_ml.drift` holds the state and turns detections into events.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# After the reference, the spread of a stream's block means keeps learning at this rate (about
# the last 100 blocks). Frozen after the first ``min_blocks`` blocks, it was the spread of a
# young profile's residuals, which swing more than a grown one's, and drifts came hours late
# (NAB realAWSCloudwatch +0.2, realKnownCause +0.2; every rate from 1/30 to 1/1,000 and a
# plain running mean gave the same figures, docs/benchmarks.md round 12).
SPREAD_ALPHA = 1.0 / 100.0


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def next_block_end(slots, start, block_n, size):
    """The end (exclusive) of the piece of the batch from ``start`` that no stream's block
    completes before its last reading: a drift can only be found there.

    Every reading is counted, although :func:`block_batch` skips warming ones (unknown until
    the model has scored them), so the piece never runs past a block's real completion; it may
    end early, and the next piece goes on from there. ``block_n`` is counted up in place and
    put back as it was.
    """
    n = slots.shape[0]
    end = n
    for i in range(start, n):
        block_n[slots[i]] += 1
        if block_n[slots[i]] >= size:
            end = i + 1
            break
    for i in range(start, end):
        block_n[slots[i]] -= 1
    return end


@njit(cache=True, nogil=True)
def drift_batch(slots, values, warming, ts, block_sum, block_sumsq, block_n, ref_var, ref_mean,
                ref_mean_m2, ref_blocks, ph_n, ph_mean, ph_inc, ph_min_inc, ph_dec, ph_max_dec,
                size, min_blocks, delta, threshold, alpha, min_scale):
    """Block sums (:func:`block_batch`), then each completed block into its stream's drift test.

    A stream's first ``min_blocks`` blocks only set its scale: the larger of the mean
    within-block variance (``ref_var``) and the variance of those blocks' means (Welford:
    ``ref_mean``, ``ref_mean_m2``). The latter keeps learning from every later block, after the
    block is scored (``SPREAD_ALPHA``). Each later block mean, in units of that scale, goes to a
    two-sided Page-Hinkley test with river's ``PageHinkley.update`` arithmetic, operation for
    operation (its ``stats.Mean``, ``alpha``-faded sums, ``min_instances = min_blocks``). Once
    a stream drifts, its later blocks in this batch are ignored (the caller resets its state).

    Why the second term: on white noise the block means vary far less than the readings within
    a block (by ``1 / size`` in variance), so the within-block spread sets the scale. A stream
    whose normal wander is slower than a block (a 10-minute sine read at 1 Hz) has tight blocks
    whose means swing by the wander's whole amplitude: scaled by the within-block spread alone,
    its normal swing looked like a drift (round 7: 6 resets of such a sine in 45,000 readings).

    Returns ``(block index, block mean, scale, running mean)`` of each drift, in block order:
    ``(int64[D], float64[D], float64[D], float64[D])``, and the blocks' ``last_ts`` and slots.
    """
    block_slots, sums, sumsqs, last_ts = block_batch(slots, values, warming, ts, block_sum,
                                                     block_sumsq, block_n, size)
    k_blocks = block_slots.shape[0]
    found = np.empty(k_blocks, dtype=np.int64)
    found_mean = np.empty(k_blocks, dtype=np.float64)
    found_scale = np.empty(k_blocks, dtype=np.float64)
    found_running = np.empty(k_blocks, dtype=np.float64)
    d = 0
    for k in range(k_blocks):
        s = block_slots[k]
        drifted = False
        for j in range(d):
            if block_slots[found[j]] == s:
                drifted = True
        if drifted:
            continue
        mean = sums[k] / size
        spread = sumsqs[k] / size - mean * mean
        var = 0.0 if spread < 0.0 else spread  # Python's max(spread, 0.0)
        if ref_blocks[s] < min_blocks:
            seen = ref_blocks[s] + 1
            ref_var[s] += (var - ref_var[s]) / seen
            step = mean - ref_mean[s]
            ref_mean[s] += step / seen
            ref_mean_m2[s] += step * (mean - ref_mean[s])
            ref_blocks[s] = seen
            continue
        # Sample variance of the reference block means (one block: none).
        means_var = ref_mean_m2[s] / (ref_blocks[s] - 1) if ref_blocks[s] > 1 else 0.0
        root = math.sqrt(ref_var[s] if ref_var[s] > means_var else means_var)
        scale = min_scale if min_scale > root else root  # max(root, min_scale)
        x = mean / scale
        # river.drift.PageHinkley.update(x), mode "both"
        n = ph_n[s] + 1.0
        running = ph_mean[s] + (1.0 / n) * (x - ph_mean[s])
        dev = x - running
        inc = alpha * ph_inc[s] + dev - delta
        dec = alpha * ph_dec[s] + dev + delta
        ph_n[s] = n
        ph_mean[s] = running
        ph_inc[s] = inc
        ph_dec[s] = dec
        if inc < ph_min_inc[s]:
            ph_min_inc[s] = inc
        if dec > ph_max_dec[s]:
            ph_max_dec[s] = dec
        # Then the block mean joins the spread of the block means, an exponentially weighted
        # variance from the reference's on. It stays ``ref_mean_m2 / (ref_blocks - 1)`` (so a
        # checkpoint written before keeps its meaning), and the block was scaled before it
        # learned.
        seen = ref_blocks[s] + 1
        rate = max(SPREAD_ALPHA, 1.0 / seen)
        step = mean - ref_mean[s]
        ref_mean[s] += rate * step
        ref_mean_m2[s] = (1.0 - rate) * (means_var + rate * step * step) * (seen - 1)
        ref_blocks[s] = seen
        if n >= min_blocks and (inc - ph_min_inc[s] > threshold
                                or ph_max_dec[s] - dec > threshold):
            found[d] = k
            found_mean[d] = mean
            found_scale[d] = scale
            found_running[d] = running
            d += 1
    return (found[:d], found_mean[:d], found_scale[:d], found_running[:d], block_slots,
            last_ts)
