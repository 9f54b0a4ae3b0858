"""Forest masses as deltas (edge_ml.kernels.heap_deltas) and the schema-5 checkpoint built on them.

The round trip is checked on arbitrary arrays (where a node's mass is not its children's sum,
as in a corrupt or foreign checkpoint), the zeros on real forests, and a real schema-4
checkpoint written by the build before (commit 144c78c, ``tests/data/checkpoint_schema4.bin``:
a pipeline at ``CONFIG`` below after the first 250 of ``_messages(400)``) is restored by
this build to exactly the state it holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import make_pipeline, readings

from edge_ml.checkpoint_format import decode, encode
from edge_ml.config import parse_config
from edge_ml.kernels.heap_deltas import masses_from_deltas, node_deltas
from edge_ml.pipeline import Pipeline
from edge_ml.state import compatibility, export_state, restore_state

pytestmark = pytest.mark.kernels  # also run without the JIT (make test)

SCHEMA4_BLOB = Path(__file__).parent / "data" / "checkpoint_schema4.bin"
CONFIG = {"model": {"n_trees": 5, "height": 6, "window_size": 50, "warmup": 60},
          "features": {"season_bins": 24}}


def reference_deltas(mass: np.ndarray) -> np.ndarray:
    """NumPy: every right child at once, wrapping in the masses' own type."""
    deltas = mass.copy()
    half = (mass.shape[-2] - 1) // 2
    deltas[..., 2::2, :] = mass[..., :half, :] - mass[..., 1::2, :] - mass[..., 2::2, :]
    return deltas


def reference_masses(deltas: np.ndarray) -> np.ndarray:
    """NumPy, a tree level at a time, top down (each level's parents are whole by then)."""
    mass = deltas.copy()
    first = 1
    while first < deltas.shape[-2]:
        last = 2 * first  # the level is nodes first .. last
        mass[..., first + 1:last + 1:2, :] = (mass[..., (first - 1) // 2:first, :]
                                              - mass[..., first:last:2, :]
                                              - deltas[..., first + 1:last + 1:2, :])
        first = last + 1
    return mass


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("height", [0, 1, 4, 8])
def test_the_kernels_match_numpy_and_any_masses_come_back_exactly(dtype: type,
                                                                  height: int) -> None:
    rng = np.random.default_rng(height)
    nodes = 2 ** (height + 1) - 1
    mass = rng.integers(0, np.iinfo(dtype).max, (6, 4, nodes, 2), endpoint=True).astype(dtype)
    deltas = node_deltas(mass)
    assert deltas.dtype == mass.dtype and deltas.shape == mass.shape
    np.testing.assert_array_equal(deltas, reference_deltas(mass))
    np.testing.assert_array_equal(reference_masses(deltas), mass)
    np.testing.assert_array_equal(masses_from_deltas(deltas), mass)
    buffer = np.empty_like(mass)  # the checkpointer's reused snapshot buffer
    assert node_deltas(mass, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, deltas)
    in_place = mass.copy()
    assert node_deltas(in_place, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, deltas)


def test_a_learned_forest_is_half_zeros_as_deltas() -> None:
    p = make_pipeline()
    p.process_readings(*readings(3000))
    mass = p.detector.forest.mass[:3]
    assert mass[:, :, 0, :].max() > 0
    deltas = node_deltas(mass)
    assert not deltas[..., 2::2, :].any()  # every right child follows from parent and left
    np.testing.assert_array_equal(deltas[..., 1::2, :], mass[..., 1::2, :])


def test_not_tree_masses_are_refused() -> None:
    for bad in (np.zeros((3, 6, 2), np.uint8), np.zeros((3, 7, 2), np.int64),
                np.zeros(7, np.uint8)):
        with pytest.raises(ValueError, match="not tree masses"):
            node_deltas(bad)


def test_the_checkpoint_stores_deltas_and_rows_last() -> None:
    import msgpack

    p = make_pipeline()
    p.process_readings(*readings(600))
    blob = encode(export_state(p)).blob
    document = decode(blob, compatibility(p))
    detector = document["state"]["detector"]
    assert "forest.mass" not in detector
    np.testing.assert_array_equal(masses_from_deltas(detector["forest.mass_deltas"]),
                                  p.detector.forest.mass[:3])
    # Read the raw layout: arrays of two or more axes are stored with the stream axis last.
    import zlib

    raw = msgpack.unpackb(zlib.decompress(blob[40:]), raw=False)
    stored = raw["state"]["detector"]["forest.mass_deltas"]
    assert stored["nd"] == 2 and stored["shape"] == [3, 5, 127, 2]
    as_stored = np.frombuffer(stored["data"], np.uint8).reshape(5, 127, 2, 3)
    np.testing.assert_array_equal(np.moveaxis(as_stored, -1, 0), detector["forest.mass_deltas"])
    assert raw["state"]["stats"]["readings"]["nd"] == 1  # one axis: stored as it is


def _messages(n: int) -> list[tuple[str, bytes, float]]:
    rng = np.random.default_rng(3)
    load = 0.5 + 0.4 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 0.05, n)
    rows = np.column_stack([2 + 6 * load + rng.normal(0, 0.15, n),
                            10 * load + rng.normal(0, 0.2, n),
                            1 + 3 * load + rng.normal(0, 0.1, n)])
    return [("sensors/pump", json.dumps({"current": c, "flow": f, "pressure": p,
                                         "ts": 1.7e9 + 300 * i}).encode(), 0.0)
            for i, (c, f, p) in enumerate(rows.tolist())]


def _arrays(tree: dict, path: str = "") -> dict[str, np.ndarray]:
    """Every array of a decoded checkpoint state by its path, masses as masses."""
    found = {}
    for key, value in tree.items():
        name = f"{path}{key}".replace("mass_deltas", "mass")
        if isinstance(value, dict):
            found |= _arrays(value, f"{path}{key}/")
        elif isinstance(value, np.ndarray):
            found[name] = masses_from_deltas(value) if key.endswith("mass_deltas") else value
    return found


def test_a_schema_4_checkpoint_resumes_exactly() -> None:
    # The blob holds the state build 144c78c had after 250 readings. Restored by this build,
    # every array is that state (masses from the old layout, the rest as stored), and the
    # pipeline goes on exactly as one restored from this build's own checkpoint of it. (It is
    # not compared with a pipeline run from scratch: detection has changed since the blob was
    # written, so this build's own state after 250 readings differs.)
    messages = _messages(400)
    resumed = Pipeline(parse_config(CONFIG))
    document = decode(SCHEMA4_BLOB.read_bytes(), compatibility(resumed))
    assert document["header"]["schema_version"] == 4
    assert "forest.mass" in document["state"]["detector"]  # the old layout, as it was written
    restore_state(resumed, document)
    stored = _arrays(document["state"])
    assert "detector/forest.mass" in stored and "devices/arrays/devices.mass" in stored
    again = Pipeline(parse_config(CONFIG))
    mine = decode(encode(export_state(resumed)).blob, compatibility(again))
    assert mine["header"]["schema_version"] > 4
    restored = _arrays(mine["state"])
    # (Restoring marks the checkpoint's readings as flushed: they are in the database already.)
    restored["stats/flushed_readings"] = stored["stats/flushed_readings"]
    for name, array in stored.items():
        np.testing.assert_array_equal(restored[name], array, err_msg=name)
    assert resumed.devices.state.mass[0].any()
    restore_state(again, mine)
    for m in messages[250:]:
        a, b = resumed.process_messages([m]), again.process_messages([m])
        assert a is not None and b is not None
        assert np.isfinite(a.levels).all()
        assert a.levels.tolist() == b.levels.tolist()
        assert (a.joint is None) == (b.joint is None)
        if a.joint is not None and b.joint is not None:
            assert a.joint.score.tolist() == b.joint.score.tolist()


def test_device_masses_round_trip_through_schema_5() -> None:
    whole = Pipeline(parse_config(CONFIG))
    for m in _messages(400)[:250]:
        whole.process_messages([m])
    back = Pipeline(parse_config(CONFIG))
    restore_state(back, decode(encode(export_state(whole)).blob, compatibility(back)))
    assert whole.devices.state.mass[0].any()
    np.testing.assert_array_equal(back.devices.state.mass[:1], whole.devices.state.mass[:1])
