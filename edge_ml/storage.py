"""The local SQLite state file: alerts, streams, rejects, drift events, checkpoints, counters.

WAL mode, so ``sqlite-utils`` and Datasette can read while the daemon writes. The daemon writes
through :meth:`Storage.write` once per flush, in one transaction. A write that fails (disk
full, I/O error) leaves the batch pending for the next flush: readings keep being scored and
alerts keep being published meanwhile, and the fault is counted and reported.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

from edge_ml.errors import StorageError, StoragePathError
from edge_ml.records import AlertEvent, DriftEvent, Reject, iso_utc

log = logging.getLogger(__name__)

# A flush that cannot be written keeps at most this many pending rows of each kind; beyond that
# the oldest are dropped and counted (memory on a gateway is finite).
MAX_PENDING_ROWS = 100_000


def _migration_1(db: sqlite_utils.Database) -> None:
    db["alerts"].create(
        {
            "id": int, "alert_id": str, "stream": str, "state": str, "score": float,
            "value": float, "ts": float, "ts_iso": str, "opened_at": float,
            "opened_at_iso": str, "resolved_at": float, "resolved_at_iso": str,
            "severity": str,
        },
        pk="id",
    )
    db["alerts"].create_index(["stream", "ts"])
    db["alerts"].create_index(["alert_id"])
    db["streams"].create(
        {
            "stream": str, "first_seen": float, "last_seen": float, "last_seen_iso": str,
            "readings": int, "last_value": float, "last_score": float, "warming_up": int,
            "open_alert": str,
        },
        pk="stream",
    )
    db["rejects"].create(
        {
            "id": int, "received_at": float, "received_at_iso": str, "topic": str,
            "reason": str, "detail": str, "payload": bytes,
        },
        pk="id",
    )
    db["reject_counts"].create({"reason": str, "count": int}, pk="reason")
    db["counters"].create({"name": str, "value": int}, pk="name")
    db["drift_events"].create(
        {
            "id": int, "stream": str, "ts": float, "ts_iso": str, "detector": str,
            "statistic": str, "reaction": str,
        },
        pk="id",
    )
    db["checkpoints"].create(
        {
            "id": int, "created_at": float, "created_at_iso": str, "reason": str,
            "schema_version": int, "package_version": str, "readings_total": int,
            "streams": int, "size_bytes": int, "checksum": str, "active": int,
            "payload": bytes,
        },
        pk="id",
    )
    db["health"].create({"key": str, "value": str, "updated_at": float}, pk="key")


def _migration_2(db: sqlite_utils.Database) -> None:
    # Why a checkpoint was refused at load time (corrupt, truncated, incompatible).
    db["checkpoints"].add_column("error", str)


def _migration_3(db: sqlite_utils.Database) -> None:
    # Why an alert resolved when the level did not resolve it: "restart" or "reload" (the
    # restored model state no longer held it). NULL for an ordinary resolve.
    db["alerts"].add_column("reason", str)


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("initial tables", _migration_1),
    ("checkpoints.error", _migration_2),
    ("alerts.reason", _migration_3),
]


@dataclass
class PendingWrites:
    """What the worker has produced since the last flush."""

    alerts: list[AlertEvent] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    drift: list[DriftEvent] = field(default_factory=list)
    readings: int = 0
    dropped: int = 0  # pending rows dropped because storage stayed unwritable
    # Rejects among them, per reason: their rows are gone, their counts are still written.
    rejects_dropped: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.rejects or self.drift or self.readings
                    or self.rejects_dropped)

    def bound(self) -> None:
        """Drop the oldest rows beyond ``MAX_PENDING_ROWS`` of each kind, counting them.

        Alert rows go by whole alerts: an alert's open row dropped while its resolve row is
        kept would leave the table a resolve for an alert that never opened.
        """
        excess = len(self.alerts) - MAX_PENDING_ROWS
        if excess > 0:
            rows_of = Counter(a.alert_id for a in self.alerts)
            gone: set[str] = set()
            removed = 0
            for a in self.alerts:  # oldest first, until enough rows go
                if removed >= excess:
                    break
                if a.alert_id not in gone:
                    gone.add(a.alert_id)
                    removed += rows_of[a.alert_id]
            kept = [a for a in self.alerts if a.alert_id not in gone]
            self.dropped += len(self.alerts) - len(kept)
            self.alerts[:] = kept
        for rows in (self.rejects, self.drift):
            excess = len(rows) - MAX_PENDING_ROWS
            if excess > 0:
                if rows is self.rejects:
                    for r in self.rejects[:excess]:
                        self.rejects_dropped[r.reason] = self.rejects_dropped.get(r.reason, 0) + 1
                del rows[:excess]
                self.dropped += excess


# SQLite result codes that say the path is wrong (no permission, a folder, not a database), as
# opposed to an outage (busy, locked, I/O error, disk full) that a restart may get past.
_PATH_ERRORS = ("SQLITE_CANTOPEN", "SQLITE_NOTADB", "SQLITE_PERM", "SQLITE_READONLY")


def _is_path_error(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", None) or ""
    return name.startswith(_PATH_ERRORS)


def _alert_row(event: AlertEvent) -> dict[str, Any]:
    row = event.to_dict()
    row["ts_iso"] = iso_utc(event.ts)
    row["opened_at_iso"] = iso_utc(event.opened_at)
    row["resolved_at_iso"] = iso_utc(event.resolved_at)
    return row


class Storage:
    """The SQLite state file (``[storage] db``).

    Parameters
    ----------
    path
        Database file; its folder is created when missing. ``":memory:"`` for tests.
    rejects_kept
        Newest rows kept in ``rejects`` (counts in ``reject_counts`` stay exact).
    """

    def __init__(self, path: str | Path, rejects_kept: int = 10_000) -> None:
        self.path = str(path)
        self.rejects_kept = rejects_kept
        if self.path != ":memory:":
            folder = Path(self.path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # no permission, read-only, a file where a folder must be
                blocker = next((p for p in (folder, *folder.parents)
                                if p.exists() and not p.is_dir()), None)
                why = f"{blocker} is a file, not a folder" if blocker else exc.strerror or exc
                raise StoragePathError(f"cannot create the folder {folder} for the database "
                                       f"{self.path}: {why}") from exc
        try:
            # check_same_thread=False: the daemon opens the file on the main thread and hands
            # it to the worker thread, which is then its only user.
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
            import sqlite_utils  # here: ~0.1 s of imports that replay does not need

            self.db = sqlite_utils.Database(conn)
            if self.path != ":memory:":
                self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe across crashes
            self.migrate()
        except sqlite3.Error as exc:
            error = StoragePathError if _is_path_error(exc) else StorageError
            raise error(f"cannot open the database {self.path}: {exc}") from exc

    # -- schema ---------------------------------------------------------------------------
    def _applied_migrations(self) -> set[int]:
        if "schema_migrations" not in self.db.table_names():
            return set()
        return {row["version"] for row in self.db["schema_migrations"].rows}

    def migrate(self) -> None:
        """Apply the migrations this file has not seen yet, in one transaction.

        The check and the migrations hold the write lock together (``BEGIN IMMEDIATE``): two
        processes opening a new file at once (the daemon creating it, the CLI reading it) made
        the second fail with "table alerts already exists". A file already up to date takes no
        write lock, so read-only commands do not wait on a busy daemon.
        """
        if len(self._applied_migrations()) == len(MIGRATIONS):
            return
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if "schema_migrations" not in self.db.table_names():
                self.db["schema_migrations"].create(
                    {"version": int, "name": str, "applied_at": float}, pk="version"
                )
            done = self._applied_migrations()
            for version, (name, migration) in enumerate(MIGRATIONS, start=1):
                if version not in done:
                    migration(self.db)
                    self.db["schema_migrations"].insert(
                        {"version": version, "name": name, "applied_at": time.time()}
                    )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        return max((r["version"] for r in self.db["schema_migrations"].rows), default=0)

    # -- writes ---------------------------------------------------------------------------
    def write(self, pending: PendingWrites, streams: list[dict[str, Any]]) -> None:
        """Write one flush in one transaction; raises ``sqlite3.Error`` when it cannot."""
        db = self.db
        with db.conn:
            if pending.alerts:
                db["alerts"].insert_all(_alert_row(e) for e in pending.alerts)
                # A resolved alert is open on no stream (a resolve at restart may be for a
                # stream the restored state does not hold, so no stream row below covers it).
                db.conn.executemany(
                    "UPDATE streams SET open_alert = NULL WHERE open_alert = ?",
                    [(e.alert_id,) for e in pending.alerts if e.state == "resolved"],
                )
            if pending.rejects:
                db["rejects"].insert_all(
                    {
                        "received_at": r.received_at, "received_at_iso": iso_utc(r.received_at),
                        "topic": r.topic, "reason": r.reason, "detail": r.detail,
                        "payload": r.payload_prefix,
                    }
                    for r in pending.rejects
                )
                self._trim_rejects()
            # Counted per reason even when their rows had to be dropped while unwritable.
            by_reason = dict(pending.rejects_dropped)
            for r in pending.rejects:
                by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
            if by_reason:
                db.conn.executemany(
                    "INSERT INTO reject_counts (reason, count) VALUES (?, ?) "
                    "ON CONFLICT(reason) DO UPDATE SET count = count + excluded.count",
                    list(by_reason.items()),
                )
            if pending.drift:
                db["drift_events"].insert_all(
                    {**vars_of(d), "ts_iso": iso_utc(d.ts)} for d in pending.drift
                )
            self._add_counters(
                {"readings_total": pending.readings, "rejects_total": sum(by_reason.values()),
                 "alerts_total": len(pending.alerts), "pending_dropped": pending.dropped}
            )
            if streams:
                # readings accumulate in SQL so the count survives restarts without checkpoints.
                db.conn.executemany(
                    "INSERT INTO streams (stream, first_seen, last_seen, last_seen_iso, readings, "
                    "last_value, last_score, warming_up, open_alert) VALUES (:stream, "
                    ":first_seen, :last_seen, :last_seen_iso, :new_readings, :last_value, "
                    ":last_score, :warming_up, :open_alert) ON CONFLICT(stream) DO UPDATE SET "
                    "last_seen = excluded.last_seen, last_seen_iso = excluded.last_seen_iso, "
                    "readings = readings + excluded.readings, last_value = excluded.last_value, "
                    "last_score = excluded.last_score, warming_up = excluded.warming_up, "
                    "open_alert = excluded.open_alert",
                    streams,
                )

    def _add_counters(self, deltas: dict[str, int]) -> None:
        self.db.conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            [(k, v) for k, v in deltas.items() if v],
        )

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a statement waits for another connection's lock before it fails.

        Opened, the connection waits 10 s (the CLI and migrations can). The daemon's worker
        sets ``[storage] busy_timeout_s`` instead: a write that meets a lock held by another
        process then fails fast with ``database is locked`` and is retried later with backoff
        (:meth:`Pipeline.flush <edge_ml.pipeline.Pipeline.flush>`), while scoring and alert
        publishing go on.
        """
        self.db.conn.execute(f"PRAGMA busy_timeout = {max(0, round(seconds * 1000))}")

    def prune_alerts(self, older_than: float) -> int:
        """Delete alert rows stamped before ``older_than`` (epoch s); the number deleted.

        Both rows of an alert go together: an alert still open at the cut-off is kept whole,
        so ``alerts --open`` never shows a resolve without its open or the other way round.
        """
        with self.db.conn:
            cursor = self.db.execute(
                "DELETE FROM alerts WHERE ts < ? AND alert_id IN "
                "(SELECT alert_id FROM alerts WHERE state = 'resolved' AND ts < ?)",
                [older_than, older_than],
            )
        return cursor.rowcount

    def _trim_rejects(self) -> None:
        self.db.execute(
            "DELETE FROM rejects WHERE id <= (SELECT MAX(id) FROM rejects) - ?",
            [self.rejects_kept],
        )

    def set_health(self, values: dict[str, Any]) -> None:
        """Replace the health record; each value is stored as JSON (true, null, 12.5, "text")."""
        now = time.time()
        rows = [(k, json.dumps(v, default=_json_scalar), now) for k, v in values.items()]
        # Plain SQL: sqlite-utils' upsert_all introspects the table on every call (~1 ms), and
        # this runs on the worker twice a second. One transaction: readers see whole records.
        with self.db.conn:
            self.db.conn.execute("DELETE FROM health")
            self.db.conn.executemany(
                "INSERT INTO health (key, value, updated_at) VALUES (?, ?, ?)", rows)

    # -- reads ----------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        return {r["name"]: r["value"] for r in self.db["counters"].rows}

    def reject_counts(self) -> dict[str, int]:
        return {r["reason"]: r["count"] for r in self.db["reject_counts"].rows}

    def alerts(
        self, stream_glob: str | None = None, since: float | None = None,
        open_only: bool = False, limit: int | None = 100,
    ) -> list[dict[str, Any]]:
        """Alert rows, newest first (one row per open and per resolve)."""
        where, params = [], []
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if open_only:
            where.append(
                "state = 'open' AND alert_id NOT IN "
                "(SELECT alert_id FROM alerts WHERE state = 'resolved')"
            )
        if stream_glob:
            where.append("stream GLOB ?")
            params.append(stream_glob)
        sql = "SELECT * FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [dict(r) for r in self.db.query(sql, params)]

    def alerts_after(self, last_id: int) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM alerts WHERE id > ? ORDER BY id", [last_id]))

    def streams(self, stream_glob: str | None = None) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self.db.query("SELECT * FROM streams ORDER BY stream")]
        if stream_glob:
            rows = [r for r in rows if fnmatch.fnmatchcase(r["stream"], stream_glob)]
        return rows

    def drift_events(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(self.db.query(
            "SELECT * FROM drift_events ORDER BY ts DESC, id DESC LIMIT ?", [limit]
        ))

    def health(self) -> dict[str, Any]:
        """The daemon's last health record, typed; ``updated_at`` is when it was written."""
        rows = list(self.db["health"].rows)
        return {r["key"]: _health_value(r["value"]) for r in rows} | {
            "updated_at": max((r["updated_at"] for r in rows), default=None)
        }

    def last_checkpoint(self) -> dict[str, Any] | None:
        rows = list(self.db.query(
            "SELECT id, created_at, created_at_iso, reason, readings_total, streams, size_bytes "
            "FROM checkpoints ORDER BY id DESC LIMIT 1"
        ))
        return rows[0] if rows else None

    # -- checkpoints (edge_ml.checkpointer) -------------------------------------------------
    # ``active``: 1 = may be loaded (the newest active row is what a starting daemon loads),
    # 0 = set aside by a rollback to an older checkpoint (kept for export/inspection), -1 =
    # rejected at load time (``error`` says why). Rollback to N sets rows newer than N to 0 and
    # N to 1; a running daemon notices that the newest active row is no longer the one its
    # state came from and loads N before it saves again (save_checkpoint_over), so it carries
    # on from N.
    _CHECKPOINT_COLUMNS = (
        "id, created_at, created_at_iso, reason, schema_version, package_version, "
        "readings_total, streams, size_bytes, checksum, active, error"
    )

    def save_checkpoint(self, blob: bytes, header: dict[str, Any], reason: str, checksum: str,
                        retention: int) -> int:
        """Insert a checkpoint and prune to the newest ``retention`` per state, atomically."""
        checkpoint_id = self._insert_checkpoint(blob, header, reason, checksum, retention)
        assert checkpoint_id is not None  # unconditional
        return checkpoint_id

    def save_checkpoint_over(self, loaded: int | None, blob: bytes, header: dict[str, Any],
                             reason: str, checksum: str, retention: int) -> int | None:
        """As :meth:`save_checkpoint`, but only while ``loaded`` is still the one a start loads.

        ``loaded`` is the checkpoint the daemon's state comes from (None: none). When an
        operator has since made another one the newest active (rollback, train, import), nothing
        is written and None is returned: the daemon's save must not supersede that choice.
        Checked and inserted in one statement, so a concurrent CLI cannot slip in between.
        """
        return self._insert_checkpoint(blob, header, reason, checksum, retention,
                                       only_over=True, loaded=loaded)

    def newest_checkpoint_id(self) -> int | None:
        """The newest active checkpoint: the one a starting daemon tries first."""
        row = self.db.execute("SELECT MAX(id) FROM checkpoints WHERE active = 1").fetchone()
        return None if row[0] is None else int(row[0])

    def _insert_checkpoint(self, blob: bytes, header: dict[str, Any], reason: str,
                           checksum: str, retention: int, only_over: bool = False,
                           loaded: int | None = None) -> int | None:
        now = time.time()
        values = [now, iso_utc(now), reason, header.get("schema_version"),
                  header.get("package_version"), header.get("readings_total"),
                  header.get("streams"), len(blob), checksum, blob]
        sql = ("INSERT INTO checkpoints (created_at, created_at_iso, reason, schema_version, "
               "package_version, readings_total, streams, size_bytes, checksum, active, "
               "payload) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?")
        if only_over:
            # No active checkpoint left at all (deleted by hand) does not block saving.
            sql += (" WHERE COALESCE((SELECT MAX(id) FROM checkpoints WHERE active = 1), ?)"
                    " IS ?")
            values += [loaded, loaded]
        with self.db.conn:
            cursor = self.db.execute(sql, values)
            if cursor.rowcount != 1:
                return None
            self.db.execute(
                "DELETE FROM checkpoints WHERE id NOT IN (SELECT id FROM (SELECT id, "
                "ROW_NUMBER() OVER (PARTITION BY active ORDER BY id DESC) AS n "
                "FROM checkpoints) WHERE n <= ?)",
                [retention],
            )
        return int(cursor.lastrowid or 0)

    def checkpoints(self) -> list[dict[str, Any]]:
        """Checkpoint rows without payloads, newest first."""
        return [dict(r) for r in self.db.query(
            f"SELECT {self._CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY id DESC")]

    def checkpoint(self, checkpoint_id: int) -> dict[str, Any]:
        """One checkpoint row with its payload; StorageError when there is none."""
        rows = list(self.db.query("SELECT * FROM checkpoints WHERE id = ?", [checkpoint_id]))
        if not rows:
            raise StorageError(f"no checkpoint {checkpoint_id} in {self.path}")
        return dict(rows[0])

    def checkpoint_payload(self, checkpoint_id: int) -> bytes:
        return bytes(self.checkpoint(checkpoint_id)["payload"] or b"")

    def checkpoint_candidates(self) -> list[dict[str, Any]]:
        """Loadable (active) rows, newest first: what a resume tries in order."""
        return [dict(r) for r in self.db.query(
            f"SELECT {self._CHECKPOINT_COLUMNS} FROM checkpoints WHERE active = 1 "
            "ORDER BY id DESC")]

    def reject_checkpoint(self, checkpoint_id: int, error: str) -> None:
        with self.db.conn:
            self.db.execute("UPDATE checkpoints SET active = -1, error = ? WHERE id = ?",
                            [error, checkpoint_id])

    def rollback_checkpoint(self, checkpoint_id: int) -> None:
        """Make ``checkpoint_id`` the one a (re)started daemon loads (see ``active`` above)."""
        self.checkpoint(checkpoint_id)
        with self.db.conn:
            self.db.execute("UPDATE checkpoints SET active = 0 WHERE id > ? AND active = 1",
                            [checkpoint_id])
            self.db.execute("UPDATE checkpoints SET active = 1, error = NULL WHERE id = ?",
                            [checkpoint_id])

    def status(self) -> dict[str, Any]:
        """The ``edge-ml status --json`` document."""
        counters = self.counters()
        health = self.health() if self.db["health"].count else None
        daemon = daemon_liveness(health) if health else None
        streams = [
            {
                "stream": r["stream"], "readings": r["readings"],
                "warming_up": bool(r["warming_up"]), "last_score": r["last_score"],
                "open_alert": r["open_alert"], "last_value": r["last_value"],
                "last_seen": r["last_seen"], "last_seen_iso": r["last_seen_iso"],
            }
            for r in self.streams()
        ]
        return {
            "db": self.path,
            "schema_version": self.schema_version,
            "readings_total": counters.get("readings_total", 0),
            "rejects_total": counters.get("rejects_total", 0),
            "alerts_total": counters.get("alerts_total", 0),
            "rejects_by_reason": self.reject_counts(),
            "open_alerts": sum(1 for s in streams if s["open_alert"]),
            "last_checkpoint": self.last_checkpoint(),
            "checkpoints_rejected": [
                {"id": r["id"], "created_at_iso": r["created_at_iso"], "error": r["error"]}
                for r in self.db.query(
                    "SELECT id, created_at_iso, error FROM checkpoints WHERE active = -1 "
                    "ORDER BY id DESC")
            ],
            "drift_events": self.db["drift_events"].count,
            # The health record only while its daemon runs; ``daemon`` says which it is.
            "daemon": daemon,
            "health": health if daemon and daemon["running"] else None,
            "streams": streams,
        }

    def close(self) -> None:
        self.db.close()


def _json_scalar(value: Any) -> Any:
    """NumPy scalars as Python numbers; anything else unknown as its text."""
    return value.item() if hasattr(value, "item") else str(value)


_LEGACY_HEALTH = {"True": True, "False": False, "None": None}


def _health_value(text: Any) -> Any:
    """A stored health value: JSON; daemons before it stored ``str(value)`` ("True", "None")."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return _LEGACY_HEALTH.get(text, text)


# A daemon writes its health record every ``[daemon] health_interval_s``. One silent for this
# many intervals, plus a grace for a slow moment (the first batch compiling kernels on a cold
# cache, a checkpoint of many streams), is taken for gone.
HEALTH_STALE_INTERVALS = 3
HEALTH_STALE_GRACE_S = 30.0
DEFAULT_HEALTH_INTERVAL_S = 10.0  # records from before the interval was stored


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
    interval = health.get("health_interval_s")
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


def vars_of(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


def open_readonly(path: str | Path) -> Storage:
    """Open an existing state file for the CLI (migrating it if this build is newer)."""
    if str(path) != ":memory:" and not Path(path).exists():
        blocker = next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise StoragePathError(f"no database at {path}: {blocker} is a file, not a folder")
        raise StorageError(f"no database at {path} (has the daemon run yet? see --db)")
    return Storage(path)
