"""When checkpoints are saved and which one is loaded: the policy over the codec and storage.

:class:`Checkpointer` drives one pipeline's saves and reloads from the daemon's worker thread;
:func:`resume` loads the newest checkpoint that decodes and fits; :func:`describe_row` and
:func:`import_blob` are the library side of ``edge-ml checkpoints``. The blob itself is
:mod:`edge_ml.checkpoint_format`, the state in it :mod:`edge_ml.state`.

Saving is split so the worker thread never stalls for long: :func:`~edge_ml.state.export_state`
copies the arrays (milliseconds, on the worker), :func:`~edge_ml.checkpoint_format.encode` packs
and compresses the copy (zlib releases the GIL, so it runs on a helper thread while the worker
goes on), and the worker then writes the finished blob in one transaction
(:meth:`~edge_ml.storage.Storage.save_checkpoint`).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Any

from edge_ml.checkpoint_format import EncodedCheckpoint, checksum_of, decode, encode
from edge_ml.errors import CheckpointError, StorageError
from edge_ml.pipeline import Pipeline
from edge_ml.state import compatibility, export_state, reconcile_alerts, restore_state
from edge_ml.storage import Storage

log = logging.getLogger(__name__)

# Snapshot buffers larger than this are not kept between checkpoints. Kept, a checkpoint's
# pause is a copy into warm pages (1,000 streams: ~3 ms instead of 5-55 ms); but the buffers are
# a second copy of every stream's state all the time, and at 10,000 streams (~125 MB) the copy
# into warm pages saved nothing measurable (pauses 92-217 ms either way) while the daemon
# held 390 MB instead of 220. 32 MB keeps them for up to ~2,500 streams.
POOL_KEEP_BYTES = 32 * 2**20
# How often a running daemon looks for a checkpoint an operator chose (rollback, train, import):
# a read, so it costs the SD card nothing, and it need not wait for the next save (which is
# hours apart with the default [storage] checkpoint_interval_s).
CHOICE_POLL_S = 5.0


class Checkpointer:
    """Saves and restores one pipeline through its storage; driven by the worker thread.

    ``request()`` may be called from any thread (it only sets a flag). ``tick()`` runs on the
    worker: it starts a save when the timer is due or one was requested, and writes a finished
    blob when the helper thread is done. ``save_now()`` does all of it synchronously (shutdown).

    An operator's choice wins over the daemon's saves: when the newest active checkpoint (the
    one a start loads) is no longer the one this state came from, because ``checkpoints
    rollback``, ``train`` or ``checkpoints import`` ran meanwhile, the daemon loads it (as on
    SIGHUP) at its next timer tick or save request instead of saving, and does not save over
    it at shutdown. Saves are written only while the choice is unchanged
    (:meth:`~edge_ml.storage.Storage.save_checkpoint_over`), so a save already being encoded
    cannot supersede it either.

    Parameters
    ----------
    pipeline
        The :class:`~edge_ml.pipeline.Pipeline` (with ``storage`` set).
    interval_s
        Seconds between timer checkpoints.
    retention
        Newest checkpoints kept (``[storage] retention``).
    """

    def __init__(self, pipeline: Pipeline, interval_s: float, retention: int) -> None:
        self.pipeline = pipeline
        self.interval_s = interval_s
        self.retention = retention
        self.requested = threading.Event()
        self.reload_requested = threading.Event()
        self.last_started = time.monotonic()
        self.last_choice_poll = time.monotonic()
        # The checkpoint this state came from: loaded at start or reload, or last written;
        # known once either happened (before that there is nothing an operator could override).
        self.current_id: int | None = None
        self.tracking = False
        self.saved_readings = -1
        self.last_pause_s = 0.0
        self.last_error: str | None = None
        self._job: tuple[str, Future[EncodedCheckpoint]] | None = None
        # Snapshot buffers reused between checkpoints; safe because a new snapshot is only
        # taken once the previous job has been encoded (``_job`` is None). Kept only while
        # small (see POOL_KEEP_BYTES).
        self._pool: dict[str, Any] = {}

    @property
    def storage(self) -> Storage:
        """The pipeline's storage, where checkpoints are read and written."""
        storage = self.pipeline.storage
        if storage is None:
            raise StorageError("checkpoints need a pipeline with storage")
        return storage

    @property
    def supported(self) -> bool:
        return self.pipeline.params.backend == "numba"

    def request(self, reload: bool = False) -> None:
        (self.reload_requested if reload else self.requested).set()

    def tick(self) -> None:
        """Worker-side: start, finish or reload as due; never blocks on compression."""
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self._finish(wait=True)
            self._reload()
        if self._job is not None:
            self._finish(wait=False)
            return
        now = time.monotonic()
        due = now - self.last_started >= self.interval_s
        if due or self.requested.is_set() or now - self.last_choice_poll >= CHOICE_POLL_S:
            self.last_choice_poll = now
            self._load_operator_choice()
        if self.requested.is_set():
            self.requested.clear()
            self._start("request")
        elif due:
            # An idle gateway does not rewrite the same state (SD cards wear).
            if self.pipeline.readings_total == self.saved_readings:
                self.last_started = time.monotonic()
            else:
                self._start("timer")

    def _start(self, reason: str) -> None:
        self.last_started = time.monotonic()
        if not self.supported:
            return
        started = time.perf_counter()
        self.pipeline.flush()
        document = export_state(self.pipeline, self._pool)
        self.last_pause_s = time.perf_counter() - started
        future: Future[EncodedCheckpoint] = Future()

        def run() -> None:
            try:
                future.set_result(encode(document))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name="edge-ml-checkpoint", daemon=True).start()
        self._job = (reason, future)

    def _finish(self, wait: bool) -> int | None:
        if self._job is None:
            return None
        reason, future = self._job
        if not wait and not future.done():
            return None
        self._job = None
        if sum(a.nbytes for a in self._pool.values()) > POOL_KEEP_BYTES:
            self._pool = {}
        try:
            encoded = future.result()
            return self._write(encoded, reason)
        except (CheckpointError, StorageError) as exc:  # keep running, try on the next timer
            self.last_error = str(exc)
            log.error("checkpoint (%s) not written: %s", reason, exc)
        return None

    def _write(self, encoded: EncodedCheckpoint, reason: str) -> int | None:
        started = time.perf_counter()
        storage = self.storage
        if self.tracking:
            checkpoint_id = storage.save_checkpoint_over(
                self.current_id, encoded.blob, encoded.header, reason, encoded.checksum,
                self.retention,
            )
        else:
            checkpoint_id = storage.save_checkpoint(encoded.blob, encoded.header, reason,
                                                    encoded.checksum, self.retention)
        self.last_pause_s += time.perf_counter() - started
        if checkpoint_id is None:
            log.info("checkpoint (%s) not written: another checkpoint was chosen to load at "
                     "start since this state was loaded; loading it", reason)
            self.reload_requested.set()
            return None
        self.current_id = checkpoint_id
        self.tracking = True
        self.saved_readings = int(encoded.header.get("readings_total", -1))
        self.last_error = None
        log.info("checkpoint %d saved (%s, %d bytes, %d readings, worker paused %.1f ms)",
                 checkpoint_id, reason, len(encoded.blob), encoded.header["readings_total"],
                 self.last_pause_s * 1e3)
        return checkpoint_id

    def save_now(self, reason: str) -> int | None:
        """Flush and write a checkpoint synchronously (waits for one in progress first).

        Nothing is written when an operator chose another checkpoint to load at start since
        this state was loaded: that choice stays what the next start loads.
        """
        self._finish(wait=True)
        if not self.supported:
            log.warning("checkpoints need the numba backend; none saved")
            return None
        self.pipeline.flush()
        chosen = self._operator_choice()
        if chosen is not None:
            log.info("no %s checkpoint: checkpoint %d, chosen since this state was loaded, is "
                     "what the next start loads", reason, chosen)
            return None
        try:
            return self._write(encode(export_state(self.pipeline)), reason)
        except Exception as exc:
            self.last_error = str(exc)
            log.error("checkpoint (%s) not written: %s", reason, exc)
            return None

    def resume(self, reason: str = "restart") -> int | None:
        """Load the newest valid checkpoint; rejected ones are logged and marked in storage.

        Then the alerts table and MQTT are brought in line with the restored alert state
        (:func:`~edge_ml.state.reconcile_alerts`; ``reason`` is "restart" at start,
        "reload" on SIGHUP or an operator's choice). Returns the id loaded, or None when none
        was (a fresh start; on a reload, the state in memory is kept).
        """
        # Events of the state being replaced go to the database first: it is what is compared.
        self.pipeline.flush()
        loaded = None
        if self.supported:
            loaded = resume(self.pipeline)
            self.current_id, self.tracking = loaded, True
            if loaded is not None:
                self.saved_readings = self.pipeline.readings_total
        if reason == "restart":
            # The process's counters (health, /metrics) go on from where the last process's
            # checkpoint left them; a reload later changes the model state, not what this
            # process has processed (Prometheus takes a decrease for a restart).
            p = self.pipeline
            p.readings_seen, p.rejects_seen = p.readings_total, p.rejects_total
        reconcile_alerts(self.pipeline, reason)
        return loaded

    def _reload(self) -> None:
        """SIGHUP: load the checkpoint chosen since this state was loaded or saved, if any.

        With nothing new chosen the newest checkpoint is the one this state came from (loaded
        or last written here): loading it would throw away what was learned since, so the live
        state is kept.
        """
        if self.supported and self.tracking and self.current_id is not None:
            try:
                newest = self.storage.newest_checkpoint_id()
            except StorageError as exc:
                log.warning("reload: cannot read the checkpoints table (%s); keeping the live "
                            "state", exc)
                return
            if newest == self.current_id:
                log.info("reload: checkpoint %d, the newest, is the one this state came from: "
                         "keeping the live state (%d readings)", newest,
                         self.pipeline.readings_total)
                return
        self.resume("reload")

    def _operator_choice(self) -> int | None:
        """The newest active checkpoint when it is not the one this state came from, else None."""
        if not self.tracking:
            return None
        try:
            newest = self.storage.newest_checkpoint_id()
        except StorageError as exc:  # busy, I/O: ask again on the next tick
            log.warning("cannot read the checkpoints table: %s", exc)
            return None
        return newest if newest is not None and newest != self.current_id else None

    def _load_operator_choice(self) -> None:
        if not self.supported:
            return
        chosen = self._operator_choice()
        if chosen is None:
            return
        log.info("checkpoint %d was chosen to load at start after this state was loaded "
                 "(rollback, train or import): loading it", chosen)
        self.resume("reload")


def resume(pipeline: Pipeline, storage: Storage | None = None, reject: bool = True) -> int | None:
    """Restore ``pipeline`` from the newest loadable checkpoint in ``storage`` (default: its own).

    Candidates are the ``active`` rows, newest first. A corrupt, truncated or incompatible one
    is logged, marked rejected (``active = -1`` with the reason in ``error``, shown by
    ``edge-ml status``) and the next older one is tried; with none left the pipeline stays
    as it is (fresh at start). ``reject=False`` only skips such rows (``edge-ml train``, whose
    config may not be the daemon's). Returns the id loaded.
    """
    storage = storage if storage is not None else pipeline.storage
    if storage is None:
        raise StorageError("no storage to resume from")
    expect = compatibility(pipeline)
    for row in storage.checkpoint_candidates():
        checkpoint_id = row["id"]
        try:
            blob = storage.checkpoint_payload(checkpoint_id)
            if checksum_of(blob) != row["checksum"]:
                raise CheckpointError("checksum differs from the one recorded at save time")
            document = decode(blob, expect)
            restore_state(pipeline, document)
        except CheckpointError as exc:
            if not reject:
                log.warning("checkpoint %d skipped: %s", checkpoint_id, exc)
                continue
            log.error("checkpoint %d rejected: %s; trying an older one", checkpoint_id, exc)
            storage.reject_checkpoint(checkpoint_id, str(exc))
            continue
        log.info("resumed from checkpoint %d (%s, %s): %d streams, %d readings",
                 checkpoint_id, row["reason"], row["created_at_iso"], len(pipeline.streams),
                 pipeline.readings_total)
        return int(checkpoint_id)
    log.info("no usable checkpoint: %s", "starting fresh" if reject else "none loaded")
    return None


# -- library side of the CLI ----------------------------------------------------------------
def describe_row(storage: Storage, checkpoint_id: int) -> dict[str, Any]:
    """A checkpoint row (no payload) with its decoded header, or the reason it does not decode."""
    row = storage.checkpoint(checkpoint_id)
    blob = bytes(row.pop("payload") or b"")
    try:
        row["header"] = decode(blob)["header"]
    except CheckpointError as exc:
        row["header"] = None
        row["decode_error"] = str(exc)
    return row


def import_blob(storage: Storage, blob: bytes, retention: int) -> int:
    """Verify a checkpoint file and store it as the newest one (reason ``import``)."""
    header = decode(blob)["header"]
    return int(storage.save_checkpoint(blob, header, "import", checksum_of(blob), retention))
