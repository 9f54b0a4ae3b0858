"""Home Assistant MQTT discovery: payloads against HA's documented schema, and the daemon
announcing, updating, re-announcing and removing entities over a real broker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_ml.homeassistant import HomeAssistant, StreamState, object_id
from edge_ml.localbroker import LocalBroker

SAFE = re.compile(r"^[a-zA-Z0-9_-]+$")
# Keys HA's MQTT discovery needs for our entities, and the availability list item schema.
REQUIRED = {"name", "unique_id", "state_topic", "device", "availability", "value_template"}
BINARY_REQUIRED = REQUIRED | {"payload_on", "payload_off", "device_class"}


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.sent.append((topic, data, qos, retain))


def _ha(link: FakeLink | None = None) -> HomeAssistant:
    return HomeAssistant(link or FakeLink(), "edge-ml", "homeassistant", "gw/kitchen 1", "0.1.0")


@pytest.mark.parametrize(
    "text", ["sensors/t", "a b/c+d#e", "ünïcode/温度", "", "////", "x" * 300, "a.b", "a_b"]
)
def test_object_ids_are_safe(text: str) -> None:
    oid = object_id(text)
    assert SAFE.match(oid), oid
    assert len(oid) <= 80
    assert object_id(text) == oid  # stable


def test_object_ids_do_not_collide_after_sanitising() -> None:
    names = ["a/b", "a_b", "a b", "a+b", "a-b"]
    assert len({object_id(n) for n in names}) == len(names)


# Home Assistant's valid_entity_id: lower case, no leading, trailing or double underscore.
ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")


def _check_common(config: dict[str, Any], ha: HomeAssistant, stream: str,
                  component: str) -> None:
    assert SAFE.match(config["unique_id"])
    # object_id is deprecated (Home Assistant 2025.10 warns, 2026.4 drops it): the entity id
    # now comes from default_entity_id, which carries the domain.
    assert "object_id" not in config
    assert ENTITY_ID.match(config["default_entity_id"]), config["default_entity_id"]
    assert config["default_entity_id"].startswith(f"{component}.edge_ml_gw_kitchen_1_")
    assert config["state_topic"] == f"edge-ml/streams/{stream}/state"
    assert not any(c in config["state_topic"] for c in "+#")
    device = config["device"]
    assert device["identifiers"] and isinstance(device["identifiers"], list)
    assert device["name"] == "edge-ml gw/kitchen 1"
    assert device["sw_version"] == "0.1.0"
    (availability,) = config["availability"]
    assert availability == {"topic": "edge-ml/status", "payload_available": "online",
                            "payload_not_available": "offline"}
    assert config["origin"]["name"] == "edge-ml"
    assert config["qos"] in (0, 1, 2)
    json.dumps(config)  # serialisable


def test_binary_sensor_config_schema() -> None:
    ha = _ha()
    config = ha.binary_sensor_config("sensors/boiler/temp")
    assert set(config) >= BINARY_REQUIRED
    assert config["device_class"] == "problem"
    assert (config["payload_on"], config["payload_off"]) == ("ON", "OFF")
    _check_common(config, ha, "sensors/boiler/temp", "binary_sensor")


def test_sensor_config_schema() -> None:
    ha = _ha()
    config = ha.sensor_config("sensors/boiler/temp")
    assert set(config) >= REQUIRED
    assert "device_class" not in config  # a unitless level has no HA sensor device class
    assert config["state_class"] == "measurement"
    _check_common(config, ha, "sensors/boiler/temp", "sensor")


def test_entities_are_unique_per_stream_and_kind_and_share_one_device() -> None:
    ha = _ha()
    configs = [f(s) for s in ("s/a", "s/b") for f in (ha.binary_sensor_config,
                                                       ha.sensor_config)]
    assert len({c["unique_id"] for c in configs}) == 4
    assert len({c["default_entity_id"] for c in configs}) == 4
    assert len({json.dumps(c["device"], sort_keys=True) for c in configs}) == 1


def test_two_gateways_with_the_same_streams_stay_apart() -> None:
    """A fleet on one Home Assistant: same stream names, different gateways."""
    a = HomeAssistant(FakeLink(), "edge-ml", "homeassistant", "gw-a")
    b = HomeAssistant(FakeLink(), "edge-ml", "homeassistant", "gw-b")
    for kind in ("binary_sensor_config", "sensor_config"):
        ca, cb = getattr(a, kind)("sensors/t"), getattr(b, kind)("sensors/t")
        for key in ("unique_id", "default_entity_id"):
            assert ca[key] != cb[key]
        assert ca["device"]["identifiers"] != cb["device"]["identifiers"]
    assert a.config_topic("sensor", "sensors/t") != b.config_topic("sensor", "sensors/t")


def test_config_topics_follow_discovery_layout() -> None:
    ha = _ha()
    topic = ha.config_topic("binary_sensor", "sensors/a b")
    prefix, component, node, obj, last = topic.split("/")
    assert (prefix, component, last) == ("homeassistant", "binary_sensor", "config")
    assert SAFE.match(node) and SAFE.match(obj)


def test_sync_announces_retained_and_removes_with_empty_config() -> None:
    link = FakeLink()
    ha = _ha(link)
    ha.sync(["s/a", "s/b"])
    configs = [m for m in link.sent if m[0].endswith("/config")]
    assert len(configs) == 4 and all(retain and qos == 1 for _, _, qos, retain in configs)
    link.sent.clear()
    ha.sync(["s/a", "s/b"])
    assert link.sent == []  # nothing new
    ha.sync(["s/a"])
    removed = {t: p for t, p, _, retain in link.sent if retain}
    assert removed[ha.config_topic("sensor", "s/b")] == b""
    assert removed[ha.config_topic("binary_sensor", "s/b")] == b""
    assert removed[ha.state_topic("s/b")] == b""
    link.sent.clear()
    ha.sync(["s/a"], reannounce=True)
    assert len([m for m in link.sent if m[0].endswith("/config")]) == 2


def test_states_are_sent_only_when_changed() -> None:
    link = FakeLink()
    ha = _ha(link)
    state = StreamState("s/a", 0.12345, False, False, 21.5, 1700000000.0)
    assert ha.publish_states([state]) == 1
    body = json.loads(link.sent[0][1])
    assert body == {"level": 0.123, "open": False, "warming": False, "value": 21.5,
                    "ts": 1700000000.0, "view": None, "fields": None, "expected": None}
    assert link.sent[0][3] is True  # retained
    assert ha.publish_states([StreamState("s/a", 0.12349, False, False, 22.0, 1.0)]) == 0
    assert ha.publish_states([StreamState("s/a", 0.12349, True, False, 22.0, 1.0)]) == 1
    nan = StreamState("s/n", float("nan"), False, True, float("nan"), None)
    ha.publish_states([nan])
    assert json.loads(link.sent[-1][1])["level"] is None  # NaN is not JSON


class Recorder:
    """A subscriber that keeps the last payload per topic (retained ones included)."""

    def __init__(self, broker: LocalBroker, *filters: str) -> None:
        self.last: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in filters])
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.last[msg.topic] = msg.payload

    def wait(self, predicate: Any, timeout: float = 30) -> dict[str, bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                snapshot = dict(self.last)
            if predicate(snapshot):
                return snapshot
            time.sleep(0.05)
        raise AssertionError(f"timed out; have {sorted(snapshot)}")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_daemon_announces_states_and_reannounces(broker: LocalBroker, tmp_path: Path) -> None:
    config = tmp_path / "edge-ml.toml"
    config.write_text(
        f'[mqtt]\nport = {broker.port}\nclient_id = "gw-1"\n'
        f'[storage]\ndb = "{tmp_path / "state.db"}"\n'
        "[alerts]\nhomeassistant = true\n"
        '[daemon]\nhealth_interval_s = 0.5\ngateway_id = "gw-1"\n'
    )
    rec = Recorder(broker, "homeassistant/#", "edge-ml/#")
    proc = subprocess.Popen([sys.executable, "-m", "edge_ml", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})
    try:
        rec.wait(lambda m: m.get("edge-ml/status") == b"online")
        for i in range(20):
            rec.publish("sensors/boiler/temp", str(20.0 + i % 3).encode())
        stream_oid = object_id("sensors/boiler/temp")
        topic = f"homeassistant/binary_sensor/{object_id('gw-1')}/{stream_oid}/config"
        seen = rec.wait(lambda m: topic in m and "edge-ml/streams/sensors/boiler/temp/state" in m)
        config_doc = json.loads(seen[topic])
        assert config_doc["state_topic"] == "edge-ml/streams/sensors/boiler/temp/state"
        state = json.loads(seen["edge-ml/streams/sensors/boiler/temp/state"])
        assert state["open"] is False and state["warming"] is True
        # HA says it (re)started: the configs come again. "online" is not a reading either.
        with rec.lock:
            rec.last.pop(topic)
        rec.publish("homeassistant/status", b"online")
        rec.wait(lambda m: topic in m)
        health = json.loads(rec.wait(lambda m: "edge-ml/status/health" in m)[
            "edge-ml/status/health"])
        assert health["rejects_total"] == 0, health
        assert health["gateway_id"] == "gw-1"
        assert config_doc["device"]["name"] == "edge-ml gw-1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        rec.wait(lambda m: m.get("edge-ml/status") == b"offline")  # entities unavailable
    finally:
        rec.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
