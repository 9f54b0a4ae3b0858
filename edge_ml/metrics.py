"""Prometheus text exposition of the daemon's health on a loopback HTTP port.

Off by default (``[daemon] metrics_port = 0``). When on, ``GET /metrics`` on
``127.0.0.1:<port>`` returns the same numbers as the retained health message, in Prometheus
text format 0.0.4. It binds loopback only: a gateway should not expose it to the LAN; scrape
it through an SSH tunnel or a local Prometheus agent. Standard library only (``http.server`` in
a daemon thread).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# health key -> (metric name, type, help). Booleans become 0/1; None is left out.
METRICS: list[tuple[str, str, str, str]] = [
    ("uptime_s", "edge_ml_uptime_seconds", "gauge", "Seconds since the daemon started."),
    ("connected", "edge_ml_mqtt_connected", "gauge", "1 while connected to the broker."),
    ("readings_total", "edge_ml_readings_total", "counter",
     "Readings scored: from the loaded checkpoint's count at start, never down until exit."),
    ("readings_per_s", "edge_ml_readings_per_second", "gauge",
     "Readings scored per second over the last health interval."),
    ("rejects_total", "edge_ml_rejects_total", "counter",
     "Payloads rejected: from the loaded checkpoint's count at start, never down until exit."),
    ("queue_depth", "edge_ml_queue_depth", "gauge", "Messages waiting for the worker."),
    ("queue_high_water", "edge_ml_queue_high_water", "gauge",
     "Highest queue depth since the daemon started."),
    ("dropped_total", "edge_ml_dropped_total", "counter",
     "Messages dropped because the queue stayed full."),
    ("broker_dropped", "edge_ml_broker_dropped_total", "counter",
     "Messages the broker dropped since the daemon first heard its $SYS counter (all clients)."),
    ("frames_missing", "edge_ml_frames_missing_total", "counter",
     "Firmware frames missing from their devices' sequence numbers."),
    ("streams", "edge_ml_streams", "gauge", "Streams known to the daemon."),
    ("open_alerts", "edge_ml_open_alerts", "gauge", "Alerts currently open."),
    ("storage_faults", "edge_ml_storage_faults_total", "counter",
     "Flushes to SQLite that failed."),
    ("pending_publishes", "edge_ml_pending_publishes", "gauge",
     "QoS 1 messages not yet acknowledged by the broker."),
    ("last_checkpoint_at", "edge_ml_last_checkpoint_timestamp_seconds", "gauge",
     "Unix time of the last checkpoint saved by this process."),
]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(health: dict[str, Any]) -> str:
    """Prometheus text format for a health dict (the ``<prefix>/status/health`` document).

    Examples
    --------
    >>> print(exposition({"version": "1.0", "gateway_id": "gw-1", "streams": 3,
    ...                   "connected": True}), end="")
    # HELP edge_ml_info Build information.
    # TYPE edge_ml_info gauge
    edge_ml_info{version="1.0",gateway_id="gw-1"} 1
    # HELP edge_ml_mqtt_connected 1 while connected to the broker.
    # TYPE edge_ml_mqtt_connected gauge
    edge_ml_mqtt_connected 1
    # HELP edge_ml_streams Streams known to the daemon.
    # TYPE edge_ml_streams gauge
    edge_ml_streams 3
    """
    # The gateway id as a label of the info metric: series of several gateways kept apart
    # in one Prometheus (join on it), without a label on every metric.
    gateway = (f',gateway_id="{_escape(str(health["gateway_id"]))}"'
               if health.get("gateway_id") else "")
    lines = [
        "# HELP edge_ml_info Build information.",
        "# TYPE edge_ml_info gauge",
        f'edge_ml_info{{version="{_escape(str(health.get("version", "")))}"{gateway}}} 1',
    ]
    for key, name, kind, help_text in METRICS:
        value = _number(health.get(key))
        if value is None:
            continue
        text = str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {text}"]
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` on ``127.0.0.1:port``, served from a daemon thread.

    Parameters
    ----------
    port
        TCP port on loopback; 0 picks a free one (see :attr:`port` after :meth:`start`).
    health
        Called per scrape for the current health dict; must be safe to call from another thread.
    """

    def __init__(self, port: int, health: Callable[[], dict[str, Any]]) -> None:
        self.requested_port = port
        self.health = health
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self.requested_port
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        """Bind and serve; raises ``OSError`` when the port is taken."""
        health = self.health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "try /metrics")
                    return
                try:
                    body = exposition(health()).encode()
                except Exception as exc:  # a scrape must never take the daemon down
                    log.warning("metrics scrape failed: %s", exc)
                    self.send_error(500, "health unavailable")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        self._server = ThreadingHTTPServer((LOOPBACK, self.requested_port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="edge-ml-metrics", daemon=True)
        self._thread.start()
        log.info("Prometheus metrics on http://%s:%d/metrics", LOOPBACK, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
