"""The real daemon (a subprocess) against a real mosquitto: readings in, alerts out."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import msgpack
import numpy as np
import pytest
from daemon_helpers import DaemonProcess, Observer, status, wait_for, write_config

from edge_ml.localbroker import LocalBroker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _counters(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT name, value FROM counters").fetchall())


def _wait_online(observer: Observer, daemon: DaemonProcess) -> None:
    wait_for(lambda: b"online" in observer.on("edge-ml/status") or daemon.proc.poll() is not None,
             120, "the daemon to come online")
    assert daemon.proc.poll() is None, daemon.log()


def test_readings_become_alerts_and_bad_payloads_are_counted(
    broker: LocalBroker, tmp_path: Path
) -> None:
    db = tmp_path / "edge-ml.db"
    config = write_config(tmp_path / "edge-ml.toml", broker, db)
    observer = Observer(broker, ["edge-ml/#"])
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        _wait_online(observer, daemon)
        rng = np.random.default_rng(5)
        bad = [b"", b"nan", b'{"value": "hot"}', b"\xc1\xc1", b'{"value": 1', b"x" * 70_000,
               msgpack.packb({"v": 9, "dev": "d", "seq": 1, "m": {"a": 1}})]
        good = 0
        for i in range(600):
            value = rng.normal(20.0, 0.3) + (12.0 if 450 <= i < 456 else 0.0)
            observer.client.publish("sensors/room/temp", f"{value:.4f}", qos=1)
            observer.client.publish("sensors/room/env", json.dumps(
                {"humidity": 40 + rng.normal(0, 1), "pressure": 1000 + rng.normal(0, 1)}), qos=1)
            good += 3
            if i % 80 == 0:
                for payload in bad:
                    observer.client.publish("sensors/junk", payload, qos=1)
        rejects = len(bad) * len(range(0, 600, 80))
        wait_for(lambda: _counters(db).get("readings_total", 0) == good, 60,
                 f"{good} readings to be stored")
        wait_for(lambda: _counters(db).get("rejects_total", 0) == rejects, 30, "rejects counted")
        opened = wait_for(
            lambda: [a for a in observer.json_under("edge-ml/alerts/sensors/room/temp")
                     if a["state"] == "open"], 30, "an alert message")
        alert = opened[0]
        assert set(alert) == {"alert_id", "stream", "state", "score", "value", "ts",
                              "opened_at", "resolved_at", "severity", "gateway_id",
                              "view", "fields", "expected"}
        assert alert["stream"] == "sensors/room/temp"
        assert alert["value"] > 28  # the injected excursion
        assert 0.5 <= alert["score"] <= 1.0  # the default threshold

        # While the daemon runs, status reports its own count, as of the health record stored
        # with the last statistics flush (stats_interval_s, 0.2 s here): it catches up.
        doc = wait_for(lambda: (d := status(db))["readings_total"] == good and d, 10,
                       "status to report every reading")
        assert doc["readings_stored"] == good
        assert doc["rejects_total"] == rejects
        assert set(doc["rejects_by_reason"]) >= {"empty", "non_finite", "wrong_type",
                                                   "malformed_json", "oversized", "bad_frame"}
        streams = {s["stream"]: s for s in doc["streams"]}
        # the env map's two fields are a device, whose joint view has a stream of its own
        assert set(streams) == {"sensors/room/temp", "sensors/room/env/humidity",
                                "sensors/room/env/pressure", "sensors/room/env/joint"}
        assert all(s["readings"] == 600 and not s["warming_up"] for s in streams.values())
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT alert_id, state FROM alerts WHERE stream = ?",
                                ["sensors/room/temp"]).fetchall()
            kept = conn.execute("SELECT COUNT(*) FROM rejects").fetchone()[0]
        assert (alert["alert_id"], "open") in rows
        assert kept == rejects
    finally:
        code = daemon.stop()
        observer.close()
    assert code == 0, daemon.log()


def test_sigterm_stops_cleanly_with_nothing_lost(broker: LocalBroker, tmp_path: Path) -> None:
    db = tmp_path / "edge-ml.db"
    config = write_config(tmp_path / "edge-ml.toml", broker, db)
    observer = Observer(broker, ["edge-ml/status"])
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    _wait_online(observer, daemon)
    for i in range(5000):
        observer.client.publish(f"sensors/s{i % 50}", str(i % 7), qos=1)
    observer.client.publish("sensors/s0", "1", qos=1).wait_for_publish(10)
    # Stop while readings may still be queued: the daemon must drain before it exits.
    code = daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.log()
    wait_for(lambda: observer.on("edge-ml/status")[-1:] == [b"offline"], 10, "offline status")
    assert _counters(db)["readings_total"] == 5001
    assert "stopped after 5001 readings" in daemon.log()
    observer.close()


def test_broker_down_at_start_then_up(broker: LocalBroker, tmp_path: Path) -> None:
    db = tmp_path / "edge-ml.db"
    config = write_config(tmp_path / "edge-ml.toml", broker, db)
    broker.stop()
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: db.exists(), 60, "the database")
        assert daemon.proc.poll() is None
        broker.start()
        observer = Observer(broker, ["edge-ml/status"])
        wait_for(lambda: b"online" in observer.on("edge-ml/status"), 60, "reconnect")
        observer.publish("sensors/late", "1.5")
        wait_for(lambda: _counters(db).get("readings_total") == 1, 30, "the reading")
        observer.close()
    finally:
        assert daemon.stop() == 0, daemon.log()


def test_bad_config_names_key_and_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "bad.toml"
    config.write_text("[alerts]\nthreshold = 2.5\n")
    result = subprocess.run([sys.executable, "-m", "edge_ml", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "alerts.threshold" in result.stderr and str(config) in result.stderr
