"""A stop whose last write fails says what was not stored, and keeps it beside the database.

Disk full at stop used to lose alert rows with only "shutdown checkpoint not written" in the
log. Here another process holds the database's write lock from before the stop until the
daemon has exited (as ``sqlite3`` in a shell or a backup would), so every write at stop fails.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import DaemonProcess, Observer, wait_for

from edge_ml.localbroker import LocalBroker


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_failed_final_flush_names_and_keeps_what_was_not_stored(
    tmp_path: Path, broker: LocalBroker, daemon_env: tuple[Path, Path],
) -> None:
    config, db = daemon_env
    watch = Observer(broker, ["edge-ml/alerts/#", "edge-ml/status/health"],
                     client_id="unstored-watch")
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    rng = np.random.default_rng(3)
    locker: sqlite3.Connection | None = None

    def health() -> dict:
        seen = watch.on("edge-ml/status/health")
        return json.loads(seen[-1]) if seen else {}

    try:
        wait_for(lambda: health().get("connected"), 60, "daemon connected")
        for _ in range(600):
            watch.client.publish("sensors/u/a", f"{rng.normal():.4f}", qos=1)
        wait_for(lambda: health().get("readings_total") == 600, 60, "600 readings stored")
        wait_for(lambda: health().get("storage_error") is None, 10, "flushed")
        before = len(watch.json_under("edge-ml/alerts/"))

        locker = sqlite3.connect(db, isolation_level=None, timeout=30)
        locker.execute("BEGIN IMMEDIATE")
        for i in range(300):
            value = 60.0 if i % 30 == 29 else float(rng.normal())
            watch.client.publish("sensors/u/a", f"{value:.4f}", qos=1)
        watch.client.publish("sensors/u/a", b"not a number", qos=1)
        wait_for(lambda: health().get("readings_total") == 900, 60, "900 readings scored")
        wait_for(lambda: len(watch.json_under("edge-ml/alerts/")) - before >= 4, 30,
                 "alerts published while the database is locked")
        assert daemon.stop(timeout=90) == 0, daemon.log()
    finally:
        if locker is not None:
            locker.rollback()
            locker.close()
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        watch.close()

    published = watch.json_under("edge-ml/alerts/")
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT alert_id || state FROM alerts")}
    unstored = [a for a in published if a["alert_id"] + a["state"] not in stored]
    assert len(unstored) >= 4
    log = daemon.log()
    match = re.search(r"not stored: (\d+) alert rows .*?, (\d+) rejects, (\d+) readings counted "
                      r"on 1 streams; kept as JSON lines in (\S+)", log)
    assert match, log
    assert int(match.group(1)) == len(unstored)
    assert int(match.group(2)) == 1
    assert int(match.group(3)) == 300
    fallback = Path(match.group(4))
    assert fallback.parent == db.parent
    records = [json.loads(line) for line in fallback.read_text().splitlines()]
    kept = [(r["alert_id"], r["state"]) for r in records if r["table"] == "alerts"]
    assert kept == [(a["alert_id"], a["state"]) for a in unstored]
    assert [r["reason"] for r in records if r["table"] == "rejects"] == ["malformed_msgpack"]
    (counters,) = [r for r in records if r["table"] == "counters"]
    assert counters["readings_total"] == 300
