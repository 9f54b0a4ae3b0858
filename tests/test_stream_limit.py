"""``[daemon] max_streams``: new streams beyond it are rejected, counted and stored; the rest go on.

One publisher with an id or a timestamp in its topics would otherwise grow the per-stream arrays
until a 1 GB gateway runs out of memory.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest
from daemon_helpers import DaemonProcess, Observer, status, wait_for, write_config

from edge_ml.config import parse_config
from edge_ml.localbroker import LocalBroker
from edge_ml.pipeline import Pipeline
from edge_ml.storage import Storage


def _pipeline(tmp_path: Path, max_streams: int, rejects_kept: int = 10_000) -> Pipeline:
    db = tmp_path / "limit.db"
    config = parse_config({"storage": {"db": str(db)}, "daemon": {"max_streams": max_streams}})
    return Pipeline(config, Storage(db, rejects_kept=rejects_kept))


def test_new_streams_beyond_the_limit_are_rejected_and_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    p = _pipeline(tmp_path, max_streams=3)
    now = time.time()
    caplog.set_level(logging.WARNING, logger="edge_ml.pipeline")
    # Five new topics in one batch: the first three (in arrival order) get slots.
    p.process_messages([(f"sensors/id/{i}", b"1.5", now) for i in range(5)])
    # Held streams keep working; a multi-field payload keeps its held field only.
    p.process_messages([("sensors/id/0", b"2.0", now), ("sensors/id/4", b"2.0", now),
                        ("sensors/id/1", b'{"value": 3, "extra": 4}', now),
                        ("sensors/junk", b"hello", now)])
    assert p.flush()
    assert p.streams.names == ["sensors/id/0", "sensors/id/1", "sensors/id/2"]
    assert p.readings_total == 3 + 2
    assert p.rejects_total == 2 + 2 + 1
    storage = p.storage
    assert storage is not None
    assert storage.reject_counts() == {"stream_limit": 4, "malformed_msgpack": 1}
    rows = list(storage.db.query(
        "SELECT topic, detail, payload FROM rejects WHERE reason = 'stream_limit' ORDER BY id"))
    assert [r["topic"] for r in rows] == ["sensors/id/3", "sensors/id/4", "sensors/id/4",
                                          "sensors/id/1/extra"]
    assert rows[0]["payload"] == b"1.5" and "max_streams" in rows[0]["detail"]
    assert {r["stream"]: r["readings"] for r in storage.streams()} == {
        "sensors/id/0": 2, "sensors/id/1": 2, "sensors/id/2": 1}
    # One log line when the limit is first hit, not one per batch.
    limit_lines = [r for r in caplog.records if "stream limit" in r.getMessage()]
    assert len(limit_lines) == 1 and "sensors/id/3" in limit_lines[0].getMessage()
    assert p.streams.capacity <= 16


def test_the_limit_holds_against_many_new_topics(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, max_streams=100, rejects_kept=1000)
    now = time.time()
    for start in range(0, 5000, 500):
        p.process_messages([(f"sensors/ts/{i}", b"1.0", now) for i in range(start, start + 500)])
    assert len(p.streams) == 100
    assert p.streams.capacity == 128  # the arrays stop growing too
    assert p.rejects_total == 4900
    assert p.flush()
    # Stored rejects stay bounded by [storage] rejects_kept; their count stays exact.
    assert p.storage is not None and p.storage.reject_counts() == {"stream_limit": 4900}
    assert p.storage.db["rejects"].count == 1000


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_daemon_refuses_streams_beyond_max_streams(tmp_path: Path, broker: LocalBroker) -> None:
    db = tmp_path / "edge-ml.db"
    config = write_config(tmp_path / "edge-ml.toml", broker, db)
    config.write_text(config.read_text().replace("[daemon]\n", "[daemon]\nmax_streams = 20\n"))
    watch = Observer(broker, ["edge-ml/status", "edge-ml/status/health"])
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: b"online" in watch.on("edge-ml/status"), 60, "daemon online")
        for i in range(50):  # a device id in the topic
            watch.client.publish(f"sensors/dev-{i}/t", "1.0", qos=1)
        for i in range(20):  # the streams it kept go on
            watch.client.publish(f"sensors/dev-{i}/t", "2.0", qos=1)
        watch.publish("sensors/dev-0/t", "3.0")

        def counted() -> dict | None:
            doc = status(db)
            done = doc["readings_total"] == 41 and doc["rejects_total"] == 30
            return doc if done else None

        doc = wait_for(counted, 30, "readings and rejects counted")
        assert doc["rejects_by_reason"] == {"stream_limit": 30}
        assert len(doc["streams"]) == 20
        with sqlite3.connect(db) as conn:
            stored = conn.execute(
                "SELECT COUNT(*) FROM rejects WHERE reason = 'stream_limit'").fetchone()[0]
        assert stored == 30
        wait_for(lambda: json.loads(watch.on("edge-ml/status/health")[-1])["rejects_total"]
                 == 30, 10, "health with the rejects")
        assert json.loads(watch.on("edge-ml/status/health")[-1])["streams"] == 20
    finally:
        watch.close()
        code = daemon.stop()
    log = daemon.log()
    assert code == 0, log
    assert log.count("stream limit reached") == 1, log
