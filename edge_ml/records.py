"""Records passed between stages. Frozen, small, and only for rare things.

Readings travel as NumPy arrays (see ``pipeline``); only messages, rejects and alert events,
which are few or must be kept one by one, are objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any


def iso_utc(epoch_s: float | None) -> str | None:
    """ISO 8601 UTC text for an epoch-seconds timestamp (None stays None)."""
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds")


# A message as the MQTT network thread hands it over: (topic, payload, received_at).
# A plain tuple rather than a dataclass: it is made once per message on the hot path.
Message = tuple[str, bytes, float]


@dataclass(frozen=True, slots=True)
class Reject:
    """A payload that could not be turned into readings, and why."""

    topic: str
    reason: str
    detail: str
    payload_prefix: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert opening or resolving on one stream."""

    alert_id: str
    stream: str
    state: str  # "open" | "resolved"
    score: float
    value: float
    ts: float
    opened_at: float
    resolved_at: float | None
    severity: str
    # Why a resolve did not come from the level: "restart" or "reload" when the restored model
    # state no longer holds the alert (edge_ml.state.reconcile_alerts). Stored in
    # the alerts table; not part of the MQTT payload, whose keys README documents.
    reason: str | None = None
    # Why (issue 14): the view that raised the alert ("seasonal", "shift", "stuck", "model",
    # "joint"), the fields that contributed and their shares (a per-field alert: its own
    # stream, 1.0), and the stream's usual range [low, high] at that time of day (None when not
    # known yet).
    # A resolve repeats its open's. None on resolves whose open this process never saw.
    view: str | None = None
    fields: dict[str, float] | None = None
    expected: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """A change of regime detected on one stream, and what the model did about it."""

    stream: str
    ts: float
    detector: str
    statistic: str
    reaction: str
