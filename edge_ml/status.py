"""What a state file says about its daemon, and what the CLI asks of that daemon through it.

One layer above :mod:`edge_ml.storage`: the ``edge-ml status`` document, whether the daemon that
wrote the health record still runs, new alerts as they are stored (``alerts --follow``), and a
checkpoint requested from the running daemon (``checkpoints save``).
"""

from __future__ import annotations

import fnmatch
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_ml.checkpoint_format import read_names
from edge_ml.errors import CheckpointError, DaemonError
from edge_ml.records import iso_utc
from edge_ml.sparkline import decode, sparkline
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


def _stream_entry(row: dict[str, Any], in_checkpoint: bool, set_aside: bool) -> dict[str, Any]:
    return {
        "stream": row["stream"], "readings": row["readings"],
        "warming_up": None if row["warming_up"] is None else bool(row["warming_up"]),
        "last_score": row["last_score"], "open_alert": row["open_alert"],
        "last_value": row["last_value"], "last_seen": row["last_seen"],
        "last_seen_iso": row["last_seen_iso"],
        "in_checkpoint": in_checkpoint, "set_aside": set_aside,
        "recent_levels": row.get("recent_levels"),  # decoded for the streams listed only
        "scale": row.get("scale"),  # "raw", "log", "root" (edge_ml.scales); None: deciding
    }


def _held_streams(storage: Storage, loaded: dict[str, Any] | None,
                  aside: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """Every stream the database knows, marked against the checkpoint a start loads.

    A stream in that checkpoint but never seen live (``train`` made it) is listed with 0
    readings. One missing from it, last seen before the newest checkpoint a rollback set aside
    was written, is set aside with it: the daemon's state no longer holds it.
    """
    names: set[str] = set()
    error = None
    if loaded is not None:
        try:
            names = set(read_names(storage.checkpoint_payload(loaded["id"])))
        except CheckpointError as exc:  # a start rejects it and says so; list the rows
            error = f"checkpoint {loaded['id']}: {exc}"
    aside_after = max((r["created_at"] for r in aside), default=None)
    streams = []
    for row in storage.streams():
        held = row["stream"] in names
        set_aside = (aside_after is not None and not held
                     and (row["last_seen"] or 0.0) < aside_after)
        streams.append(_stream_entry(row, held, set_aside))
    known = {s["stream"] for s in streams}
    for name in names - known:
        streams.append(_stream_entry(
            {"stream": name, "readings": 0, "warming_up": None, "last_score": None,
             "open_alert": None, "last_value": None, "last_seen": None, "last_seen_iso": None},
            True, False))
    streams.sort(key=lambda s: s["stream"])
    return streams, error


def status_document(storage: Storage, stream_glob: str | None = None,
                    limit: int | None = None) -> dict[str, Any]:
    """The ``edge-ml status --json`` document.

    ``readings_total`` is the running daemon's own count when one runs (``readings_source``
    "daemon"), else what the database counted (``readings_stored``, which a rollback does not
    wind back). ``last_checkpoint`` is the one a start loads (the newest active), and
    ``checkpoints_set_aside`` how many newer ones a rollback set aside. ``streams``: those
    matching ``stream_glob``, at most ``limit`` (``streams_matching`` says how many matched);
    ``summary`` counts over all the streams the daemon holds.
    """
    counters = storage.counters()
    health = storage.health() if storage.has_health() else None
    daemon = daemon_liveness(health) if health else None
    live = health if daemon and daemon["running"] else None
    checkpoints = storage.checkpoints()
    loaded = next((r for r in checkpoints if r["active"] == 1), None)
    aside = [r for r in checkpoints if r["active"] == 0 and (loaded is None
                                                               or r["id"] > loaded["id"])]
    streams, names_error = _held_streams(storage, loaded, aside)
    held = [s for s in streams if not s["set_aside"]]
    stored = counters.get("readings_total", 0)
    from_daemon = live is not None and isinstance(live.get("readings_total"), int)
    matching = [s for s in streams
                if not stream_glob or fnmatch.fnmatchcase(s["stream"], stream_glob)]
    shown = matching[:limit] if limit else matching
    now = time.time()
    for entry in shown:
        # The last hour, a level a minute (oldest first, None: no scored reading then).
        entry["recent_levels"] = [None if math.isnan(v) else round(v, 3)
                                  for v in decode(entry["recent_levels"], now)]
    summary = {
        "streams": len(held),
        "warming_up": sum(1 for s in held if s["warming_up"]),
        "open_alerts": sum(1 for s in held if s["open_alert"]),
        "set_aside": len(streams) - len(held),
    }
    return {
        "db": storage.path,
        "schema_version": storage.schema_version,
        "summary": summary,
        "readings_total": live["readings_total"] if from_daemon and live else stored,
        "readings_source": "daemon" if from_daemon else "database",
        "readings_stored": stored,
        "rejects_total": counters.get("rejects_total", 0),
        "alerts_total": counters.get("alerts_total", 0),
        "rejects_by_reason": storage.reject_counts(),
        "open_alerts": summary["open_alerts"],
        "last_checkpoint": None if loaded is None else {
            k: loaded[k] for k in ("id", "created_at", "created_at_iso", "reason",
                                   "readings_total", "streams", "size_bytes")},
        "checkpoints_set_aside": len(aside),
        "checkpoints_rejected": storage.rejected_checkpoints(),
        "stream_names_error": names_error,
        "drift_events": storage.drift_event_count(),
        # The health record only while its daemon runs; ``daemon`` says which it is.
        "daemon": daemon,
        "health": live,
        "streams_matching": len(matching),
        "streams": shown,
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


def recent_sparklines(storage: Storage, streams: set[str],
                      now: float | None = None) -> dict[str, str]:
    """The last hour of each of ``streams`` as a sparkline (``edge-ml alerts``)."""
    return {r["stream"]: sparkline(r.get("recent_levels"), now)
            for r in storage.streams() if r["stream"] in streams}


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
