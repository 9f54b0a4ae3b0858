"""Checkpoint codec, storage rows and in-process resume equality (edge_ml.checkpoint)."""

from __future__ import annotations

import dataclasses
import time
import zlib

import msgpack
import numpy as np
import pytest

import edge_ml.checkpoint as checkpoint_module
from edge_ml.checkpoint import MAGIC, SCHEMA_VERSION, Checkpointer, decode, encode, resume
from edge_ml.config import parse_config
from edge_ml.errors import CheckpointError
from edge_ml.pipeline import Pipeline
from edge_ml.status import status_document
from edge_ml.storage import Storage

CONFIG = {"model": {"n_trees": 5, "height": 6, "window_size": 50, "warmup": 60},
          "features": {"season_bins": 24}}


def _readings(n: int, streams: int = 3, seed: int = 0, start: float = 0.0):
    rng = np.random.default_rng(seed)
    names = [f"sensors/s{i % streams}" for i in range(n)]
    ts = start + np.arange(n, dtype=np.float64)
    values = rng.normal(20.0, 1.0, n)
    values[n // 2 :: 97] += 15.0  # some spikes so alerts open and resolve
    return names, ts, values


def _pipeline(storage: Storage | None = None, **model: object) -> Pipeline:
    data = {**CONFIG, "model": {**CONFIG["model"], **model}}
    return Pipeline(parse_config(data), storage)


def test_round_trip_keeps_every_array() -> None:
    p = _pipeline()
    p.process_readings(*_readings(600))
    document = p.export_state()
    back = decode(encode(document).blob, p.compatibility())
    assert back["header"]["readings_total"] == 600
    assert back["state"]["names"] == document["state"]["names"]
    for part in ("stats", "features", "detector", "alerts", "drift"):
        for key, array in document["state"][part].items():
            restored = back["state"][part][key]
            assert restored.dtype == array.dtype and restored.shape == array.shape
            np.testing.assert_array_equal(restored, array)


def test_resume_scores_exactly_as_uninterrupted() -> None:
    first = _readings(1500, seed=1)
    later = _readings(2000, seed=2, start=1500.0)
    uninterrupted = _pipeline()
    uninterrupted.process_readings(*first)
    blob = encode(uninterrupted.export_state()).blob
    expected = uninterrupted.process_readings(*later)

    restored = _pipeline()
    restored.restore_state(decode(blob, restored.compatibility()))
    got = restored.process_readings(*later)
    np.testing.assert_array_equal(got.levels, expected.levels)
    np.testing.assert_array_equal(got.raw, expected.raw)
    np.testing.assert_array_equal(got.codes, expected.codes)
    def key(events):
        return [(e.stream, e.state, e.ts, e.opened_at, e.score) for e in events]

    assert key(got.events) == key(expected.events)
    assert restored.readings_total == uninterrupted.readings_total == 3500


def test_empty_pipeline_round_trips() -> None:
    p = _pipeline()
    q = _pipeline()
    q.restore_state(decode(encode(p.export_state()).blob))
    assert len(q.streams) == 0


def _blob() -> bytes:
    p = _pipeline()
    p.process_readings(*_readings(300))
    return encode(p.export_state()).blob


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda b: b[: len(b) // 2], "checksum"),
        (lambda b: b[:20], "truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "checksum"),
        (lambda b: b"NOTACKPT" + b[8:], "magic"),
        (lambda b: b"", "magic"),
    ],
)
def test_corrupt_or_truncated_blobs_are_refused(mangle, reason) -> None:
    with pytest.raises(CheckpointError, match=reason):
        decode(mangle(_blob()))


def _signed(raw: bytes) -> bytes:
    import hashlib

    body = zlib.compress(raw)
    return MAGIC + hashlib.sha256(body).digest() + body


def test_wrong_schema_and_garbage_bodies_are_refused() -> None:
    wrong = msgpack.packb({"header": {"schema_version": SCHEMA_VERSION + 1}, "state": {}})
    with pytest.raises(CheckpointError, match="schema version"):
        decode(_signed(wrong))
    with pytest.raises(CheckpointError, match="cannot decode"):
        decode(_signed(b"\xc1\xc1\xc1"))
    with pytest.raises(CheckpointError, match="header/state"):
        decode(_signed(msgpack.packb([1, 2, 3])))
    bad_array = msgpack.packb({"header": {"schema_version": SCHEMA_VERSION},
                               "state": {"a": {"nd": 1, "dtype": "|O", "shape": [1],
                                               "data": b"12345678"}}})
    with pytest.raises(CheckpointError, match="not allowed"):
        decode(_signed(bad_array))
    short = msgpack.packb({"header": {"schema_version": SCHEMA_VERSION},
                           "state": {"a": {"nd": 1, "dtype": "<f8", "shape": [4],
                                           "data": b"1234"}}})
    with pytest.raises(CheckpointError, match="bytes"):
        decode(_signed(short))


def test_params_mismatch_is_refused_with_the_difference() -> None:
    blob = _blob()
    other = _pipeline(n_trees=7)
    with pytest.raises(CheckpointError, match="n_trees: checkpoint 5, config 7"):
        decode(blob, other.compatibility())


def test_restore_of_mismatched_arrays_leaves_state_untouched() -> None:
    p = _pipeline()
    p.process_readings(*_readings(300))
    document = p.export_state()
    del document["state"]["features"]["prof_mean"]
    q = _pipeline()
    q.process_readings(*_readings(10))
    with pytest.raises(CheckpointError, match="does not fit"):
        q.restore_state(document)
    assert q.readings_total == 10


def test_storage_save_prune_rollback_and_resume_fallback() -> None:
    storage = Storage(":memory:")
    p = _pipeline(storage)
    saver = Checkpointer(p, interval_s=3600, retention=3)
    ids = []
    for i in range(5):
        p.process_readings(*_readings(200, seed=i, start=200.0 * i))
        ids.append(saver.save_now("test"))
    rows = storage.checkpoints()
    assert [r["id"] for r in rows] == ids[:1:-1]  # newest three kept
    assert rows[0]["readings_total"] == 1000 and rows[0]["size_bytes"] > 0

    # Corrupt the newest payload: resume falls back to the next one and records why.
    blob = bytearray(storage.checkpoint_payload(ids[-1]))
    blob[100] ^= 0xFF
    storage.db.execute("UPDATE checkpoints SET payload = ? WHERE id = ?", [bytes(blob), ids[-1]])
    fresh = _pipeline(storage)
    assert resume(fresh) == ids[-2]
    assert fresh.readings_total == 800
    rejected = status_document(storage)["checkpoints_rejected"]
    assert rejected[0]["id"] == ids[-1] and "checksum" in rejected[0]["error"]

    # Rollback: the older one becomes what a start loads; newer ones are set aside.
    storage.rollback_checkpoint(ids[-3])
    again = _pipeline(storage)
    assert resume(again) == ids[-3]
    assert again.readings_total == 600
    assert {r["id"]: r["active"] for r in storage.checkpoints()}[ids[-2]] == 0


def test_incompatible_checkpoint_is_skipped_for_an_older_compatible_one() -> None:
    storage = Storage(":memory:")
    p = _pipeline(storage)
    p.process_readings(*_readings(200))
    good = Checkpointer(p, 3600, 5).save_now("test")
    q = _pipeline(storage, n_trees=7)
    q.process_readings(*_readings(200))
    Checkpointer(q, 3600, 5).save_now("test")
    fresh = _pipeline(storage)
    assert resume(fresh) == good
    assert "incompatible params" in status_document(storage)["checkpoints_rejected"][0]["error"]


def test_timer_checkpoint_runs_in_the_background() -> None:
    storage = Storage(":memory:")
    p = _pipeline(storage)
    p.process_readings(*_readings(300))
    saver = Checkpointer(p, interval_s=3600, retention=3)
    saver.request()
    saver.tick()  # starts: snapshot on this thread, encoding on a helper
    for _ in range(200):
        saver.tick()
        if saver.last_saved_id:
            break
        import time

        time.sleep(0.01)
    assert saver.last_saved_id and storage.checkpoints()[0]["reason"] == "request"


def test_config_change_of_alert_settings_still_resumes() -> None:
    p = _pipeline()
    p.process_readings(*_readings(300))
    blob = encode(p.export_state()).blob
    config = parse_config(CONFIG)
    config = dataclasses.replace(config, alerts=dataclasses.replace(config.alerts, debounce=5))
    q = Pipeline(config)
    q.restore_state(decode(blob, q.compatibility()))
    assert q.readings_total == 300


def _background_checkpoint(saver: Checkpointer) -> int | None:
    before = saver.last_saved_id
    saver.request()
    saver.tick()  # snapshot here, encoding on a helper thread
    for _ in range(500):
        saver.tick()
        if saver.last_saved_id != before:
            return saver.last_saved_id
        time.sleep(0.01)
    return None


@pytest.mark.parametrize(("keep_bytes", "kept"), [(1 << 30, True), (1024, False)])
def test_snapshot_buffers_are_kept_only_while_small(monkeypatch: pytest.MonkeyPatch,
                                                    keep_bytes: int, kept: bool) -> None:
    # Kept, they make the next checkpoint's copy cheap; but they are a second copy of every
    # stream's state, which a gateway with many streams cannot spare between checkpoints.
    monkeypatch.setattr(checkpoint_module, "POOL_KEEP_BYTES", keep_bytes)
    storage = Storage(":memory:")
    p = _pipeline(storage)
    p.process_readings(*_readings(300))
    saver = Checkpointer(p, interval_s=3600, retention=3)
    assert _background_checkpoint(saver) is not None
    assert bool(saver._pool) is kept
    p.process_readings(*_readings(100, start=300.0))
    last = _background_checkpoint(saver)  # the next one works either way
    assert last is not None
    assert resume(_pipeline(storage)) == last
