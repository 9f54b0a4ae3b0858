"""The SQLite state file behind one connection: its writes, its reads, its checkpoints table.

WAL mode, so ``sqlite-utils`` and Datasette can read while the daemon writes. The daemon writes
through :meth:`Storage.write` once per flush, in one transaction. Every ``sqlite3`` failure
leaves here as a :class:`~edge_ml.errors.StorageError` (a lock held too long as its subclass
:class:`~edge_ml.errors.StorageBusyError`), so no caller above this package handles ``sqlite3``.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from edge_ml.errors import StorageBusyError, StorageError, StoragePathError
from edge_ml.records import AlertEvent, iso_utc
from edge_ml.storage.pending import PendingWrites
from edge_ml.storage.schema import migrate, schema_version

# SQLite result codes that say the path is wrong (no permission, a folder, not a database), as
# opposed to an outage (busy, locked, I/O error, disk full) that a restart may get past.
_PATH_ERRORS = ("SQLITE_CANTOPEN", "SQLITE_NOTADB", "SQLITE_PERM", "SQLITE_READONLY")


# WAL pages before SQLite copies them back into the database (its default: 1,000 pages).
WAL_AUTOCHECKPOINT_PAGES = 10_000

# The counters table, plus how many alert rows ``alerts_total`` does not count yet (under the
# name _UNCOUNTED), in one statement: one read snapshot. Every reader of ``alerts_total`` adds
# the two (the tests that read the file with plain sqlite3 have their own query for it).
_UNCOUNTED = "(alert rows since alerts_counted_id)"
_COUNTERS_SQL = (
    "SELECT name, value FROM counters UNION ALL "
    f"SELECT '{_UNCOUNTED}', COUNT(*) FROM alerts WHERE id > "
    "COALESCE((SELECT value FROM counters WHERE name = 'alerts_counted_id'), 0)"
)

# Another connection holds the lock beyond the busy timeout: the same write may succeed later.
_BUSY_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED")


def _error_class(exc: sqlite3.Error) -> type[StorageError]:
    name = getattr(exc, "sqlite_errorname", None) or ""
    if name.startswith(_PATH_ERRORS):
        return StoragePathError
    if name.startswith(_BUSY_ERRORS):
        return StorageBusyError
    return StorageError


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _storage_errors(
    method: Callable[Concatenate[Storage, _P], _R],
) -> Callable[Concatenate[Storage, _P], _R]:
    """``sqlite3.Error`` out of ``method`` as a StorageError with the same text.

    The text is kept as SQLite put it ("database is locked", "disk I/O error"): the pipeline
    logs it and reports it in the health record as ``storage_error``.
    """
    @functools.wraps(method)
    def translated(self: Storage, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise _error_class(exc)(str(exc)) from exc

    return translated


def _insert(conn: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """INSERT ``rows`` (dicts with the same keys) inside the caller's transaction.

    Not sqlite-utils' ``insert_all``: it commits on its own when it opens the transaction (the
    first statement of a flush), which split a flush in two for readers and for a kill -9.
    """
    columns = list(rows[0])
    conn.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join(':' + c for c in columns)})", rows)


def _alert_row(event: AlertEvent) -> dict[str, Any]:
    row = event.to_dict()
    row["ts_iso"] = iso_utc(event.ts)
    row["opened_at_iso"] = iso_utc(event.opened_at)
    row["resolved_at_iso"] = iso_utc(event.resolved_at)
    row["fields"] = None if event.fields is None else json.dumps(event.fields)
    expected = row.pop("expected")
    row["expected_low"], row["expected_high"] = expected if expected else (None, None)
    return row


def _read_alert_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored alert row with its ``fields`` JSON decoded (``{field: share}`` or None)."""
    row = dict(row)
    if row.get("fields"):
        row["fields"] = json.loads(row["fields"])
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
            # FULL: each commit syncs the WAL, so an alert written is on the card, not only in
            # the page cache until the next WAL checkpoint (with writes batched for SD cards,
            # hours apart). Measured +10 KB written per alert, ~+8 KB per statistics write.
            self.db.execute("PRAGMA synchronous=FULL")
            # Bytes written per checkpoint of 1,000 streams (1.24 MB blob), 60 in a row with
            # retention 10, /proc/self/io: 4.1 MB as built by Debian (SECURE_DELETE zeroes the
            # pruned checkpoint's pages: more pages through the WAL and back); 2.6 MB without;
            # 1.5 MB with a WAL of up to 10,000 pages (40 MB), since a page rewritten many
            # times in the WAL is copied back to the database once. Nothing here is secret.
            self.db.execute("PRAGMA secure_delete=OFF")
            self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            migrate(self.db)
        except sqlite3.Error as exc:
            raise _error_class(exc)(f"cannot open the database {self.path}: {exc}") from exc

    @property
    @_storage_errors
    def schema_version(self) -> int:
        return schema_version(self.db)

    # -- writes ---------------------------------------------------------------------------
    @_storage_errors
    def write(self, pending: PendingWrites, streams: list[dict[str, Any]],
              health: dict[str, Any] | None = None) -> None:
        """Write one flush in one transaction; raises StorageError when it cannot.

        ``health``, when given, replaces the health record in the same transaction (see
        :meth:`set_health`): a statistics flush is one write to the card, not two.
        """
        db = self.db
        # An explicit BEGIN: sqlite-utils' insert_all commits on its own unless a transaction
        # is already open (then it takes a savepoint), and Python's sqlite3 opens one only at
        # the first plain DML statement. Under ``with db.conn`` alone, a flush starting with
        # alert rows committed them before the stream rows and counters of the same flush.
        with db.atomic():
            if health is not None:
                self._replace_health(health)
            if pending.alerts:
                _insert(db.conn, "alerts", [_alert_row(e) for e in pending.alerts])
                # A resolved alert is open on no stream (a resolve at restart may be for a
                # stream the restored state does not hold, so no stream row below covers it).
                db.conn.executemany(
                    "UPDATE streams SET open_alert = NULL WHERE open_alert = ?",
                    [(e.alert_id,) for e in pending.alerts if e.state == "resolved"],
                )
            if pending.rejects:
                _insert(db.conn, "rejects", [
                    {
                        "received_at": r.received_at, "received_at_iso": iso_utc(r.received_at),
                        "topic": r.topic, "reason": r.reason, "detail": r.detail,
                        "payload": r.payload_prefix,
                    }
                    for r in pending.rejects
                ])
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
                _insert(db.conn, "drift_events",
                        [{**_vars_of(d), "ts_iso": iso_utc(d.ts)} for d in pending.drift])
            # No alerts_total here: adding to it wrote the counters page with every alert, one
            # of ~6 pages an alert cost (issue 15). Whenever the counters are written anyway,
            # it catches up with the alert rows stored since (counters() adds the rest).
            if self._add_counters(
                {"readings_total": pending.readings, "rejects_total": sum(by_reason.values()),
                 "pending_dropped": pending.dropped}
            ):
                self._catch_up_alerts()
            if streams:
                # readings accumulate in SQL so the count survives restarts without checkpoints.
                db.conn.executemany(
                    "INSERT INTO streams (stream, first_seen, last_seen, last_seen_iso, readings, "
                    "last_value, last_score, warming_up, open_alert, recent_levels, scale) "
                    "VALUES (:stream, :first_seen, :last_seen, :last_seen_iso, :new_readings, "
                    ":last_value, :last_score, :warming_up, :open_alert, :recent_levels, :scale) "
                    "ON CONFLICT(stream) DO UPDATE SET "
                    "last_seen = excluded.last_seen, last_seen_iso = excluded.last_seen_iso, "
                    "readings = readings + excluded.readings, last_value = excluded.last_value, "
                    "last_score = excluded.last_score, warming_up = excluded.warming_up, "
                    "open_alert = excluded.open_alert, recent_levels = excluded.recent_levels, "
                    "scale = excluded.scale",
                    # The pipeline's rows go as they are (no copy of 10,000 dicts on the
                    # worker); rows without a sparkline ring or a scale (written by hand, by
                    # tests) store none.
                    streams if "scale" in streams[0] and "recent_levels" in streams[0]
                    else [{"recent_levels": None, "scale": None, **row} for row in streams],
                )

    def _add_counters(self, deltas: dict[str, int]) -> bool:
        """Add the non-zero ``deltas``; whether there were any (the counters page written)."""
        changes = [(k, v) for k, v in deltas.items() if v]
        self.db.conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            changes,
        )
        return bool(changes)

    def _catch_up_alerts(self) -> None:
        """Count the alert rows stored since the last catch-up into ``alerts_total``.

        Inside the caller's transaction. ``alerts_counted_id`` is the highest row id already
        in ``alerts_total``; it moves to MAX(id) together with the count, so a row is counted
        once. After a prune deleted the newest rows, MAX(id) is lower than before: the next
        row takes MAX(id) + 1 (no AUTOINCREMENT), which must count, so it moves back with it.
        Writes nothing when there is nothing to catch up.
        """
        conn = self.db.conn
        counted, newest = conn.execute(
            "SELECT (SELECT value FROM counters WHERE name = 'alerts_counted_id'), "
            "(SELECT COALESCE(MAX(id), 0) FROM alerts)").fetchone()
        counted = counted or 0
        if counted == newest:
            return
        if newest > counted:
            self._add_counters({"alerts_total": conn.execute(
                "SELECT COUNT(*) FROM alerts WHERE id > ?", [counted]).fetchone()[0]})
        conn.execute(
            "INSERT INTO counters (name, value) VALUES ('alerts_counted_id', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value", [newest])

    @_storage_errors
    def set_busy_timeout(self, seconds: float) -> None:
        """How long a statement waits for another connection's lock before it fails.

        Opened, the connection waits 10 s (the CLI and migrations can). The daemon's worker
        sets ``[storage] busy_timeout_s`` instead: a write that meets a lock held by another
        process then fails fast with ``database is locked`` and is retried later with backoff
        (:meth:`Pipeline.flush <edge_ml.pipeline.Pipeline.flush>`), while scoring and alert
        publishing go on.
        """
        self.db.conn.execute(f"PRAGMA busy_timeout = {max(0, round(seconds * 1000))}")

    @_storage_errors
    def prune_alerts(self, older_than: float) -> int:
        """Delete alert rows stamped before ``older_than`` (epoch s); the number deleted.

        Both rows of an alert go together: an alert still open at the cut-off is kept whole,
        so ``alerts --open`` never shows a resolve without its open or the other way round.
        """
        with self.db.atomic():
            # Counted before they go: alerts_total counts every alert ever stored.
            self._catch_up_alerts()
            cursor = self.db.execute(
                "DELETE FROM alerts WHERE ts < ? AND alert_id IN "
                "(SELECT alert_id FROM alerts WHERE state = 'resolved' AND ts < ?)",
                [older_than, older_than],
            )
            # Nothing is left to count; alerts_counted_id follows MAX(id) down if the newest
            # rows went, so the ids the next rows take are counted.
            self._catch_up_alerts()
        return cursor.rowcount

    def _trim_rejects(self) -> None:
        self.db.execute(
            "DELETE FROM rejects WHERE id <= (SELECT MAX(id) FROM rejects) - ?",
            [self.rejects_kept],
        )

    @_storage_errors
    def set_health(self, values: dict[str, Any]) -> None:
        """Replace the health record; each value is stored as JSON (true, null, 12.5, "text")."""
        # One transaction: readers see whole records.
        with self.db.conn:
            self._replace_health(values)

    def _replace_health(self, values: dict[str, Any]) -> None:
        now = time.time()
        rows = [(k, json.dumps(v, default=_json_scalar), now) for k, v in values.items()]
        # Plain SQL: sqlite-utils' upsert_all introspects the table on every call (~1 ms).
        self.db.conn.execute("DELETE FROM health")
        self.db.conn.executemany(
            "INSERT INTO health (key, value, updated_at) VALUES (?, ?, ?)", rows)

    # -- reads ----------------------------------------------------------------------------
    @_storage_errors
    def counters(self) -> dict[str, int]:
        """The counters as of one moment, ``alerts_total`` with the rows not caught up yet.

        One statement, so one read snapshot: the stored total and the rows beyond
        ``alerts_counted_id`` cannot straddle a catch-up (which would count rows twice).
        ``alerts_counted_id`` itself is bookkeeping, not a count: not returned.
        """
        rows = dict(self.db.execute(_COUNTERS_SQL).fetchall())
        uncounted = rows.pop(_UNCOUNTED, 0)
        rows.pop("alerts_counted_id", None)
        if uncounted or "alerts_total" in rows:
            rows["alerts_total"] = rows.get("alerts_total", 0) + uncounted
        return rows

    @_storage_errors
    def reject_counts(self) -> dict[str, int]:
        return {r["reason"]: r["count"] for r in self.db["reject_counts"].rows}

    @_storage_errors
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
        return [_read_alert_row(r) for r in self.db.query(sql, params)]

    @_storage_errors
    def alerts_after(self, last_id: int) -> list[dict[str, Any]]:
        """Alert rows stored after row ``last_id``, oldest first (``alerts --follow``)."""
        return [_read_alert_row(r) for r in
                self.db.query("SELECT * FROM alerts WHERE id > ? ORDER BY id", [last_id])]

    @_storage_errors
    def last_alert_id(self) -> int:
        """The newest alert row's id; 0 when there is none."""
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM alerts").fetchone()[0])

    @_storage_errors
    def streams(self, stream_glob: str | None = None) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self.db.query("SELECT * FROM streams ORDER BY stream")]
        if stream_glob:
            rows = [r for r in rows if fnmatch.fnmatchcase(r["stream"], stream_glob)]
        return rows

    @_storage_errors
    def has_health(self) -> bool:
        """Whether a daemon has ever written its health record here."""
        return bool(self.db["health"].count)

    @_storage_errors
    def health(self) -> dict[str, Any]:
        """The daemon's last health record, typed; ``updated_at`` is when it was written."""
        rows = list(self.db["health"].rows)
        return {r["key"]: _health_value(r["value"]) for r in rows} | {
            "updated_at": max((r["updated_at"] for r in rows), default=None)
        }

    @_storage_errors
    def last_checkpoint(self) -> dict[str, Any] | None:
        rows = list(self.db.query(
            "SELECT id, created_at, created_at_iso, reason, readings_total, streams, size_bytes "
            "FROM checkpoints ORDER BY id DESC LIMIT 1"
        ))
        return rows[0] if rows else None

    @_storage_errors
    def drift_event_count(self) -> int:
        return self.db["drift_events"].count

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

    @_storage_errors
    def save_checkpoint(self, blob: bytes, header: dict[str, Any], reason: str, checksum: str,
                        retention: int) -> int:
        """Insert a checkpoint and prune to the newest ``retention`` per state, atomically."""
        checkpoint_id = self._insert_checkpoint(blob, header, reason, checksum, retention)
        assert checkpoint_id is not None  # unconditional
        return checkpoint_id

    @_storage_errors
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

    @_storage_errors
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

    @_storage_errors
    def checkpoints(self) -> list[dict[str, Any]]:
        """Checkpoint rows without payloads, newest first."""
        return [dict(r) for r in self.db.query(
            f"SELECT {self._CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY id DESC")]

    @_storage_errors
    def checkpoint(self, checkpoint_id: int) -> dict[str, Any]:
        """One checkpoint row with its payload; StorageError when there is none."""
        rows = list(self.db.query("SELECT * FROM checkpoints WHERE id = ?", [checkpoint_id]))
        if not rows:
            raise StorageError(f"no checkpoint {checkpoint_id} in {self.path}")
        return dict(rows[0])

    @_storage_errors
    def checkpoint_payload(self, checkpoint_id: int) -> bytes:
        return bytes(self.checkpoint(checkpoint_id)["payload"] or b"")

    @_storage_errors
    def checkpoint_candidates(self) -> list[dict[str, Any]]:
        """Loadable (active) rows, newest first: what a resume tries in order."""
        return [dict(r) for r in self.db.query(
            f"SELECT {self._CHECKPOINT_COLUMNS} FROM checkpoints WHERE active = 1 "
            "ORDER BY id DESC")]

    @_storage_errors
    def rejected_checkpoints(self) -> list[dict[str, Any]]:
        """Checkpoints refused at load time (``active`` -1), newest first, with why."""
        return [dict(r) for r in self.db.query(
            "SELECT id, created_at_iso, error FROM checkpoints WHERE active = -1 "
            "ORDER BY id DESC")]

    @_storage_errors
    def reject_checkpoint(self, checkpoint_id: int, error: str) -> None:
        with self.db.conn:
            self.db.execute("UPDATE checkpoints SET active = -1, error = ? WHERE id = ?",
                            [error, checkpoint_id])

    @_storage_errors
    def rollback_checkpoint(self, checkpoint_id: int) -> None:
        """Make ``checkpoint_id`` the one a (re)started daemon loads (see ``active`` above)."""
        self.checkpoint(checkpoint_id)
        with self.db.conn:
            self.db.execute("UPDATE checkpoints SET active = 0 WHERE id > ? AND active = 1",
                            [checkpoint_id])
            self.db.execute("UPDATE checkpoints SET active = 1, error = NULL WHERE id = ?",
                            [checkpoint_id])

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



def _vars_of(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


# The first 16 bytes of every SQLite 3 database file (an empty file is a new database too).
_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_path(path: str | Path) -> None:
    """Raise StoragePathError when ``path`` could not be opened as the daemon's state file.

    What :class:`Storage` would trip over, checked without creating, migrating or changing
    anything (``edge-ml config check``): an existing file must be a SQLite database the
    process can write, beside which SQLite can create its WAL files; a missing one needs a
    folder that exists or can be created, and that takes new files.
    """
    if str(path) == ":memory:":
        return
    target = Path(path)
    if target.is_dir():
        raise StoragePathError(f"{target} is a folder, not a database file")
    if target.exists():
        try:
            with open(target, "rb") as handle:
                head = handle.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StoragePathError(f"cannot read {target}: {exc.strerror or exc}") from exc
        if head and head != _SQLITE_MAGIC:
            raise StoragePathError(f"{target} is not a SQLite database")
        if not os.access(target, os.W_OK):
            raise StoragePathError(f"cannot write {target}: permission denied")
    # The nearest folder that exists must take a new file: the database itself, its -wal and
    # -shm files, or the missing folders on the way. A probe file says it where os.access()
    # cannot (root passes every access() check, yet cannot create files in /proc).
    folder = next(p for p in (target.parent, *target.parent.parents) if p.exists())
    if not folder.is_dir():
        raise StoragePathError(f"no database at {target}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".edge-ml-check-"):
            pass
    except OSError as exc:
        raise StoragePathError(f"cannot create files in {folder} for the database {target}: "
                               f"{exc.strerror or exc}") from exc


def open_existing(path: str | Path) -> Storage:
    """Open a state file that must exist already (the CLI's commands), migrating it if this
    build is newer; a missing file is an error instead of a new, empty database."""
    if str(path) != ":memory:" and not Path(path).exists():
        blocker = next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise StoragePathError(f"no database at {path}: {blocker} is a file, not a folder")
        # A path to fix (a typo, the daemon's other config): a usage error like the others.
        raise StoragePathError(f"no database at {path} (has the daemon run yet?)")
    return Storage(path)
