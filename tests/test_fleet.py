"""Many gateways, one broker: ``edge-ml fleet`` from retained status and health, and the
tested path of two gateways bridged to a central mosquitto."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_helpers import DaemonProcess, Observer, wait_for, write_config

from edge_ml.fleet import gateways, status_filters
from edge_ml.localbroker import LocalBroker, free_port
from edge_ml.mqtt import ReceivedMessage

NOW = 1_800_000_000.0


def _health(**fields: Any) -> dict[str, Any]:
    return {"gateway_id": "gw-a", "version": "0.1.0", "readings_total": 1000,
            "readings_per_s": 12.5, "streams": 3, "open_alerts": 1, "dropped_total": 2,
            "last_checkpoint_at": NOW - 60, "health_interval_s": 10.0, "updated_at": NOW - 1,
            **fields}


def _msg(topic: str, payload: bytes | dict[str, Any]) -> ReceivedMessage:
    data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return ReceivedMessage(topic, data, True, NOW)


def test_a_gateway_is_listed_with_what_its_health_says() -> None:
    (gw,) = gateways([_msg("edge-ml/status", b"online"),
                      _msg("edge-ml/status/health", _health())], now=NOW)
    assert (gw.prefix, gw.gateway_id, gw.state) == ("edge-ml", "gw-a", "online")
    assert (gw.readings_per_s, gw.streams, gw.open_alerts, gw.dropped_total) == (12.5, 3, 1, 2)
    assert gw.last_checkpoint_at == NOW - 60 and gw.health_age_s == 1.0
    assert gw.to_dict()["last_checkpoint_iso"].startswith("2027-01-15T")


def test_two_health_samples_give_a_measured_rate() -> None:
    (gw,) = gateways([_msg("p/edge-ml/status", b"online"),
                      _msg("p/edge-ml/status/health", _health(readings_total=1000,
                                                              updated_at=NOW - 11)),
                      _msg("p/edge-ml/status/health", _health(readings_total=1500,
                                                              updated_at=NOW - 1))], now=NOW)
    assert gw.readings_per_s == 50.0


@pytest.mark.parametrize(("status", "age", "state"), [
    (b"online", 1.0, "online"),
    (b"online", 29.0, "online"),  # within three intervals, or 30 s
    (b"online", 31.0, "stale"),  # its local broker died with it: no last will reached us
    (b"offline", 1.0, "offline"),
    (None, 1.0, "unknown"),
])
def test_state_from_status_and_health_age(status: bytes | None, age: float, state: str) -> None:
    messages = [_msg("edge-ml/status/health", _health(updated_at=NOW - age))]
    if status is not None:
        messages.append(_msg("edge-ml/status", status))
    (gw,) = gateways(messages, now=NOW)
    assert gw.state == state
    if state == "offline":
        assert gw.readings_per_s == 0.0


def test_other_status_topics_and_bad_health_are_not_gateways() -> None:
    """ESPHome and others publish <node>/status online/offline too."""
    found = gateways([_msg("esphome-1/status", b"online"),
                      _msg("junk/status/health", b"not json"),
                      _msg("list/status/health", b"[1, 2]"),
                      _msg("other/status/health", {"temperature": 3})], now=NOW)
    assert found == []


def test_gateways_are_told_apart_by_prefix_and_sorted_by_id() -> None:
    found = gateways([_msg("b/edge-ml/status", b"online"),
                      _msg("b/edge-ml/status/health", _health(gateway_id="gw-b")),
                      _msg("a/edge-ml/status", b"offline"),
                      _msg("a/edge-ml/status/health", _health(gateway_id="gw-a"))], now=NOW)
    assert [(g.gateway_id, g.prefix, g.state) for g in found] == [
        ("gw-a", "a/edge-ml", "offline"), ("gw-b", "b/edge-ml", "online")]


def test_status_filters_cover_health_below_each() -> None:
    assert status_filters(["+/status", "s/+/edge-ml/status"]) == [
        "+/status", "+/status/health", "s/+/edge-ml/status", "s/+/edge-ml/status/health"]


def _fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ml", "fleet", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_fleet_names_an_unreachable_broker(tmp_path: Path) -> None:
    result = _fleet("--config", str(tmp_path / "none.toml"))
    assert result.returncode == 2 and "none.toml" in result.stderr  # a named file must exist
    result = _fleet("--host", "127.0.0.1", "--port", str(free_port()))
    assert result.returncode == 1
    assert "cannot connect to 127.0.0.1:" in result.stderr and "refused" in result.stderr


def test_fleet_refuses_a_topic_that_is_not_a_status_filter() -> None:
    for bad in ("site/#", "a/+x/status", "site/+/edge-ml"):
        result = _fleet("--topic", bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert "--topic" in result.stderr


# -- two gateways, each with its own mosquitto and daemon, bridged to a central mosquitto --------


def _bridge(name: str, central: LocalBroker, *topics: str) -> str:
    """mosquitto bridge lines: this gateway's broker carries ``topics`` out to ``central``."""
    return "\n".join([
        f"connection {name}",
        f"address {central.host}:{central.port}",
        f"remote_clientid bridge-{name}",
        # Queue for the central broker while the link is down (QoS 1, persistent session).
        "cleansession false",
        *(f"topic {t}" for t in topics),
    ])


def _publish_readings(broker: LocalBroker, seed: int) -> None:
    """400 readings of one stream with an excursion the model must flag."""
    rng = np.random.default_rng(seed)
    pub = Observer(broker, ["unused/#"], client_id=f"sensor-{seed}")
    try:
        for i in range(400):
            value = rng.normal(20.0, 0.3) + (12.0 if 300 <= i < 306 else 0.0)
            pub.client.publish("sensors/room/temp", f"{value:.4f}", qos=1)
        pub.publish("sensors/room/temp", "20.0")  # waits for its PUBACK: all went out
    finally:
        pub.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_bridged_gateways_are_seen_centrally(tmp_path: Path) -> None:
    """Gateway A keeps the default topics and its bridge remaps them under gateways/gw-a/;
    gateway B sets its own topic_prefix and is bridged as is. Centrally: alerts of both with
    their gateway ids, `edge-ml fleet` lists both, then B as offline after a clean stop."""
    central = LocalBroker(workdir=tmp_path / "central").start()
    brokers: list[LocalBroker] = [central]
    daemons: list[DaemonProcess] = []
    watch: Observer | None = None
    try:
        broker_a = LocalBroker(workdir=tmp_path / "broker-a", extra_config=_bridge(
            "gw-a", central, 'edge-ml/# out 1 "" gateways/gw-a/')).start()
        broker_b = LocalBroker(workdir=tmp_path / "broker-b", extra_config=_bridge(
            "gw-b", central, "site-b/edge-ml/# out 1")).start()
        brokers += [broker_a, broker_b]
        prefix_a, prefix_b = "gateways/gw-a/edge-ml", "site-b/edge-ml"
        watch = Observer(central, [f"{prefix_a}/#", f"{prefix_b}/#"], client_id="central-watch")
        for name, broker, extra in (
                ("a", broker_a, 'gateway_id = "gw-a"\n'),
                ("b", broker_b,
                 'gateway_id = "gw-b"\n[alerts]\ntopic_prefix = "site-b/edge-ml"\n')):
            config = write_config(tmp_path / f"{name}.toml", broker, tmp_path / f"{name}.db",
                                  extra)
            daemons.append(DaemonProcess(config, tmp_path / f"daemon-{name}.log"))
        for prefix, daemon in zip((prefix_a, prefix_b), daemons, strict=True):
            wait_for(lambda p=prefix, d=daemon: b"online" in watch.on(f"{p}/status")
                     or d.proc.poll() is not None, 120, f"{prefix}/status online centrally")
            assert daemon.proc.poll() is None, daemon.log()

        _publish_readings(broker_a, seed=1)
        _publish_readings(broker_b, seed=2)
        for prefix, gateway in ((prefix_a, "gw-a"), (prefix_b, "gw-b")):
            opened = wait_for(
                lambda p=prefix: [a for a in watch.json_under(f"{p}/alerts/sensors/room/temp")
                                  if a["state"] == "open"], 60, f"an alert of {gateway} centrally")
            assert opened[0]["gateway_id"] == gateway
            assert opened[0]["stream"] == "sensors/room/temp"

        def fleet() -> dict[str, dict[str, Any]]:
            result = _fleet("--host", central.host, "--port", str(central.port), "--json",
                            "--wait", "1.5")
            assert result.returncode == 0, result.stderr
            return {g["gateway_id"]: g for g in json.loads(result.stdout)["gateways"]}

        seen = wait_for(lambda: (lambda f: f if {g["readings_total"] for g in f.values()}
                                 == {401} else None)(fleet()), 90, "both gateways' health")
        assert set(seen) == {"gw-a", "gw-b"}
        assert (seen["gw-a"]["prefix"], seen["gw-b"]["prefix"]) == (prefix_a, prefix_b)
        for gw in seen.values():
            assert gw["state"] == "online" and gw["streams"] == 1 and gw["dropped_total"] == 0
            assert gw["open_alerts"] is not None and gw["readings_per_s"] is not None

        # On a gateway's own broker, beside its daemon: listed under the default topics, and
        # the short session (its own client id) does not throw the daemon off.
        local = _fleet("--port", str(broker_a.port), "--json")
        assert local.returncode == 0, local.stderr
        (only,) = json.loads(local.stdout)["gateways"]
        assert (only["gateway_id"], only["prefix"], only["state"]) == ("gw-a", "edge-ml", "online")
        assert "disconnected" not in daemons[0].log()

        assert daemons[1].stop() == 0, daemons[1].log()  # B stops cleanly: offline, retained
        wait_for(lambda: fleet()["gw-b"]["state"] == "offline", 90, "gw-b offline centrally")
        after = fleet()
        assert after["gw-a"]["state"] == "online"
        table = _fleet("--host", central.host, "--port", str(central.port))
        assert table.returncode == 0, table.stderr
        rows = {line.split()[0]: line.split()[1] for line in table.stdout.splitlines()[1:]}
        assert rows == {"gw-a": "online", "gw-b": "offline"}, table.stdout
    finally:
        if watch is not None:
            watch.close()
        for daemon in daemons:
            if daemon.proc.poll() is None:
                daemon.stop()
        for broker in brokers:
            broker.close()


def test_the_bridge_config_in_deploy_md_loads(tmp_path: Path) -> None:
    """docs/deploy.md's bridge example, every topic line on, is a config mosquitto accepts."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```$", docs, re.S | re.M)
    (block,) = [b for b in blocks if "connection central" in b]
    lines = []
    for line in block.splitlines():
        line = line.removeprefix("#") if line.startswith("#topic") else line
        if line.startswith("address "):
            line = f"address 127.0.0.1:{free_port()}"  # nothing listens: the bridge retries
        if not line.startswith("bridge_cafile"):  # no CA file here
            lines.append(line)
    assert sum(line.startswith("topic ") for line in lines) == 4
    with LocalBroker(workdir=tmp_path / "gw", extra_config="\n".join(lines)) as broker:
        assert broker.running
        log = broker.log_path.read_text(errors="replace")
        # Config errors stop mosquitto or name the line; a failed connect to the address where
        # nothing listens ("Error creating bridge: Connection refused / Broken pipe") is the
        # bridge working as meant, retrying.
        errors = [line for line in log.splitlines()
                  if "Error" in line and "Error creating bridge" not in line]
        assert errors == [], log


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_default_client_id_keeps_the_persistent_session(broker: LocalBroker,
                                                            tmp_path: Path) -> None:
    """No client_id set: the daemon is edge-ml-<gateway id> at every start, so the broker
    hands it the readings queued while it was away."""
    db = tmp_path / "edge-ml.db"
    config = write_config(tmp_path / "edge-ml.toml", broker, db, 'gateway_id = "gw-s"\n')
    config.write_text(config.read_text().replace('client_id = "edge-ml-test"\n', ""))
    watch = Observer(broker, ["edge-ml/status"], client_id="session-watch")
    pub = Observer(broker, ["unused/#"], client_id="session-pub")
    try:
        first = DaemonProcess(config, tmp_path / "daemon-1.log")
        wait_for(lambda: b"online" in watch.on("edge-ml/status"), 120, "the daemon online")
        assert first.stop() == 0, first.log()
        for i in range(100):  # while it is away: queued in its session
            pub.client.publish("sensors/away/t", str(float(i % 7)), qos=1)
        pub.publish("sensors/away/t", "1.0")
        second = DaemonProcess(config, tmp_path / "daemon-2.log")
        try:
            wait_for(lambda: _counters(db).get("readings_total") == 101, 60,
                     "the queued readings")
            assert "session present: True" in second.log()
        finally:
            assert second.stop() == 0, second.log()
        log = broker.log_path.read_text(errors="replace")
        assert log.count(" as edge-ml-gw-s ") == 2, log
    finally:
        watch.close()
        pub.close()


def _counters(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT name, value FROM counters").fetchall())
