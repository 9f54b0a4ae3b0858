"""The drift kernel (edge_ml.kernels.page_hinkley): block sums against a plain reference."""

from __future__ import annotations

import numpy as np
import pytest

from edge_ml.kernels.page_hinkley import block_batch

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
