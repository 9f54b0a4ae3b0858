"""The real daemon (subprocess) against the real mosquitto: kill -9, resume, corrupt fallback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
from daemon_helpers import wait_for

from edge_ml.checkpoint_format import decode
from edge_ml.config import load_config
from edge_ml.localbroker import LocalBroker
from edge_ml.pipeline import Pipeline
from edge_ml.state import compatibility, restore_state
from edge_ml.status import status_document
from edge_ml.storage import Storage

pytestmark = pytest.mark.slow

STREAM = "sensors/line/temp"


def _config(tmp_path: Path, broker: LocalBroker) -> Path:
    path = tmp_path / "edge-ml.toml"
    path.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nclient_id = "ckpt-test"\n'
        f'[storage]\ndb = "{tmp_path / "state.db"}"\ncheckpoint_interval_s = 1.0\n'
        "flush_interval_s = 0.1\nstats_interval_s = 0.1\nretention = 20\n"
        "[model]\nn_trees = 5\nheight = 6\nwindow_size = 50\nwarmup = 60\n"
        "[daemon]\nhealth_interval_s = 0.5\n"
    )
    return path


def _series(start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(start)
    ts = 1_700_000_000.0 + np.arange(start, start + n, dtype=np.float64)
    values = np.round(rng.normal(20.0, 1.0, n), 6)
    values[:: 53] += 9.0
    return ts, values


def _publish(broker: LocalBroker, ts: np.ndarray, values: np.ndarray) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="ckpt-pub")
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [client.publish(STREAM, json.dumps({"value": v, "ts": t}), qos=1)
             for t, v in zip(ts.tolist(), values.tolist(), strict=True)]
    for info in infos:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "edge_ml", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def _health(db: Path) -> dict:
    storage = Storage(db)
    try:
        return storage.health()
    finally:
        storage.close()


def _checkpoint_with(db: Path, readings: int) -> int | None:
    storage = Storage(db)
    try:
        ids = [r["id"] for r in storage.checkpoints() if r["readings_total"] == readings]
        return ids[0] if ids else None
    finally:
        storage.close()


def _connected(db: Path, pid: int, readings: int | None = None) -> bool:
    h = _health(db)
    ok = h.get("pid") == pid and h.get("connected") is True
    return ok and (readings is None or h.get("readings_total") == readings)


def test_kill_9_resume_and_corrupt_fallback(tmp_path: Path, broker: LocalBroker) -> None:
    config_path = _config(tmp_path, broker)
    db = tmp_path / "state.db"
    log = tmp_path / "daemon.log"
    n1, n2, m = 400, 150, 300
    first, second, later = _series(0, n1), _series(n1, n2), _series(n1 + n2, m)

    daemon = _start(config_path, log)
    try:
        wait_for(lambda: db.exists() and _connected(db, daemon.pid), 90, "daemon up")
        _publish(broker, *first)
        older = wait_for(lambda: _checkpoint_with(db, n1), 90, "checkpoint after n1")
        _publish(broker, *second)
        wait_for(lambda: _checkpoint_with(db, n1 + n2), 90, "checkpoint after n1+n2")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)

        # Restart from the newest checkpoint: counts continue, no warm-up again.
        daemon = _start(config_path, log)
        wait_for(lambda: _connected(db, daemon.pid, n1 + n2), 90, "resume at n1+n2")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)

        # Corrupt every checkpoint of n1+n2 readings: the daemon falls back to the older one.
        storage = Storage(db)
        newer = [r["id"] for r in storage.checkpoints() if r["readings_total"] == n1 + n2]
        for checkpoint_id in newer:
            blob = bytearray(storage.checkpoint_payload(checkpoint_id))
            blob[len(blob) // 2] ^= 0x5A
            with storage.db.conn:
                storage.db.execute("UPDATE checkpoints SET payload = ? WHERE id = ?",
                                   [bytes(blob), checkpoint_id])
        blob = storage.checkpoint_payload(older)
        storage.close()

        daemon = _start(config_path, log)
        wait_for(lambda: _connected(db, daemon.pid, n1), 90, "fallback to the older checkpoint")
        _publish(broker, *later)
        wait_for(lambda: _connected(db, daemon.pid, n1 + m), 90, "later readings")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()

    storage = Storage(db)
    status = status_document(storage)
    rejected = {r["id"] for r in status["checkpoints_rejected"]}
    assert set(newer) <= rejected
    assert all("checksum" in r["error"] for r in status["checkpoints_rejected"])
    assert status["last_checkpoint"]["reason"] == "shutdown"
    assert status["last_checkpoint"]["readings_total"] == n1 + m
    (row,) = [s for s in status["streams"] if s["stream"] == STREAM]
    assert not row["warming_up"]

    # The daemon's scores after the fallback are those of a pipeline restored from the older
    # checkpoint, and of an uninterrupted one fed the same readings.
    config = load_config(config_path)
    restored = Pipeline(config)
    restore_state(restored, decode(blob, compatibility(restored)))
    out = restored.process_readings([STREAM] * m, *later)
    uninterrupted = Pipeline(config)
    uninterrupted.process_readings([STREAM] * n1, *first)
    expected = uninterrupted.process_readings([STREAM] * m, *later)
    np.testing.assert_array_equal(out.levels, expected.levels)
    assert row["last_score"] == float(expected.levels[-1])
    assert row["last_value"] == float(later[1][-1])
    daemon_alerts = sorted((a["state"], a["ts"]) for a in storage.alerts(limit=None)
                           if a["ts"] >= later[0][0])
    storage.close()
    assert daemon_alerts == sorted((e.state, e.ts) for e in expected.events)
