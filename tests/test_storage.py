"""Storage behaviour that the CLI and the daemon rely on, on a real SQLite file
(edge_ml.storage.database)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from edge_ml.errors import StorageBusyError, StorageError, StoragePathError
from edge_ml.records import AlertEvent
from edge_ml.storage import PendingWrites, Storage, open_existing


def _event(alert_id: str, state: str, ts: float, stream: str = "sensors/t") -> AlertEvent:
    return AlertEvent(alert_id, stream, state, 0.9, 1.0, ts, ts if state == "open" else 0.0,
                      ts if state == "resolved" else None, "warning")


def test_prune_deletes_old_closed_alerts_whole(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "s.db")
    pending = PendingWrites(alerts=[
        _event("old", "open", 100.0), _event("old", "resolved", 200.0),
        _event("straddles", "open", 300.0), _event("straddles", "resolved", 2000.0),
        _event("still-open", "open", 400.0),
        _event("new", "open", 1500.0), _event("new", "resolved", 1600.0),
    ])
    storage.write(pending, [])
    assert storage.prune_alerts(older_than=1000.0) == 2
    left = {(r["alert_id"], r["state"]) for r in storage.alerts(limit=None)}
    assert left == {("straddles", "open"), ("straddles", "resolved"), ("still-open", "open"),
                    ("new", "open"), ("new", "resolved")}
    assert [r["alert_id"] for r in storage.alerts(open_only=True, limit=None)] == ["still-open"]
    # The counters keep counting what was ever stored.
    assert storage.counters()["alerts_total"] == 7
    storage.close()


def test_alerts_after_a_row_come_oldest_first() -> None:
    storage = Storage(":memory:")
    assert storage.last_alert_id() == 0 and storage.alerts_after(0) == []
    storage.write(PendingWrites(alerts=[_event("a", "open", 1.0), _event("b", "open", 2.0),
                                        _event("a", "resolved", 3.0)]), [])
    assert storage.last_alert_id() == 3
    assert [(r["id"], r["alert_id"], r["state"]) for r in storage.alerts_after(1)] == [
        (2, "b", "open"), (3, "a", "resolved")]
    assert storage.alerts_after(3) == []


def test_rejected_checkpoints_newest_first_with_why() -> None:
    storage = Storage(":memory:")
    header = {"schema_version": 1, "readings_total": 0, "streams": 0}
    ids = [storage.save_checkpoint(b"blob", header, "timer", "sum", 10) for _ in range(3)]
    assert storage.rejected_checkpoints() == []
    storage.reject_checkpoint(ids[0], "truncated")
    storage.reject_checkpoint(ids[2], "checksum mismatch")
    assert [(r["id"], r["error"]) for r in storage.rejected_checkpoints()] == [
        (ids[2], "checksum mismatch"), (ids[0], "truncated")]
    assert all(r["created_at_iso"] for r in storage.rejected_checkpoints())


def test_health_record_round_trips_as_json() -> None:
    storage = Storage(":memory:")
    assert not storage.has_health() and storage.health() == {"updated_at": None}
    storage.set_health({"pid": 12, "connected": True, "mqtt_error": None, "uptime_s": 1.5})
    assert storage.has_health()
    health = storage.health()
    assert health.pop("updated_at") is not None
    assert health == {"pid": 12, "connected": True, "mqtt_error": None, "uptime_s": 1.5}


# -- failures leave as StorageError, never as sqlite3 errors -------------------------------------
def test_a_locked_database_is_a_busy_error_with_sqlites_words(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    storage = Storage(db)
    storage.set_busy_timeout(0.05)
    with closing(sqlite3.connect(db, isolation_level=None)) as locker:
        locker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageBusyError) as caught:
            storage.write(PendingWrites(readings=1), [])
        locker.execute("ROLLBACK")
    # The text is SQLite's own: the pipeline logs it and reports it as ``storage_error``.
    assert str(caught.value) == "database is locked"
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    storage.write(PendingWrites(readings=1), [])  # the same write once the lock is gone
    assert storage.counters()["readings_total"] == 1
    storage.close()


def test_other_sqlite_failures_are_storage_errors(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "s.db")
    storage.db.execute("DROP TABLE counters")  # a file someone edited by hand
    with pytest.raises(StorageError, match="no such table: counters") as caught:
        storage.write(PendingWrites(readings=1), [])
    assert not isinstance(caught.value, StorageBusyError)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    storage.close()


def test_open_existing_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="has the daemon run yet") as caught:
        open_existing(tmp_path / "missing.db")
    # A path to fix, as the others: the CLI exits 2 for it (issue 16 item 9).
    assert isinstance(caught.value, StoragePathError)
    assert not (tmp_path / "missing.db").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    with pytest.raises(StoragePathError, match="a-file is a file, not a folder"):
        open_existing(blocker / "state.db")
    Storage(tmp_path / "there.db").close()
    storage = open_existing(tmp_path / "there.db")
    assert storage.schema_version > 0
    storage.close()


def test_a_file_that_is_not_a_database_is_a_path_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, but long enough to have a header page\n" * 20)
    with pytest.raises(StoragePathError, match="cannot open the database"):
        Storage(path)


def _stored_counters(path: Path) -> dict[str, int]:
    """The counters table as written, without Storage's catch-up arithmetic."""
    with closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT name, value FROM counters").fetchall())


def test_alerts_total_is_every_alert_event_across_flushes_prunes_and_reopens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    storage = Storage(path)
    written = 0

    def alerts(n: int, at: float, prefix: str) -> list[AlertEvent]:
        out = []
        for i in range(n):
            out += [_event(f"{prefix}{i}", "open", at + i), _event(f"{prefix}{i}", "resolved",
                                                                      at + i + 0.5)]
        return out

    # Alert-only flushes, as the daemon writes single alerts: nothing caught up yet.
    for i in range(3):
        storage.write(PendingWrites(alerts=alerts(1, 100.0 + i, f"a{i}-")), [])
        written += 2
        assert storage.counters()["alerts_total"] == written
    # A statistics flush catches up; alerts in the same flush count once.
    storage.write(PendingWrites(alerts=alerts(2, 200.0, "b"), readings=10), [])
    written += 4
    assert storage.counters()["alerts_total"] == written
    assert _stored_counters(path)["alerts_total"] == written
    storage.write(PendingWrites(alerts=alerts(1, 300.0, "c")), [])
    written += 2
    storage.close()

    storage = Storage(path)  # reopened: the rows not caught up are still counted
    assert storage.counters()["alerts_total"] == written
    # The prune deletes every row, the newest too: its ids are taken again by the next rows,
    # which must count (alerts_counted_id moved down with MAX(id)).
    assert storage.prune_alerts(older_than=1000.0) == written
    assert storage.db["alerts"].count == 0
    assert storage.counters()["alerts_total"] == written
    storage.write(PendingWrites(alerts=alerts(1, 2000.0, "d")), [])
    written += 2
    assert storage.counters()["alerts_total"] == written
    storage.write(PendingWrites(readings=1), [])
    assert storage.counters()["alerts_total"] == written
    # A prune with nothing to delete and nothing to count writes nothing.
    before = _stored_counters(path)
    assert storage.prune_alerts(older_than=1000.0) == 0
    assert _stored_counters(path) == before
    # A rejects-only flush writes counters too, so it catches up.
    storage.write(PendingWrites(alerts=alerts(1, 3000.0, "e"),
                                rejects_dropped={"malformed_msgpack": 1}), [])
    written += 2
    assert _stored_counters(path)["alerts_total"] == written
    assert "alerts_counted_id" not in storage.counters()
    storage.close()


def test_an_alert_flush_does_not_write_the_counters(tmp_path: Path) -> None:
    # The counters page was one of ~6 pages every alert wrote (issue 15).
    path = tmp_path / "s.db"
    storage = Storage(path)
    storage.write(PendingWrites(readings=5), [])
    before = _stored_counters(path)
    statements: list[str] = []
    storage.db.conn.set_trace_callback(statements.append)
    storage.write(PendingWrites(alerts=[_event("a", "open", 1.0)]), [])
    storage.write(PendingWrites(alerts=[_event("a", "resolved", 2.0)]), [])
    assert not [s for s in statements if "counters" in s], statements
    assert _stored_counters(path) == before
    assert storage.counters()["alerts_total"] == 2
    storage.close()


def test_a_schema_5_file_keeps_its_alerts_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edge_ml.storage import schema

    path = tmp_path / "old.db"
    # A file as the build before migration 6 left it: every alert row counted in alerts_total
    # (one more, 4 rows of 5, as after a prune: the total counts what was ever stored).
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:5])
        old = Storage(path)
        assert old.schema_version == 5
        old.write(PendingWrites(alerts=[_event("x", "open", 1.0), _event("x", "resolved", 2.0),
                                        _event("y", "open", 3.0), _event("z", "open", 4.0)]),
                  [])
        with old.db.conn:
            old.db.execute("INSERT INTO counters (name, value) VALUES ('alerts_total', 5)")
        old.close()
    with closing(sqlite3.connect(path)) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = "
                                              "'index' AND tbl_name = 'alerts'")}
    assert "idx_alerts_alert_id" in indexes

    storage = Storage(path)
    assert storage.schema_version == len(schema.MIGRATIONS)
    assert storage.counters()["alerts_total"] == 5
    assert _stored_counters(path)["alerts_counted_id"] == 4
    storage.write(PendingWrites(alerts=[_event("y", "resolved", 5.0)]), [])
    assert storage.counters()["alerts_total"] == 6
    storage.write(PendingWrites(readings=1), [])
    assert storage.counters()["alerts_total"] == 6
    assert _stored_counters(path)["alerts_total"] == 6
    with closing(sqlite3.connect(path)) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = "
                                              "'index' AND tbl_name = 'alerts'")}
    assert indexes == {"idx_alerts_stream_ts"}
    # The reads that used the dropped index still answer the same.
    assert [r["alert_id"] for r in storage.alerts(open_only=True, limit=None)] == ["z"]
    storage.close()


def test_a_new_file_starts_with_nothing_counted() -> None:
    storage = Storage(":memory:")
    assert storage.counters() == {}
    storage.write(PendingWrites(alerts=[_event("a", "open", 1.0)]), [])
    assert storage.counters() == {"alerts_total": 1}
    storage.close()


def test_a_schema_6_file_gains_the_stream_scale_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Migration 7: stream rows from before keep their counts and have no scale (NULL) until
    the daemon writes them again."""
    from edge_ml.storage import schema

    row = {"stream": "s/a", "first_seen": 1.0, "last_seen": 2.0, "last_seen_iso": "x",
           "new_readings": 5, "last_value": 1.5, "last_score": 0.1, "warming_up": 0,
           "open_alert": None}
    path = tmp_path / "old.db"
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:6])
        old = Storage(path)
        assert old.schema_version == 6
        with old.db.conn:  # as the build before wrote it: no scale column to name
            old.db["streams"].insert({k: v for k, v in row.items() if k != "new_readings"}
                                     | {"readings": 5})
        old.close()
    storage = Storage(path)
    assert storage.schema_version == 7
    (before,) = storage.streams()
    assert before["readings"] == 5 and before["scale"] is None
    storage.write(PendingWrites(), [row | {"scale": "log"}])
    (after,) = storage.streams()
    assert after["readings"] == 10 and after["scale"] == "log"
