"""The daemon's lifecycle: start, signals, the worker thread, sd_notify, clean stop.

Threads: paho's network thread only enqueues into the :class:`~edge_ml.ingest.Inbox`; one
worker thread owns the :class:`~edge_ml.pipeline.Pipeline` (all per-stream state and the SQLite
connection); the main thread waits for signals and feeds the systemd watchdog while the worker
shows progress. Stop (SIGTERM/SIGINT): the worker drains the inbox and flushes, the broker link
publishes ``offline`` and disconnects, then what arrived in between is processed and flushed too.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edge_ml import __version__
from edge_ml.checkpointer import Checkpointer
from edge_ml.config import Config
from edge_ml.errors import ConfigError, StorageError, StoragePathError
from edge_ml.homeassistant import HomeAssistant, StreamState
from edge_ml.ingest import Inbox
from edge_ml.kernels import release_compiler_pages
from edge_ml.lockfile import DatabaseLock
from edge_ml.metrics import MetricsServer
from edge_ml.mqtt import MqttLink
from edge_ml.pipeline import Pipeline, warm_kernels
from edge_ml.preflight import check_config
from edge_ml.publish import AlertPublisher, status_topic
from edge_ml.sdnotify import SystemdNotifier
from edge_ml.storage import Storage

log = logging.getLogger(__name__)

# How often old alert rows are pruned ([storage] alert_retention_days).
PRUNE_INTERVAL_S = 3600.0
# How long the worker waits for messages before looking at its timers again.
IDLE_WAIT_S = 0.1
# READY is sent once connected, or after this long without a broker (startup must not hang
# on a broker that is down: the daemon keeps trying in the background).
READY_WAIT_S = 10.0
# Home Assistant state messages go out at most this often (only streams whose level, alert or
# warm-up changed), so a thousand streams do not become a thousand messages per batch.
HA_STATE_INTERVAL_S = 5.0
# How long the last writes at stop wait for another process's lock on the database.
STOP_BUSY_TIMEOUT_S = 10.0


class Daemon:
    """``edge-ml run``: one instance per process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_requested = threading.Event()
        self.notifier = SystemdNotifier()
        check_config(config)  # the checks `edge-ml config check` runs: nothing created yet
        # One daemon per database, before anything is written to it (DaemonRunningError names
        # the holder). Held until the process ends.
        self.lock: DatabaseLock | None = None
        try:
            if config.storage.db != ":memory:":
                self.lock = DatabaseLock(config.storage.db).acquire()
            self.storage = Storage(config.storage.db, rejects_kept=config.storage.rejects_kept)
        except StoragePathError as exc:
            if self.lock is not None:
                self.lock.release()
            raise ConfigError(str(exc), key="storage.db", path=config.source) from exc
        self.inbox = Inbox(config.daemon.queue_size)
        ha_on = config.alerts.homeassistant
        self._ha_online = threading.Event()
        self.link = MqttLink(config.mqtt, self.inbox.put,
                             status_topic(config.alerts.topic_prefix), source=config.source,
                             on_messages=self.inbox.put_many)
        self.homeassistant: HomeAssistant | None = None
        if ha_on:
            self.homeassistant = HomeAssistant(
                self.link, config.alerts.topic_prefix, config.alerts.homeassistant_prefix,
                config.daemon.gateway_id, __version__)
            self.link.subscribe_extra(self.homeassistant.ha_status_topic, self._on_ha_status)
            self.link.on_connect(self._ha_online.set)  # re-announce after every reconnect
        self.metrics: MetricsServer | None = None
        self.last_health: dict[str, Any] = {}
        self.publisher = AlertPublisher(self.link, config.alerts.topic_prefix,
                                        config.daemon.gateway_id)
        self.pipeline = Pipeline(config, self.storage, self.publisher)
        # Resume at worker start, save on a timer, on SIGUSR1 and at stop; SIGHUP reloads, and
        # so does a checkpoint an operator chose meanwhile (rollback, train, import) instead of
        # being saved over. Each resume resolves the alerts the restored state no longer holds.
        self.checkpointer = Checkpointer(self.pipeline, config.storage.checkpoint_interval_s,
                                         config.storage.retention)
        self.worker = threading.Thread(target=self._work, name="edge-ml-worker", daemon=True)
        self.worker_progress = time.monotonic()
        self.worker_error: BaseException | None = None
        self.started_at = time.time()
        self._last_health = 0.0
        self._last_prune = 0.0
        self._last_health_readings = 0
        self._health_stored: bool | None = None  # "connected" in the last record stored now
        self._last_ha = 0.0
        self._final_write_failed = False  # the stop's first flush failed: later ones wait less

    # -- worker thread --------------------------------------------------------------------
    def _work(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the main thread reports it and exits non-zero
            self.worker_error = exc
            log.exception("worker thread failed")
            self.stop_requested.set()

    def _loop(self) -> None:
        pipeline, inbox = self.pipeline, self.inbox
        batch_size = self.config.daemon.batch_size
        self.checkpointer.resume()
        # From here on a write that meets another process's lock fails fast and is retried
        # later (Pipeline.flush): the worker scores and publishes alerts meanwhile.
        self.storage.set_busy_timeout(self.config.storage.busy_timeout_s)
        # Everything alive now (imports, compiled kernels, restored state) lives as long as the
        # process: take it out of the collector's view, so a full collection is not a ~70 ms
        # pause in front of an alert. Again after the first batch (kernels load lazily); then
        # LLVM's startup pages go back to the OS (~100 MB of a ~300 MB daemon).
        gc.collect()
        gc.freeze()
        frozen_after_first = False
        linger_s = self.config.daemon.batch_linger_s
        loaded = False  # the previous batch had more than one message
        while not self.stop_requested.is_set():
            self.worker_progress = time.monotonic()
            batch = inbox.drain(batch_size, IDLE_WAIT_S, linger_s if loaded else 0.0)
            loaded = len(batch) > 1
            if batch:
                pipeline.process_messages(batch)
                if not frozen_after_first:
                    frozen_after_first = True
                    gc.freeze()
                    release_compiler_pages()
            pipeline.flush_if_due()
            self.checkpointer.tick()
            if time.monotonic() - self._last_prune >= PRUNE_INTERVAL_S:
                self._prune_alerts()
            if time.monotonic() - self._last_health >= self.config.daemon.health_interval_s:
                self._report_health()
            if self.homeassistant is not None and time.monotonic() - self._last_ha >= min(
                    HA_STATE_INTERVAL_S, self.config.daemon.health_interval_s):
                self._report_homeassistant()
        self._drain()

    def _drain(self) -> None:
        """Process everything still in the inbox, then flush.

        At stop, a lock held by another process is waited for (up to STOP_BUSY_TIMEOUT_S)
        rather than leaving what is pending unwritten.
        """
        # Once a write at stop waited the full STOP_BUSY_TIMEOUT_S in vain, the later ones
        # (the second drain, the checkpoint, the health record) do not wait as long again: a
        # stop must finish within systemd's TimeoutStopSec.
        self.storage.set_busy_timeout(self.config.storage.busy_timeout_s
                                      if self._final_write_failed else STOP_BUSY_TIMEOUT_S)
        while True:
            self.worker_progress = time.monotonic()
            batch = self.inbox.drain(self.config.daemon.batch_size, 0)
            if not batch:
                break
            self.pipeline.process_messages(batch)
        if not self.pipeline.flush():
            self._final_write_failed = True

    def _on_ha_status(self, payload: bytes) -> None:
        """Network thread: Home Assistant (re)started and may have lost the discovery configs."""
        if payload.strip() == b"online":
            self._ha_online.set()

    def _report_homeassistant(self) -> None:
        """Worker thread: discovery for new/removed streams, then the states that changed."""
        self._last_ha = time.monotonic()
        ha, p = self.homeassistant, self.pipeline
        if ha is None or not self.link.state.connected:
            return
        reannounce = self._ha_online.is_set()
        self._ha_online.clear()
        names = list(p.streams.names)
        ha.sync(names, reannounce=reannounce)
        s = p.streams.stats
        ha.publish_states(
            StreamState(name, float(s.last_level[i]), p.alerts.open_alert_id(i) is not None,
                        bool(s.last_warming[i]), float(s.last_value[i]), float(s.last_ts[i]),
                        p.alerts.explanation(i))
            for i, name in enumerate(names)
        )

    def _last_checkpoint_at(self) -> float | None:
        try:
            row = self.storage.last_checkpoint()
        except Exception:  # health must not fail on a busy or broken database
            return None
        return row["created_at"] if row else None

    def health(self) -> dict[str, Any]:
        """The health document (worker thread: it reads the database)."""
        p = self.pipeline
        uptime = time.time() - self.started_at
        since = time.monotonic() - self._last_health if self._last_health else uptime
        recent = p.readings_seen - self._last_health_readings
        return {
            "version": __version__,
            "gateway_id": self.config.daemon.gateway_id,
            "state": "running",  # "stopped" in the record a clean stop leaves
            "pid": os.getpid(),
            "uptime_s": round(uptime, 1),
            "health_interval_s": self.config.daemon.health_interval_s,
            # How often this record is stored (status's liveness bound); MQTT gets every one.
            "stored_interval_s": self.config.storage.stats_interval_s,
            "connected": self.link.state.connected,
            "mqtt_error": self.link.state.last_error,
            "mqtt_subscribe_refused": self.link.state.subscribe_refused,
            "mqtt_connect_failures": self.link.state.connect_failures,
            "mqtt_taken_over": self.link.state.taken_over,
            "mqtt_redeliveries_dropped": self.link.redelivery.dropped,
            # for the life of the process (a reload or rollback does not rewind them)
            "readings_total": p.readings_seen,
            # over the last health interval (the lifetime average hides a stall)
            "readings_per_s": round(recent / since, 1) if since > 0 else 0.0,
            "rejects_total": p.rejects_seen,
            "queue_depth": len(self.inbox),
            "queue_high_water": self.inbox.high_water,
            "dropped_total": self.inbox.dropped,
            # Messages the broker dropped since we first heard from it (its $SYS counter, all
            # clients; None where it offers none), and frames missing from firmware sequences.
            "broker_dropped": self.link.broker_dropped.total,
            "frames_missing": p.frames.missing,
            "streams": len(p.streams),
            "open_alerts": p.open_alert_count(),
            "storage_faults": p.storage_faults,
            "storage_error": p.last_storage_error,
            "pending_publishes": self.link.pending_publishes,
            "last_checkpoint_at": self._last_checkpoint_at(),
            "updated_at": time.time(),
        }

    def _prune_alerts(self) -> None:
        """Apply ``[storage] alert_retention_days`` (the SD card is not infinite)."""
        self._last_prune = time.monotonic()
        days = self.config.storage.alert_retention_days
        if days <= 0:
            return
        try:
            deleted = self.storage.prune_alerts(time.time() - days * 86400.0)
        except StorageError as exc:  # a full disk must not stop the worker
            log.warning("cannot prune old alerts: %s", exc)
            return
        if deleted:
            log.info("deleted %d alert rows older than %g days", deleted, days)

    def _report_health(self) -> None:
        health = self.health()
        self._last_health = time.monotonic()
        self._last_health_readings = self.pipeline.readings_seen
        self.last_health = health  # what the metrics endpoint serves
        self.publisher.health(health)
        if self._health_stored is not None and health["connected"] == self._health_stored:
            # Stored with the next statistics flush ([storage] stats_interval_s), in its
            # transaction: a record every health interval would be ~100 MB a day of writes.
            self.pipeline.health_record = health
            return
        # At once the first (status must see this daemon running, not the last one stopped)
        # and when the broker connection came or went (at most once a health interval).
        try:
            self.storage.set_health(health)
            self._health_stored = health["connected"]
            self.pipeline.health_record = None
        except Exception as exc:  # a full disk must not stop the worker
            log.debug("cannot store health: %s", exc)

    def _report_stopped(self) -> None:
        """Main thread, worker finished: leave a record that says this daemon has stopped."""
        health = self.health() | {"state": "stopped", "connected": False,
                                  "stopped_at": time.time()}
        try:
            self.storage.set_health(health)
        except Exception as exc:  # edge-ml status then goes by the pid and the record's age
            log.warning("cannot record the stop in the health table: %s", exc)

    def _report_unstored(self) -> None:
        """Main thread, at stop: say what the last flush could not store, and keep it aside.

        Alert rows, drift events and rejects still pending go as JSON lines to
        ``<db>.unstored-<time>.jsonl`` next to the database (or, when that cannot be written
        either, to stderr, i.e. the journal), with the streams' reading counts and the
        counters the database missed; the log says how many of each and where.
        """
        pending, streams = self.pipeline.unflushed()
        if not (pending or streams):
            return
        opened = sum(1 for a in pending.alerts if a.state == "open")
        counts = (f"{len(pending.alerts)} alert rows ({opened} opened, "
                  f"{len(pending.alerts) - opened} resolved), {len(pending.drift)} drift events, "
                  f"{len(pending.rejects)} rejects, {pending.readings} readings counted on "
                  f"{len(streams)} streams"
                  + (f", and {pending.dropped} rows dropped earlier while storage failed"
                     if pending.dropped else ""))
        lines = [json.dumps(record, default=str) for record in _unstored_records(pending, streams)]
        target = f"{self.config.storage.db}.unstored-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
        try:
            with open(target, "x", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            log.error("at stop, %s could not be written (%s): not stored: %s; %s either (%s), "
                      "so they follow on stderr as JSON lines", self.config.storage.db,
                      self.pipeline.last_storage_error, counts, target, exc)
            Path(target).unlink(missing_ok=True)
            for line in lines:
                print(f"edge-ml unstored: {line}", file=sys.stderr)
            return
        log.error("at stop, %s could not be written (%s): not stored: %s; kept as JSON lines "
                  "in %s", self.config.storage.db, self.pipeline.last_storage_error, counts,
                  target)

    # -- main thread ----------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self.stop_requested.set()
        self.inbox.wake()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; the exit code (0 clean, 1 failure)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGUSR1, lambda *_: self.checkpointer.request())
        signal.signal(signal.SIGHUP, lambda *_: self.checkpointer.request(reload=True))
        log.info("edge-ml %s starting as gateway %s: broker %s:%s (client id %s), topics %s, "
                 "db %s", __version__, self.config.daemon.gateway_id, self.config.mqtt.host,
                 self.config.mqtt.port, self.config.mqtt.client_id, self.config.mqtt.topics,
                 self.config.storage.db)
        if self.config.daemon.metrics_port:
            try:
                self.metrics = MetricsServer(self.config.daemon.metrics_port,
                                             lambda: self.last_health).start()
            except OSError as exc:
                log.error("cannot serve metrics on 127.0.0.1:%d: %s (running without)",
                          self.config.daemon.metrics_port, exc)
        # Before subscribing: a cold Numba cache compiled in the first batch dropped the backlog.
        log.info("kernels ready in %.1f s", warm_kernels(self.config))
        self.worker.start()
        self.link.start()
        # Wait for the broker, but not past a refusal or a SIGTERM during startup.
        deadline = time.monotonic() + READY_WAIT_S
        while not (self.link.wait_connected(0.1) or self.link.state.refused
                   or self.stop_requested.is_set() or time.monotonic() > deadline):
            pass
        if self.link.state.refused:
            # Keep running and retrying (with backoff): credentials may be fixed on the broker
            # side. The error is logged on every refusal, in the health record and in the
            # unit's status line (systemctl status edge-ml).
            log.error("the broker refused us: %s", self.link.state.last_error)
            self.notifier.ready(f"broker refused the connection: {self.link.state.last_error}")
        elif not self.link.state.connected:
            # Keep trying in the background; each failure is logged (rate-limited) with why.
            self.notifier.ready(f"not connected: {self.link.state.last_error or 'no answer yet'}")
        else:
            self.notifier.ready(f"{len(self.pipeline.streams)} streams")
        watchdog_s = self.notifier.watchdog_interval_s()
        tick = min(watchdog_s or 1.0, 1.0)
        while not self.stop_requested.wait(tick):
            # Feed the watchdog only while the worker shows progress: a stuck worker gets the
            # service restarted; an idle one still loops every IDLE_WAIT_S.
            if watchdog_s and time.monotonic() - self.worker_progress < 2 * watchdog_s:
                self.notifier.watchdog()
        return self.shutdown()

    def shutdown(self) -> int:
        self.notifier.stopping()
        if self.metrics is not None:
            self.metrics.stop()
        self.inbox.wake()
        self.worker.join(timeout=60)
        self.link.stop()
        # Messages that arrived between the worker's last drain and the disconnect.
        if not self.worker.is_alive():
            self._drain()
            self.checkpointer.save_now("shutdown")
            self._report_stopped()
            self._report_unstored()
        self.storage.close()
        if self.lock is not None:
            self.lock.release()
        self.notifier.close()
        log.info("stopped after %d readings, %d rejects", self.pipeline.readings_seen,
                 self.pipeline.rejects_seen)
        return 1 if self.worker_error else 0


def _unstored_records(pending: Any, streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a failed flush at stop leaves, as JSON-ready dicts tagged with their table."""
    records: list[dict[str, Any]] = []
    records += [{"table": "alerts", **a.to_dict()} for a in pending.alerts]
    records += [{"table": "drift_events", "stream": d.stream, "ts": d.ts,
                 "detector": d.detector, "statistic": d.statistic, "reaction": d.reaction}
                for d in pending.drift]
    records += [{"table": "rejects", "topic": r.topic, "reason": r.reason, "detail": r.detail,
                 "payload_prefix": r.payload_prefix.decode("utf-8", "replace"),
                 "received_at": r.received_at} for r in pending.rejects]
    records += [{"table": "streams", **row} for row in streams]
    records.append({"table": "counters", "readings_total": pending.readings,
                    "rejects_total": len(pending.rejects) + sum(pending.rejects_dropped.values()),
                    "alerts_total": len(pending.alerts), "pending_dropped": pending.dropped})
    return records
