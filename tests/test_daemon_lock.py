"""One daemon per database, and a client id shared by two daemons reported as a takeover.

Real processes: mosquitto from the ``broker`` fixture and ``python -m edge_ml run``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from daemon_helpers import DaemonProcess, status, stored_health, wait_for, write_config

from edge_ml.errors import DaemonRunningError
from edge_ml.localbroker import LocalBroker
from edge_ml.lockfile import DatabaseLock


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_second_daemon_on_the_same_database_exits_2_naming_the_first(
    tmp_path: Path, daemon_env: tuple[Path, Path],
) -> None:
    config, db = daemon_env
    first = DaemonProcess(config, tmp_path / "first.log")
    try:
        wait_for(lambda: stored_health(db).get("connected") is True, 60, "first daemon connected")
        second = DaemonProcess(config, tmp_path / "second.log")
        try:
            code = second.proc.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        second.stop()
        assert code == 2, second.log()
        assert f"process {first.proc.pid}" in second.log(), second.log()
        assert first.proc.poll() is None
        # The first one's records are untouched by the refused one: still running.
        wait_for(lambda: stored_health(db).get("updated_at", 0) > 0, 10, "health")
        assert status(db)["daemon"]["running"] is True
    finally:
        first.stop(signal.SIGKILL)
    # The lock died with the process (kill -9 leaves no stale lock behind).
    third = DaemonProcess(config, tmp_path / "third.log")
    try:
        wait_for(lambda: "starting" in third.log(), 60, "third daemon started")
        wait_for(lambda: stored_health(db).get("pid") == third.proc.pid, 60,
                 "third daemon's health")
    finally:
        assert third.stop() == 0, third.log()


def test_the_lock_names_its_holder_and_is_not_inherited(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    lock = DatabaseLock(db).acquire()
    try:
        with pytest.raises(DaemonRunningError) as refused:
            DatabaseLock(db).acquire()
        assert refused.value.pid is not None
        assert Path(f"{db}.lock").read_text().strip() == str(refused.value.pid)
        assert lock._fd is not None

        assert not os.get_inheritable(lock._fd)
    finally:
        lock.release()
    DatabaseLock(db).acquire().release()  # free again once released


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_client_id_taken_over_is_reported_as_such(
    tmp_path: Path, broker: LocalBroker, protocol: str,
) -> None:
    """Two daemons (two databases) with one client id push each other off the broker."""
    daemons, dbs = [], []
    for name in ("a", "b"):
        db = tmp_path / name / "edge-ml.db"
        config = write_config(tmp_path / f"{name}.toml", broker, db)
        text = config.read_text().replace(
            "[mqtt]\n", f'[mqtt]\nprotocol = "{protocol}"\nreconnect_min_s = 0.2\n'
                        "reconnect_max_s = 1.0\n", 1)
        config.write_text(text)
        dbs.append(db)
        daemons.append(DaemonProcess(config, tmp_path / f"{name}.log"))
    try:
        def reported() -> bool:
            return any("taken over" in str(stored_health(db).get("mqtt_error"))
                       and int(stored_health(db).get("mqtt_taken_over") or 0) > 0 for db in dbs)

        wait_for(reported, 90, "a takeover in the health of one of them")
        logs = daemons[0].log() + daemons[1].log()
        assert "session taken over" in logs
        assert "client id 'edge-ml-test'" in logs
    finally:
        for daemon in daemons:
            daemon.stop()


def test_a_disconnect_with_reason_session_taken_over_is_named_at_once() -> None:
    """MQTT 5 brokers that say why (0x8E; mosquitto 2.0.11 only closes the socket, so the
    daemon tests above see the 3.1.1 pattern under both protocols)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from edge_ml.config import MqttConfig
    from edge_ml.mqtt import MqttLink

    link = MqttLink(MqttConfig(client_id="gw-1", protocol="5"), lambda *a: None, "s")
    link.state.connected = True
    link._on_disconnect(link.client, None, None,
                        ReasonCode(PacketTypes.DISCONNECT, identifier=0x8E), None)
    assert link.state.taken_over == 1
    assert link.state.last_error is not None
    assert link.state.last_error.startswith("session taken over: another client connected "
                                            "with client id 'gw-1'")
    assert "the broker says session taken over" in link.state.last_error
