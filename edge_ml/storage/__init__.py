"""The local SQLite state file: alerts, streams, rejects, drift events, checkpoints, counters.

The only package that speaks SQL or imports ``sqlite3``/``sqlite-utils``; its failures reach
callers as :class:`~edge_ml.errors.StorageError`. Modules: ``schema`` (the migrations),
``pending`` (the bounded rows waiting for a flush), ``database`` (:class:`Storage`: writes,
reads, the checkpoints table). ``sqlite_utils`` is imported when a database is opened, not
when this package is: replay names it but opens none, and its startup is measured.
"""

from __future__ import annotations

from edge_ml.storage.database import Storage, check_path, open_existing
from edge_ml.storage.pending import PendingWrites
from edge_ml.storage.schema import MIGRATIONS

__all__ = ["MIGRATIONS", "PendingWrites", "Storage", "check_path", "open_existing"]
