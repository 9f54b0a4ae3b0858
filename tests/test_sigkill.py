"""kill -9 while readings, alerts and checkpoints are being written: 20 rounds, checked each time.

A publisher thread keeps 60 streams busy at ~1,200 readings a second, with a spike on some
stream every few hundredths of a second, so every flush carries readings, stream rows and
alert rows, and a checkpoint is saved every second. Each round starts the real daemon, waits
until this run's rows are landing and it has saved a checkpoint, kills it at a random moment of
its checkpoint cycle, and checks the file it left:

- ``PRAGMA integrity_check`` is ok;
- stored counts never go backwards (``counters``, ``streams.readings``);
- the file is one consistent flush after another: the reading counter is the sum of the stream
  rows, the alert counter is the number of alert rows, no alert is stored twice (per
  ``alert_id`` and state), a stream's open alert has its open row and no resolve, no checkpoint
  counts readings the counters have not stored;
- the next start resumes from the newest checkpoint: its log says so, with that checkpoint's
  ``readings_total``.

The same consistency is also checked while the daemon runs, from a reader polling the file
(what ``edge-ml status`` and ``follow`` see), one read transaction per look.
"""

from __future__ import annotations

import random
import re
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from daemon_helpers import DaemonProcess, write_config

from edge_ml.config import load_config
from edge_ml.localbroker import LocalBroker
from edge_ml.pipeline import Pipeline

pytestmark = pytest.mark.slow

ROUNDS = 20
STREAMS = 60
RESUMED = re.compile(r"resumed from checkpoint (\d+) \([^)]*\): (\d+) streams, (\d+) readings")
FRESH = "no usable checkpoint: starting fresh"


@dataclass(frozen=True)
class Snapshot:
    """What the state file holds at one moment, read in one transaction."""

    counters: dict[str, int]
    stream_readings: dict[str, int]
    alert_rows: int
    duplicate_alerts: list[tuple[str, str, int]]
    dangling_open: list[tuple[str, str]]
    newest_checkpoint: tuple[int, int] | None  # (id, readings_total) of the newest active
    checkpoint_readings_max: int
    checkpoints_by_pid: int


def snapshot(db: Path) -> Snapshot:
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN")  # one WAL snapshot for every query below
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        # alerts_total as stored counts the rows up to alerts_counted_id (it catches up in the
        # statistics flushes); the rows since are added, so the alert counter compared below
        # with the rows is the stored total plus those, as Storage.counters() reports it.
        counted = counters.pop("alerts_counted_id", 0)
        since = conn.execute("SELECT COUNT(*) FROM alerts WHERE id > ?", [counted]).fetchone()[0]
        counters["alerts_total"] = counters.get("alerts_total", 0) + since
        readings = dict(conn.execute("SELECT stream, readings FROM streams").fetchall())
        alert_rows = conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
        dupes = conn.execute(
            "SELECT alert_id, state, COUNT(*) FROM alerts GROUP BY alert_id, state "
            "HAVING COUNT(*) > 1").fetchall()
        dangling = conn.execute(
            "SELECT s.stream, s.open_alert FROM streams s WHERE s.open_alert IS NOT NULL AND ("
            "NOT EXISTS (SELECT 1 FROM alerts a WHERE a.alert_id = s.open_alert "
            "AND a.state = 'open') OR EXISTS (SELECT 1 FROM alerts a "
            "WHERE a.alert_id = s.open_alert AND a.state = 'resolved'))").fetchall()
        newest = conn.execute(
            "SELECT id, readings_total FROM checkpoints WHERE active = 1 "
            "ORDER BY id DESC LIMIT 1").fetchone()
        ck_max = conn.execute("SELECT MAX(readings_total) FROM checkpoints").fetchone()[0]
        ck_count = conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
        conn.execute("COMMIT")
    finally:
        conn.close()
    return Snapshot(counters, readings, alert_rows, dupes, dangling,
                    tuple(newest) if newest else None, ck_max or 0, ck_count)


def consistency_problems(s: Snapshot) -> list[str]:
    """What makes ``s`` something other than a sequence of whole flushes."""
    problems = []
    readings = s.counters.get("readings_total", 0)
    if readings != sum(s.stream_readings.values()):
        problems.append(f"readings_total {readings} != sum of stream rows "
                        f"{sum(s.stream_readings.values())}")
    if s.counters.get("alerts_total", 0) != s.alert_rows:
        problems.append(f"alerts_total {s.counters.get('alerts_total', 0)} != "
                        f"{s.alert_rows} alert rows")
    if s.duplicate_alerts:
        problems.append(f"alerts stored twice: {s.duplicate_alerts[:5]}")
    if s.dangling_open:
        problems.append(f"streams whose open alert is not open in the alerts table: "
                        f"{s.dangling_open[:5]}")
    if s.checkpoint_readings_max > readings:
        problems.append(f"a checkpoint holds {s.checkpoint_readings_max} readings, the "
                        f"counters only {readings}")
    return problems


def went_backwards(before: Snapshot, after: Snapshot) -> list[str]:
    problems = [f"counter {name} {value} -> {after.counters.get(name, 0)}"
                for name, value in before.counters.items()
                if after.counters.get(name, 0) < value]
    problems += [f"stream {name} readings {value} -> {after.stream_readings.get(name, 0)}"
                 for name, value in before.stream_readings.items()
                 if after.stream_readings.get(name, 0) < value]
    if after.alert_rows < before.alert_rows:
        problems.append(f"alert rows {before.alert_rows} -> {after.alert_rows}")
    return problems


class Publisher(threading.Thread):
    """Keeps sending readings (N(0, 1), with a spike of 40 every 45th) until stopped.

    QoS 0: at QoS 1 paho holds at most 20 messages in flight and queues the rest, so what was
    published while the daemon started (seconds, on a loaded machine) is a backlog the broker
    discards and the daemon waits behind.
    """

    def __init__(self, broker: LocalBroker, rate_hz: float = 1200.0) -> None:
        super().__init__(name="sigkill-publisher", daemon=True)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sigkill-pub")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.stop_event = threading.Event()
        self.batch_every = STREAMS / rate_hz
        self.sent = 0

    def run(self) -> None:
        rng = np.random.default_rng(7)
        n = 0
        while not self.stop_event.is_set():
            started = time.monotonic()
            values = rng.normal(size=STREAMS)
            for i, value in enumerate(values.tolist()):
                spike = (n + 7 * i) % 45 == 44
                self.client.publish(f"sensors/kill/{i}", "40.0" if spike else f"{value:.4f}")
            n += 1
            self.sent += STREAMS
            time.sleep(max(0.0, self.batch_every - (time.monotonic() - started)))

    def close(self) -> None:
        self.stop_event.set()
        self.join(5)
        self.client.loop_stop()
        self.client.disconnect()


def start_line(log: str) -> tuple[int, int] | None:
    """(checkpoint id, readings) the daemon resumed from, (0, 0) fresh, None not yet logged."""
    found = RESUMED.search(log)
    if found:
        return int(found.group(1)), int(found.group(3))
    return (0, 0) if FRESH in log else None


def run_until(predicate, timeout: float, what: str, db: Path, daemon: DaemonProcess,
              problems: list[str]) -> None:
    """Poll ``predicate`` while checking every snapshot's consistency (a concurrent reader)."""
    deadline = time.monotonic() + timeout
    now = None
    while time.monotonic() < deadline:
        assert daemon.proc.poll() is None, f"daemon exited:\n{daemon.log()[-3000:]}"
        if db.exists():
            try:
                now = snapshot(db)
            except sqlite3.OperationalError:  # before the first migration
                now = None
            if now is not None:
                problems += [f"while running: {p}" for p in consistency_problems(now)]
                if predicate(now):
                    return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen {now}\n"
                         f"{daemon.log()[-3000:]}")


def compile_kernels(config: Path) -> None:
    """Fill the Numba cache the daemon loads from, here rather than in round 0's daemon.

    On a fresh checkout compiling takes tens of seconds (minutes on a loaded machine), which
    round 0 would otherwise spend before writing its first row.
    """
    pipeline = Pipeline(load_config(config))
    rng = np.random.default_rng(0)
    n = 2_000
    names = [f"warm/{i % 4}" for i in range(n)]
    pipeline.process_readings(names, np.arange(n, dtype=np.float64), rng.normal(size=n))


@pytest.mark.timeout(600)
def test_kill_9_while_writing_20_rounds(tmp_path: Path, broker: LocalBroker) -> None:
    db = tmp_path / "state" / "edge-ml.db"
    config = write_config(
        tmp_path / "edge-ml.toml", broker, db,
        "[alerts]\ndebounce = 1\ncooldown_s = 0\ncooldown_readings = 0\n",
    )
    text = config.read_text()
    text = text.replace("[mqtt]\n", "[mqtt]\nreconnect_max_s = 1.0\nreconnect_min_s = 0.2\n", 1)
    text = text.replace("[storage]\n", "[storage]\ncheckpoint_interval_s = 1.0\nretention = 4\n", 1)
    text = text.replace("[model]\n", "[model]\nn_trees = 5\nheight = 6\n", 1)
    config.write_text(text)

    compile_kernels(config)
    chooser = random.Random(15)
    publisher = Publisher(broker)
    publisher.start()
    previous: Snapshot | None = None
    problems: list[str] = []
    try:
        for round_no in range(ROUNDS):
            expected = previous.newest_checkpoint if previous else None
            daemon = DaemonProcess(config, tmp_path / f"daemon-{round_no}.log")
            try:
                run_until(lambda _s, d=daemon: start_line(d.log()) is not None, 60, "the start",
                          db, daemon, problems)
                # Scoring resumes from the newest checkpoint, with its readings_total.
                assert start_line(daemon.log()) == (expected or (0, 0)), (
                    f"round {round_no}: resumed from {start_line(daemon.log())}, the newest "
                    f"checkpoint was {expected}\n{daemon.log()[-3000:]}")
                base = previous or snapshot(db)
                # Wait until this run's readings and alerts are landing and it has saved a
                # checkpoint of its own, then kill it somewhere in its checkpoint cycle.
                run_until(
                    lambda s, base=base: (
                        s.counters.get("readings_total", 0) > base.counters.get(
                            "readings_total", 0) + 200
                        and s.alert_rows > base.alert_rows + 2
                        and s.newest_checkpoint is not None
                        and s.newest_checkpoint != base.newest_checkpoint),
                    180 if round_no == 0 else 60, "rows and a checkpoint from this run", db,
                    daemon, problems)
                time.sleep(chooser.uniform(0.0, 1.0))
                daemon.proc.send_signal(signal.SIGKILL)
                daemon.proc.wait(10)
            finally:
                daemon.stop(signal.SIGKILL)

            with sqlite3.connect(db) as conn:
                integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            assert integrity == "ok", f"round {round_no}: {integrity}"
            after = snapshot(db)
            problems += [f"round {round_no} after kill: {p}" for p in consistency_problems(after)]
            if previous is not None:
                problems += [f"round {round_no}: {p}" for p in went_backwards(previous, after)]
            assert not problems, "\n".join(problems[:20])
            previous = after
    finally:
        publisher.close()
    assert previous is not None
    assert previous.counters["alerts_total"] >= 2 * ROUNDS
