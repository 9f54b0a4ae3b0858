"""The serial bridge: frames from one serial port to MQTT, surviving unplugs and broker outages.

Topics (``prefix`` is ``--topic-prefix``, default ``sensors``; ``health`` is ``--health-prefix``,
default ``firmware-bridge``; ``<port>`` is the port's file name, e.g. ``ttyUSB0``):

- ``<prefix>/<dev>``: each good frame, re-encoded as v1 msgpack, QoS 1, not retained.
- ``<health>/<port>/status``: retained ``online`` / ``offline`` (``offline`` is also the will).
- ``<health>/<port>/health``: retained JSON every ``health_interval`` seconds: port state,
  reopen count, MQTT state, buffer and drop counts, and the reader counters (total and per
  device). It lives outside ``<prefix>/`` so that a daemon subscribed to ``sensors/#`` does not
  take bridge health for sensor data.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass

from firmware_bridge.errors import PortError
from firmware_bridge.mqtt import MqttLink, MqttSettings
from firmware_bridge.port import SerialPort
from firmware_bridge.serial_framing import FrameReader

log = logging.getLogger(__name__)


def port_name(path: str) -> str:
    """A topic-safe name for a port path: ``/dev/ttyUSB0`` -> ``ttyUSB0``."""
    name = os.path.basename(path.rstrip("/")) or "port"
    return re.sub(r"[^A-Za-z0-9_.:\-]", "_", name)


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """What the serial bridge does besides connecting to MQTT."""

    port: str
    baud: int = 115200
    topic_prefix: str = "sensors"
    health_prefix: str = "firmware-bridge"
    health_interval: float = 5.0
    buffer_size: int = 10_000
    reopen_min_delay: float = 0.2
    reopen_max_delay: float = 5.0
    qos: int = 1


class SerialBridge:
    """Read frames from a serial port and publish them; see the module docstring for topics.

    ``run`` blocks until :meth:`stop` is called (from a signal handler or another thread).
    """

    def __init__(self, settings: BridgeSettings, mqtt_settings: MqttSettings) -> None:
        self.settings = settings
        self.name = port_name(settings.port)
        base = f"{settings.health_prefix}/{self.name}"
        self.health_topic = f"{base}/health"
        self.link = MqttLink(mqtt_settings, status_topic=f"{base}/status",
                             buffer_size=settings.buffer_size)
        self.port = SerialPort(settings.port, settings.baud)
        self.reader = FrameReader()
        self.port_state = "closed"
        self.opens = 0
        self.port_errors = 0
        self.published = 0
        self._stop = threading.Event()
        self._started = time.time()

    def stop(self) -> None:
        """Ask ``run`` to finish (safe from signal handlers and other threads)."""
        self._stop.set()

    def health(self) -> dict[str, object]:
        """A JSON-ready snapshot of the bridge's state and counters."""
        return {
            "ts": time.time(),
            "uptime_s": round(time.time() - self._started, 3),
            "port": self.settings.port,
            "port_state": self.port_state,
            "opens": self.opens,
            "port_errors": self.port_errors,
            "mqtt_connected": self.link.connected,
            "published": self.published,
            "buffered": self.link.buffered,
            "dropped": self.link.dropped,
            "reader": self.reader.stats.to_dict(),
        }

    def run(self) -> None:
        """Bridge until stopped; returns after a clean MQTT goodbye."""
        self.link.start()
        delay = self.settings.reopen_min_delay
        next_health = time.monotonic()
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_health:
                    self._publish_health()
                    next_health = time.monotonic() + self.settings.health_interval
                if not self.port.is_open:
                    if self._open():
                        delay = self.settings.reopen_min_delay
                    else:
                        self._stop.wait(delay)
                        delay = min(delay * 2, self.settings.reopen_max_delay)
                    continue
                try:
                    data = self.port.read()
                except PortError as exc:
                    log.warning("%s; reopening", exc)
                    self.port_errors += 1
                    self._close("lost")
                    continue
                if data:
                    self._forward(data)
                self.link.pump()
        finally:
            self._close("closed")
            self._publish_health()
            self.link.stop()

    def _open(self) -> bool:
        try:
            self.port.open()
        except PortError as exc:
            if self.port_state != "waiting":
                log.warning("%s; retrying", exc)
            self.port_state = "waiting"
            return False
        self.opens += 1
        self.port_state = "open"
        self._publish_health()
        return True

    def _close(self, state: str) -> None:
        self.port.close()
        self.reader.reset()
        self.port_state = state

    def _forward(self, data: bytes) -> None:
        prefix = self.settings.topic_prefix
        for frame in self.reader.feed(data):
            # Re-encoding gives canonical bytes; the frame was validated, so this cannot fail.
            self.link.publish(f"{prefix}/{frame.dev}", frame.encode(), qos=self.settings.qos)
            self.published += 1

    def _publish_health(self) -> None:
        payload = json.dumps(self.health(), separators=(",", ":")).encode()
        self.link.publish(self.health_topic, payload, qos=0, retain=True, buffer=False)
