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
