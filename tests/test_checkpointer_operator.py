"""The real daemon (subprocess), mosquitto and CLI: what a restart, a reload, a rollback or a
train does to open alerts and to the state the daemon carries on from."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import DaemonProcess, Observer, status, wait_for

from edge_ml.localbroker import LocalBroker
from edge_ml.storage import Storage

pytestmark = pytest.mark.slow

T0 = 1_700_000_000.0


def _config(tmp_path: Path, broker: LocalBroker, interval_s: float) -> Path:
    path = tmp_path / "edge-ml.toml"
    path.write_text(
        f'[mqtt]\nport = {broker.port}\nclient_id = "operator-test"\n'
        f'[storage]\ndb = "{tmp_path / "state.db"}"\nflush_interval_s = 0.1\n'
        "stats_interval_s = 0.1\n"
        f"checkpoint_interval_s = {interval_s}\nretention = 20\n"
        "[model]\nn_trees = 5\nheight = 6\nwindow_size = 50\nwarmup = 20\n"
        "[daemon]\nhealth_interval_s = 0.5\n"
    )
    return path


def edge_ml(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ml", *args], capture_output=True,
                          text=True, timeout=120)


def _health(db: Path) -> dict[str, str]:
    """The health record with values as text (whether stored as text or as JSON)."""
    try:  # not through Storage before the daemon has created the tables: both would migrate
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            if not conn.execute("SELECT COUNT(*) FROM health").fetchone()[0]:
                return {}
    except sqlite3.Error:
        return {}
    storage = Storage(db)
    try:
        return {key: str(value) for key, value in storage.health().items()}
    finally:
        storage.close()


def _up(db: Path, daemon: DaemonProcess) -> None:
    def up() -> bool:
        assert daemon.proc.poll() is None, daemon.log()
        health = _health(db)
        return health.get("pid") == str(daemon.proc.pid) and health.get("connected") == "True"

    wait_for(up, 90, "daemon connected")


def _readings_are(db: Path, n: int) -> bool:
    return _health(db).get("readings_total") == str(n)


def _send(observer: Observer, stream: str, start: int, values: list[float]) -> None:
    for i, value in enumerate(values):
        observer.client.publish(stream, json.dumps({"value": value, "ts": T0 + start + i}), qos=1)


def _normal(n: int, seed: int) -> list[float]:
    return np.round(np.random.default_rng(seed).normal(20.0, 1.0, n), 3).tolist()


def _open_alerts(db: Path) -> list[dict]:
    out = edge_ml("alerts", "--db", str(db), "--open", "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def _checkpoints(db: Path) -> list[dict]:
    out = edge_ml("checkpoints", "list", "--db", str(db), "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_alert_open_at_kill_9_or_reload_is_resolved_and_published(tmp_path: Path,
                                                                  broker: LocalBroker) -> None:
    config = _config(tmp_path, broker, 3600)
    db = tmp_path / "state.db"
    observer = Observer(broker, ["edge-ml/alerts/#"])
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        _up(db, daemon)
        _send(observer, "sensors/a", 0, [*_normal(300, 1), 500.0])
        wait_for(lambda: _readings_are(db, 301), 60, "301 readings")
        (alert,) = wait_for(lambda: [a for a in _open_alerts(db) if a["value"] == 500.0], 30,
                            "the alert open")
        daemon.stop(signal.SIGKILL)

        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        _up(db, daemon)
        resolved = wait_for(lambda: [m for m in observer.json_under("edge-ml/alerts/sensors/a")
                                     if m["alert_id"] == alert["alert_id"]
                                     and m["state"] == "resolved"], 30, "a resolve on MQTT")
        assert resolved[0]["opened_at"] == alert["opened_at"]
        assert _open_alerts(db) == []
        doc = status(db)
        assert doc["open_alerts"] == 0
        stored = [json.loads(line) for line in edge_ml(
            "alerts", "--db", str(db), "--json").stdout.splitlines()]
        assert [a["reason"] for a in stored if a["alert_id"] == alert["alert_id"]] == [
            "restart", None]

        # A reload to a checkpoint from before an alert resolves it too.
        _send(observer, "sensors/a", 400, _normal(200, 2))
        wait_for(lambda: _readings_are(db, 200), 60, "200 readings after the restart")
        saved = edge_ml("checkpoints", "save", "--db", str(db))
        assert saved.returncode == 0, saved.stderr
        # The operator chooses that state again (a SIGHUP with nothing new chosen keeps the
        # live state): export it and import it back.
        newest = max(c["id"] for c in _checkpoints(db))
        blob = tmp_path / "before-alert.ckpt"
        assert edge_ml("checkpoints", "export", "--db", str(db), str(newest),
                       str(blob)).returncode == 0
        _send(observer, "sensors/a", 600, [500.0])
        (second,) = wait_for(lambda: [a for a in _open_alerts(db) if a["value"] == 500.0], 30,
                             "a second alert open")
        imported = edge_ml("checkpoints", "import", "--db", str(db), str(blob))
        assert imported.returncode == 0, imported.stderr
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: [m for m in observer.json_under("edge-ml/alerts/sensors/a")
                          if m["alert_id"] == second["alert_id"] and m["state"] == "resolved"],
                 30, "the second alert resolved on MQTT")
        assert _open_alerts(db) == []
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        observer.close()
    assert "resolved (reload)" in daemon.log()


def test_rollback_while_running_survives_the_timer_and_a_restart(tmp_path: Path,
                                                                 broker: LocalBroker) -> None:
    db = tmp_path / "state.db"
    log = tmp_path / "daemon.log"
    observer = Observer(broker, ["edge-ml/alerts/#"])
    # Timer checkpoints every second: the daemon loads the rollback at its next tick.
    config = _config(tmp_path, broker, 1.0)
    daemon = DaemonProcess(config, log)
    try:
        _up(db, daemon)
        _send(observer, "sensors/b", 0, _normal(100, 3))
        wait_for(lambda: any(c["readings_total"] == 100 for c in _checkpoints(db)), 60,
                 "a checkpoint of 100 readings")
        _send(observer, "sensors/b", 100, _normal(100, 4))
        wait_for(lambda: any(c["readings_total"] == 200 for c in _checkpoints(db)), 60,
                 "a checkpoint of 200 readings")
        target = min(c["id"] for c in _checkpoints(db) if c["readings_total"] == 100)
        rolled = edge_ml("checkpoints", "rollback", str(target), "--db", str(db), "--config",
                         str(config))
        assert rolled.returncode == 0, rolled.stderr
        # (Its health keeps counting up: the counters are the process's, not the state's.)
        wait_for(lambda: f"resumed from checkpoint {target} " in daemon.log(), 30,
                 "the daemon back at 100 readings")
        assert daemon.stop() == 0
        daemon = DaemonProcess(config, log)
        _up(db, daemon)
        assert _readings_are(db, 100)
        daemon.stop()

        # Without a timer tick before the stop: the shutdown does not save over the rollback.
        config = _config(tmp_path, broker, 3600)
        daemon = DaemonProcess(config, log)
        _up(db, daemon)
        _send(observer, "sensors/b", 200, _normal(50, 5))
        wait_for(lambda: _readings_are(db, 150), 60, "150 readings")
        assert edge_ml("checkpoints", "save", "--db", str(db)).returncode == 0
        _send(observer, "sensors/b", 250, _normal(50, 6))
        wait_for(lambda: _readings_are(db, 200), 60, "200 readings")
        assert edge_ml("checkpoints", "save", "--db", str(db)).returncode == 0
        target = max(c["id"] for c in _checkpoints(db) if c["readings_total"] == 150)
        assert edge_ml("checkpoints", "rollback", str(target), "--db", str(db)).returncode == 0
        assert daemon.stop() == 0
        assert max(c["id"] for c in _checkpoints(db) if c["active"] == 1) == target
        daemon = DaemonProcess(config, log)
        _up(db, daemon)
        assert _readings_are(db, 150)
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        observer.close()
    assert f"resumed from checkpoint {target} " in daemon.log()
    assert "loads it within a few seconds" in rolled.stdout


def test_train_one_stream_and_reload_keeps_the_other_streams(tmp_path: Path,
                                                             broker: LocalBroker) -> None:
    db = tmp_path / "state.db"
    config = _config(tmp_path, broker, 3600)
    observer = Observer(broker, ["edge-ml/alerts/#"])
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    history = tmp_path / "hist.csv"
    values = np.random.default_rng(7).normal(60.0, 1.0, 300)
    history.write_text("timestamp,value\n" + "".join(
        f"{T0 - 86400 + 60 * i},{v:.4f}\n" for i, v in enumerate(values)))
    try:
        _up(db, daemon)
        for k, stream in enumerate(["sensors/s6/t", "sensors/s6/u"]):
            _send(observer, stream, 0, _normal(150, 10 + k))
        wait_for(lambda: _readings_are(db, 300), 60, "300 readings")
        assert edge_ml("checkpoints", "save", "--db", str(db)).returncode == 0

        trained = edge_ml("train", "--config", str(config), "--stream", "sensors/s6/hist",
                          str(history))
        assert trained.returncode == 0, trained.stderr
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: re.search(r"resumed from checkpoint \d+ \(train, [^)]*\): 3 streams, "
                                   r"300 readings", daemon.log()), 30, "the reload")
        for k, stream in enumerate(["sensors/s6/t", "sensors/s6/u"]):
            _send(observer, stream, 150, _normal(5, 20 + k))
        wait_for(lambda: _readings_are(db, 310), 60, "310 readings")
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        observer.close()
    streams = {s["stream"]: s for s in status(db)["streams"]}
    for stream in ("sensors/s6/t", "sensors/s6/u"):
        assert not streams[stream]["warming_up"], stream
    assert "300 readings, 1 streams trained (the other 2 from checkpoint" in trained.stdout
    assert "3 streams in all" in trained.stdout
