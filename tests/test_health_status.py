"""What ``edge-ml run`` and ``edge-ml status`` say when things are wrong, through real subprocesses.

An unreachable broker is logged and in the health record; the health record holds JSON values;
``status`` tells a live daemon from a stopped, killed or silent one; a database path that cannot
be used is a config error naming ``storage.db`` (or ``--db``) and the config file.
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

from edge_ml.localbroker import free_port
from edge_ml.storage import Storage


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
        f'reconnect_max_s = 1.0\n[storage]\ndb = "{db}"\n[daemon]\nhealth_interval_s = 0.5\n')
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


# -- database paths that cannot be used -----------------------------------------------------
def _bad_db(tmp_path: Path, kind: str) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    if kind == "under a file":
        return blocker / "state" / "edge-ml.db"
    return blocker  # an existing file that is not a database


@pytest.mark.parametrize("kind", ["under a file", "not a database"])
@pytest.mark.parametrize("command", ["run", "train", "status", "alerts"])
def test_unusable_db_from_config_is_a_config_error(tmp_path: Path, kind: str,
                                                    command: str) -> None:
    db = _bad_db(tmp_path, kind)
    config = tmp_path / "edge-ml.toml"
    config.write_text(f'[mqtt]\nport = {free_port()}\n[storage]\ndb = "{db}"\n')
    history = tmp_path / "history.csv"
    history.write_text("timestamp,value\n1700000000,1.0\n1700000001,2.0\n")
    args = {"run": ["run"], "train": ["train", str(history)]}.get(command, [command])
    result = edge_ml(*args, "--config", str(config), timeout=120)
    assert result.returncode == 2, result.stderr
    assert "storage.db" in result.stderr and str(config) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["under a file", "not a database"])
def test_unusable_db_option_is_a_usage_error(tmp_path: Path, kind: str) -> None:
    db = _bad_db(tmp_path, kind)
    history = tmp_path / "history.csv"
    history.write_text("timestamp,value\n1700000000,1.0\n")
    for args in (["train", str(history), "--db", str(db)], ["status", "--db", str(db)]):
        result = edge_ml(*args, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "--db" in result.stderr and "a-file" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
