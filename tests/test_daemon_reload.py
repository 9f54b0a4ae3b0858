"""SIGHUP on a real daemon: counters never go backwards, and nothing new chosen keeps the state.

Prometheus takes any decrease of a counter for a restart (``rate()`` breaks), and a reload that
loads the checkpoint the state already came from throws away what was learned since.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from daemon_helpers import DaemonProcess, Observer, status, stored_health, wait_for

from edge_ml.localbroker import LocalBroker, free_port

pytestmark = pytest.mark.slow

T0 = 1_700_000_000.0


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{name} (\S+)$", body, re.M)
    assert match, body
    return float(match.group(1))


def _send(observer: Observer, start: int, n: int) -> None:
    for i in range(start, start + n):
        payload = json.dumps({"value": 20.0 + (i % 7) * 0.1, "ts": T0 + i})
        observer.client.publish("sensors/r", payload, qos=1)


@pytest.mark.timeout(240)
def test_sighup_keeps_counters_and_the_learned_state(tmp_path: Path, broker: LocalBroker) -> None:
    db = tmp_path / "state.db"
    port = free_port()
    config = tmp_path / "edge-ml.toml"
    config.write_text(
        f'[mqtt]\nport = {broker.port}\nclient_id = "reload-test"\n'
        f'[storage]\ndb = "{db}"\nflush_interval_s = 0.1\nstats_interval_s = 0.1\n'
        "checkpoint_interval_s = 3600\n"
        "[model]\nn_trees = 5\nheight = 6\nwindow_size = 50\nwarmup = 20\n"
        f"[daemon]\nhealth_interval_s = 0.5\nmetrics_port = {port}\n"
    )
    observer = Observer(broker, ["edge-ml/status/health"], client_id="reload-observer")
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: stored_health(db).get("connected") is True, 90, "daemon connected")
        _send(observer, 0, 10)
        wait_for(lambda: stored_health(db).get("readings_total") == 10, 60, "10 readings")
        saved = subprocess.run([sys.executable, "-m", "edge_ml", "checkpoints", "save",
                                "--db", str(db)], capture_output=True, text=True, timeout=60)
        assert saved.returncode == 0, saved.stderr
        _send(observer, 10, 100)
        for _ in range(5):
            observer.client.publish("sensors/r", b"not a number", qos=1)
        wait_for(lambda: stored_health(db).get("readings_total") == 110
                 and stored_health(db).get("rejects_total") == 5, 60, "110 readings, 5 rejects")
        wait_for(lambda: _metric(port, "edge_ml_readings_total") == 110, 10, "metrics")
        assert not status(db)["streams"][0]["warming_up"]

        before = len(daemon.log())
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "checkpoint" in daemon.log()[before:], 30, "the reload logged")
        _send(observer, 110, 5)
        wait_for(lambda: stored_health(db).get("readings_total") in (15, 115), 60,
                 "5 more readings")
        health = stored_health(db)
        assert (health["readings_total"], health["rejects_total"]) == (115, 5), \
            daemon.log()[before:]
        # /metrics serves the last health report (every 0.5 s); the stored record can be newer
        # (a statistics flush stores the counts as of that flush): wait for the report.
        wait_for(lambda: _metric(port, "edge_ml_readings_total") == 115, 10, "metrics at 115")
        assert _metric(port, "edge_ml_rejects_total") == 5
        # The stream learned past its warm-up after the checkpoint: a reload of that same
        # checkpoint would have made it warm up again.
        assert not status(db)["streams"][0]["warming_up"]
        assert "keeping the live state" in daemon.log()[before:]

        # An operator goes back to the 10-reading checkpoint: the state is rewound (the stream
        # warms up again), the process's counters are not.
        saved = subprocess.run([sys.executable, "-m", "edge_ml", "checkpoints", "save",
                                "--db", str(db)], capture_output=True, text=True, timeout=60)
        assert saved.returncode == 0, saved.stderr
        before = len(daemon.log())
        rolled = subprocess.run([sys.executable, "-m", "edge_ml", "checkpoints", "rollback",
                                 "1", "--db", str(db)], capture_output=True, text=True,
                                timeout=60)
        assert rolled.returncode == 0, rolled.stderr
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "resumed from checkpoint 1 " in daemon.log()[before:], 30,
                 "the rollback loaded")
        _send(observer, 115, 3)
        wait_for(lambda: stored_health(db).get("readings_total") == 118, 60, "3 more readings")
        # /metrics serves the last health report (every 0.5 s); the stored record can be newer
        # (a statistics flush stores the counts as of that flush): wait for the report.
        wait_for(lambda: _metric(port, "edge_ml_readings_total") == 118, 10, "metrics at 118")
        assert status(db)["streams"][0]["warming_up"]
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        observer.close()
