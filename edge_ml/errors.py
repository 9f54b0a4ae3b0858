"""One exception hierarchy for the package: raised by the library, rendered by the CLI."""

from __future__ import annotations


class EdgeMLError(Exception):
    """Base of every error edge-ml raises on purpose."""


class ConfigError(EdgeMLError):
    """A config file or value is invalid; the message names the key and the file."""

    def __init__(self, message: str, *, key: str | None = None, path: str | None = None) -> None:
        self.key = key
        self.path = path
        where = []
        if path:
            where.append(str(path))
        if key:
            where.append(f"key '{key}'")
        prefix = f"{': '.join(where)}: " if where else ""
        super().__init__(f"config error: {prefix}{message}")


class StorageError(EdgeMLError):
    """The SQLite state file cannot be opened, migrated or written."""


class StoragePathError(StorageError):
    """The state file's path cannot be used: no permission, a file where a folder must be, or a
    file that is not a database. A setting to fix (``[storage] db``, ``--db``), not an outage."""


class StorageBusyError(StorageError):
    """Another connection held the state file's lock past the busy timeout (a backup, a shell,
    a Datasette write): the same write can succeed later, so the pipeline retries it."""


class DaemonError(EdgeMLError):
    """The daemon recorded in a state file is not running, or did not do what it was asked in
    time (``edge-ml checkpoints save``)."""


class DaemonRunningError(DaemonError):
    """Another daemon already runs on this state file (it holds ``<db>.lock``); ``pid`` is its
    process id when it could be read."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class CheckpointError(EdgeMLError):
    """A checkpoint is corrupt, truncated or incompatible with this build."""


class ReplayError(EdgeMLError):
    """A replay input file cannot be read, or its output cannot be written."""


class ReplayOutputError(ReplayError):
    """Replay's output path cannot be used (no such folder, a folder where a file must be, no
    permission, the input itself): an argument to fix (``--out``), not a failure midway."""


class EvaluationError(EdgeMLError):
    """Labels or results that cannot be scored (missing file, unknown window edge, bad value)."""


class MqttError(EdgeMLError):
    """A broker cannot be reached or refuses a short-lived client (``edge-ml fleet``); the
    daemon's own link never raises it: it retries in the background."""
