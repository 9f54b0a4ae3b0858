"""What a state file says about its daemon, and what the CLI asks of that daemon through it.

One layer above :mod:`edge_ml.storage`: the ``edge-ml status`` document, whether the daemon that
wrote the health record still runs, new alerts as they are stored (``alerts --follow``), and a
checkpoint requested from the running daemon (``checkpoints save``).
"""

from __future__ import annotations

import fnmatch
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_ml.errors import DaemonError
from edge_ml.records import iso_utc
from edge_ml.storage import Storage

# A daemon stores its health record every ``[storage] stats_interval_s`` (``stored_interval_s``
# in the record; older daemons: every ``[daemon] health_interval_s``). One silent for this
# many intervals, plus a grace for a slow moment (the first batch compiling kernels on a cold
# cache, a checkpoint of many streams), is taken for gone.
HEALTH_STALE_INTERVALS = 3
HEALTH_STALE_GRACE_S = 30.0
DEFAULT_HEALTH_INTERVAL_S = 10.0  # records from before the interval was stored

# How often the CLI looks for new rows: new alerts, the checkpoint it asked for.
FOLLOW_POLL_S = 0.5
CHECKPOINT_POLL_S = 0.2


def _process_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user (systemd's DynamicUser)
        return True
    except OSError:
        return False
    return True


def daemon_liveness(health: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """Whether the daemon that wrote ``health`` still runs, and when it was last heard of.

    Running means: it did not record a clean stop, its pid is a process on this machine, and
    its record is fresh for its health interval. ``reason`` says why not.
    """
    now = time.time() if now is None else now
    last_seen = health.get("updated_at")
    try:
        pid = int(health.get("pid") or 0)
    except (TypeError, ValueError):
        pid = 0
    # Stored every ``stored_interval_s`` ([storage] stats_interval_s), published every
    # ``health_interval_s``; records from before the split were stored as often as published.
    interval = health.get("stored_interval_s") or health.get("health_interval_s")
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
        interval = DEFAULT_HEALTH_INTERVAL_S
    age = None if last_seen is None else max(0.0, now - last_seen)
    reason = None
    if health.get("state") == "stopped":
        reason = "stopped cleanly"
    elif not _process_exists(pid):
        reason = f"process {pid} is gone" if pid else "no pid recorded"
    elif age is None or age > HEALTH_STALE_INTERVALS * interval + HEALTH_STALE_GRACE_S:
        reason = "no health update for a while"
    return {
        "running": reason is None, "pid": pid or None, "reason": reason,
        "last_seen": last_seen, "last_seen_iso": iso_utc(last_seen),
        "last_seen_age_s": None if age is None else round(age, 1),
    }


def status_document(storage: Storage) -> dict[str, Any]:
    """The ``edge-ml status --json`` document."""
    counters = storage.counters()
    health = storage.health() if storage.has_health() else None
    daemon = daemon_liveness(health) if health else None
    streams = [
        {
            "stream": r["stream"], "readings": r["readings"],
            "warming_up": bool(r["warming_up"]), "last_score": r["last_score"],
            "open_alert": r["open_alert"], "last_value": r["last_value"],
            "last_seen": r["last_seen"], "last_seen_iso": r["last_seen_iso"],
        }
        for r in storage.streams()
    ]
    return {
        "db": storage.path,
        "schema_version": storage.schema_version,
        "readings_total": counters.get("readings_total", 0),
        "rejects_total": counters.get("rejects_total", 0),
        "alerts_total": counters.get("alerts_total", 0),
        "rejects_by_reason": storage.reject_counts(),
        "open_alerts": sum(1 for s in streams if s["open_alert"]),
        "last_checkpoint": storage.last_checkpoint(),
        "checkpoints_rejected": storage.rejected_checkpoints(),
        "drift_events": storage.drift_event_count(),
        # The health record only while its daemon runs; ``daemon`` says which it is.
        "daemon": daemon,
        "health": health if daemon and daemon["running"] else None,
        "streams": streams,
    }


def follow_alerts(storage: Storage, after_id: int | None = None, stream_glob: str | None = None,
                  poll_s: float = FOLLOW_POLL_S) -> Iterator[dict[str, Any]]:
    """Alert rows as they are stored, oldest first, without end (the caller stops it).

    ``after_id``: the newest row already shown (None: everything stored by the time of this
    call counts as shown: read here, not at the first ``next``). Only rows of streams matching
    ``stream_glob``, when given.
    """
    last_id = storage.last_alert_id() if after_id is None else after_id

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal last_id
        while True:
            time.sleep(poll_s)
            for row in storage.alerts_after(last_id):
                last_id = row["id"]
                if stream_glob and not fnmatch.fnmatchcase(row["stream"], stream_glob):
                    continue
                yield row

    return rows()


def _recorded_daemon_pid(storage: Storage) -> int | None:
    """The pid in the health record, when it is an edge-ml process right now.

    The command line is checked as well as the pid: a daemon killed without a trace leaves its
    pid behind, and SIGUSR1 to whatever process has it since would most likely kill it.
    """
    pid = int(storage.health().get("pid") or 0)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
    except OSError:
        cmdline = b""
    return pid if b"edge" in cmdline else None


def request_checkpoint(storage: Storage, timeout: float,
                       poll_s: float = CHECKPOINT_POLL_S) -> int:
    """Ask the daemon recorded in ``storage`` for a checkpoint now (SIGUSR1) and wait for it.

    Returns the new checkpoint's id; DaemonError when no daemon runs or none came within
    ``timeout`` seconds.
    """
    pid = _recorded_daemon_pid(storage)
    if pid is None:
        raise DaemonError("no running daemon recorded in this database")

    def newest_id() -> int:
        return int((storage.last_checkpoint() or {}).get("id", 0))

    before = newest_id()
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = newest_id()
        if newest > before:
            return newest
        time.sleep(poll_s)
    raise DaemonError(f"no new checkpoint within {timeout} s")
