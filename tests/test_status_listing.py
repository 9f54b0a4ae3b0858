"""``edge-ml status`` tells the truth after a rollback and stays short with many streams (issue 16
item 7): the last checkpoint is the one a start loads, readings come from the running daemon
when it is live, streams come from the loaded checkpoint too, and a summary comes first."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from edge_ml.checkpoint_format import SCHEMA_VERSION, encode
from edge_ml.storage import PendingWrites, Storage
from tests.test_cli import _stream_row, edge_ml


def _checkpoint(storage: Storage, names: list[str], readings: int) -> int:
    encoded = encode({"header": {"schema_version": SCHEMA_VERSION, "readings_total": readings,
                                 "streams": len(names)},
                      "state": {"names": names, "stats": {"readings": list(range(len(names)))}}})
    return storage.save_checkpoint(encoded.blob, encoded.header, "timer", encoded.checksum, 10)


def _rolled_back(tmp_path: Path) -> tuple[Path, int]:
    """Checkpoint 1 holds a, b and trained t; checkpoint 2 adds c; then a rollback to 1 while a
    daemon runs that holds 6,129 readings (13,129 were counted in all)."""
    db = tmp_path / "state.db"
    storage = Storage(db)
    storage.write(PendingWrites(readings=13_129), [
        _stream_row("sensors/a", 7000, 0.1, 0, None),
        _stream_row("sensors/b", 6000, 0.2, 0, None),
        _stream_row("sensors/c", 129, None, 1, None),
    ])
    first = _checkpoint(storage, ["sensors/a", "sensors/b", "sensors/t"], 6000)
    time.sleep(0.01)
    _checkpoint(storage, ["sensors/a", "sensors/b", "sensors/c"], 13_000)
    storage.rollback_checkpoint(first)
    storage.set_health({"state": "running", "pid": os.getpid(), "health_interval_s": 10.0,
                        "readings_total": 6129, "rejects_total": 3, "connected": True,
                        "uptime_s": 12.0, "queue_depth": 0})
    storage.close()
    return db, first


def test_read_names_reads_only_the_names(tmp_path: Path) -> None:
    storage = Storage(":memory:")
    _checkpoint(storage, ["x", "y"], 5)
    blob = storage.checkpoint_payload(1)
    from edge_ml.checkpoint_format import read_names

    assert read_names(blob) == ["x", "y"]


def test_status_after_a_rollback_tells_the_truth(tmp_path: Path) -> None:
    db, first = _rolled_back(tmp_path)
    doc = json.loads(edge_ml("status", "--db", str(db), "--json").stdout)
    assert doc["readings_total"] == 6129 and doc["readings_source"] == "daemon"
    assert doc["readings_stored"] == 13_129
    assert doc["last_checkpoint"]["id"] == first
    assert doc["checkpoints_set_aside"] == 1
    streams = {s["stream"]: s for s in doc["streams"]}
    assert streams["sensors/t"]["readings"] == 0 and streams["sensors/t"]["in_checkpoint"]
    assert streams["sensors/c"]["set_aside"] is True
    assert doc["summary"]["streams"] == 3  # a, b, t: what the daemon holds

    text = edge_ml("status", "--db", str(db))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    readings = next(ln for ln in lines if ln.startswith("readings"))
    assert "6,129" in readings and "running daemon" in readings, readings
    assert readings.split()[1] == "6,129"  # the daemon's own count leads
    checkpoint = next(ln for ln in lines if ln.startswith("last checkpoint"))
    assert f"{first} " in checkpoint and "1 newer set aside by a rollback" in checkpoint, checkpoint
    trained = next(ln for ln in lines if ln.startswith("sensors/t "))
    assert " 0 " in trained, trained
    rolled = next(ln for ln in lines if ln.startswith("sensors/c "))
    assert "set aside" in rolled, rolled


def test_status_with_many_streams_summarises_and_limits(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    storage = Storage(db)
    rows = [_stream_row(f"sensors/n{i:05d}/temp", 10, 0.1, int(i % 10 == 0),
                        "a1" if i == 7 else None) for i in range(10_000)]
    storage.write(PendingWrites(readings=100_000), rows)
    storage.close()
    text = edge_ml("status", "--db", str(db))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) < 80, len(lines)
    assert lines[-1].startswith("... 9,950 more"), lines[-1]
    summary = "\n".join(lines[:lines.index("")])
    assert "streams         10,000 (" in summary and "1,000 warming up" in summary, summary
    assert "1 with an open alert" in summary, summary
    assert "100,000" in summary

    some = edge_ml("status", "--db", str(db), "--stream", "sensors/n0001*/temp", "--limit", "5")
    lines = some.stdout.splitlines()
    listed = [ln for ln in lines if ln.startswith("sensors/")]
    assert len(listed) == 5 and all(ln.startswith("sensors/n0001") for ln in listed)
    assert lines[-1].startswith("... 5 more"), lines[-1]

    everything = json.loads(edge_ml("status", "--db", str(db), "--json").stdout)
    assert len(everything["streams"]) == 10_000  # --json lists all unless --limit is given
    assert everything["summary"]["warming_up"] == 1000
