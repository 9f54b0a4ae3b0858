from __future__ import annotations

import socket

from edge_ml.localbroker import LocalBroker


def test_broker_restarts_on_the_same_port(broker: LocalBroker) -> None:
    port = broker.port
    broker.stop()
    assert not broker.running
    broker.start()
    assert broker.port == port
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_the_local_broker_sends_without_nagle(broker: LocalBroker) -> None:
    """An alert is not held back behind an unacknowledged packet (delayed ACK, up to 40 ms)."""
    assert "set_tcp_nodelay true" in (broker.workdir / "mosquitto.conf").read_text()
