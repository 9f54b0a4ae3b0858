"""edge_ml.status: the status document, the daemon's liveness, following alerts, and asking the
daemon for a checkpoint; and ``edge-ml status`` through real subprocesses.

An unreachable broker is logged and in the health record; the health record holds JSON values;
``status`` tells a live daemon from a stopped, killed or silent one.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_helpers import DaemonProcess, status, wait_for

from edge_ml.errors import DaemonError
from edge_ml.localbroker import free_port
from edge_ml.records import AlertEvent
from edge_ml.status import (
    HEALTH_STALE_GRACE_S,
    daemon_liveness,
    follow_alerts,
    request_checkpoint,
    status_document,
)
from edge_ml.storage import PendingWrites, Storage


def edge_ml(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_ML_CONFIG"}
    return subprocess.run([sys.executable, "-m", "edge_ml", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


# -- the running daemon ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_unreachable_broker_is_logged_and_reported_then_status_shows_the_stop(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    db = tmp_path / "edge-ml.db"
    config = tmp_path / "edge-ml.toml"
    config.write_text(
        f'[mqtt]\nport = {port}\nclient_id = "edge-ml-test"\nreconnect_min_s = 0.2\n'
        f'reconnect_max_s = 1.0\n[storage]\ndb = "{db}"\nstats_interval_s = 0.5\n'
        "[daemon]\nhealth_interval_s = 0.5\n")
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        def reported() -> dict[str, object] | None:
            if not db.exists():
                return None
            health = status(db).get("health") or {}
            failures = health.get("mqtt_connect_failures")
            return health if isinstance(failures, int) and failures >= 4 else None

        health = wait_for(reported, 90, "several failed connects in the health record")
        assert daemon.proc.poll() is None, daemon.log()
        # JSON types, not Python reprs
        assert health["connected"] is False
        assert "connection refused" in str(health["mqtt_error"])
        assert f"127.0.0.1:{port}" in str(health["mqtt_error"])
        assert isinstance(health["readings_total"], int) and health["pid"] == daemon.proc.pid
        lines = [line for line in daemon.log().splitlines() if "cannot connect" in line]
        assert len(lines) == 1, daemon.log()  # rate-limited: four failures, one line
        assert "connection refused" in lines[0]
        live = edge_ml("status", "--db", str(db))
        assert f"pid {daemon.proc.pid}" in live.stdout and "connection refused" in live.stdout
    finally:
        code = daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.log()

    doc = status(db)
    assert doc["health"] is None
    assert doc["daemon"]["running"] is False and doc["daemon"]["reason"] == "stopped cleanly"
    assert doc["daemon"]["pid"] == daemon.proc.pid
    text = edge_ml("status", "--db", str(db)).stdout
    assert "not running (last seen" in text and "stopped cleanly" in text, text
    assert "connected" not in text


# -- status on a database a daemon left -----------------------------------------------------
def _health_rows(db: Path, values: dict[str, str], age_s: float = 0.0) -> None:
    """Health rows as a daemon writes them (values already encoded), ``age_s`` old."""
    Storage(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM health")
        conn.executemany("INSERT INTO health (key, value, updated_at) VALUES (?, ?, ?)",
                         [(k, v, time.time() - age_s) for k, v in values.items()])
    conn.close()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_legacy_string_health_is_read_as_json_types(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    # What daemons before the JSON record wrote: str() of every value.
    _health_rows(db, {"pid": str(os.getpid()), "uptime_s": "12.5", "connected": "True",
                      "mqtt_error": "None", "readings_total": "7679", "version": "0.1.0",
                      "queue_depth": "2"})
    doc = status(db)
    assert doc["daemon"]["running"] is True, doc["daemon"]
    health = doc["health"]
    assert health["connected"] is True and health["mqtt_error"] is None
    assert health["readings_total"] == 7679 and health["uptime_s"] == 12.5
    assert health["version"] == "0.1.0"


@pytest.mark.parametrize("case", ["process gone", "silent too long", "stopped marker"])
def test_status_does_not_show_a_dead_daemon_as_live(tmp_path: Path, case: str) -> None:
    db = tmp_path / "state.db"
    values = {"pid": json.dumps(os.getpid()), "uptime_s": "0.6", "connected": "true",
              "mqtt_error": "null", "queue_depth": "2", "health_interval_s": "0.5",
              "state": '"running"'}
    age = 0.0
    if case == "process gone":
        values["pid"] = json.dumps(_dead_pid())
    elif case == "silent too long":
        age = 3600.0
    else:
        values["state"] = '"stopped"'
    _health_rows(db, values, age)
    doc = status(db)
    assert doc["daemon"]["running"] is False and doc["health"] is None, doc["daemon"]
    assert doc["daemon"]["last_seen_iso"]
    text = edge_ml("status", "--db", str(db)).stdout
    assert "not running (last seen" in text, text
    assert "connected True" not in text and "pid" not in text.split("not running")[0]


def test_status_shows_a_live_daemon(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    _health_rows(db, {"pid": json.dumps(os.getpid()), "uptime_s": "3.5", "connected": "true",
                      "mqtt_error": "null", "queue_depth": "0", "health_interval_s": "10.0",
                      "state": '"running"'})
    text = edge_ml("status", "--db", str(db)).stdout
    assert f"daemon          pid {os.getpid()}, up 3.5 s, connected True, queue 0" in text, text


# -- the library functions ------------------------------------------------------------------
NOW = 1_700_000_000.0


def test_liveness_says_why_a_daemon_is_not_running() -> None:
    me = os.getpid()
    fresh = {"pid": me, "updated_at": NOW, "health_interval_s": 1.0, "state": "running"}
    assert daemon_liveness(fresh, now=NOW + 2.0) == {
        "running": True, "pid": me, "reason": None, "last_seen": NOW,
        "last_seen_iso": "2023-11-14T22:13:20.000+00:00", "last_seen_age_s": 2.0}
    stale = NOW + 3 * 1.0 + HEALTH_STALE_GRACE_S + 1.0
    assert daemon_liveness(fresh, now=stale)["reason"] == "no health update for a while"
    # Without a stored interval the default one (10 s) applies: still fresh at that age.
    assert daemon_liveness(fresh | {"health_interval_s": None}, now=stale)["running"] is True
    assert daemon_liveness(fresh | {"state": "stopped"}, now=NOW)["reason"] == "stopped cleanly"
    gone = _dead_pid()
    assert daemon_liveness(fresh | {"pid": gone}, now=NOW)["reason"] == f"process {gone} is gone"
    assert daemon_liveness(fresh | {"pid": None}, now=NOW)["reason"] == "no pid recorded"
    assert daemon_liveness(fresh | {"pid": "junk"}, now=NOW)["pid"] is None


def _alert(alert_id: str, stream: str, state: str, ts: float) -> AlertEvent:
    return AlertEvent(alert_id, stream, state, 0.99, 80.5, ts, NOW,
                      ts if state == "resolved" else None, "warning")


def test_status_document_of_a_file_without_a_daemon() -> None:
    storage = Storage(":memory:")
    storage.write(PendingWrites(alerts=[_alert("a1", "s/x", "open", NOW)], readings=7), [
        {"stream": "s/x", "first_seen": NOW, "last_seen": NOW, "last_seen_iso": "t",
         "new_readings": 7, "last_value": 1.5, "last_score": 0.99, "warming_up": 0,
         "open_alert": "a1"}])
    good = storage.save_checkpoint(b"blob", {"readings_total": 7, "streams": 1}, "timer",
                                   "sum", 10)
    bad = storage.save_checkpoint(b"blob", {}, "timer", "sum", 10)
    storage.reject_checkpoint(bad, "truncated")
    doc = status_document(storage)
    assert doc["daemon"] is None and doc["health"] is None
    assert (doc["db"], doc["readings_total"], doc["alerts_total"], doc["open_alerts"]) == (
        ":memory:", 7, 1, 1)
    assert doc["rejects_total"] == 0 and doc["rejects_by_reason"] == {}
    assert doc["drift_events"] == 0 and doc["schema_version"] == storage.schema_version
    # The one a start loads: the rejected one is listed as such, not as the last checkpoint.
    assert doc["last_checkpoint"]["id"] == good
    assert doc["stream_names_error"].startswith(f"checkpoint {good}: ")  # b"blob" is no blob
    assert [(r["id"], r["error"]) for r in doc["checkpoints_rejected"]] == [(bad, "truncated")]
    assert doc["streams"] == [{
        "stream": "s/x", "readings": 7, "warming_up": False, "last_score": 0.99,
        "open_alert": "a1", "last_value": 1.5, "last_seen": NOW, "last_seen_iso": "t",
        "in_checkpoint": False, "set_aside": False, "recent_levels": [None] * 60,
        "scale": None}]


@pytest.mark.timeout(30)
def test_follow_alerts_yields_new_rows_of_matching_streams(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "s.db")
    storage.write(PendingWrites(alerts=[_alert("a1", "sensors/boiler/t", "open", NOW)]), [])
    boiler = follow_alerts(storage, None, "sensors/boiler/*", poll_s=0.01)
    from_first = follow_alerts(storage, 0, None, poll_s=0.01)
    assert next(from_first)["alert_id"] == "a1"  # after row 0: the stored one too
    writer = Storage(tmp_path / "s.db")  # the daemon's side
    writer.write(PendingWrites(alerts=[_alert("a2", "sensors/other/x", "open", NOW + 1),
                                       _alert("a1", "sensors/boiler/t", "resolved", NOW + 2)]),
                 [])
    row = next(boiler)  # not a1's open (stored before), not a2 (another stream)
    assert (row["alert_id"], row["state"]) == ("a1", "resolved")
    assert [next(from_first)["alert_id"] for _ in range(2)] == ["a2", "a1"]
    writer.write(PendingWrites(alerts=[_alert("a3", "sensors/boiler/p", "open", NOW + 3)]), [])
    assert next(boiler)["alert_id"] == "a3"
    writer.close()
    storage.close()


# A stand-in for the daemon: records its pid as the daemon does, and saves a checkpoint on
# SIGUSR1 (or ignores it). Its file name holds "edge", as a daemon's command line does.
STAND_IN = """
import os, signal, sys, time
from edge_ml.storage import Storage

db, mode = sys.argv[1], sys.argv[2]

def save(signum, frame):
    storage = Storage(db)
    storage.save_checkpoint(b"blob", {}, "request", "sum", 10)
    storage.close()

signal.signal(signal.SIGUSR1, save if mode == "save" else signal.SIG_IGN)
storage = Storage(db)
storage.set_health({"pid": os.getpid(), "state": "running"})
storage.close()
print("ready", flush=True)
time.sleep(60)
"""


def _stand_in(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "edge_ml_stand_in.py"
    script.write_text(STAND_IN)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "s.db"), mode],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.timeout(60)
def test_request_checkpoint_signals_the_daemon_and_returns_the_new_id(tmp_path: Path) -> None:
    proc = _stand_in(tmp_path, "save")
    storage = Storage(tmp_path / "s.db")
    try:
        before = storage.save_checkpoint(b"old", {}, "timer", "sum", 10)
        checkpoint_id = request_checkpoint(storage, timeout=30, poll_s=0.05)
        assert checkpoint_id > before
        assert storage.checkpoints()[0]["id"] == checkpoint_id
        assert storage.checkpoints()[0]["reason"] == "request"
        assert proc.poll() is None  # SIGUSR1 was handled, not fatal
    finally:
        proc.kill()
        proc.wait()
        storage.close()


@pytest.mark.timeout(60)
def test_request_checkpoint_times_out_when_none_comes(tmp_path: Path) -> None:
    proc = _stand_in(tmp_path, "ignore")
    storage = Storage(tmp_path / "s.db")
    try:
        with pytest.raises(DaemonError, match=r"no new checkpoint within 0\.3 s"):
            request_checkpoint(storage, timeout=0.3, poll_s=0.05)
        assert storage.checkpoints() == []
    finally:
        proc.kill()
        proc.wait()
        storage.close()


def test_request_checkpoint_without_a_daemon_signals_nobody(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "s.db")
    with pytest.raises(DaemonError, match="no running daemon recorded in this database"):
        request_checkpoint(storage, timeout=1)  # no health record at all
    storage.set_health({"pid": _dead_pid()})
    with pytest.raises(DaemonError, match="no running daemon"):
        request_checkpoint(storage, timeout=1)
    if b"edge" not in Path(f"/proc/{os.getpid()}/cmdline").read_bytes():
        # A live process that is not edge-ml (the pid reused): SIGUSR1 would kill it.
        storage.set_health({"pid": os.getpid()})
        with pytest.raises(DaemonError, match="no running daemon"):
            request_checkpoint(storage, timeout=1)
    storage.close()
