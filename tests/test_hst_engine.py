"""The Numba half-space-tree engine against river's HalfSpaceTrees and a naive reference."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from naive_hst import NaiveForest, hst_batch, hst_step, score_learn
from river.anomaly import HalfSpaceTrees

from edge_ml.kernels.hst import PRUNED_ZERO_MIN_CELLS
from edge_ml.model.forest import ForestState, TreeStructure, feature_dtype, mass_dtype

pytestmark = pytest.mark.kernels  # also run without the JIT (make test)

N_TREES = 10
HEIGHT = 8
SEEDS = (0, 7, 42)
DIMS = (1, 4, 16)
# A small window pivots ~270 times over 10,000 readings; 250 is river's default.
WINDOWS = (37, 250)
N_READINGS = 10_000
TOL = 1e-9


def make_readings(rng: np.random.Generator, n: int, n_features: int, nan_rate: float = 0.05):
    """Sensor-like readings in [0, 1]: a drifting cluster, 2 % outliers, NaN gaps.

    The first row is complete: river builds its trees from the first sample's keys.
    """
    centre = 0.3 + 0.4 * np.sin(np.linspace(0, 6, n))[:, None]
    X = np.clip(centre + 0.08 * rng.standard_normal((n, n_features)), 0.0, 1.0)
    outliers = rng.random(n) < 0.02
    X[outliers] = rng.random((outliers.sum(), n_features))
    X[rng.random((n, n_features)) < nan_rate] = np.nan
    X[0] = np.clip(X[0], 0.0, 1.0)
    X[0][np.isnan(X[0])] = 0.5
    return X


def as_river(x: np.ndarray) -> dict[int, float]:
    """River's view of a reading: NaN is a missing key."""
    return {i: float(v) for i, v in enumerate(x) if not np.isnan(v)}


def river_scores(
    X: np.ndarray, seed: int, window_size: int, height: int = HEIGHT, n_trees: int = N_TREES
) -> np.ndarray:
    """score_one then learn_one over X with a fresh river HalfSpaceTrees."""
    model = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
    out = np.empty(len(X))
    for i, x in enumerate(X):
        d = as_river(x)
        out[i] = model.score_one(d)
        model.learn_one(d)
    return out


@pytest.mark.needs_jit
@pytest.mark.parametrize("window_size", WINDOWS)
@pytest.mark.parametrize("n_features", DIMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_river_one_by_one_and_mixed_batches(seed, n_features, window_size):
    rng = np.random.default_rng(seed * 100 + n_features)
    n_streams = 3
    per_stream = -(-N_READINGS // n_streams)
    data = [make_readings(rng, per_stream, n_features) for _ in range(n_streams)]
    expected = [river_scores(X, seed, window_size) for X in data]
    assert max(e.max() for e in expected) > 0  # past warm-up, real scores

    # Interleave the streams in a random arrival order.
    order = rng.permutation(np.repeat(np.arange(n_streams), per_stream))
    position = np.zeros(n_streams, dtype=np.int64)
    slots = np.empty(len(order), dtype=np.int64)
    rows = np.empty(len(order), dtype=np.int64)
    for i, s in enumerate(order):
        slots[i], rows[i] = s, position[s]
        position[s] += 1
    X_all = np.stack([data[s][r] for s, r in zip(slots, rows, strict=True)])

    structure = TreeStructure.from_river(n_features, N_TREES, HEIGHT, seed)

    # One reading per call.
    one = ForestState(structure, window_size, capacity=n_streams)
    got_one = np.concatenate(
        [score_learn(one, slots[i : i + 1], X_all[i : i + 1]) for i in range(len(slots))]
    )
    # Micro-batches of random size, mixing the streams.
    mixed = ForestState(structure, window_size, capacity=n_streams)
    cuts = np.unique(np.concatenate([[0], rng.integers(1, len(slots), 60), [len(slots)]]))
    got_mixed = np.concatenate(
        [score_learn(mixed, slots[a:b], X_all[a:b]) for a, b in itertools.pairwise(cuts)]
    )

    for got in (got_one, got_mixed):
        for s in range(n_streams):
            np.testing.assert_allclose(got[slots == s], expected[s], rtol=0, atol=TOL)
    np.testing.assert_array_equal(got_one, got_mixed)
    for name in ("mass", "ref", "count", "first_window"):
        np.testing.assert_array_equal(getattr(one, name), getattr(mixed, name))


def _river_bfs(root, height):
    level, feature, threshold = [root], [], []
    for _ in range(height):
        nxt = []
        for node in level:
            feature.append(node.feature)
            threshold.append(node.threshold)
            nxt.extend(node.children)
        level = nxt
    return feature, threshold


@pytest.mark.parametrize("n_features", DIMS)
@pytest.mark.parametrize("seed", SEEDS)
def test_structure_is_rivers(seed, n_features):
    model = HalfSpaceTrees(n_trees=N_TREES, height=HEIGHT, seed=seed)
    model.learn_one({i: 0.5 for i in range(n_features)})
    structure = TreeStructure.from_river(n_features, N_TREES, HEIGHT, seed)
    assert structure.split_feature.shape == (N_TREES, 2**HEIGHT - 1)
    assert structure.split_feature.dtype == np.uint8  # feature_dtype(<= 256 features)
    assert structure.split_threshold.dtype == np.float64
    for t, tree in enumerate(model.trees):
        feature, threshold = _river_bfs(tree, HEIGHT)
        assert structure.split_feature[t].tolist() == feature
        assert structure.split_threshold[t].tolist() == threshold  # bit-identical
    assert not structure.split_feature.flags.writeable


def test_warm_up_and_missing_features_match_river():
    seed, window_size, n_features = 3, 20, 4
    rng = np.random.default_rng(5)
    X = make_readings(rng, 400, n_features, nan_rate=0.3)
    X[50] = np.nan  # a reading with every feature missing
    X[60:80, 1] = np.nan  # a gap in one feature across a pivot
    expected = river_scores(X, seed, window_size)
    state = ForestState(TreeStructure.from_river(n_features, N_TREES, HEIGHT, seed), window_size)
    got = score_learn(state, np.zeros(len(X), dtype=np.int64), X)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    # Warm-up: exactly 0.0 for the whole first window, a real score right after.
    assert np.all(got[:window_size] == 0.0)
    assert got[window_size] > 0.0
    # Missing feature is not the same as any value: NaN follows the busier child.
    assert np.isnan(X).any()


def test_nan_tie_goes_left():
    """On the very first reading every l_mass is 0: a NaN walk goes left at each node."""
    structure = TreeStructure.from_river(1, 2, 3, seed=1)
    state = ForestState(structure, window_size=5, capacity=1)
    score_learn(state, np.array([0]), np.array([[np.nan]]))
    latest = 1 - state.ref[0]
    leftmost_path = [0, 1, 3, 7]
    for t in range(2):
        masses = state.mass[0, t, :, latest]
        assert masses[leftmost_path].tolist() == [1, 1, 1, 1]
        assert masses.sum() == 4


def test_paper_score_matches_naive_and_lies_in_unit_interval():
    seed, window_size, n_features, height = 11, 30, 4, 6
    structure = TreeStructure.from_river(n_features, N_TREES, height, seed)
    rng = np.random.default_rng(2)
    X = make_readings(rng, 2000, n_features)
    X[1500:1510] = 0.999  # a burst far from the cluster: high paper score
    naive = NaiveForest(structure.split_feature, structure.split_threshold, height, window_size)
    naive_river = NaiveForest(
        structure.split_feature, structure.split_threshold, height, window_size
    )
    expected_paper, expected_river = [], []
    for x in X:
        expected_paper.append(naive.score(x.tolist(), paper=True))
        naive.learn(x.tolist())
        expected_river.append(naive_river.score(x.tolist()))
        naive_river.learn(x.tolist())
    state = ForestState(structure, window_size)
    got = score_learn(state, np.zeros(len(X), dtype=np.int64), X, paper_score=True)
    np.testing.assert_allclose(got, expected_paper, rtol=0, atol=TOL)
    assert np.all((got >= 0.0) & (got <= 1.0))
    assert got[window_size:].min() < 0.5 < got[1500:1510].max()
    # The naive reference's river score is river's, so it checks the reference itself.
    np.testing.assert_allclose(
        expected_river, river_scores(X, seed, window_size, height), rtol=0, atol=TOL
    )


def test_export_restore_continues_identically():
    seed, window_size, n_features = 4, 25, 3
    structure = TreeStructure.from_river(n_features, N_TREES, HEIGHT, seed)
    rng = np.random.default_rng(9)
    X = make_readings(rng, 1200, n_features)
    slots = rng.integers(0, 3, len(X))
    whole = ForestState(structure, window_size, capacity=4)
    expected = score_learn(whole, slots, X)

    first = ForestState(structure, window_size, capacity=4)
    head = score_learn(first, slots[:613], X[:613])
    arrays = first.export()
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    restored = ForestState.restore(structure, window_size, arrays)
    tail = score_learn(restored, slots[613:], X[613:])
    np.testing.assert_array_equal(np.concatenate([head, tail]), expected)
    # export copies: the exported arrays do not move with the live state.
    assert not np.shares_memory(arrays["mass"], first.mass)


def test_restore_rejects_wrong_arrays():
    structure = TreeStructure.from_river(2, 3, 4, seed=0)
    state = ForestState(structure, 20, capacity=2)
    good = state.export()
    with pytest.raises(ValueError, match="missing arrays: count"):
        ForestState.restore(structure, 20, {k: v for k, v in good.items() if k != "count"})
    with pytest.raises(ValueError, match="'mass'"):
        ForestState.restore(TreeStructure.from_river(2, 3, 5, seed=0), 20, good)
    with pytest.raises(ValueError, match="'mass'"):
        ForestState.restore(structure, 70_000, good)  # uint32 expected for that window
    with pytest.raises(ValueError, match="'ref'"):
        ForestState.restore(structure, 20, {**good, "ref": good["ref"].astype(np.int64)})
    with pytest.raises(ValueError, match="out-of-range"):
        ForestState.restore(structure, 20, {**good, "count": np.array([0, 20], np.int32)})


def test_grow_keeps_state_and_reset_gives_fresh_model():
    seed, window_size, n_features = 8, 15, 2
    structure = TreeStructure.from_river(n_features, N_TREES, HEIGHT, seed)
    rng = np.random.default_rng(1)
    X = make_readings(rng, 900, n_features)
    slots = np.concatenate([rng.integers(0, 2, 300), rng.integers(0, 5, 600)])
    big = ForestState(structure, window_size, capacity=8)
    expected = score_learn(big, slots, X)

    small = ForestState(structure, window_size, capacity=2)
    head = score_learn(small, slots[:300], X[:300])
    small.grow(5)
    assert small.capacity == 8  # doubled twice
    tail = score_learn(small, slots[300:], X[300:])
    np.testing.assert_array_equal(np.concatenate([head, tail]), expected)
    with pytest.raises(IndexError):
        score_learn(small, np.array([8]), X[:1])

    small.reset(1)
    fresh = ForestState(structure, window_size, capacity=1)
    more = X[:100]
    np.testing.assert_array_equal(
        score_learn(small, np.ones(100, dtype=np.int64), more),
        score_learn(fresh, np.zeros(100, dtype=np.int64), more),
    )


def test_bytes_per_stream_at_defaults():
    state = ForestState(TreeStructure.from_river(4, 10, 8, seed=0), 250, capacity=4)
    # 2 windows x 10 trees x 511 nodes x uint8, plus ref, count, first_window.
    assert state.mass.dtype == np.uint8
    assert state.bytes_per_stream == 2 * 10 * 511 + 1 + 4 + 1
    assert state.bytes_per_stream <= 16 * 1024
    assert mass_dtype(1) == np.uint8 and mass_dtype(255) == np.uint8
    assert mass_dtype(256) == np.uint16 and mass_dtype(65_535) == np.uint16
    assert mass_dtype(65_536) == np.uint32


def test_feature_dtype_is_the_smallest_unsigned_index():
    assert feature_dtype(1) == np.uint8 and feature_dtype(256) == np.uint8
    assert feature_dtype(257) == np.uint16 and feature_dtype(65_536) == np.uint16
    assert feature_dtype(65_537) == np.uint32
    structure = TreeStructure.from_river(300, 2, 3, seed=0)
    assert structure.split_feature.dtype == np.uint16
    assert structure.split_feature.max() >= 256  # indices above uint8 survive the cast


@pytest.mark.parametrize("window_size", (1, 2, 254, 255))
def test_uint8_masses_match_river_up_to_a_full_byte(window_size):
    """uint8 masses at windows up to 255: a node can hold exactly 255 (all readings of a full
    window down one path), and the pivot flips/zeroes uint8 buffers like river's copy."""
    seed, n_features, height, n_trees = 6, 2, 4, 3
    structure = TreeStructure.from_river(n_features, n_trees, height, seed)
    rng = np.random.default_rng(window_size)
    n = 3 * window_size + 7 if window_size > 2 else 40  # several pivots
    X = make_readings(rng, n, n_features, nan_rate=0.1)
    # A constant run of a whole window: every node on its path reaches window_size exactly.
    X[window_size : 2 * window_size] = X[window_size]
    state = ForestState(structure, window_size)
    assert state.mass.dtype == np.uint8
    got = score_learn(state, np.zeros(n, dtype=np.int64), X)
    expected = river_scores(X, seed, window_size, height=height, n_trees=n_trees)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    if window_size == 255:
        # The constant window is now the reference: its root holds a full byte, no wraparound.
        state2 = ForestState(structure, window_size)
        score_learn(state2, np.zeros(2 * window_size, dtype=np.int64), X[: 2 * window_size])
        reference = state2.mass[0, :, :, state2.ref[0]]
        assert reference[:, 0].tolist() == [255] * n_trees
        assert ((reference == 255).sum(axis=1) == height + 1).all()  # the whole path, leaf too


def test_uint8_uint16_uint32_masses_give_identical_scores():
    """The kernel is mass-dtype generic: the same readings give bit-identical scores."""
    structure = TreeStructure.from_river(4, 5, 6, seed=3)
    rng = np.random.default_rng(3)
    X = make_readings(rng, 2000, 4)
    slots = rng.integers(0, 3, len(X))
    results = []
    for dtype in (np.uint8, np.uint16, np.uint32):
        for paper in (False, True):
            mass = np.zeros((3, 5, 2**7 - 1, 2), dtype=dtype)
            ref, count, first = np.zeros(3, np.uint8), np.zeros(3, np.int32), np.ones(3, np.uint8)
            args = (structure.split_feature, structure.split_threshold, mass, ref, count, first)
            results.append(hst_batch(*args, slots, X, 6, 100, paper))
    for got in results[2::2]:
        np.testing.assert_array_equal(got, results[0])
    for got in results[3::2]:
        np.testing.assert_array_equal(got, results[1])


def test_restore_refuses_a_checkpoint_with_another_mass_dtype():
    """A uint16 checkpoint (older engine) of a 250 window is refused with a clear message."""
    structure = TreeStructure.from_river(2, 3, 4, seed=0)
    state = ForestState(structure, 250, capacity=2)
    score_learn(state, np.zeros(30, dtype=np.int64), np.full((30, 2), 0.4))
    arrays = state.export()
    assert arrays["mass"].dtype == np.uint8
    restored = ForestState.restore(structure, 250, arrays)
    assert restored.mass.dtype == np.uint8
    np.testing.assert_array_equal(restored.mass, state.mass)
    old = {**arrays, "mass": arrays["mass"].astype(np.uint16)}
    with pytest.raises(ValueError, match=r"'mass' has dtype uint16.*window_size 250.*uint8"):
        ForestState.restore(structure, 250, old)
    wide = {**arrays, "mass": arrays["mass"].astype(np.uint32)}
    with pytest.raises(ValueError, match="dtype uint32"):
        ForestState.restore(structure, 250, wide)


def test_mass_layout_interleaves_the_two_windows_and_refuses_the_old_one():
    """mass[s, t, node] holds (window 0, window 1): ref picks the reference; the pivot flips it
    and zeroes only the old reference half, leaving the new reference intact."""
    structure = TreeStructure.from_river(2, 3, 4, seed=1)
    state = ForestState(structure, 5, capacity=2)
    assert state.mass.shape == (2, 3, 2**5 - 1, 2)
    assert state.mass.flags.c_contiguous
    X = np.full((5, 2), 0.3)
    score_learn(state, np.zeros(5, dtype=np.int64), X)  # one full window: pivot
    assert state.ref[0] == 1 and state.count[0] == 0
    assert (state.mass[0, :, 0, 1] == 5).all()  # the roots of the new reference window
    assert not state.mass[0, :, :, 0].any()  # the new latest window is empty
    assert not state.mass[1].any()  # the other slot is untouched
    score_learn(state, np.zeros(2, dtype=np.int64), X[:2])
    assert (state.mass[0, :, 0, 0] == 2).all() and (state.mass[0, :, 0, 1] == 5).all()
    # A checkpoint in the old [slots, 2, trees, nodes] layout is refused, not misread.
    arrays = state.export()
    old = {**arrays, "mass": np.ascontiguousarray(np.moveaxis(arrays["mass"], 3, 1))}
    with pytest.raises(ValueError, match=r"old \[slots, 2, trees, nodes\] layout"):
        ForestState.restore(structure, 5, old)


def test_kernel_is_dtype_generic_and_callable_directly():
    """uint8, uint16 and uint32 masses give the same scores, signed or unsigned features."""
    structure = TreeStructure.from_river(3, 4, 5, seed=2)
    rng = np.random.default_rng(0)
    X = make_readings(rng, 300, 3)
    slots = np.zeros(len(X), dtype=np.int64)
    results = []
    for dtype, fdtype in ((np.uint16, np.int32), (np.uint32, np.uint8), (np.uint8, np.int64)):
        mass = np.zeros((1, 4, 2**6 - 1, 2), dtype=dtype)
        ref, count, first = np.zeros(1, np.uint8), np.zeros(1, np.int32), np.ones(1, np.uint8)
        feature = structure.split_feature.astype(fdtype)
        args = (feature, structure.split_threshold, mass, ref, count, first)
        head = [hst_step(*args, 0, X[i], 5, 17, False) for i in range(10)]
        tail = hst_batch(*args, slots[10:], X[10:], 5, 17, False)
        results.append(np.concatenate([head, tail]))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    expected = river_scores(X, 2, 17, height=5, n_trees=4)
    np.testing.assert_allclose(results[0], expected, rtol=0, atol=TOL)


def test_pure_python_path_matches_river():
    """The kernel run with NUMBA_DISABLE_JIT=1 (coverage of the Python path) still agrees."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        import numpy as np
        from naive_hst import score_learn
        from river.anomaly import HalfSpaceTrees
        from edge_ml.model.forest import ForestState, TreeStructure
        rng = np.random.default_rng(0)
        X = rng.random((120, 2)); X[rng.random(X.shape) < 0.2] = np.nan; X[0] = 0.5
        state = ForestState(TreeStructure.from_river(2, 3, 4, seed=1), 10, capacity=2)
        got = score_learn(state, np.zeros(len(X), dtype=np.int64), X)
        paper = score_learn(ForestState(TreeStructure.from_river(2, 3, 4, seed=1), 10),
            np.zeros(len(X), dtype=np.int64), X, paper_score=True)
        model = HalfSpaceTrees(n_trees=3, height=4, window_size=10, seed=1)
        worst = 0.0
        for x, g in zip(X, got):
            d = {{i: float(v) for i, v in enumerate(x) if not np.isnan(v)}}
            worst = max(worst, abs(model.score_one(d) - g)); model.learn_one(d)
        assert worst < 1e-9, worst
        assert ((paper >= 0) & (paper <= 1)).all()
        print("ok")
        """
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_pruned_pivot_zeroing_on_tall_trees_matches_river():
    """Height 10 crosses PRUNED_ZERO_MIN_CELLS: the pivot zeroes only visited subtrees."""
    seed, window_size, n_features, height = 5, 20, 3, 10
    structure = TreeStructure.from_river(n_features, N_TREES, height, seed)
    state = ForestState(structure, window_size)
    assert state.mass[0, :, :, 0].size >= PRUNED_ZERO_MIN_CELLS
    rng = np.random.default_rng(4)
    X = make_readings(rng, 500, n_features)
    got = score_learn(state, np.zeros(len(X), dtype=np.int64), X)
    np.testing.assert_allclose(got, river_scores(X, seed, window_size, height), rtol=0, atol=TOL)
    latest = state.mass[0, :, :, 1 - state.ref[0]]
    assert latest.sum() == N_TREES * (height + 1) * state.count[0]


@pytest.mark.parametrize("window_size", (10, 30, 70, 11, 3))
def test_integer_size_limit_is_rivers_float_limit(window_size):
    """The kernel compares masses with ceil(0.1 * window_size); river with the float itself.
    0.1 * 30 and 0.1 * 70 land just above 3 and 7, 0.1 * 10 is exactly 1: all must agree."""
    seed, n_features, height, n_trees = 12, 3, 5, 4
    structure = TreeStructure.from_river(n_features, n_trees, height, seed)
    rng = np.random.default_rng(window_size)
    X = make_readings(rng, 6 * window_size + 5, n_features)
    got = score_learn(ForestState(structure, window_size), np.zeros(len(X), dtype=np.int64), X)
    expected = river_scores(X, seed, window_size, height=height, n_trees=n_trees)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def test_unlearn_takes_back_exactly_the_last_step_unless_it_pivoted():
    """hst_unlearn leaves the masses and the window count as they were before the step (the
    same as never having learned the reading), and refuses to take back a step that pivoted
    the window."""
    from edge_ml.kernels.hst import hst_step_into, hst_unlearn

    structure = TreeStructure.from_river(3, 4, 5, seed=2)
    rng = np.random.default_rng(1)
    X = make_readings(rng, 60, 3)
    window = 17
    mass = np.zeros((1, 4, 2**6 - 1, 2), dtype=np.uint8)
    ref, count, first = np.zeros(1, np.uint8), np.zeros(1, np.int32), np.ones(1, np.uint8)
    walk = np.empty((5 + 2, 4), dtype=np.int64)
    args = (structure.split_feature, structure.split_threshold, mass, ref, count, first)
    taken = pivots = 0
    for i in range(len(X)):
        before = (mass.copy(), ref.copy(), count.copy(), first.copy())
        hst_step_into(*args, 0, X[i], 5, window, False, walk)
        if i % 3:
            continue  # learned for good
        if hst_unlearn(mass, ref, count, 0, walk, 5):
            taken += 1
            for got, want in zip((mass, ref, count, first), before, strict=True):
                np.testing.assert_array_equal(got, want)
        else:
            pivots += 1
            assert count[0] == 0 and ref[0] != before[1][0]  # the step pivoted: kept
    assert taken >= 10 and pivots >= 1
