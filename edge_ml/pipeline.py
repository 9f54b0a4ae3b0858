"""Where the stages meet: messages -> readings -> features -> model -> alerts -> storage/publish.

:class:`Pipeline` owns every piece of per-stream state and is driven by one thread at a time
(the daemon's worker, or ``replay`` offline). Readings move through it as arrays, one
micro-batch at a time; only rejects and alert events are Python objects.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import logging
import math
import operator
import queue
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_ml.alerts import AlertTracker
from edge_ml.config import Config
from edge_ml.decode import STREAM_LIMIT, decode_batch
from edge_ml.drift import DriftMonitor, DriftParams
from edge_ml.errors import CheckpointError, ReplayError, ReplayOutputError
from edge_ml.features import FeatureState
from edge_ml.kernels import prepare as prepare_kernels
from edge_ml.kernels.alerting import OPENED
from edge_ml.kernels.csvio import NEED_MORE, REFUSED, ROW_EXTRA, format_rows, parse_rows
from edge_ml.model.detector import Detector, ModelParams, describe, make_detector
from edge_ml.publish import AlertPublisher
from edge_ml.records import AlertEvent, Message, Reject, iso_utc
from edge_ml.slots import SnapshotPool
from edge_ml.storage import PendingWrites, Storage
from edge_ml.streams import StreamRegistry

log = logging.getLogger(__name__)

# While new streams are refused (``[daemon] max_streams``), one log line this often at most.
STREAM_LIMIT_LOG_INTERVAL_S = 60.0
# After a failed flush (database locked by another process, disk full) the next attempt waits
# this long, doubling with every failure up to the cap: each attempt may wait up to
# ``[storage] busy_timeout_s`` for a lock, and the worker has readings to score meanwhile.
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 4.0


def model_params(config: Config, n_features: int) -> ModelParams:
    m = config.model
    return ModelParams(m.backend, m.n_trees, m.height, m.window_size, m.seed, m.warmup,
                       m.paper_score, n_features)


def drift_params(config: Config) -> DriftParams:
    m = config.model
    return DriftParams(m.drift_block, m.drift_threshold, m.drift_delta, m.drift_min_blocks,
                       m.drift_reaction)


@dataclass(frozen=True)
class BatchOutput:
    """Per-reading results of one micro-batch, in arrival order."""

    slots: np.ndarray
    levels: np.ndarray
    raw: np.ndarray
    warming: np.ndarray
    codes: np.ndarray  # 0 none, 1 alert opened, 2 alert resolved
    cooling: np.ndarray  # 1 while the stream is inside its alert cooldown
    events: list[AlertEvent]

    def reported_levels(self, threshold: float) -> np.ndarray:
        """Levels as an operator sees them: held just under the threshold during a cooldown.

        After an alert the stream stays "known anomalous" for the cooldown; reporting the raw
        level there would present the same incident again as new detections.
        """
        return np.where(self.cooling == 1, np.minimum(self.levels, threshold * 0.999),
                        self.levels)


class Pipeline:
    """All per-stream state and the stage calls, for one owner thread.

    Parameters
    ----------
    config
        Effective configuration.
    storage
        Where flushes go (None: keep nothing, as in a plain replay).
    publisher
        Where alert events go (None offline).
    """

    def __init__(self, config: Config, storage: Storage | None = None,
                 publisher: AlertPublisher | None = None, capacity: int = 16) -> None:
        prepare_kernels()  # Numba's one-time setup, here rather than in the first batch
        self.config = config
        self.storage = storage
        self.publisher = publisher
        self.streams = StreamRegistry(capacity)
        self.features = FeatureState(config.features.season_s, config.features.season_bins,
                                     capacity)
        self.params = model_params(config, self.features.n_features)
        self.detector: Detector = make_detector(self.params, capacity)
        self.alerts = AlertTracker(config.alerts, capacity)
        self.drift = DriftMonitor(drift_params(config), capacity)
        self.pending = PendingWrites()
        self._dirty: set[int] = set()
        self.readings_total = 0
        self.rejects_total = 0
        self.storage_faults = 0
        self.last_storage_error: str | None = None
        self.last_flush = time.monotonic()
        self._retry_delay = 0.0  # backoff after failed flushes (0: the last one succeeded)
        self._retry_at = 0.0
        self._limit_logged_at = 0.0  # wall clock of the last "stream limit" log line
        self._limit_refused = 0  # readings refused since that line

    # -- processing -----------------------------------------------------------------------
    def _grow(self) -> None:
        capacity = self.streams.capacity
        if self.features.arrays.capacity < capacity:
            self.features.arrays.grow(capacity)
            self.detector.grow(capacity)
            self.alerts.grow(capacity)
            self.drift.grow(capacity)

    def process_messages(self, messages: list[Message]) -> BatchOutput | None:
        """Decode and process one micro-batch of MQTT messages.

        Readings for new streams beyond ``[daemon] max_streams`` are rejected (reason
        ``stream_limit``), one reject per reading; the streams already held go on as before.
        """
        decoded = decode_batch(messages, self.config.mqtt.max_payload_bytes)
        names, ts, values = decoded.streams, decoded.ts_array(), decoded.value_array()
        rejects = decoded.rejects
        refused = self.streams.beyond(names, self.config.daemon.max_streams)
        if refused:
            names, ts, values, rejects = self._refuse_streams(refused, names, ts, values,
                                                              rejects)
        if rejects:
            self.rejects_total += len(rejects)
            self.pending.rejects.extend(rejects)
            for reject in rejects[:3]:
                log.debug("rejected %s on %s: %s", reject.reason, reject.topic, reject.detail)
        if not names:
            return None
        return self.process_readings(names, ts, values)

    def _refuse_streams(
        self, refused: set[str], names: list[str], ts: np.ndarray, values: np.ndarray,
        rejects: list[Reject],
    ) -> tuple[list[str], np.ndarray, np.ndarray, list[Reject]]:
        """The readings of streams that may not be created taken out, as rejects."""
        limit = self.config.daemon.max_streams
        keep = [name not in refused for name in names]
        now = time.time()
        # The stream name stands in for the topic, the value's text for the payload.
        detail = f"{limit} streams held ([daemon] max_streams): no new stream"
        new_rejects = [
            Reject(name, STREAM_LIMIT, detail, repr(value).encode(), now)
            for name, value, kept in zip(names, values.tolist(), keep, strict=True) if not kept
        ]
        rejects = rejects + new_rejects
        self._limit_refused += len(new_rejects)
        if now - self._limit_logged_at >= STREAM_LIMIT_LOG_INTERVAL_S:
            if self._limit_logged_at == 0.0:
                log.warning("stream limit reached: %d streams held ([daemon] max_streams); "
                            "readings for new streams are rejected as %s (first: %s)",
                            limit, STREAM_LIMIT, min(refused))
            else:
                log.warning("stream limit: %d readings for new streams rejected as %s since "
                            "the last such line (e.g. %s)", self._limit_refused, STREAM_LIMIT,
                            min(refused))
            self._limit_logged_at = now
            self._limit_refused = 0
        mask = np.fromiter(keep, dtype=bool, count=len(keep))
        names = [name for name, kept in zip(names, keep, strict=True) if kept]
        return names, ts[mask], values[mask], rejects

    def process_readings(self, names: list[str], ts: np.ndarray,
                         values: np.ndarray) -> BatchOutput:
        """Score, learn and alert over readings already decoded (used by replay directly)."""
        slots = self.streams.resolve(names)
        self._grow()
        detection = self.detector.process(self.features, slots, values, ts)
        codes, cooling, events = self.alerts.evaluate(
            slots, detection.levels, values, ts, detection.warming, self.streams.names
        )
        self.streams.record(slots, ts, values, detection.levels, detection.warming)
        self._drift(slots, detection.residual, detection.warming, ts)
        n = len(slots)
        self.readings_total += n
        if self.storage is not None:
            self.pending.readings += n
            self.pending.alerts.extend(events)
            self._dirty.update(np.unique(slots).tolist())
        if self.publisher is not None and events:
            self.publisher.alerts(events)
        for event in events:
            log.debug("alert %s %s on %s (score %.4f, value %s)", event.alert_id, event.state,
                     event.stream, event.score, event.value)
        return BatchOutput(slots, detection.levels, detection.raw, detection.warming, codes,
                           cooling, events)

    def _drift(self, slots: np.ndarray, residual: np.ndarray, warming: np.ndarray,
               ts: np.ndarray) -> None:
        """Drift detection on block summaries, and the configured reaction (edge_ml.drift)."""
        found = self.drift.update(slots, residual, warming, ts, self.streams.names)
        if not found:
            return
        for slot, event in found:
            if event.reaction == "reset":
                self.detector.reset(slot)
                self.features.arrays.reset(slot)
            log.warning("drift on %s at %s: %s (reaction: %s)", event.stream, iso_utc(event.ts),
                        event.statistic, event.reaction)
        events = [event for _, event in found]
        if self.storage is not None:
            self.pending.drift.extend(events)
        if self.publisher is not None:
            self.publisher.drift(events)

    # -- checkpoints ----------------------------------------------------------------------
    def compatibility(self) -> dict[str, Any]:
        """Header entries a checkpoint must match to be restored here (edge_ml.checkpoint)."""
        return {
            "params": describe(self.params),
            "features": self.features.describe(),
        }

    def export_state(self, pool: SnapshotPool | None = None) -> dict[str, Any]:
        """Every piece of per-stream state as copies (``{"header", "state"}``), for a checkpoint.

        Cheap enough for the worker thread (array copies only); encoding is done elsewhere.
        With a ``pool`` the copies reuse the previous snapshot's buffers: the caller must be
        done with that snapshot (encoded) before asking for the next.
        """
        from edge_ml import __version__
        from edge_ml.checkpoint import SCHEMA_VERSION

        used = len(self.streams)
        header = {
            "schema_version": SCHEMA_VERSION,
            "package_version": __version__,
            **self.compatibility(),
            "seed": self.params.seed,
            "created_at": time.time(),
            "readings_total": self.readings_total,
            "rejects_total": self.rejects_total,
            "streams": used,
        }
        state = {
            "names": list(self.streams.names),
            "stats": self.streams.stats.export(used, pool, "stats."),
            "features": self.features.arrays.export(used, pool, "features."),
            "detector": self.detector.export(used, pool),
            "alerts": self.alerts.state.export(used, pool, "alerts."),
            "open_alerts": [[slot, alert_id, opened_at]
                            for slot, (alert_id, opened_at) in self.alerts.open_alerts.items()],
            "drift": self.drift.state.export(used, pool, "drift."),
        }
        return {"header": header, "state": state}

    def restore_state(self, document: dict[str, Any]) -> None:
        """Load a decoded checkpoint; on any mismatch raise CheckpointError, leaving state as is.

        The stages are rebuilt aside and swapped in only when every one of them loaded.
        """
        header, state = document["header"], document["state"]
        try:
            names = [str(n) for n in state["names"]]
            capacity = max(len(names), 16)
            streams = StreamRegistry(capacity)
            streams.restore(names, state["stats"])
            features = FeatureState(self.config.features.season_s,
                                    self.config.features.season_bins, capacity)
            features.arrays.restore(state["features"])
            detector = make_detector(self.params, capacity)
            if names:  # an empty forest cannot be restored (nor needs to be)
                detector.restore(state["detector"])
            alerts = AlertTracker(self.config.alerts, capacity)
            alerts.state.restore(state["alerts"])
            alerts.open_alerts = {int(slot): (str(alert_id), float(opened_at))
                                  for slot, alert_id, opened_at in state["open_alerts"]}
            drift = DriftMonitor(drift_params(self.config), capacity)
            drift.state.restore(state["drift"])
            for part in (features.arrays, alerts.state, drift.state):
                part.grow(streams.capacity)
            detector.grow(streams.capacity)
            readings_total = int(header["readings_total"])
            if any(len(a) != len(names) for a in state["stats"].values()):
                raise ValueError("stream statistics disagree with the stream names")
        except (KeyError, TypeError, ValueError, NotImplementedError) as exc:
            raise CheckpointError(f"state does not fit this pipeline: {exc}") from exc
        self.streams, self.features, self.detector = streams, features, detector
        self.alerts, self.drift = alerts, drift
        self.readings_total = readings_total
        self.rejects_total = int(header.get("rejects_total", 0))
        # What the checkpoint counted was already written to the streams table (or, for a
        # trained checkpoint, is history that must not be counted as live readings).
        streams.stats.flushed_readings[:] = streams.stats.readings
        self._dirty.clear()

    def graft(self, document: dict[str, Any]) -> list[str]:
        """Put every stream of another pipeline's :meth:`export_state` into this one.

        A stream this pipeline does not have is added; one it has is replaced whole (model,
        features, statistics, alert and drift state). Every other stream, and the counters, stay
        as they are: this is how ``edge-ml train`` adds a warm-started stream to a fleet. The
        grafted streams' alerts are dropped (history alerts are not live ones). Returns the
        grafted stream names.
        """
        own = self.export_state()
        base, other = own["state"], document["state"]
        names = list(base["names"])
        slot_of = {name: i for i, name in enumerate(names)}
        grafted = [str(n) for n in other["names"]]
        targets = []
        for name in grafted:
            if name not in slot_of:
                slot_of[name] = len(names)
                names.append(name)
            targets.append(slot_of[name])
        merged: dict[str, Any] = {"names": names}
        try:
            for section in ("stats", "features", "detector", "alerts", "drift"):
                arrays = {}
                for key, array in base[section].items():
                    incoming = other[section][key]
                    if incoming.shape != (len(grafted), *array.shape[1:]) \
                            or incoming.dtype != array.dtype:
                        raise ValueError(f"{section}.{key}: {incoming.dtype}{incoming.shape} "
                                         f"does not fit {array.dtype}{array.shape}")
                    out = np.empty((len(names), *array.shape[1:]), dtype=array.dtype)
                    out[:len(array)] = array
                    out[targets] = incoming
                    arrays[key] = out
                merged[section] = arrays
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"cannot graft streams: {exc}") from exc
        replaced = set(targets)
        merged["open_alerts"] = [entry for entry in base["open_alerts"]
                                 if entry[0] not in replaced]
        own["header"]["streams"] = len(names)
        self.restore_state({"header": own["header"], "state": merged})
        for slot in targets:
            self.alerts.close(slot)
        return grafted

    def reconcile_alerts(self, reason: str) -> list[AlertEvent]:
        """Make the alerts table, MQTT and the restored alert state agree; after a restore.

        The database (with any unwritten events) is the record of what was announced:

        - an alert open there but not in this state (an unclean stop lost it, or the state
          came from an older checkpoint) is resolved: stored with ``reason`` and published
          with state "resolved", so subscribers leave the alarm and pruning can delete it;
        - an alert open in this state but not open there (resolved after the checkpoint was
          taken, or never announced: trained or imported state) is closed in the state, with
          nothing published; a level still high opens a new alert after debounce and cooldown.

        Returns the resolve events.
        """
        if self.storage is None:
            return []
        try:
            rows = self.storage.alerts(open_only=True, limit=None)
        except sqlite3.Error as exc:  # the next restart or reload tries again
            log.error("cannot read open alerts to reconcile them (%s): %s", reason, exc)
            return []
        announced = {row["alert_id"]: row for row in rows}
        for event in self.pending.alerts:  # a failed flush: not in the database yet
            if event.state == "open":
                announced[event.alert_id] = event.to_dict()
            else:
                announced.pop(event.alert_id, None)
        held = {alert_id: slot for slot, (alert_id, _) in self.alerts.open_alerts.items()}
        for alert_id, slot in held.items():
            if alert_id not in announced:
                self.alerts.close(slot)
                log.info("alert %s on %s is open in the restored state but not in the "
                         "database: closed", alert_id, self.streams.names[slot])
        now = time.time()
        events = [
            AlertEvent(alert_id, row["stream"], "resolved", row["score"], math.nan, now,
                       row["opened_at"], now, row["severity"], reason)
            for alert_id, row in announced.items() if alert_id not in held
        ]
        for event in events:
            log.info("alert %s on %s resolved (%s): the restored state does not hold it",
                     event.alert_id, event.stream, reason)
        if events:
            self.pending.alerts.extend(events)
            if self.publisher is not None:
                self.publisher.alerts(events)
            self.flush()
        return events

    # -- storage --------------------------------------------------------------------------
    def _stream_rows(self) -> list[dict[str, Any]]:
        s = self.streams.stats
        rows = []
        for slot in sorted(self._dirty):
            last_level = float(s.last_level[slot])
            readings = int(s.readings[slot])
            rows.append({
                "stream": self.streams.names[slot],
                "first_seen": float(s.first_ts[slot]),
                "last_seen": float(s.last_ts[slot]),
                "last_seen_iso": iso_utc(float(s.last_ts[slot])),
                "new_readings": readings - int(s.flushed_readings[slot]),
                "last_value": float(s.last_value[slot]),
                "last_score": last_level if math.isfinite(last_level) else None,
                "warming_up": int(s.last_warming[slot]),
                "open_alert": self.alerts.open_alert_id(slot),
            })
        return rows

    def flush(self) -> bool:
        """Write what is pending in one transaction; False (and kept for later) on failure."""
        self.last_flush = time.monotonic()
        if self.storage is None or not (self.pending or self._dirty):
            return True
        rows = self._stream_rows()
        try:
            self.storage.write(self.pending, rows)
        except sqlite3.Error as exc:
            self.storage_faults += 1
            self._retry_delay = min(max(2 * self._retry_delay, RETRY_FIRST_S), RETRY_MAX_S)
            self._retry_at = time.monotonic() + self._retry_delay
            if self.last_storage_error != str(exc):
                log.error("cannot write %s: %s (scoring and publishing go on; retrying, at "
                          "most %g s apart, with what is pending kept)", self.storage.path,
                          exc, RETRY_MAX_S)
            self.last_storage_error = str(exc)
            self.pending.bound()
            return False
        if self.last_storage_error:
            log.warning("storage writable again after %d failed flushes", self.storage_faults)
        self.last_storage_error = None
        self._retry_delay = 0.0
        stats = self.streams.stats
        dirty = np.fromiter(self._dirty, dtype=np.int64, count=len(self._dirty))
        stats.flushed_readings[dirty] = stats.readings[dirty]
        self._dirty.clear()
        self.pending = PendingWrites()
        return True

    def flush_due(self) -> bool:
        """Whether to flush now: an alert is pending or the flush interval is up.

        After a failed flush, only once its retry backoff has passed: a locked database is not
        tried again on every loop of the worker.
        """
        if self._retry_delay:
            return time.monotonic() >= self._retry_at
        elapsed = time.monotonic() - self.last_flush
        return bool(self.pending.alerts) or elapsed >= self.config.storage.flush_interval_s

    def open_alerts(self) -> int:
        return len(self.alerts.open_alerts)


# -- replay -------------------------------------------------------------------------------
REPLAY_CHUNK = 8192


def parse_timestamp(text: str) -> float:
    """Epoch seconds from a number or an ISO 8601 / ``YYYY-MM-DD HH:MM:SS`` text (UTC if naive)."""
    try:
        return float(text)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


_count_commas = operator.methodcaller("count", ",")


@dataclass
class _Chunk:
    """One chunk of replay input: ``REPLAY_CHUNK`` lines, blank ones skipped.

    Parsed by :func:`edge_ml.kernels.csvio.parse_rows` (``data`` and ``first`` set: the
    output rows are written from the input bytes) or by the Python reader (``stamps`` set).
    """

    ts: np.ndarray
    values: np.ndarray  # [rows, columns]
    stamps: list[str] | None = None
    data: np.ndarray | None = None  # the bytes the rows were parsed from
    first: np.ndarray | None = None  # csvio's per-row offsets and first value

    def stamp_texts(self) -> list[str]:
        if self.stamps is None:
            assert self.data is not None and self.first is not None
            data = self.data
            self.stamps = [data[a:b].tobytes().decode() for a, b in self.first[:, :2].tolist()]
        return self.stamps


# Excel's "CSV UTF-8" (and other Windows tools) start the file with a byte order mark: it is
# taken as part of the header line (its bytes are skipped with it), not as part of a name.
BOM = "\ufeff"


def _utf8_size(path: Path, first_line: int, lines: list[str]) -> int:
    """The UTF-8 byte length of ``lines`` (read with ``errors="surrogateescape"``).

    Bytes that are not UTF-8 came in as lone surrogates: ReplayError naming the first line
    (``first_line`` is the file line of ``lines[0]``) and the byte, instead of a
    ``UnicodeDecodeError``. The whole file is refused rather than the line skipped: such a
    byte means the file is in another encoding (Latin-1, Windows-1252), not one bad reading.
    """
    try:
        return len("".join(lines).encode("utf-8"))
    except UnicodeEncodeError:
        pass
    for i, line in enumerate(lines):
        try:
            line.encode("utf-8")
        except UnicodeEncodeError as exc:
            before = line[:exc.start].encode("utf-8", "surrogateescape")
            byte = line[exc.start].encode("utf-8", "surrogateescape")
            raise ReplayError(f"{path}:{first_line + i}: not UTF-8 text (byte 0x{byte.hex()} "
                              f"at column {len(before) + 1}); save the file as UTF-8") from None
    raise AssertionError("unreachable: the joined lines did not encode")


def _read_header(path: Path) -> tuple[list[str], int]:
    """The value column names and the byte length of the header line (a BOM included)."""
    try:
        with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
            line = handle.readline()
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not line:
        raise ReplayError(f"{path}: empty file (expected a header 'timestamp,value[,...]')")
    size = _utf8_size(path, 1, [line])
    try:
        header = next(csv.reader([line.removeprefix(BOM)]), [])
    except csv.Error as exc:
        raise ReplayError(f"{path}:1: {exc}") from exc
    if len(header) < 2 or header[0].strip().lower() not in ("timestamp", "ts", "time"):
        raise ReplayError(f"{path}: expected a header 'timestamp,value[,...]', got {header}")
    return [c.strip() for c in header[1:]], size


def _text_chunk(path: Path, lines: list[str], width: int, line_no: int) -> _Chunk | None:
    """Python reader of one chunk (``line_no``: the file line before it); None if all blank.

    Chunks without quote characters are split with ``str.split`` (the ``csv`` module costs more
    than the whole model per row); a chunk with quotes goes through ``csv.reader``. Both give
    the same fields.
    """
    first_line = line_no + 1
    text = "".join(lines)

    def line_of(row: int) -> int:  # the file line of a row (blank lines are not rows)
        nonblank = [i for i, line in enumerate(lines) if line.strip("\r\n")]
        return first_line + nonblank[row]

    if '"' in text or "\r" in text.replace("\r\n", "\n"):
        try:
            rows = [row for row in csv.reader(lines) if row]
        except csv.Error as exc:  # a field beyond csv's size limit (an unclosed quote)
            raise ReplayError(f"{path} (lines {first_line}-{line_no + len(lines)}): "
                              f"{exc}") from exc
        bad = next((i for i, row in enumerate(rows) if len(row) != width), None)
    else:
        rows_text = list(filter(None, text.replace("\r\n", "\n").split("\n")))
        rows = None
        bad = None
        if set(map(_count_commas, rows_text)) - {width - 1}:  # C loop; rare: find it
            bad = next(i for i, line in enumerate(rows_text)
                       if line.count(",") != width - 1)
    if bad is not None:
        raise ReplayError(f"{path}:{line_of(bad)}: expected {width} fields")
    if rows is None:
        if not rows_text:  # blank lines only (",".join([]) would give one empty row)
            return None
        flat = ",".join(rows_text).split(",")
        stamps = flat[0::width]
        values_text = [flat[i::width] for i in range(1, width)]
    else:
        stamps = [row[0] for row in rows]
        values_text = [[row[i] for row in rows] for i in range(1, width)]
    if not stamps:
        return None
    ts, values = _convert(path, line_of, stamps, values_text)
    return _Chunk(ts, values, stamps=stamps)


REPLAY_READ_BYTES = 1 << 22


def _read_blocks(path: Path, header: tuple[list[str], int] | None = None,
                 ) -> Iterator[tuple[list[str], _Chunk]]:
    """``(value column names, chunk)`` per chunk of ``REPLAY_CHUNK`` lines.

    The bytes go through :func:`edge_ml.kernels.csvio.parse_rows`; a chunk it refuses is read
    again by :func:`_text_chunk`, which gives the same numbers where both apply (and the
    errors, with their line numbers, everywhere else). ``header``: what :func:`_read_header`
    gave, when the caller has read it already. A file that cannot be read raises ReplayError.
    """
    try:
        yield from _blocks(path, header or _read_header(path))
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _blocks(path: Path, header: tuple[list[str], int]) -> Iterator[tuple[list[str], _Chunk]]:
    columns, offset = header
    width = len(columns) + 1
    ts = np.empty(REPLAY_CHUNK, dtype=np.float64)
    values = np.empty((REPLAY_CHUNK, width - 1), dtype=np.float64)
    first = np.empty((REPLAY_CHUNK, 5), dtype=np.int64)
    line_no = 1
    with path.open("rb") as raw:
        raw.seek(offset)
        buffer = raw.read(REPLAY_READ_BYTES)
        at_eof = not buffer
        base = offset  # file offset of buffer[0]
        pos = 0
        while True:
            data = np.frombuffer(buffer, dtype=np.uint8)
            status, end, lines, rows = parse_rows(data, pos, REPLAY_CHUNK, at_eof, ts, values,
                                                  first)
            if status == NEED_MORE:
                more = raw.read(REPLAY_READ_BYTES)
                at_eof = not more
                buffer = buffer[pos:] + more
                base += pos
                pos = 0
                continue
            if status == REFUSED:
                raw.seek(base + pos)
                # surrogateescape: a byte that is not UTF-8 is reported with its line by
                # _utf8_size, not as a UnicodeDecodeError somewhere in the chunk.
                text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape",
                                        newline="")
                text_lines = list(itertools.islice(text, REPLAY_CHUNK))
                text.detach()
                if not text_lines:
                    return
                size = _utf8_size(path, line_no + 1, text_lines)
                chunk = _text_chunk(path, text_lines, width, line_no)
                line_no += len(text_lines)
                if chunk is not None:
                    yield columns, chunk
                base += pos + size
                raw.seek(base)
                buffer = raw.read(REPLAY_READ_BYTES)
                at_eof = not buffer
                pos = 0
                continue
            if lines == 0:
                return
            line_no += lines
            if rows:
                yield columns, _Chunk(ts[:rows].copy(), values[:rows].copy(), data=data,
                                      first=first[:rows].copy())
            pos = end


def _read_chunks(path: Path) -> Iterator[tuple[list[str], list[str], np.ndarray, np.ndarray]]:
    """``(value column names, timestamp texts, ts, values[rows, columns])`` per chunk."""
    for columns, chunk in _read_blocks(path):
        yield columns, chunk.stamp_texts(), chunk.ts, chunk.values


def _parse_timestamps(stamps: list[str]) -> np.ndarray:
    """:func:`parse_timestamp` over a chunk, vectorised when the texts allow it.

    Epoch numbers convert in one NumPy call; ISO texts of one fixed length (one format) parse as
    ``datetime64[us]``, checked against :func:`parse_timestamp` at the first, middle and last
    row; anything else goes text by text.
    """
    try:
        return np.array(stamps, dtype=np.float64)
    except ValueError:
        pass
    n = len(stamps)
    length = len(stamps[0])
    if set(map(len, stamps)) == {length} and stamps[0] == stamps[0].strip():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy warns on offsets it would convert
                micros = np.array(stamps, dtype="datetime64[us]").astype(np.int64)
        except (ValueError, TypeError, DeprecationWarning, UserWarning):
            micros = None
        if micros is not None:
            ts = micros / 1e6
            if all(ts[i] == parse_timestamp(stamps[i]) for i in {0, n // 2, n - 1}):
                return ts
    return np.array([parse_timestamp(s) for s in stamps], dtype=np.float64)


def _shown(text: str, limit: int = 40) -> str:
    """``repr`` of a field for an error message, cut short."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _convert(path: Path, line_of: Callable[[int], int], stamps: list[str],
             values_text: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps and values ``[rows, columns]`` of a chunk's texts.

    An empty value field (``2024-01-01 00:00:00,``, or blanks only) is a missing reading: NaN,
    so replay skips and counts it as it does ``nan`` (a gap in a series, which the daemon would
    not receive at all), and the good rows and columns around it are scored. Any other text
    that is not a number, and a timestamp that cannot be read, raise ReplayError naming the
    file line (``line_of(row)``).
    """
    try:
        ts = _parse_timestamps(stamps)
    except ValueError as exc:
        for row, stamp in enumerate(stamps):
            try:
                parse_timestamp(stamp)
            except ValueError as bad:
                raise ReplayError(f"{path}:{line_of(row)}: timestamp {_shown(stamp)} is "
                                  f"neither epoch seconds nor ISO 8601 ({str(bad)[:80]})") from None
        raise ReplayError(f"{path} (lines {line_of(0)}-{line_of(len(stamps) - 1)}): "
                          f"{exc}") from exc
    try:
        values = np.array(values_text, dtype=np.float64).T.copy()
    except ValueError:
        values_text = [[text if text.strip() else "nan" for text in column]
                       for column in values_text]
        try:
            values = np.array(values_text, dtype=np.float64).T.copy()
        except ValueError:
            for column, texts in enumerate(values_text, start=2):
                for row, text in enumerate(texts):
                    try:
                        np.array([text], dtype=np.float64)
                    except ValueError:
                        raise ReplayError(f"{path}:{line_of(row)}: field {column}: "
                                          f"{_shown(text)} is not a number") from None
            raise
    return ts, values


_NEEDS_QUOTES = ('"', ",", "\r", "\n")


def _output_rows(stamps: list[str], first: np.ndarray, score: np.ndarray,
                 alert: np.ndarray) -> str | None:
    """Output rows of a chunk exactly as ``csv.writer`` writes them, or None to let it quote.

    csv.writer formats each row field by field (~3 us a row, more than the model); here the
    fields are built column-wise and joined once. Floats are written as ``repr`` (what csv
    does), a non-finite value as an empty field, lines end with ``\r\n``. Only a timestamp
    text can need quoting (the other fields are numbers): then None.
    """
    joined = "".join(stamps)
    if any(c in joined for c in _NEEDS_QUOTES):
        return None
    n = len(stamps)
    if np.isfinite(first).all():
        value_texts = list(map(float.__repr__, first.tolist()))
    else:
        value_texts = [repr(v) if math.isfinite(v) else "" for v in first.tolist()]
    parts = [","] * (8 * n)
    parts[0::8] = stamps
    parts[2::8] = value_texts
    parts[4::8] = map(float.__repr__, np.round(score, 6).tolist())
    parts[6::8] = np.where(alert, "1", "0").tolist()
    parts[7::8] = ["\r\n"] * n
    return "".join(parts)


def _chunk_output(chunk: _Chunk, score: np.ndarray, alert: np.ndarray) -> Any:
    """The output rows of a chunk as bytes (``timestamp,value,anomaly_score,alert``, CR LF).

    Written from the input bytes by :func:`edge_ml.kernels.csvio.format_rows` when the chunk
    was parsed there; otherwise (or for a score outside [0, 1]) as ``csv.writer`` writes them.
    """
    if chunk.first is not None:
        first = chunk.first
        out = np.empty(int((first[:, 1] - first[:, 0]).sum()) + len(first) * ROW_EXTRA,
                       dtype=np.uint8)
        size = format_rows(chunk.data, first, score, alert, out)
        if size >= 0:
            return out[:size]
    stamps = chunk.stamp_texts()
    values = chunk.values[:, 0]
    text = _output_rows(stamps, values, score, alert)
    if text is None:  # a timestamp text that csv.writer would quote
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows(
            zip(stamps, [repr(v) if math.isfinite(v) else "" for v in values.tolist()],
                np.round(score, 6).tolist(), alert.astype(np.int8).tolist(), strict=True)
        )
        text = buffer.getvalue()
    return text.encode("utf-8")


# Replay reads and parses chunks on one background thread and writes them on another, while
# the model runs on the caller's: csvio's kernels release the GIL (the model's do not), so on
# two cores most of the reading and writing is hidden behind the model. Each thread keeps at
# most this many chunks between itself and the model.
REPLAY_QUEUE = 2
_END = object()


def _ahead(items: Iterator[Any]) -> Iterator[Any]:
    """The items of ``items``, produced on a background thread; its exception is raised here."""
    out: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(REPLAY_QUEUE)
    stop = threading.Event()

    def put(item: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # the consumer raises it
            put((_END, exc))
        finally:
            close = getattr(items, "close", None)
            if close:
                close()

    thread = threading.Thread(target=produce, name="edge-ml-replay-read", daemon=True)
    thread.start()
    try:
        while True:
            item, error = out.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _Behind:
    """Calls ``consume(item)`` for each item put, in order, on a background thread."""

    def __init__(self, consume: Any) -> None:
        self.items: queue.Queue[Any] = queue.Queue(REPLAY_QUEUE)
        self.error: BaseException | None = None
        self.consume = consume
        self.thread = threading.Thread(target=self._run, name="edge-ml-replay-write",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.items.get()) is not _END:
            if self.error is None:
                try:
                    self.consume(item)
                except BaseException as exc:  # put() and close() raise it
                    self.error = exc

    def put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self.items.put(item)

    def close(self, raise_error: bool = True) -> None:
        """Wait until every item is consumed (idempotent); raise what consuming raised."""
        if self.thread.is_alive():
            self.items.put(_END)
            self.thread.join()
        if raise_error and self.error is not None:
            raise self.error


@dataclass(frozen=True)
class ReplaySummary:
    rows: int
    readings: int
    alerts: int
    skipped: int
    seconds: float


def _open_output(source: Path, out: Path) -> Any:
    """``out`` opened for writing; ReplayOutputError if it cannot be, or if it is ``source``
    (opening it would empty the input before a line of it is read)."""
    try:
        same = out.exists() and out.samefile(source)
    except OSError:
        same = False
    if same:
        raise ReplayOutputError(f"{out}: is the input file {source}; write the output "
                                "elsewhere")
    try:
        return out.open("wb")
    except OSError as exc:
        raise ReplayOutputError(f"{out}: cannot write: {exc.strerror or exc}") from exc


def replay_csv(pipeline: Pipeline, source: Path, out: Path | None,
               stream_prefix: str | None = None) -> ReplaySummary:
    """Run a CSV through the pipeline; write ``timestamp,value,anomaly_score,alert`` per row.

    Each value column is a stream (``<name>`` for a single column, ``<name>/<column>`` for
    several, where ``<name>`` is the file's stem). A row's score is the highest level of its
    columns and ``alert`` is 1 on the row where an alert opens on any of them. Non-finite
    values and empty value fields are skipped (scored 0, counted; written as an empty value),
    as the daemon would reject them.

    The input is UTF-8; a byte order mark before the header is skipped (the output's header is
    always ``timestamp,value,anomaly_score,alert``, without one). A header that cannot be read
    fails before ``out`` is created. Raises ReplayError (the file and line named), and
    ReplayOutputError for an ``out`` that cannot be opened.
    """
    started = time.perf_counter()
    name = stream_prefix or source.stem
    header = _read_header(source)
    handle = _open_output(source, out) if out else None
    writer = None
    rows = readings = alerts = skipped = 0
    try:
        if handle:
            handle.write(b"timestamp,value,anomaly_score,alert\r\n")  # as csv.writer does
            writer = _Behind(lambda item: handle.write(_chunk_output(*item)))
        for columns, chunk in _ahead(_read_blocks(source, header)):
            ts, values = chunk.ts, chunk.values
            n_rows, n_cols = values.shape
            streams = [name] if n_cols == 1 else [f"{name}/{c}" for c in columns]
            flat_values = values.reshape(-1)
            flat_ts = np.repeat(ts, n_cols)
            ok = np.isfinite(flat_values)
            flat_names = streams * n_rows
            score = np.zeros(n_rows * n_cols)
            opened = np.zeros(n_rows * n_cols, dtype=bool)
            if ok.all():
                output = pipeline.process_readings(flat_names, flat_ts, flat_values)
                score[:] = output.reported_levels(pipeline.config.alerts.threshold)
                opened[:] = output.codes == OPENED
            else:
                keep = np.flatnonzero(ok)
                output = pipeline.process_readings(
                    [flat_names[i] for i in keep.tolist()], flat_ts[keep], flat_values[keep]
                )
                score[keep] = output.reported_levels(pipeline.config.alerts.threshold)
                opened[keep] = output.codes == OPENED
                skipped += int((~ok).sum())
            row_score = score.reshape(n_rows, n_cols).max(axis=1)
            row_alert = opened.reshape(n_rows, n_cols).any(axis=1)
            rows += n_rows
            readings += int(ok.sum())
            alerts += int(row_alert.sum())
            if writer:
                writer.put((chunk, row_score, row_alert))
        if writer:
            writer.close()
        if handle:
            handle.close()  # its last flush may fail too
    except OSError as exc:  # reading errors are ReplayErrors already: writing the output
        if out is None:
            raise
        raise ReplayError(f"{out}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if writer:
            writer.close(raise_error=False)
        if handle:
            with contextlib.suppress(OSError):  # the error on its way says more
                handle.close()
    return ReplaySummary(rows, readings, alerts, skipped, time.perf_counter() - started)


def replay_tree(config: Config, source: Path, out: Path) -> list[tuple[Path, ReplaySummary]]:
    """Replay every ``*.csv`` under ``source`` into the same relative path under ``out``.

    Each file gets a fresh pipeline: files are independent series, not streams of one gateway.
    A folder under ``out`` that cannot be created raises ReplayOutputError.
    """
    files = sorted(p for p in source.rglob("*.csv") if p.is_file())
    if not files:
        raise ReplayError(f"{source}: no .csv files found")
    results = []
    for path in files:
        target = out / path.relative_to(source)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReplayOutputError(f"{target.parent}: cannot create the folder: "
                                    f"{exc.strerror or exc}") from exc
        results.append((path, replay_csv(Pipeline(config), path, target)))
    return results
