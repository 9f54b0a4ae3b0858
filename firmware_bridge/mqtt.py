"""The package's only paho-mqtt user: a publishing client that survives broker outages.

:class:`MqttLink` connects in the background (``connect_async`` + ``loop_start``), so starting
never fails because the broker is late. While the broker is away, messages wait in a bounded
deque (oldest dropped and counted) and are handed to paho, oldest first, once it is back. A
retained status topic says ``online`` on every connect and ``offline`` at a clean stop or, as the
last will, when the connection dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from firmware_bridge.errors import MqttError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Where and how to connect.

    Parameters
    ----------
    host, port
        The broker address.
    client_id
        MQTT client id ("" lets the broker pick one).
    username, password_file
        Credentials; the password is the file's content without its trailing newline.
    tls_ca, tls_cert, tls_key
        TLS is on when ``tls_ca`` or ``tls_cert`` is given (cert + key for client certificates).
    keepalive
        Seconds between pings; a dead broker is noticed after about 1.5 times this.
    reconnect_min_delay, reconnect_max_delay
        paho's reconnect backoff, doubling from min to max.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    username: str | None = None
    password_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    keepalive: int = 15
    reconnect_min_delay: float = 0.5
    reconnect_max_delay: float = 8.0


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttLink:
    """Publish to one broker from one thread, buffering while it is away.

    Parameters
    ----------
    settings
        Connection settings.
    status_topic
        Retained ``online``/``offline`` topic (also the last will); None for none.
    buffer_size
        Messages kept while disconnected; beyond it the oldest are dropped and counted.
    max_pending
        Messages handed to paho and not yet completed before further ones wait in the buffer;
        keeps paho's own (unbounded) queue small.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        status_topic: str | None = None,
        buffer_size: int = 10_000,
        max_pending: int = 1000,
    ) -> None:
        self.settings = settings
        self.status_topic = status_topic
        self.max_pending = max_pending
        self._buffer: deque[_Message] = deque(maxlen=buffer_size)
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.dropped = 0
        self.handed = 0
        self.completed = 0
        self.connects = 0
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv311,
        )
        if s.username is not None:
            password = None
            if s.password_file is not None:
                try:
                    password = s.password_file.read_text().rstrip("\r\n")
                except OSError as exc:
                    raise MqttError(f"cannot read password file {s.password_file}: {exc}") from exc
            client.username_pw_set(s.username, password)
        if s.tls_ca or s.tls_cert:
            try:
                client.tls_set(
                    ca_certs=str(s.tls_ca) if s.tls_ca else None,
                    certfile=str(s.tls_cert) if s.tls_cert else None,
                    keyfile=str(s.tls_key) if s.tls_key else None,
                )
            except (OSError, ValueError) as exc:
                raise MqttError(f"TLS setup failed: {exc}") from exc
        if self.status_topic:
            client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        client.reconnect_delay_set(s.reconnect_min_delay, s.reconnect_max_delay)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    # paho network thread ------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning("MQTT connect to %s:%s refused: %s",
                        self.settings.host, self.settings.port, reason_code)
            return
        log.info("MQTT connected to %s:%s", self.settings.host, self.settings.port)
        self.connects += 1
        if self.status_topic:
            client.publish(self.status_topic, b"online", qos=1, retain=True)
        self._connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if self._connected.is_set():
            log.warning("MQTT disconnected: %s", reason_code)
        self._connected.clear()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        with self._lock:
            self.completed += 1

    # owner thread -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the broker has accepted our connection."""
        return self._connected.is_set()

    @property
    def buffered(self) -> int:
        """Messages waiting in our buffer (not yet handed to paho)."""
        return len(self._buffer)

    @property
    def pending(self) -> int:
        """Messages handed to paho and not yet acknowledged (QoS 1) or written (QoS 0)."""
        with self._lock:
            return self.handed - self.completed

    def start(self) -> None:
        """Start connecting in the background; returns at once."""
        self._client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive)
        self._client.loop_start()

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, buffer: bool = True
    ) -> bool:
        """Publish, or buffer while disconnected; False when the message was dropped.

        With ``buffer=False`` (for status snapshots that are stale by the time the broker is
        back) a message is dropped, not buffered, when it cannot go now.
        """
        self.pump()
        message = _Message(topic, payload, qos, retain)
        if not self._buffer and self.connected and self.pending < self.max_pending:
            return self._hand(message)
        if not buffer:
            return False
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(message)
        return True

    def pump(self) -> int:
        """Hand buffered messages to paho while connected; return how many were handed."""
        moved = 0
        while self._buffer and self.connected and self.pending < self.max_pending:
            if not self._hand(self._buffer[0]):
                break
            self._buffer.popleft()
            moved += 1
        return moved

    def _hand(self, message: _Message) -> bool:
        with self._lock:
            self.handed += 1
        info = self._client.publish(message.topic, message.payload, message.qos, message.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and message.qos == 0:
            with self._lock:
                self.handed -= 1  # paho dropped it; QoS 1 ones stay queued inside paho
            return False
        return True

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until the buffer is empty and paho has completed every message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            if not self._buffer and self.pending <= 0:
                return True
            time.sleep(0.02)
        return False

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first successful connect."""
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """Flush what can be flushed within ``timeout``, say ``offline``, and disconnect."""
        if self.connected:
            self.wait_delivered(timeout)
            if self.status_topic:
                info = self._client.publish(self.status_topic, b"offline", qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout=timeout)
                except (RuntimeError, ValueError):
                    log.debug("offline status not confirmed")
        self._connected.clear()  # a clean goodbye, not a lost connection worth a warning
        self._client.disconnect()
        self._client.loop_stop()
