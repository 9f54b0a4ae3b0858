"""sd_notify under a real notify socket: a real ``python -m edge_ml run`` against mosquitto.

The test plays systemd: it binds an AF_UNIX datagram socket, passes it as ``NOTIFY_SOCKET``
with ``WATCHDOG_USEC``, and reads what the daemon says: READY=1 once connected, WATCHDOG=1
periodically, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_ml.localbroker import LocalBroker
from edge_ml.sdnotify import SystemdNotifier


def _write_config(tmp_path: Path, broker: LocalBroker, extra: str = "") -> Path:
    config = tmp_path / "edge-ml.toml"
    config.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nclient_id = "sdnotify-test"\n'
        f'[storage]\ndb = "{tmp_path / "state.db"}"\n{extra}',
        encoding="utf-8",
    )
    return config


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    # AF_UNIX paths are limited to ~108 bytes: pytest's tmp_path can be longer.
    path = f"/tmp/edge-ml-notify-{os.getpid()}-{time.monotonic_ns()}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    try:
        yield sock, path
    finally:
        sock.close()
        Path(path).unlink(missing_ok=True)


def _receive(sock: socket.socket, until: float) -> list[tuple[float, str]]:
    messages = []
    while time.monotonic() < until:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        messages.append((time.monotonic(), data.decode()))
    return messages


def _wait_for(sock: socket.socket, wanted: str, timeout: float) -> list[tuple[float, str]]:
    """Messages up to and including the first containing the line ``wanted``."""
    seen: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            continue
        seen.append((time.monotonic(), data))
        if wanted in data.splitlines():
            return seen
    raise AssertionError(f"no {wanted} within {timeout}s; got {seen}")


def _retained(broker: LocalBroker, topic: str, timeout: float = 5.0) -> bytes | None:
    got: list[bytes] = []
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *a: c.subscribe(topic, 1)
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.connect(broker.host, broker.port)
    client.loop_start()
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    return got[0] if got else None


def test_notifier_is_a_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    assert not notifier.ready()


def test_notifier_abstract_socket() -> None:
    name = f"edge-ml-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = SystemdNotifier("@" + name)
        assert notifier.ready("3 streams")
        assert sock.recv(100) == b"READY=1\nSTATUS=3 streams"
        notifier.close()


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert SystemdNotifier("").watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # someone else's watchdog
    assert SystemdNotifier("").watchdog_interval_s() is None


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_daemon_speaks_sd_notify(
    tmp_path: Path, broker: LocalBroker, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    config = _write_config(tmp_path, broker)
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_ml", "run", "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(sock, "READY=1", timeout=60)
        # READY came after the broker connection: "online" is already retained.
        assert _retained(broker, "edge-ml/status") == b"online"
        # WATCHDOG_USEC=1 s: pings every 0.5 s.
        messages = _receive(sock, time.monotonic() + 2.6)
        pings = [t for t, m in messages if "WATCHDOG=1" in m.splitlines()]
        assert len(pings) >= 3, messages
        assert max(b - a for a, b in itertools.pairwise(pings)) < 1.0
        proc.send_signal(signal.SIGTERM)
        _wait_for(sock, "STOPPING=1", timeout=30)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        output = proc.stdout.read().decode(errors="replace")
        proc.stdout.close()
    assert "stopped after" in output, output
    assert _retained(broker, "edge-ml/status") == b"offline"
