"""The daemon's persistent MQTT session survives broker restarts: no QoS 1 reading is lost.

Real processes: mosquitto from the ``broker`` fixture (persistence on, stopped with SIGTERM so it
saves), the daemon as ``python -m edge_ml run``. Readings are published while the daemon cannot
receive them (it is stopped, or the broker came back before the daemon reconnected); the broker
must queue them in the daemon's session and the daemon must count every one, exactly.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from daemon_helpers import DaemonProcess, Observer, wait_for, write_config

from edge_ml.localbroker import LocalBroker

CLIENT_ID = "edge-ml-test"


def _readings(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM counters WHERE name = 'readings_total'").fetchone()
    return int(row[0]) if row else 0


def _publish_acked(broker: LocalBroker, prefix: str, count: int) -> None:
    """Publish ``count`` QoS 1 readings with a fresh client; return once the broker has them all."""
    connected = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"session-pub-{prefix}")
    client.on_connect = lambda *_: connected.set()
    client.max_inflight_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connected.wait(10), "publisher could not connect"
        infos = [client.publish(f"sensors/{prefix}/{i % 3}", str(float(i % 11)), qos=1)
                 for i in range(count)]
        for info in infos:
            info.wait_for_publish(10)
        assert all(info.is_published() for info in infos)
    finally:
        client.disconnect()
        client.loop_stop()


def _daemon_connects(broker: LocalBroker) -> int:
    """How often the broker's log shows the daemon connecting (this broker's whole life)."""
    return broker.log_path.read_text(errors="replace").count(f" as {CLIENT_ID} ")


def _config(tmp_path: Path, broker: LocalBroker, protocol: str = "3.1.1",
            reconnect_s: float = 0.2) -> tuple[Path, Path]:
    db = tmp_path / "state" / "edge-ml.db"
    config = write_config(tmp_path / "edge-ml.toml", broker, db)
    text = config.read_text().replace(
        "[mqtt]\n", f'[mqtt]\nprotocol = "{protocol}"\nreconnect_min_s = {reconnect_s}\n'
        f"reconnect_max_s = {max(reconnect_s, 1.0)}\n", 1)
    config.write_text(text)
    return config, db


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_readings_sent_while_daemon_and_broker_were_down_are_all_counted(
    tmp_path: Path, broker: LocalBroker, protocol: str,
) -> None:
    config, db = _config(tmp_path, broker, protocol)
    watch = Observer(broker, ["edge-ml/status"], client_id="session-watch")
    try:
        first = DaemonProcess(config, tmp_path / "daemon-1.log")
        wait_for(lambda: b"online" in watch.on("edge-ml/status"), 30, "daemon subscribed")
        _publish_acked(broker, "before", 50)
        wait_for(lambda: _readings(db) >= 50, 30, "first readings stored")
        assert first.stop() == 0, first.log()  # SIGTERM: a clean DISCONNECT keeps the session

        _publish_acked(broker, "away", 400)  # queued in the daemon's session
        broker.stop()  # SIGTERM: mosquitto writes its persistence file
        assert (broker.workdir / "mosquitto.db").exists(), "the broker saved no sessions"
        broker.start()
        _publish_acked(broker, "after", 150)  # the restored session queues these too

        second = DaemonProcess(config, tmp_path / "daemon-2.log")
        try:
            wait_for(lambda: _readings(db) >= 600, 60, "every queued reading stored")
            time.sleep(1.0)  # nothing more arrives (no duplicates either)
            assert _readings(db) == 600
            assert "session present: True" in second.log()
        finally:
            assert second.stop() == 0, second.log()
    finally:
        watch.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_readings_sent_before_the_daemon_reconnects_to_a_restarted_broker(
    tmp_path: Path, broker: LocalBroker,
) -> None:
    # The daemon retries every 3 s, so a burst right after the restart lands in its session
    # while it is still away.
    config, db = _config(tmp_path, broker, reconnect_s=3.0)
    watch = Observer(broker, ["edge-ml/status"], client_id="session-watch")
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: b"online" in watch.on("edge-ml/status"), 30, "daemon subscribed")
        _publish_acked(broker, "before", 50)
        wait_for(lambda: _readings(db) >= 50, 30, "first readings stored")

        connects = _daemon_connects(broker)
        broker.stop()
        broker.start()
        _publish_acked(broker, "gap", 500)
        assert _daemon_connects(broker) == connects, "the daemon reconnected before the burst"

        wait_for(lambda: _readings(db) >= 550, 60, "the burst stored")
        time.sleep(1.0)
        assert _readings(db) == 550
        assert "session present: True" in daemon.log()
    finally:
        watch.close()
        assert daemon.stop() == 0, daemon.log()



def test_the_local_broker_sends_without_nagle(broker: LocalBroker) -> None:
    """An alert is not held back behind an unacknowledged packet (delayed ACK, up to 40 ms)."""
    assert "set_tcp_nodelay true" in (broker.workdir / "mosquitto.conf").read_text()
