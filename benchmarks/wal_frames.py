"""WAL frames and bytes one alert transaction writes (issue 15, "gentle on SD cards").

A real state file in a temporary folder, opened as the daemon opens it (``Storage``: WAL,
``synchronous=FULL``, ``wal_autocheckpoint`` of 10,000 pages, ``secure_delete=OFF``, the
migrations), with 1,000 stream rows and a back history of alert rows (so the alerts table and
its indexes are trees of realistic depth, not one page). Then N alert opens and N resolves,
each its own :meth:`Storage.write` with the alerting stream's row, as the daemon's alert-only
flush (``Pipeline.flush(stats=False)``) writes a single alert.

Counted from the WAL file: it is truncated before each phase (``wal_checkpoint(TRUNCATE)``)
and nothing checkpoints during one (fewer frames than ``wal_autocheckpoint``), so its growth
is the phase's frames (page size + 24 bytes each) and its 32-byte header. ``/proc/self/io``
``write_bytes`` is reported beside it (after ``os.sync()``); it is 0 on tmpfs, so pass
``--dir`` on a real disk for it to mean anything.

Also one statistics flush (1,000 stream rows, the counters, the health record) afterwards, the
transaction that now also brings ``alerts_total`` up to date.

Run: ``python benchmarks/wal_frames.py [--alerts 500] [--history 20000] [--dir PATH]``. It uses
only ``Storage``'s public API, so the same script measures an older checkout: run it with
``PYTHONPATH=<checkout>`` (a script's own folder, not the current one, leads ``sys.path``,
so without it ``edge_ml`` is whatever the venv has installed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from edge_ml.records import AlertEvent
from edge_ml.storage import PendingWrites, Storage

STREAMS = 1_000
WAL_HEADER = 32
FRAME_HEADER = 24


def _write_bytes() -> int:
    """This process's bytes sent to the block layer (0 where /proc/self/io is missing)."""
    os.sync()
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return 0
    return next(int(line.split()[1]) for line in text.splitlines()
                if line.startswith("write_bytes:"))


def _stream_row(name: str, ts: float, open_alert: str | None, readings: int) -> dict[str, Any]:
    return {"stream": name, "first_seen": 0.0, "last_seen": ts, "last_seen_iso": "x",
            "new_readings": readings, "last_value": 20.0, "last_score": 0.3, "warming_up": 0,
            "open_alert": open_alert, "recent_levels": bytes(60)}


def _event(alert_id: str, stream: str, state: str, ts: float, opened: float) -> AlertEvent:
    return AlertEvent(alert_id, stream, state, 0.9, 31.0, ts, opened,
                      ts if state == "resolved" else None, "warning", None, "model",
                      {stream.rsplit("/", 1)[-1]: 1.0}, (18.0, 22.0))


class Wal:
    """Frames appended to one database's WAL since the last :meth:`reset`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.path = Path(storage.path + "-wal")
        self.page_size = storage.db.execute("PRAGMA page_size").fetchone()[0]
        self.io_start = 0

    def reset(self) -> None:
        self.storage.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.io_start = _write_bytes()

    def frames(self) -> int:
        grown = max(0, self.path.stat().st_size - WAL_HEADER)
        return grown // (self.page_size + FRAME_HEADER)

    def io_bytes(self) -> int:
        return _write_bytes() - self.io_start

    def by_table(self) -> dict[str, int]:
        """Frames since the last reset per table or index, from each frame's page number.

        Pages are named from ``dbstat`` (SQLite built with it, as Python's and Debian's are);
        a page not found there (freed since) counts as "(other)".
        """
        names = dict(self.storage.db.execute("SELECT pageno, name FROM dbstat").fetchall())
        data = self.path.read_bytes()
        counts: dict[str, int] = {}
        step = self.page_size + FRAME_HEADER
        for offset in range(WAL_HEADER, len(data) - step + 1, step):
            name = names.get(int.from_bytes(data[offset:offset + 4], "big"), "(other)")
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def measure(folder: Path, alerts: int, history: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    storage = Storage(folder / "edge-ml.db")
    storage.set_busy_timeout(1.0)  # as the daemon's worker does; no other connection here
    names = [f"sensors/dev-{i // 4:04d}/field{i % 4}" for i in range(STREAMS)]
    now = time.time() - 86400.0
    storage.write(PendingWrites(readings=STREAMS),
                  [_stream_row(n, now, None, 1) for n in names], {"state": "running"})
    # History: alerts opened and resolved over the past days, 1,000 rows a transaction.
    batch: list[AlertEvent] = []
    for i in range(history // 2):
        name, ts = rng.choice(names), now - 86400.0 * 30 + i * 60.0
        alert_id = uuid.uuid4().hex[:16]
        batch += [_event(alert_id, name, "open", ts, ts), _event(alert_id, name, "resolved",
                                                                   ts + 30.0, ts)]
        if len(batch) >= 1_000:
            storage.write(PendingWrites(alerts=batch), [])
            batch = []
    if batch:
        storage.write(PendingWrites(alerts=batch), [])

    wal = Wal(storage)
    opened: list[tuple[str, str, float]] = []
    result: dict[str, Any] = {"page_size": wal.page_size, "alerts": alerts,
                              "history_rows": history, "streams": STREAMS}
    for phase in ("open", "resolve"):
        wal.reset()
        started = time.perf_counter()
        for i in range(alerts):
            if phase == "open":
                name, ts = names[rng.randrange(STREAMS)], now + i
                alert_id = uuid.uuid4().hex[:16]
                opened.append((alert_id, name, ts))
                event = _event(alert_id, name, "open", ts, ts)
                row = _stream_row(name, ts, alert_id, 0)
            else:
                alert_id, name, at = opened[i]
                event = _event(alert_id, name, "resolved", at + 100.0, at)
                row = _stream_row(name, at + 100.0, None, 0)
            storage.write(PendingWrites(alerts=[event]), [row])
        elapsed = time.perf_counter() - started
        frames, io = wal.frames(), wal.io_bytes()
        result[phase] = {
            "frames_per_alert_by_table": {name: round(n / alerts, 2)
                                          for name, n in wal.by_table().items()},
            "frames_per_alert": round(frames / alerts, 2),
            "wal_bytes_per_alert": round(frames * (wal.page_size + FRAME_HEADER) / alerts),
            "io_write_bytes_per_alert": round(io / alerts),
            "ms_per_alert": round(1000 * elapsed / alerts, 3),
        }
    wal.reset()
    storage.write(PendingWrites(readings=STREAMS),
                  [_stream_row(n, now + alerts + 200.0, None, 1) for n in names],
                  {"state": "running"})
    frames = wal.frames()
    result["statistics_flush"] = {"frames": frames, "by_table": wal.by_table(),
                                  "wal_bytes": frames * (wal.page_size + FRAME_HEADER)}
    result["alerts_total"] = storage.counters().get("alerts_total", 0)
    result["alert_rows"] = storage.db["alerts"].count
    result["schema_version"] = storage.schema_version
    storage.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--alerts", type=int, default=500,
                        help="alert opens, then as many resolves (default 500)")
    parser.add_argument("--history", type=int, default=20_000,
                        help="alert rows stored before measuring (default 20,000)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder for the database (default: a new temporary folder)")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    # Frames of one phase must stay below wal_autocheckpoint (10,000), or the WAL restarts.
    if args.alerts * 12 >= 10_000:
        parser.error("--alerts: at most 800, so that no automatic checkpoint runs mid-phase")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="edge-ml-wal-") as folder:
        print(json.dumps(measure(Path(folder), args.alerts, args.history, args.seed), indent=2))


if __name__ == "__main__":
    main()
