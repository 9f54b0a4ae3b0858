"""The state file's tables, as numbered migrations, and applying the ones a file has not seen.

A migration is never edited once released: a new column or table is a new entry at the end of
:data:`MIGRATIONS`, so every file reaches the same schema whatever version created it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a database is opened (edge_ml.storage.database), not here
    import sqlite_utils


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


def _migration_4(db: sqlite_utils.Database) -> None:
    # The last hour of the stream's anomaly level, a byte a minute (edge_ml.sparkline).
    db["streams"].add_column("recent_levels", bytes)


def _migration_5(db: sqlite_utils.Database) -> None:
    # Why an alert was raised (issue 14): the view ("seasonal", "shift", "stuck", "model",
    # "joint"), the contributing fields as a JSON object {field: share}, and the usual range of
    # the stream.
    # NULL on rows written before, and on resolves whose open a restart forgot.
    for column, kind in (("view", str), ("fields", str), ("expected_low", float),
                         ("expected_high", float)):
        db["alerts"].add_column(column, kind)


def _migration_6(db: sqlite_utils.Database) -> None:
    # Fewer pages written per alert (issue 15). No query reads alerts by alert_id through this
    # index (EXPLAIN QUERY PLAN: only the prune's DELETE used it, and it deletes faster without
    # it), yet its random uuid keys made every alert write one more index page.
    db.execute("DROP INDEX IF EXISTS idx_alerts_alert_id")
    # alerts_total is no longer added to with every alert (the counters page was one more page
    # per alert): it catches up in the transactions that write counters anyway, up to the row
    # id recorded here (edge_ml.storage.database, _catch_up_alerts). The alerts_total of a
    # file from before counted every row it holds, so they are all counted already.
    db.execute("INSERT INTO counters (name, value) SELECT 'alerts_counted_id', "
               "COALESCE(MAX(id), 0) FROM alerts WHERE true "
               "ON CONFLICT(name) DO UPDATE SET value = excluded.value")


def _migration_7(db: sqlite_utils.Database) -> None:
    # How the stream's readings are scored (edge_ml.scales): "raw", "log" or "root" (since
    # schema 11 of checkpoints; the column takes any string); NULL while its
    # first readings decide, and on rows written before.
    db["streams"].add_column("scale", str)


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("initial tables", _migration_1),
    ("checkpoints.error", _migration_2),
    ("alerts.reason", _migration_3),
    ("streams.recent_levels", _migration_4),
    ("alerts.view/fields/expected", _migration_5),
    ("fewer pages per alert: no alert_id index, alerts_counted_id", _migration_6),
    ("streams.scale", _migration_7),
]


def applied_migrations(db: sqlite_utils.Database) -> set[int]:
    if "schema_migrations" not in db.table_names():
        return set()
    return {row["version"] for row in db["schema_migrations"].rows}


def schema_version(db: sqlite_utils.Database) -> int:
    return max((r["version"] for r in db["schema_migrations"].rows), default=0)


def migrate(db: sqlite_utils.Database) -> None:
    """Apply the migrations this file has not seen yet, in one transaction.

    The check and the migrations hold the write lock together (``BEGIN IMMEDIATE``): two
    processes opening a new file at once (the daemon creating it, the CLI reading it) made
    the second fail with "table alerts already exists". A file already up to date takes no
    write lock, so read-only commands do not wait on a busy daemon.
    """
    if len(applied_migrations(db)) == len(MIGRATIONS):
        return
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        if "schema_migrations" not in db.table_names():
            db["schema_migrations"].create(
                {"version": int, "name": str, "applied_at": float}, pk="version"
            )
        done = applied_migrations(db)
        for version, (name, migration) in enumerate(MIGRATIONS, start=1):
            if version not in done:
                migration(db)
                db["schema_migrations"].insert(
                    {"version": version, "name": name, "applied_at": time.time()}
                )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
