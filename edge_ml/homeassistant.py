"""Home Assistant MQTT discovery: one device per gateway, two entities per stream.

Enabled by ``[alerts] homeassistant = true``. Per stream, Home Assistant gets

- a ``binary_sensor`` (device class ``problem``): on while an alert is open;
- a ``sensor``: the stream's anomaly level in [0, 1] (0 while warming up).

Both read one retained JSON state topic the daemon publishes, ``<prefix>/streams/<stream>/state``
(``{"level", "open", "warming", "value", "ts", "view", "fields", "expected"}``; the last three
say why the open alert opened, and are the binary sensor's attributes), and take availability
from the daemon's ``<prefix>/status`` (``online``/``offline``, the last will). Discovery configs
are retained under ``<discovery prefix>/<component>/<node id>/<object id>/config``; published again
when Home Assistant announces ``online`` on ``<discovery prefix>/status`` (it restarted and may
have lost them), and a stream the daemon no longer has is removed with an empty retained config.

This module builds payloads and decides what to send; it never touches paho (the link is any
object with ``publish``). See https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edge_ml.publish import Publisher, status_topic

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")
_NOT_ENTITY = re.compile(r"[^a-z0-9]+")
# The binary sensor's attributes: why the open alert opened (null while none is open).
ATTRIBUTES_TEMPLATE = ("{{ {'view': value_json.view, 'fields': value_json.fields, "
                       "'expected': value_json.expected} | tojson }}")
# Levels are published rounded to this many decimals; a change below that is not re-sent.
LEVEL_DECIMALS = 3


def object_id(text: str) -> str:
    """A discovery-safe id (``[a-zA-Z0-9_-]``) for any text, stable and collision-resistant.

    Unsafe runs become ``_``; a short hash of the original keeps ``a/b`` and ``a_b`` apart.

    Examples
    --------
    >>> object_id("sensors/boiler-1/temp")
    'sensors_boiler-1_temp_29e6098f'
    >>> object_id("sensors/a b") != object_id("sensors/a_b")
    True
    """
    digest = hashlib.blake2s(text.encode(), digest_size=4).hexdigest()
    safe = _UNSAFE.sub("_", text).strip("_")[:64]
    return f"{safe}_{digest}" if safe else digest


def entity_id(domain: str, *parts: str) -> str:
    """A valid Home Assistant entity id ``domain.object`` (``default_entity_id``).

    Home Assistant entity ids are lower case ``[a-z0-9_]`` with no leading, trailing or double
    underscore; anything else becomes a single ``_``.

    Examples
    --------
    >>> entity_id("binary_sensor", "edge_ml", "GW-1", "sensors_boiler-1_temp_29e6098f", "alert")
    'binary_sensor.edge_ml_gw_1_sensors_boiler_1_temp_29e6098f_alert'
    """
    return f"{domain}.{_NOT_ENTITY.sub('_', '_'.join(parts).lower()).strip('_')}"


@dataclass(frozen=True, slots=True)
class StreamState:
    """What Home Assistant shows for one stream."""

    stream: str
    level: float | None
    open: bool
    warming: bool
    value: float | None
    ts: float | None
    # Why the open alert opened (edge_ml.alerts.Explanation), shown as entity attributes.
    why: tuple[str, dict[str, float], tuple[float, float] | None] | None = None

    def payload(self) -> bytes:
        def finite(x: float | None, digits: int | None = None) -> float | None:
            if x is None or not math.isfinite(x):
                return None
            return round(x, digits) if digits is not None else x

        view, fields, expected = self.why or (None, None, None)
        return json.dumps({
            "level": finite(self.level, LEVEL_DECIMALS), "open": self.open,
            "warming": self.warming, "value": finite(self.value), "ts": finite(self.ts),
            "view": view, "fields": fields,
            "expected": None if expected is None else [finite(x) for x in expected],
        }).encode()


class HomeAssistant:
    """Discovery configs and state messages for one gateway.

    Parameters
    ----------
    link
        Where messages go (QoS 1, retained).
    topic_prefix
        ``[alerts] topic_prefix``: the daemon's status and state topics live under it.
    discovery_prefix
        ``[alerts] homeassistant_prefix`` (Home Assistant's default is ``homeassistant``).
    gateway_id
        ``[daemon] gateway_id``: one Home Assistant device per gateway.
    version
        Shown as the device's software version.
    """

    def __init__(self, link: Publisher, topic_prefix: str, discovery_prefix: str,
                 gateway_id: str, version: str = "") -> None:
        self.link = link
        self.prefix = topic_prefix
        self.discovery_prefix = discovery_prefix
        self.gateway_id = gateway_id
        self.node_id = object_id(gateway_id)
        self.version = version
        self.announced: set[str] = set()
        self._last_state: dict[str, tuple[float | None, bool, bool, str]] = {}

    # -- topics -----------------------------------------------------------------------------
    @property
    def ha_status_topic(self) -> str:
        """Where Home Assistant publishes ``online`` when it (re)starts."""
        return f"{self.discovery_prefix}/status"

    @property
    def availability_topic(self) -> str:
        return status_topic(self.prefix)  # the daemon's online/offline, its last will

    def state_topic(self, stream: str) -> str:
        return f"{self.prefix}/streams/{stream}/state"

    def config_topic(self, component: str, stream: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id(stream)}/config"

    # -- payloads ---------------------------------------------------------------------------
    def device(self) -> dict[str, Any]:
        device = {
            "identifiers": [f"edge-ml_{self.node_id}"],
            "name": f"edge-ml {self.gateway_id}",
            "manufacturer": "edge-ml",
            "model": "edge-ml gateway",
        }
        if self.version:
            device["sw_version"] = self.version
        return device

    def _common(self, component: str, stream: str, kind: str) -> dict[str, Any]:
        return {
            "unique_id": f"edge-ml_{self.node_id}_{object_id(stream)}_{kind}",
            # The entity id Home Assistant gives a new entity (not a renamed one): the current
            # key, with the domain; "object_id" is deprecated and stops working in 2026.4.
            "default_entity_id": entity_id(component, "edge_ml", self.gateway_id,
                                           object_id(stream), kind),
            "state_topic": self.state_topic(stream),
            "availability": [{
                "topic": self.availability_topic,
                "payload_available": "online",
                "payload_not_available": "offline",
            }],
            "device": self.device(),
            "origin": {"name": "edge-ml", **({"sw_version": self.version} if self.version else {})},
            "qos": 1,
        }

    def binary_sensor_config(self, stream: str) -> dict[str, Any]:
        """``binary_sensor``: on while an alert is open on ``stream``."""
        return {
            "name": f"{stream} anomaly",
            **self._common("binary_sensor", stream, "alert"),
            "device_class": "problem",
            "value_template": "{{ 'ON' if value_json.open else 'OFF' }}",
            # Why the alert is on: its view, fields and the stream's usual range.
            "json_attributes_topic": self.state_topic(stream),
            "json_attributes_template": ATTRIBUTES_TEMPLATE,
            "payload_on": "ON",
            "payload_off": "OFF",
        }

    def sensor_config(self, stream: str) -> dict[str, Any]:
        """``sensor``: the anomaly level of ``stream`` in [0, 1]."""
        return {
            "name": f"{stream} anomaly level",
            **self._common("sensor", stream, "level"),
            "value_template": "{{ value_json.level }}",
            "state_class": "measurement",
            "suggested_display_precision": LEVEL_DECIMALS,
            "icon": "mdi:chart-bell-curve",
        }

    # -- messages ---------------------------------------------------------------------------
    def announce(self, stream: str) -> None:
        """Publish both discovery configs for ``stream`` (retained)."""
        for component, config in (("binary_sensor", self.binary_sensor_config(stream)),
                                  ("sensor", self.sensor_config(stream))):
            self.link.publish(self.config_topic(component, stream),
                              json.dumps(config, separators=(",", ":")), qos=1, retain=True)
        self.announced.add(stream)
        self._last_state.pop(stream, None)  # send its state again after a (re)announce

    def remove(self, stream: str) -> None:
        """Delete the entities of ``stream`` (empty retained configs) and its state."""
        for component in ("binary_sensor", "sensor"):
            self.link.publish(self.config_topic(component, stream), b"", qos=1, retain=True)
        self.link.publish(self.state_topic(stream), b"", qos=1, retain=True)
        self.announced.discard(stream)
        self._last_state.pop(stream, None)

    def sync(self, streams: Iterable[str], *, reannounce: bool = False) -> None:
        """Announce new streams, remove the ones gone; everything again when ``reannounce``."""
        current = set(streams)
        for stream in sorted(self.announced - current):
            self.remove(stream)
        for stream in sorted(current if reannounce else current - self.announced):
            self.announce(stream)

    def publish_states(self, states: Iterable[StreamState]) -> int:
        """Publish the states that changed since last sent (retained); how many were sent."""
        sent = 0
        for state in states:
            level = None if state.level is None or not math.isfinite(state.level) else round(
                state.level, LEVEL_DECIMALS)
            key = (level, state.open, state.warming, repr(state.why))
            if self._last_state.get(state.stream) == key:
                continue
            self.link.publish(self.state_topic(state.stream), state.payload(), qos=1,
                              retain=True)
            self._last_state[state.stream] = key
            sent += 1
        return sent
