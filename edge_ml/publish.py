"""Alert, drift and health messages to MQTT, in the JSON shapes README documents."""

from __future__ import annotations

import json
import math
from typing import Any, Protocol

from edge_ml.records import AlertEvent, DriftEvent


class Publisher(Protocol):
    """Where messages go: the broker link (:class:`edge_ml.mqtt.MqttLink`) or a test's fake."""

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> Any: ...


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def alert_payload(event: AlertEvent, gateway_id: str | None = None) -> bytes:
    """The JSON body of ``<prefix>/alerts/<stream>`` (with ``gateway_id`` when given).

    Examples
    --------
    >>> e = AlertEvent("a1", "sensors/t", "open", 0.999, 80.5, 10.0, 10.0, None, "warning")
    >>> alert_payload(e)[:39]
    b'{"alert_id": "a1", "stream": "sensors/t'
    >>> e = AlertEvent("a1", "sensors/t", "open", 0.999, 80.5, 10.0, 10.0, None, "warning",
    ...                None, "seasonal", {"sensors/t": 1.0}, (18.0, 22.5))
    >>> alert_payload(e)[-67:]
    b'"seasonal", "fields": {"sensors/t": 1.0}, "expected": [18.0, 22.5]}'
    """
    body = event.to_dict()
    del body["reason"]  # stored only: the payload keeps the keys README documents
    for key in ("score", "value", "ts", "opened_at", "resolved_at"):
        body[key] = _finite(body[key])
    if event.expected is not None:
        body["expected"] = [_finite(x) for x in event.expected]
    if gateway_id is not None:  # which gateway, once alerts of several meet on one broker
        body["gateway_id"] = gateway_id
    return json.dumps(body).encode()


def status_topic(topic_prefix: str) -> str:
    """The retained ``online``/``offline`` topic (the connection's last will) under a prefix."""
    return f"{topic_prefix}/status"


class AlertPublisher:
    """Publishes alert events (QoS 1), drift events and retained health under one prefix.

    ``gateway_id`` goes into every alert and drift message when given.
    """

    def __init__(self, link: Publisher, topic_prefix: str,
                 gateway_id: str | None = None) -> None:
        self.link = link
        self.prefix = topic_prefix
        self.gateway_id = gateway_id

    @property
    def status_topic(self) -> str:
        return status_topic(self.prefix)

    @property
    def health_topic(self) -> str:
        return f"{self.prefix}/status/health"

    def alerts(self, events: list[AlertEvent]) -> None:
        for event in events:
            self.link.publish(f"{self.prefix}/alerts/{event.stream}",
                              alert_payload(event, self.gateway_id), qos=1)

    def drift(self, events: list[DriftEvent]) -> None:
        for event in events:
            body = {"stream": event.stream, "ts": event.ts, "detector": event.detector,
                    "statistic": event.statistic, "reaction": event.reaction}
            if self.gateway_id is not None:
                body["gateway_id"] = self.gateway_id
            self.link.publish(f"{self.prefix}/drift/{event.stream}", json.dumps(body), qos=1)

    def health(self, health: dict[str, Any]) -> None:
        self.link.publish(self.health_topic, json.dumps(health), qos=1, retain=True)
