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
