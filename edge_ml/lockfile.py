"""One daemon per database: an exclusive lock on ``<db>.lock`` held for the process lifetime.

Two daemons on one state file each believe they own it: the second one's stop marks the first
as stopped in the health table, and the first one's learning is overwritten by the second's
checkpoints. ``flock`` is released by the kernel when the process ends however it ends
(kill -9, OOM, power cut: the lock does not outlive the boot), so a stale lock file is never
in the way. The holder writes its pid into the file, so the one refused can name it. The
descriptor is close-on-exec: a child process does not inherit the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from edge_ml.errors import DaemonRunningError, StoragePathError


def lock_path(db: str) -> str:
    """Where the lock for database ``db`` lives: next to it, so it covers the same file."""
    return f"{db}.lock"


class DatabaseLock:
    """An exclusive ``flock`` on ``<db>.lock`` with the holder's pid in it.

    Examples
    --------
    >>> import tempfile, os
    >>> db = os.path.join(tempfile.mkdtemp(), "state.db")
    >>> first = DatabaseLock(db).acquire()
    >>> try:
    ...     DatabaseLock(db).acquire()
    ... except DaemonRunningError as exc:
    ...     exc.pid == os.getpid()
    True
    >>> first.release()
    """

    def __init__(self, db: str) -> None:
        self.db = db
        self.path = lock_path(db)
        self._fd: int | None = None

    def acquire(self) -> DatabaseLock:
        """Take the lock or raise DaemonRunningError naming the holder's pid.

        A lock file that cannot be created (no such folder, no permission) is a
        StoragePathError: the database next to it could not be written either.
        """
        # The database's folder is made here as Storage would make it: the lock comes first.
        with contextlib.suppress(OSError):  # then the open below says why
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoragePathError(
                f"cannot create the lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            holder = f"process {pid}" if pid else "another process"
            raise DaemonRunningError(
                f"another edge-ml daemon ({holder}) is running on {self.db} (it holds "
                f"{self.path}): stop it first, or give this one another [storage] db",
                pid) from None
        except OSError as exc:
            os.close(fd)
            raise StoragePathError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go (the kernel does it anyway when the process ends)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
