"""Fixtures for firmware_bridge end-to-end tests (helpers live in fb_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fb_helpers import BridgeProcess, FakeSerial, Subscriber, wait_for

from edge_ml.localbroker import LocalBroker


@pytest.fixture
def fake_serial(tmp_path: Path) -> Iterator[FakeSerial]:
    """A pty behind the stable path ``<tmp>/ttyFB``."""
    port = FakeSerial(tmp_path / "ttyFB")
    yield port
    port.unplug()


@pytest.fixture
def subscriber(broker: LocalBroker) -> Iterator[Subscriber]:
    """Records ``sensors/#`` and ``firmware-bridge/#``; persistent session (survives restarts)."""
    sub = Subscriber(broker, ["sensors/#", "firmware-bridge/#"], client_id="fb-test-subscriber")
    yield sub
    sub.close()


@pytest.fixture
def bridge(
    fake_serial: FakeSerial, broker: LocalBroker, subscriber: Subscriber, tmp_path: Path
) -> Iterator[BridgeProcess]:
    """A running bridge on ``fake_serial`` that has opened the port and reached the broker."""
    proc = BridgeProcess(fake_serial.link, broker, tmp_path / "bridge.log")
    try:
        wait_for(lambda: (h := subscriber.last_health()) and h["port_state"] == "open"
                 and h["mqtt_connected"], 15, "bridge to open the port")
    except AssertionError:
        proc.terminate()
        raise AssertionError(f"bridge did not come up:\n{proc.log()}") from None
    yield proc
    if proc.proc.poll() is None:
        proc.terminate()
