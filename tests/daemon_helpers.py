"""Run the real daemon as a subprocess against a test broker, and watch what it publishes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_ml.localbroker import LocalBroker


def write_config(path: Path, broker: LocalBroker, db: Path, extra: str = "") -> Path:
    path.write_text(
        f'[mqtt]\nport = {broker.port}\nclient_id = "edge-ml-test"\n'
        f'[storage]\ndb = "{db}"\nflush_interval_s = 0.2\nstats_interval_s = 0.2\n'
        "[model]\nwindow_size = 50\nwarmup = 60\n"
        "[daemon]\nhealth_interval_s = 0.5\n" + extra
    )
    return path


class DaemonProcess:
    """``python -m edge_ml run --config PATH`` with its log kept in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        self._log = log.open("ab")
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_ml", "run", "--config", str(config)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._log.close()
        return code


class Observer:
    """A paho v2 client recording every message under some topic filters."""

    def __init__(self, broker: LocalBroker, topics: list[str], client_id: str = "observer"):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([(t, 1) for t in topics])
        self.client.loop_start()
        assert self._subscribed.wait(5), "observer could not subscribe"

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def json_under(self, prefix: str) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.startswith(prefix)]

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
             every: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status(db: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "edge_ml", "status", "--db", str(db), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(out.stdout)


def counters(db: Path) -> dict[str, int]:
    """The daemon's SQLite counters (readings_total, rejects_total, ...), as Storage.counters.

    ``alerts_total`` stored counts the alert rows up to ``alerts_counted_id``; the rows after
    it are added here, read in the same transaction (schema migration 6).
    """
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        found = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        counted = found.pop("alerts_counted_id", 0)
        since = conn.execute("SELECT COUNT(*) FROM alerts WHERE id > ?", [counted]).fetchone()[0]
        conn.execute("COMMIT")
    if since or "alerts_total" in found:
        found["alerts_total"] = found.get("alerts_total", 0) + since
    return found


def stored_health(db: Path) -> dict[str, Any]:
    """The daemon's health record as stored (read-only; {} before the table exists)."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT key, value FROM health").fetchall()
    except sqlite3.Error:
        return {}
    return {key: json.loads(value) for key, value in rows}


def connected_since(db: Path, since: float) -> bool:
    """The daemon's stored health says connected, written after ``since`` (+0.2 s)."""
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT value, updated_at FROM health WHERE key = 'connected'"
        ).fetchone()
    return bool(row) and row[0] == "true" and row[1] > since + 0.2
