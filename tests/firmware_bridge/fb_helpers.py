"""Helpers for firmware_bridge end-to-end tests: real ptys, a real bridge subprocess, a subscriber.

The bridge opens a symlink (``<tmp>/ttyFB``) that points at a pty slave; "unplugging" closes the
pty and "plugging in" repoints the link at a fresh pty, as udev does with /dev/serial/by-id.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import signal
import subprocess
import sys
import tty
from pathlib import Path
from typing import Any

import daemon_helpers
import paho.mqtt.client as mqtt

from edge_ml.localbroker import LocalBroker

# The daemon tests' poller, polling faster: a pty and a local broker answer in milliseconds.
wait_for = functools.partial(daemon_helpers.wait_for, every=0.02)


class FakeSerial:
    """A pty whose slave is reachable through a stable symlink path."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self.slave: int | None = None
        self.plug()

    def plug(self) -> None:
        """Create a fresh pty and point the link at its slave (atomically)."""
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no line discipline games before the bridge configures it
        tmp = self.link.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        os.replace(tmp, self.link)

    def unplug(self) -> None:
        """Close both ends: the bridge's next read fails as with a pulled USB adapter."""
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None

    def write(self, data: bytes) -> None:
        """Send bytes to the bridge, as the device's TX line would."""
        assert self.master is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]


class Subscriber:
    """A paho client that records every message on the given filters."""

    def __init__(self, broker: LocalBroker, filters: list[str], client_id: str = "") -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.seen: list[tuple[str, bytes, bool]] = []
        self._subscribed = False
        persistent = bool(client_id)
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent,
            protocol=mqtt.MQTTv311,
        )
        self.client.reconnect_delay_set(0.1, 0.5)

        def on_connect(client: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
            if rc.is_failure:
                return
            client.subscribe([(flt, 1) for flt in filters])

        def on_subscribe(client: mqtt.Client, u: Any, mid: int, rcs: Any, p: Any) -> None:
            self._subscribed = True

        def on_message(client: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            self.messages.put((msg.topic, msg.payload, bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect_async(broker.host, broker.port, 30)
        self.client.loop_start()
        wait_for(lambda: self._subscribed, 10, "subscription")

    def drain(self) -> list[tuple[str, bytes, bool]]:
        """Move newly received messages to ``seen`` and return ``seen``."""
        while True:
            try:
                self.seen.append(self.messages.get_nowait())
            except queue.Empty:
                return self.seen

    def on(self, topic_prefix: str) -> list[bytes]:
        """Payloads received so far on topics starting with ``topic_prefix``."""
        return [p for t, p, _ in self.drain() if t.startswith(topic_prefix)]

    def last_health(self) -> dict[str, Any] | None:
        """The newest health JSON received, if any."""
        health = [p for t, p, _ in self.drain() if t.endswith("/health")]
        return json.loads(health[-1]) if health else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class BridgeProcess:
    """``python -m firmware_bridge serial`` as a subprocess against the test broker."""

    def __init__(self, port: Path, broker: LocalBroker, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge", "serial", "--port", str(port),
             "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
             "--health-interval", "0.2", "-v"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


