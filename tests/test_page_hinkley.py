"""The drift kernel (edge_ml.kernels.page_hinkley): block sums against a plain reference."""

from __future__ import annotations

import numpy as np
import pytest

from edge_ml.kernels.page_hinkley import block_batch, next_block_end

pytestmark = pytest.mark.kernels  # also run without the JIT (make test)


def test_blocks_match_reference_across_batches() -> None:
    rng = np.random.default_rng(1)
    n, size, streams = 3000, 7, 5
    slots = rng.integers(0, streams, n).astype(np.int64)
    values = rng.normal(size=n)
    warming = (rng.random(n) < 0.1).astype(np.uint8)
    ts = np.arange(n, dtype=np.float64)
    expected = []
    acc: dict[int, list[float]] = {s: [] for s in range(streams)}
    for i in range(n):
        if warming[i]:
            continue
        acc[int(slots[i])].append(values[i])
        if len(acc[int(slots[i])]) == size:
            block = np.array(acc[int(slots[i])])
            expected.append((int(slots[i]), block.sum(), (block * block).sum(), ts[i]))
            acc[int(slots[i])] = []
    state = (np.zeros(streams), np.zeros(streams), np.zeros(streams, dtype=np.int64))
    got = []
    for lo in range(0, n, 333):  # batches cut across blocks
        sl = slice(lo, lo + 333)
        out = block_batch(slots[sl], values[sl], warming[sl], ts[sl], *state, size)
        got.extend(zip(*(a.tolist() for a in out), strict=True))
    assert [g[0] for g in got] == [e[0] for e in expected]
    np.testing.assert_allclose([g[1:] for g in got], [e[1:] for e in expected], rtol=1e-12)


def _next_block_end_reference(slots: np.ndarray, start: int, block_n: np.ndarray,
                              size: int) -> int:
    counts = {int(s): int(block_n[s]) for s in set(slots.tolist())}
    for i in range(start, len(slots)):
        counts[int(slots[i])] += 1
        if counts[int(slots[i])] >= size:
            return i + 1
    return len(slots)


def test_pieces_end_where_a_block_can_complete_and_never_after() -> None:
    """``next_block_end`` against a plain reference; ``block_n`` is left as it was; and fed
    piece by piece, every block completes at the last reading of a piece (warming readings,
    which do not count, only make a piece end early)."""
    rng = np.random.default_rng(2)
    n, size, streams = 2000, 5, 4
    slots = rng.integers(0, streams, n).astype(np.int64)
    warming = (rng.random(n) < 0.2).astype(np.uint8)
    values = rng.normal(size=n)
    ts = np.arange(n, dtype=np.float64)
    state = (np.zeros(streams), np.zeros(streams), np.zeros(streams, dtype=np.int64))
    start = pieces = 0
    while start < n:
        before = state[2].copy()
        end = next_block_end(slots, start, state[2], size)
        np.testing.assert_array_equal(state[2], before)
        assert end == _next_block_end_reference(slots, start, before, size)
        assert end > start
        out = block_batch(slots[start:end], values[start:end], warming[start:end],
                          ts[start:end], *state, size)
        assert set(out[3].tolist()) <= {ts[end - 1]}  # a block completes only at the end
        start, pieces = end, pieces + 1
    assert pieces > n // (size * streams)
