"""Another process holding the database's write lock must not freeze scoring or alerts.

A backup, ``sqlite3`` in a shell or a Datasette write can hold ``BEGIN IMMEDIATE`` for seconds.
The worker's writes then fail fast (``[storage] busy_timeout_s``), are retried with a capped
exponential backoff, and land once the lock is gone; alerts go out on MQTT meanwhile. (Storage
raises StorageBusyError for the lock; the pipeline's flush retries it.)
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_helpers import DaemonProcess, Observer, wait_for, write_config

import edge_ml.storage.pending
from edge_ml.config import parse_config
from edge_ml.localbroker import LocalBroker
from edge_ml.pipeline import RETRY_MAX_S, Pipeline
from edge_ml.records import AlertEvent
from edge_ml.storage import Storage


def _pipeline(db: Path, busy_timeout_s: float = 0.05) -> Pipeline:
    config = parse_config({"storage": {"db": str(db), "busy_timeout_s": busy_timeout_s}})
    storage = Storage(db)
    storage.set_busy_timeout(busy_timeout_s)
    return Pipeline(config, storage)


def _lock(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _alert(alert_id: str, state: str) -> AlertEvent:
    return AlertEvent(alert_id, "sensors/a", state, 0.9, 9.0, 1e9, 1e9,
                      1e9 if state == "resolved" else None, "warning")


def test_locked_flush_fails_fast_backs_off_and_lands_after(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    p = _pipeline(db)
    now = time.time()
    p.process_messages([("sensors/a", b"1.0", now)] * 10)
    p.pending.alerts.append(_alert("a1", "open"))
    locker = _lock(db)
    try:
        started = time.monotonic()
        assert p.flush() is False
        assert time.monotonic() - started < 1.0, "the worker waited on the lock"
        assert "locked" in (p.last_storage_error or "")
        # An alert is pending, but the retry waits for its backoff instead of every loop.
        assert not p.flush_due()
        waits = []
        for _ in range(8):
            assert p.flush() is False
            waits.append(p._retry_at - time.monotonic())
        assert waits[0] < waits[2] < waits[4], waits  # exponential...
        assert max(waits) <= RETRY_MAX_S  # ...and capped
        p.process_messages([("sensors/a", b"2.0", now)] * 5)  # scoring goes on meanwhile
        p.pending.alerts.append(_alert("a1", "resolved"))
    finally:
        locker.rollback()
        locker.close()
    # (The daemon flushes once flush_due() says so, at most RETRY_MAX_S later; see above.)
    assert p.flush() is True
    assert p.last_storage_error is None
    storage = p.storage
    assert storage is not None
    assert storage.counters()["readings_total"] == 15
    assert [(r["alert_id"], r["state"]) for r in storage.alerts(limit=None)] == [
        ("a1", "resolved"), ("a1", "open")]
    assert storage.streams()[0]["readings"] == 15
    # Healthy again: the next flush is due on the ordinary interval, not a backoff.
    assert not p.flush_due()


def test_rows_beyond_the_pending_bound_are_dropped_but_counts_stay_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edge_ml.storage.pending, "MAX_PENDING_ROWS", 20)
    db = tmp_path / "s.db"
    p = _pipeline(db)
    locker = _lock(db)
    try:
        for _ in range(5):
            p.process_messages([("sensors/junk", b"hello", time.time())] * 10)
            assert p.flush() is False
    finally:
        locker.rollback()
        locker.close()
    assert p.flush() is True
    storage = p.storage
    assert storage is not None
    counters = storage.counters()
    assert counters["pending_dropped"] == 30
    assert storage.db["rejects"].count == 20  # the newest rows, within the bound
    # The counts per reason and in total do not depend on how many rows could be kept.
    assert counters["rejects_total"] == 50
    assert storage.reject_counts() == {"malformed_msgpack": 50}


# -- the running daemon ---------------------------------------------------------------------
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""


class TimedObserver(Observer):
    """An observer that also notes when each message arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.arrived: list[tuple[float, str, bytes]] = []
        super().__init__(*args, **kwargs)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.arrived.append((time.monotonic(), message.topic, message.payload))
        super()._on_message(client, userdata, message)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_alerts_go_out_while_another_process_holds_the_lock(
    tmp_path: Path, broker: LocalBroker,
) -> None:
    db = tmp_path / "edge-ml.db"
    config = write_config(tmp_path / "edge-ml.toml", broker, db,
                          "[alerts]\ncooldown_readings = 20\n")
    # The spikes are not a drift to react to (a reset would mean a new warm-up).
    config.write_text(config.read_text().replace("[model]\n",
                                                 '[model]\ndrift_reaction = "none"\n'))
    watch = TimedObserver(broker, ["edge-ml/status", "edge-ml/alerts/#",
                                   "edge-ml/status/health"])
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    rng = np.random.default_rng(3)
    spikes: list[float] = []  # when each spike was published
    sent = 0

    def publish(n: int, rate: float, spike_every: int) -> None:
        nonlocal sent
        for i in range(n):
            spike = spike_every and i % spike_every == spike_every - 1
            value = 60.0 if spike else float(rng.normal(20.0, 0.5))
            if spike:
                spikes.append(time.monotonic())
            watch.client.publish("sensors/lock/a", f"{value:.4f}", qos=1)
            sent += 1
            if rate:
                time.sleep(1.0 / rate)

    try:
        wait_for(lambda: b"online" in watch.on("edge-ml/status"), 60, "daemon online")
        publish(200, 0, 0)  # warm-up
        wait_for(lambda: json.loads(watch.on("edge-ml/status/health")[-1])["readings_total"]
                 >= 200 if watch.on("edge-ml/status/health") else False, 30, "warm-up scored")
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(db), "8"],
                                  stdout=subprocess.PIPE, text=True)
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()
        spikes.clear()
        publish(700, 100, 150)  # ~7 s at 100 readings/s, a spike every 1.5 s
        released_line = locker.stdout.readline().strip()
        released_at = time.monotonic()
        assert locker.wait(10) == 0 and released_line == "released"
        during = [t for t in spikes if t < released_at - 0.5]
        assert len(during) >= 3, (spikes, locked_at, released_at)
        opens = [t for t, topic, body in watch.arrived
                 if topic.startswith("edge-ml/alerts/") and json.loads(body)["state"] == "open"]
        for spike in during:
            latency = min((t - spike for t in opens if t >= spike), default=float("inf"))
            assert latency < 1.0, f"alert {latency:.2f} s after its spike, lock held"
        health = [json.loads(p) for p in watch.on("edge-ml/status/health")]
        assert any(h["storage_faults"] > 0 for h in health), "the lock was never met"
        # Everything lands once the lock is gone: every alert message has its row.
        watch.publish("sensors/lock/a", "20.0")
        sent += 1
        published = {(a["alert_id"], a["state"]) for a in watch.json_under("edge-ml/alerts/")}

        def landed() -> bool:
            with sqlite3.connect(db) as conn:
                rows = set(conn.execute("SELECT alert_id, state FROM alerts").fetchall())
                readings = conn.execute(
                    "SELECT value FROM counters WHERE name = 'readings_total'").fetchone()
            return rows >= published and readings is not None and readings[0] == sent

        wait_for(landed, RETRY_MAX_S + 10, "all rows written after the lock")
    finally:
        watch.close()
        code = daemon.stop()
    log = daemon.log()
    assert code == 0, log
    assert "database is locked" in log and "storage writable again" in log, log
