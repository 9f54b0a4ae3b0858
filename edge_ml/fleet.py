"""``edge-ml fleet``: the gateways one broker can see, from their retained status and health.

Every daemon leaves two retained messages under its ``[alerts] topic_prefix``: ``<prefix>/status``
(``online``, or ``offline`` from a clean stop or its last will) and ``<prefix>/status/health``
(JSON, every ``[daemon] health_interval_s``). On a central broker that gets them over MQTT
bridges, each gateway's prefix differs (its own ``topic_prefix``, or the bridge's remapping),
so subscribing to ``+/status`` and a few deeper patterns finds them all.

A prefix counts as a gateway once its health document is seen (a bare ``<x>/status`` of
``online`` is also what ESPHome and others publish). Its state:

- ``online``: status ``online`` and a health document fresher than three health intervals;
- ``stale``: status ``online`` but no health for longer: the gateway (or its bridge) is gone
  without a last will reaching this broker, e.g. a power cut takes its local broker too;
- ``offline``: status ``offline``;
- ``unknown``: no status message seen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from edge_ml.config import MqttConfig
from edge_ml.mqtt import ReceivedMessage, collect_messages

# Status topics of prefixes up to three levels deep: "edge-ml/status" (one gateway, default
# topics), "site-a/edge-ml/status" (per-gateway topic_prefix or a bridge's remapping),
# "sites/a/edge-ml/status".
DEFAULT_STATUS_FILTERS = ("+/status", "+/+/status", "+/+/+/status")
# Health older than this many health intervals makes an "online" gateway "stale"...
STALE_INTERVALS = 3.0
# ...but never sooner than this (clock differences between a gateway and this host).
STALE_MIN_S = 30.0


@dataclass(frozen=True, slots=True)
class Gateway:
    """One gateway as the broker shows it."""

    prefix: str
    gateway_id: str | None  # None: a daemon older than the gateway id
    state: str  # online, stale, offline, unknown
    status: str | None  # the retained status payload
    readings_per_s: float | None
    readings_total: int | None
    streams: int | None
    open_alerts: int | None
    last_checkpoint_at: float | None
    dropped_total: int | None
    health_age_s: float | None
    version: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"last_checkpoint_iso": _iso(self.last_checkpoint_at)}


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def status_filters(patterns: Iterable[str]) -> list[str]:
    """The subscriptions for status topic filters: each, and its ``/health`` below it.

    Examples
    --------
    >>> status_filters(["+/status"])
    ['+/status', '+/status/health']
    """
    out: list[str] = []
    for pattern in patterns:
        out += [pattern, f"{pattern}/health"]
    return out


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _health(payload: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and "readings_total" in doc else None


def _rate(samples: list[dict[str, Any]]) -> float | None:
    """Readings/s between the first and the last health sample, or the last one's own rate."""
    first, last = samples[0], samples[-1]
    t0, t1 = _float(first.get("updated_at")), _float(last.get("updated_at"))
    r0, r1 = _int(first.get("readings_total")), _int(last.get("readings_total"))
    if t0 is not None and t1 is not None and r0 is not None and r1 is not None \
            and t1 > t0 and r1 >= r0:
        return round((r1 - r0) / (t1 - t0), 1)
    return _float(last.get("readings_per_s"))


def gateways(messages: Iterable[ReceivedMessage], now: float | None = None) -> list[Gateway]:
    """The gateways in ``messages`` (status and health topics), sorted by gateway id.

    Examples
    --------
    >>> health = b'{"gateway_id": "gw-a", "readings_total": 10, "updated_at": 100.0}'
    >>> [g.state for g in gateways([ReceivedMessage("a/edge-ml/status", b"online", True, 0),
    ...                             ReceivedMessage("a/edge-ml/status/health", health, True, 0)],
    ...                            now=110.0)]
    ['online']
    """
    now = time.time() if now is None else now
    status: dict[str, str] = {}
    health: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        if message.topic.endswith("/status/health"):
            doc = _health(message.payload)
            if doc is not None:
                health.setdefault(message.topic[: -len("/status/health")], []).append(doc)
        elif message.topic.endswith("/status"):
            status[message.topic[: -len("/status")]] = message.payload.decode("utf-8", "replace")
    found = []
    for prefix, samples in health.items():
        last = samples[-1]
        updated = _float(last.get("updated_at"))
        age = round(max(now - updated, 0.0), 1) if updated is not None else None
        interval = _float(last.get("health_interval_s")) or 10.0
        said = status.get(prefix)
        if said == "offline":
            state = "offline"
        elif said == "online":
            stale = age is None or age > max(STALE_INTERVALS * interval, STALE_MIN_S)
            state = "stale" if stale else "online"
        else:
            state = "unknown"
        gateway_id = last.get("gateway_id")
        found.append(Gateway(
            prefix=prefix,
            gateway_id=gateway_id if isinstance(gateway_id, str) else None,
            state=state, status=said,
            readings_per_s={"offline": 0.0, "stale": None}.get(state, _rate(samples)),
            readings_total=_int(last.get("readings_total")),
            streams=_int(last.get("streams")),
            open_alerts=_int(last.get("open_alerts")),
            last_checkpoint_at=_float(last.get("last_checkpoint_at")),
            dropped_total=_int(last.get("dropped_total")),
            health_age_s=age,
            version=last.get("version") if isinstance(last.get("version"), str) else None,
        ))
    return sorted(found, key=lambda g: (g.gateway_id or "", g.prefix))


def survey(config: MqttConfig, patterns: Iterable[str] = DEFAULT_STATUS_FILTERS,
           wait_s: float = 1.0, source: str | None = None) -> list[Gateway]:
    """Connect to the broker of ``config``, listen ``wait_s`` seconds, list the gateways.

    The retained messages arrive at once; a gateway that publishes health again within
    ``wait_s`` gets its readings/s from the two samples, otherwise from its own report.
    """
    messages = collect_messages(config, status_filters(patterns), wait_s, source=source)
    return gateways(messages)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def format_table(found: list[Gateway], now: float | None = None) -> str:
    """One line per gateway, for a terminal."""
    now = time.time() if now is None else now
    if not found:
        return "no edge-ml gateways seen"
    lines = [f"{'gateway':<20} {'state':<8} {'readings/s':>10} {'streams':>7} {'open':>5} "
             f"{'dropped':>8}  {'last checkpoint':<16} {'health':<12} prefix"]
    for g in found:
        checkpoint = (_ago(now - g.last_checkpoint_at) if g.last_checkpoint_at is not None
                      else "-")
        rate = "-" if g.readings_per_s is None else f"{g.readings_per_s:.1f}"
        lines.append(f"{g.gateway_id or '?':<20} {g.state:<8} {rate:>10} {_num(g.streams):>7} "
                     f"{_num(g.open_alerts):>5} {_num(g.dropped_total):>8}  {checkpoint:<16} "
                     f"{_ago(g.health_age_s):<12} {g.prefix}")
    return "\n".join(lines)

