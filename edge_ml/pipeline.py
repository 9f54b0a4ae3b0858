"""Where the stages meet: messages -> readings -> features -> model -> alerts -> storage/publish.

:class:`Pipeline` owns every piece of per-stream state and is driven by one thread at a time
(the daemon's worker, or ``replay`` offline). Readings move through it as arrays, one
micro-batch at a time; only rejects and alert events are Python objects. Taking that state out
and putting it back (checkpoints, ``train``) is :mod:`edge_ml.state`, one layer above.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_ml.alerts import AlertTracker
from edge_ml.config import Config
from edge_ml.decode import STREAM_LIMIT, FrameGaps, decode_batch
from edge_ml.devices import Devices, JointOutput
from edge_ml.drift import DriftMonitor, DriftParams
from edge_ml.errors import StorageError
from edge_ml.features import FeatureState
from edge_ml.kernels import prepare as prepare_kernels
from edge_ml.model.detector import (
    KEPT_THROUGH_DRIFT,
    Detection,
    Detector,
    ModelParams,
    heavy_tailed,
    make_detector,
)
from edge_ml.publish import AlertPublisher
from edge_ml.records import AlertEvent, DriftEvent, Message, Reject, iso_utc
from edge_ml.scales import ValueScales
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
# Rejects are evidence of bad input, not alarms: the first is written within
# ``[storage] flush_interval_s`` (someone debugging a publisher looks for it), but while bad
# input keeps coming they do not make a write of their own more often than this (SD cards wear;
# their rows are bounded and their counts exact either way).
REJECT_FLUSH_MIN_S = 60.0


def model_params(config: Config, n_features: int) -> ModelParams:
    m = config.model
    return ModelParams(m.backend, m.n_trees, m.height, m.window_size, m.seed, m.warmup,
                       m.paper_score, n_features, m.heavy_tail_floor)


def drift_params(config: Config) -> DriftParams:
    m = config.model
    return DriftParams(m.drift_block, m.drift_threshold, m.drift_delta, m.drift_min_blocks,
                       m.drift_reaction)


# Readings the warm-up batch gives its scratch stream: past the default warm-up, so the alert,
# drift and explanation paths run too, and every kernel a live batch can reach is compiled.
WARM_READINGS = 400


def warm_kernels(config: Config) -> float:
    """Compile, or load from Numba's cache, every kernel a live batch runs; seconds it took.

    The daemon calls it before it subscribes. Otherwise the first batch does it while the broker
    delivers a persistent session's backlog: with a cold cache (the first start, or any start
    after an upgrade changed a kernel) that is ~10 s on a desktop core and more on a Pi, while
    the inbox fills and drops what the broker had kept (counted, but lost). A scratch pipeline
    without storage runs a stream of bare numbers and a two-field device; nothing is written.
    """
    start = time.perf_counter()
    scratch = Pipeline(config, None)
    t0 = 1_700_000_000.0
    messages: list[Message] = [("edge-ml/warm/value", b"%d" % (i % 7), t0 + i)
                               for i in range(WARM_READINGS)]
    messages += [("edge-ml/warm/device", b'{"a": %d, "b": %d}' % (i % 5, i % 3), t0 + i)
                 for i in range(WARM_READINGS)]
    messages.append(("edge-ml/warm/value", b"1e9", t0 + WARM_READINGS))  # an alert opens
    scratch.process_messages(messages)
    return time.perf_counter() - start


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
    view: np.ndarray | None = None  # int8 view code of each level (edge_ml.kernels.explain)
    # Devices' joint view, per reading: the device scored on it (-1 none), its level (held
    # under the threshold in a cooldown, as reported_levels) and alert codes; and why.
    joint: JointOutput | None = None
    joint_levels: np.ndarray | None = None
    joint_codes: np.ndarray | None = None

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
        self.streams.keep_recent = storage is not None  # the sparkline goes to stream rows
        self.scales = ValueScales(capacity)
        self.features = FeatureState(config.features.season_s, config.features.season_bins,
                                     capacity)
        self.params = model_params(config, self.features.n_features)
        self.detector: Detector = make_detector(self.params, capacity)
        self.alerts = AlertTracker(config.alerts, capacity)
        self.devices = Devices(config.devices.patterns, config.devices.stale_s)
        self.drift = DriftMonitor(drift_params(config), capacity)
        self.pending = PendingWrites()
        # What the state has learned from (restored with it from a checkpoint)...
        self.readings_total = 0
        self.rejects_total = 0
        # ...and what this process has processed (health, /metrics): never goes backwards,
        # not even when a reload or rollback brings back an older state.
        self.readings_seen = 0
        self.rejects_seen = 0
        self.drifts_seen = 0  # drift events (replay reports them per file)
        self.frames = FrameGaps()  # firmware frames missing from their devices' seq
        self._gaps_logged_at = 0.0
        self.storage_faults = 0
        self.last_storage_error: str | None = None
        self.last_flush = time.monotonic()
        # Stream statistics, reading counters and the health record are written every
        # ``[storage] stats_interval_s`` (and before a checkpoint, and at stop); alerts and
        # drift events within ``flush_interval_s``. See flush_if_due.
        self.last_stats_flush = time.monotonic()
        self._last_reject_flush = -math.inf
        # The newest health record (the daemon's), stored with the next statistics flush.
        self.health_record: dict[str, Any] | None = None
        self._retry_delay = 0.0  # backoff after failed flushes (0: the last one succeeded)
        self._retry_at = 0.0
        self._limit_logged_at = 0.0  # wall clock of the last "stream limit" log line
        self._limit_refused = 0  # readings refused since that line

    # -- processing -----------------------------------------------------------------------
    def _grow(self) -> None:
        capacity = self.streams.capacity
        if self.features.arrays.capacity < capacity:
            self.features.arrays.grow(capacity)
            self.scales.arrays.grow(capacity)
            self.detector.grow(capacity)
            self.alerts.grow(capacity)
            self.drift.grow(capacity)

    def process_messages(self, messages: list[Message]) -> BatchOutput | None:
        """Decode and process one micro-batch of MQTT messages.

        Readings for new streams beyond ``[daemon] max_streams`` are rejected (reason
        ``stream_limit``), one reject per reading; the streams already held go on as before.
        """
        decoded = decode_batch(messages, self.config.mqtt.max_payload_bytes)
        if decoded.frames and self.frames.record(decoded.frames):
            self._log_frame_gaps()
        names, ts, values = decoded.streams, decoded.ts_array(), decoded.value_array()
        rejects = decoded.rejects
        refused = self.streams.beyond(names, self.config.daemon.max_streams)
        if refused:
            names, ts, values, rejects = self._refuse_streams(refused, names, ts, values,
                                                              rejects)
        if rejects:
            self.rejects_total += len(rejects)
            self.rejects_seen += len(rejects)
            self.pending.rejects.extend(rejects)
            for reject in rejects[:3]:
                log.debug("rejected %s on %s: %s", reject.reason, reject.topic, reject.detail)
        if not names:
            return None
        return self.process_readings(names, ts, values, decoded.devices)

    def _log_frame_gaps(self) -> None:
        now = time.time()
        if now - self._gaps_logged_at < STREAM_LIMIT_LOG_INTERVAL_S:
            return
        self._gaps_logged_at = now
        worst = sorted(self.frames.by_device.items(), key=lambda item: -item[1])[:3]
        log.warning("%d firmware frames missing so far (gaps in their seq; most from %s): lost "
                    "between the devices and us", self.frames.missing,
                    ", ".join(f"{dev} {n}" for dev, n in worst))

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

    def process_readings(self, names: list[str], ts: np.ndarray, values: np.ndarray,
                         devices: dict[str, str] | None = None) -> BatchOutput:
        """Score, learn and alert over readings already decoded (used by replay directly).

        ``devices`` maps streams that arrived together to their device (``edge_ml.devices``).
        """
        slots = self.streams.resolve(names)
        created = self.devices.assign(
            names, slots, devices or {}, self.streams.names,
            room=self.config.daemon.max_streams - len(self.streams))
        if created:  # each new device alerts on a stream of its own, "<device>/joint"
            self.devices.bind_joint(created, self.streams.resolve(created))
        self._grow()
        scaled, switched = self.scales.apply(slots, values)
        detection, drifts = self._detect_and_drift(slots, scaled, ts, switched)
        self.scales.unscale_range(slots, detection.expected)
        codes, cooling, events = self.alerts.evaluate(
            slots, detection.levels, values, ts, detection.warming, self.streams.names,
            detection.view, detection.expected,
        )
        self.streams.record(slots, ts, values, detection.levels, detection.warming)
        joint, joint_levels, joint_codes = self._joint(slots, values, ts, events)
        self._report_drifts(drifts)
        n = len(slots)
        self.readings_total += n
        self.readings_seen += n
        if self.storage is not None:
            self.pending.readings += n
            self.pending.alerts.extend(events)
        if self.publisher is not None and events:
            self.publisher.alerts(events)
        for event in events:
            log.debug("alert %s %s on %s (score %.4f, value %s)", event.alert_id, event.state,
                     event.stream, event.score, event.value)
        return BatchOutput(slots, detection.levels, detection.raw, detection.warming, codes,
                           cooling, events, detection.view, joint, joint_levels, joint_codes)

    def _restart_on_new_scale(self, slot: int) -> None:
        """Forget what ``slot`` learned in raw units, keeping its age: the decision comes
        within its warm-up, so the warm-up ends when it would have (restarting it cost NAB's
        one stream that turns logarithmic a labelled window, docs/benchmarks.md round 10). A
        second look (``kernels.scale.SECOND_LOOK_READINGS``) may come after the warm-up of a
        slow stream: it is scored on from the restart, its profile learned anew."""
        self.detector.reset(slot, keep=("first_ts", "age_readings"))
        self.features.arrays.reset(slot, keep=("seen",))
        self.drift.reset(slot)
        if self.scales.logarithmic(slot):
            log.info("%s: positive, right-skewed readings: scored as their logarithms from now "
                     "on", self.streams.names[slot])
        else:
            log.info("%s: right-skewed counts: scored as their roots from now on",
                     self.streams.names[slot])

    def _joint(self, slots: np.ndarray, values: np.ndarray, ts: np.ndarray,
               events: list[AlertEvent]) -> tuple[JointOutput | None, np.ndarray | None,
                                                  np.ndarray | None]:
        """Devices' joint view over the batch; its alerts (view "joint") added to ``events``."""
        if not len(self.devices):
            return None, None, None
        joint = self.devices.process(slots, values, ts)
        at = np.flatnonzero(joint.device >= 0)
        levels = np.zeros(len(slots))
        codes = np.zeros(len(slots), dtype=np.int8)
        if not at.size:
            return joint, levels, codes
        devices = joint.device[at]
        jslots = np.asarray(self.devices.joint_slot, dtype=np.int64)[devices]
        worst = joint.worst[at]
        shown = self.devices.state.last[devices, worst]  # the worst field's value
        warming = joint.warming[at]
        found, cooling, new = self.alerts.evaluate(
            jslots, joint.level[at], shown, ts[at], warming, self.streams.names,
            explainer=lambda i, _slot: self.devices.explanation(
                int(devices[i]), joint.resid[at[i]], int(worst[i]), joint.expected[at[i]]))
        self.streams.record(jslots, ts[at], shown, joint.level[at], warming)
        events.extend(new)
        threshold = self.config.alerts.threshold
        levels[at] = np.where(cooling == 1, np.minimum(joint.level[at], threshold * 0.999),
                              joint.level[at])
        codes[at] = found
        return joint, levels, codes

    def _detect_and_drift(self, slots: np.ndarray, scaled: np.ndarray, ts: np.ndarray,
                          switched: np.ndarray) -> tuple[Detection, list[DriftEvent]]:
        """The model stage, then the drift monitor on its residuals (edge_ml.drift), each
        restart exactly where it belongs.

        The batch goes in pieces. A piece ends after each reading that could complete a
        stream's block (``DriftMonitor.piece_end``): a drift is only ever found at a piece's
        last reading, and the reset applies before the next piece. A piece also ends before
        each reading at which a stream turned log or root (``switched``, edge_ml.scales): that
        stream restarts its learning there, since what it learned was in raw units. So every
        reading sees the state it would see in any batching. Most of the daemon's micro-batches
        are one piece or a few; a replay chunk of one stream is cut every ``drift_block``
        readings. The drift events found, in order, come with the detection.
        """
        parts: list[Detection] = []
        events: list[DriftEvent] = []
        turns = switched.tolist()  # ascending
        start = 0
        while True:  # one piece at least: an empty batch gives an empty detection
            if turns and turns[0] == start:
                self._restart_on_new_scale(int(slots[turns.pop(0)]))
            end = self.drift.piece_end(slots, start)
            if turns and turns[0] < end:
                end = turns[0]
            piece = slice(start, end)
            part = self.detector.process(self.features, slots[piece], scaled[piece], ts[piece])
            for slot, event in self.drift.update(slots[piece], part.residual, part.warming,
                                                 ts[piece], self.streams.names):
                events.append(event)
                if event.reaction == "reset":
                    self.detector.reset(slot, keep=KEPT_THROUGH_DRIFT)
                    self.features.arrays.reset(slot)
            parts.append(part)
            start = end
            if start >= len(slots):
                break
        if len(parts) == 1:
            return parts[0], events
        return Detection(*(np.concatenate([getattr(part, field.name) for part in parts])
                           for field in dataclasses.fields(Detection))), events

    def _report_drifts(self, events: list[DriftEvent]) -> None:
        """Log, store and publish the drift events of a batch."""
        if not events:
            return
        for event in events:
            log.warning("drift on %s at %s: %s (reaction: %s)", event.stream, iso_utc(event.ts),
                        event.statistic, event.reaction)
        self.drifts_seen += len(events)
        if self.storage is not None:
            self.pending.drift.extend(events)
        if self.publisher is not None:
            self.publisher.drift(events)

    # -- storage --------------------------------------------------------------------------
    def _dirty_slots(self) -> np.ndarray:
        """Slots with readings not yet added to the ``streams`` table, in slot order."""
        s, used = self.streams.stats, len(self.streams)
        return np.flatnonzero(s.readings[:used] != s.flushed_readings[:used])

    def _stream_rows(self, dirty: np.ndarray, readings: bool = True) -> list[dict[str, Any]]:
        """Rows for the ``streams`` table; ``readings=False`` adds no readings to the counts."""
        # Column by column: element-wise NumPy reads cost ~25 us a stream, 255 ms a flush at
        # 10,000 streams on the worker.
        s, names = self.streams.stats, self.streams.names
        last_ts = s.last_ts[dirty].tolist()
        recent = self.streams.recent_rows(dirty)
        scales = self.scales.names(dirty)
        new_readings = ((s.readings[dirty] - s.flushed_readings[dirty]).tolist() if readings
                        else [0] * dirty.size)
        return [
            {
                "stream": names[slot],
                "first_seen": first,
                "last_seen": last,
                "last_seen_iso": iso_utc(last),
                "new_readings": new,
                "last_value": value,
                "last_score": level if math.isfinite(level) else None,
                "warming_up": warming,
                "open_alert": self.alerts.open_alert_id(slot),
                "recent_levels": ring,
                "scale": scale,
            }
            for slot, first, last, new, value, level, warming, ring, scale in zip(
                dirty.tolist(), s.first_ts[dirty].tolist(), last_ts, new_readings,
                s.last_value[dirty].tolist(), s.last_level[dirty].tolist(),
                s.last_warming[dirty].tolist(), recent, scales, strict=True)
        ]

    def _alerting_slots(self) -> np.ndarray:
        """Slots of the streams with a pending alert event (held by this pipeline)."""
        slot_of = self.streams.slot_of
        found = {slot_of[e.stream] for e in self.pending.alerts if e.stream in slot_of}
        return np.array(sorted(found), dtype=np.int64)

    def flush(self, stats: bool = True) -> bool:
        """Write what is pending in one transaction; False (and kept for later) on failure.

        ``stats=True`` (a statistics flush: timer, checkpoint, stop) writes everything: the
        events, the rows of every stream with new readings, the reading counter and the
        health record. ``stats=False`` writes only the events (alerts, drift, rejects and
        their counts; ``alerts_total`` catches up with the alert rows in the next transaction
        that writes counters, see ``Storage.counters``) and, for a stream whose alert opened
        or resolved, its row without adding
        readings, so ``open_alert`` in ``streams`` follows the alerts table at once while the
        reading counts in ``streams`` and ``counters`` stay consistent with each other.
        """
        now = time.monotonic()
        self.last_flush = now
        if self.storage is None:
            if stats:
                self.last_stats_flush = now
            return True
        if stats:
            dirty = self._dirty_slots()
            events, health = self.pending, self.health_record
            if health is not None:
                # The record was taken at the last health report (up to a health interval ago);
                # its counts go in as of this flush, so they agree with the counters beside them.
                health = health | {"readings_total": self.readings_seen,
                                   "rejects_total": self.rejects_seen}
        else:
            dirty = self._alerting_slots()
            events, health = dataclasses.replace(self.pending, readings=0), None
        if not (events or dirty.size or health):
            if stats:
                self.last_stats_flush = now
            return True
        rows = self._stream_rows(dirty, readings=stats)
        try:
            self.storage.write(events, rows, health)
        except StorageError as exc:
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
        if self.pending.rejects or self.pending.rejects_dropped:
            self._last_reject_flush = now
        if stats:
            self.last_stats_flush = now
            self.health_record = None
            stats_arrays = self.streams.stats
            stats_arrays.flushed_readings[dirty] = stats_arrays.readings[dirty]
            self.pending = PendingWrites()
        else:
            self.pending = PendingWrites(readings=self.pending.readings)
        return True

    def unflushed(self) -> tuple[PendingWrites, list[dict[str, Any]]]:
        """What a flush would write now: the pending rows and the streams' new counts."""
        return self.pending, self._stream_rows(self._dirty_slots())

    def _stats_due(self) -> bool:
        return time.monotonic() - self.last_stats_flush >= self.config.storage.stats_interval_s

    def _events_due(self) -> bool:
        p = self.pending
        if p.alerts:
            return True
        elapsed = time.monotonic() - self.last_flush
        if elapsed < self.config.storage.flush_interval_s:
            return False
        rejects = bool(p.rejects or p.rejects_dropped) and (
            time.monotonic() - self._last_reject_flush >= REJECT_FLUSH_MIN_S)
        return bool(p.drift) or rejects or bool(p.dropped)

    def flush_due(self) -> bool:
        """Whether to flush now: an alert is pending, drift events (or a first reject) have
        waited ``flush_interval_s``, or the statistics are due (``stats_interval_s``).

        After a failed flush, only once its retry backoff has passed: a locked database is not
        tried again on every loop of the worker.
        """
        if self._retry_delay:
            return time.monotonic() >= self._retry_at
        return self._events_due() or self._stats_due()

    def flush_if_due(self) -> bool:
        """The worker's flush: the events when due, everything when the statistics are due.

        A retry after a failure writes everything that is pending.
        """
        if not self.flush_due():
            return True
        return self.flush(stats=bool(self._retry_delay) or self._stats_due())

    def heavy_tailed_count(self) -> int:
        """How many streams' shoulders read a heavy tail (``model.detector.heavy_tailed``):
        the ones a ``[model] heavy_tail_floor`` under 1 would score differently."""
        return int(heavy_tailed(self.detector.state, len(self.streams)).sum())

    def open_alert_count(self) -> int:
        """Alerts open now, over every stream."""
        return len(self.alerts.open_alerts)
