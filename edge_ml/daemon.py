"""The daemon's lifecycle: start, signals, the worker thread, sd_notify, clean stop.

Threads: paho's network thread only enqueues into the :class:`~edge_ml.ingest.Inbox`; one
worker thread owns the :class:`~edge_ml.pipeline.Pipeline` (all per-stream state and the SQLite
connection); the main thread waits for signals and feeds the systemd watchdog while the worker
shows progress. Stop (SIGTERM/SIGINT): the worker drains the inbox and flushes, the broker link
publishes ``offline`` and disconnects, then what arrived in between is processed and flushed too.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from typing import Any

from edge_ml import __version__
from edge_ml.checkpointer import Checkpointer
from edge_ml.config import Config
from edge_ml.errors import ConfigError, StorageError, StoragePathError
from edge_ml.homeassistant import HomeAssistant, StreamState
from edge_ml.ingest import Inbox
from edge_ml.kernels import release_compiler_pages
from edge_ml.metrics import MetricsServer
from edge_ml.mqtt import MqttLink
from edge_ml.pipeline import Pipeline
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
        try:
            self.storage = Storage(config.storage.db, rejects_kept=config.storage.rejects_kept)
        except StoragePathError as exc:
            raise ConfigError(str(exc), key="storage.db", path=config.source) from exc
        self.inbox = Inbox(config.daemon.queue_size)
        ha_on = config.alerts.homeassistant
        self._ha_online = threading.Event()
        self.link = MqttLink(config.mqtt, self.inbox.put,
                             status_topic(config.alerts.topic_prefix), source=config.source)
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
        self._last_ha = 0.0

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
            if pipeline.flush_due():
                pipeline.flush()
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
        self.storage.set_busy_timeout(STOP_BUSY_TIMEOUT_S)
        while True:
            self.worker_progress = time.monotonic()
            batch = self.inbox.drain(self.config.daemon.batch_size, 0)
            if not batch:
                break
            self.pipeline.process_messages(batch)
        self.pipeline.flush()

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
        recent = p.readings_total - self._last_health_readings
        return {
            "version": __version__,
            "gateway_id": self.config.daemon.gateway_id,
            "state": "running",  # "stopped" in the record a clean stop leaves
            "pid": os.getpid(),
            "uptime_s": round(uptime, 1),
            "health_interval_s": self.config.daemon.health_interval_s,
            "connected": self.link.state.connected,
            "mqtt_error": self.link.state.last_error,
            "mqtt_subscribe_refused": self.link.state.subscribe_refused,
            "mqtt_connect_failures": self.link.state.connect_failures,
            "mqtt_redeliveries_dropped": self.link.redelivery.dropped,
            "readings_total": p.readings_total,
            # over the last health interval (the lifetime average hides a stall)
            "readings_per_s": round(recent / since, 1) if since > 0 else 0.0,
            "rejects_total": p.rejects_total,
            "queue_depth": len(self.inbox),
            "queue_high_water": self.inbox.high_water,
            "dropped_total": self.inbox.dropped,
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
        self._last_health_readings = self.pipeline.readings_total
        self.last_health = health  # what the metrics endpoint serves
        self.publisher.health(health)
        try:
            self.storage.set_health(health)
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
        self.storage.close()
        self.notifier.close()
        log.info("stopped after %d readings, %d rejects", self.pipeline.readings_total,
                 self.pipeline.rejects_total)
        return 1 if self.worker_error else 0
