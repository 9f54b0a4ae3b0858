"""Storage behaviour that the CLI and the daemon rely on, on a real SQLite file."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import edge_ml.storage as storage_module
from edge_ml.records import AlertEvent
from edge_ml.storage import MIGRATIONS, PendingWrites, Storage


def _event(alert_id: str, state: str, ts: float) -> AlertEvent:
    return AlertEvent(alert_id, "sensors/t", state, 0.9, 1.0, ts, ts if state == "open" else 0.0,
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


def test_processes_opening_a_new_file_at_once_all_get_the_schema(tmp_path: Path) -> None:
    # The daemon creating its database while the CLI opens it: each migration must run once.
    db = tmp_path / "race.db"
    start = time.time() + 1.0
    code = ("import sys, time\n"
            "from edge_ml.storage import Storage\n"
            "while time.time() < float(sys.argv[2]): pass\n"
            "Storage(sys.argv[1]).close()\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), str(start)],
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    storage = Storage(db)
    try:
        assert storage.schema_version == len(MIGRATIONS)
        assert storage.db["schema_migrations"].count == len(MIGRATIONS)
    finally:
        storage.close()


def test_pending_alerts_beyond_the_bound_go_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_module, "MAX_PENDING_ROWS", 3)
    pending = PendingWrites(alerts=[
        _event("a", "open", 1.0), _event("b", "open", 2.0), _event("a", "resolved", 3.0),
        _event("c", "open", 4.0), _event("b", "resolved", 5.0),
    ])
    pending.bound()  # 2 rows too many: alert a goes, open and resolve together
    assert [(e.alert_id, e.state) for e in pending.alerts] == [
        ("b", "open"), ("c", "open"), ("b", "resolved")]
    assert pending.dropped == 2
