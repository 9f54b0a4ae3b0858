"""Saving and loading checkpoints (edge_ml.checkpointer): storage rows, fallback, background
saves, snapshot buffers, and an operator's chosen checkpoint never saved over. In process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pipeline_helpers import daemon_side, make_pipeline, normal, readings

import edge_ml.checkpointer as checkpointer_module
from edge_ml.checkpoint_format import decode
from edge_ml.checkpointer import Checkpointer, resume
from edge_ml.pipeline import Pipeline
from edge_ml.status import status_document
from edge_ml.storage import Storage


def test_storage_save_prune_rollback_and_resume_fallback() -> None:
    storage = Storage(":memory:")
    p = make_pipeline(storage)
    saver = Checkpointer(p, interval_s=3600, retention=3)
    ids = []
    for i in range(5):
        p.process_readings(*readings(200, seed=i, start=200.0 * i))
        ids.append(saver.save_now("test"))
    rows = storage.checkpoints()
    assert [r["id"] for r in rows] == ids[:1:-1]  # newest three kept
    assert rows[0]["readings_total"] == 1000 and rows[0]["size_bytes"] > 0

    # Corrupt the newest payload: resume falls back to the next one and records why.
    blob = bytearray(storage.checkpoint_payload(ids[-1]))
    blob[100] ^= 0xFF
    storage.db.execute("UPDATE checkpoints SET payload = ? WHERE id = ?", [bytes(blob), ids[-1]])
    fresh = make_pipeline(storage)
    assert resume(fresh) == ids[-2]
    assert fresh.readings_total == 800
    rejected = status_document(storage)["checkpoints_rejected"]
    assert rejected[0]["id"] == ids[-1] and "checksum" in rejected[0]["error"]

    # Rollback: the older one becomes what a start loads; newer ones are set aside.
    storage.rollback_checkpoint(ids[-3])
    again = make_pipeline(storage)
    assert resume(again) == ids[-3]
    assert again.readings_total == 600
    assert {r["id"]: r["active"] for r in storage.checkpoints()}[ids[-2]] == 0


def test_incompatible_checkpoint_is_skipped_for_an_older_compatible_one() -> None:
    storage = Storage(":memory:")
    p = make_pipeline(storage)
    p.process_readings(*readings(200))
    good = Checkpointer(p, 3600, 5).save_now("test")
    q = make_pipeline(storage, n_trees=7)
    q.process_readings(*readings(200))
    Checkpointer(q, 3600, 5).save_now("test")
    fresh = make_pipeline(storage)
    assert resume(fresh) == good
    assert "incompatible params" in status_document(storage)["checkpoints_rejected"][0]["error"]


def test_timer_checkpoint_runs_in_the_background() -> None:
    storage = Storage(":memory:")
    p = make_pipeline(storage)
    p.process_readings(*readings(300))
    saver = Checkpointer(p, interval_s=3600, retention=3)
    saver.request()
    saver.tick()  # starts: snapshot on this thread, encoding on a helper
    for _ in range(200):
        saver.tick()
        if saver.current_id:
            break
        import time

        time.sleep(0.01)
    assert saver.current_id and storage.checkpoints()[0]["reason"] == "request"


def _background_checkpoint(saver: Checkpointer) -> int | None:
    before = saver.current_id
    saver.request()
    saver.tick()  # snapshot here, encoding on a helper thread
    for _ in range(500):
        saver.tick()
        if saver.current_id != before:
            return saver.current_id
        time.sleep(0.01)
    return None


@pytest.mark.parametrize(("keep_bytes", "kept"), [(1 << 30, True), (1024, False)])
def test_snapshot_buffers_are_kept_only_while_small(monkeypatch: pytest.MonkeyPatch,
                                                    keep_bytes: int, kept: bool) -> None:
    # Kept, they make the next checkpoint's copy cheap; but they are a second copy of every
    # stream's state, which a gateway with many streams cannot spare between checkpoints.
    monkeypatch.setattr(checkpointer_module, "POOL_KEEP_BYTES", keep_bytes)
    storage = Storage(":memory:")
    p = make_pipeline(storage)
    p.process_readings(*readings(300))
    saver = Checkpointer(p, interval_s=3600, retention=3)
    assert _background_checkpoint(saver) is not None
    assert bool(saver._pool) is kept
    p.process_readings(*readings(100, start=300.0))
    last = _background_checkpoint(saver)  # the next one works either way
    assert last is not None
    assert resume(make_pipeline(storage)) == last


# -- an operator's checkpoint is not saved over -------------------------------------------------
def _three_saves(tmp_path: Path) -> tuple[Pipeline, Checkpointer, Storage, list[int]]:
    p, saver, _, storage = daemon_side(tmp_path / "state.db")
    ids = []
    for i in range(3):
        normal(p, 100, 100 * i)
        ids.append(saver.save_now("timer"))
    normal(p, 100, 300)
    return p, saver, storage, ids


def test_shutdown_does_not_save_over_a_rollback(tmp_path: Path) -> None:
    _, saver, storage, ids = _three_saves(tmp_path)
    storage.rollback_checkpoint(ids[0])
    assert saver.save_now("shutdown") is None
    assert storage.newest_checkpoint_id() == ids[0]
    assert [r["id"] for r in storage.checkpoints()] == ids[::-1]


def test_timer_tick_loads_a_rollback_then_saves_on_top_of_it(tmp_path: Path) -> None:
    p, saver, storage, ids = _three_saves(tmp_path)
    storage.rollback_checkpoint(ids[1])
    saver.last_started -= 3600  # the timer is due
    saver.tick()
    assert p.readings_total == 200 and saver.current_id == ids[1]
    assert storage.newest_checkpoint_id() == ids[1]
    normal(p, 50, 200)
    newest = saver.save_now("shutdown")
    assert newest is not None and newest > ids[2]
    assert storage.checkpoints()[0]["readings_total"] == 250


def test_a_save_in_flight_does_not_supersede_an_import(tmp_path: Path) -> None:
    p, saver, storage, ids = _three_saves(tmp_path)
    saver.request()
    saver.tick()  # a snapshot of 400 readings is being encoded
    blob = storage.checkpoint_payload(ids[0])
    imported = storage.save_checkpoint(blob, decode(blob)["header"], "import",
                                       storage.checkpoints()[-1]["checksum"], 10)
    saver._finish(wait=True)
    assert storage.newest_checkpoint_id() == imported
    assert all(r["readings_total"] != 400 for r in storage.checkpoints())
    saver.tick()  # loads the imported one
    assert p.readings_total == 100 and saver.current_id == imported


def test_a_save_request_after_a_rollback_loads_it_first(tmp_path: Path) -> None:
    _, saver, storage, ids = _three_saves(tmp_path)
    storage.rollback_checkpoint(ids[0])
    saver.request()
    saver.tick()  # loads ids[0], then starts the requested save
    saver._finish(wait=True)
    assert storage.checkpoints()[0]["reason"] == "request"
    assert storage.checkpoints()[0]["readings_total"] == 100
