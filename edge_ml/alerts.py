"""Anomaly levels to alert events: warm-up, threshold, debounce, hysteresis and cooldown.

The per-reading state machine runs in :func:`edge_ml.kernels.alerting.alert_batch`; this module
keeps its arrays and turns the (rare) open/resolve codes into :class:`AlertEvent` records.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_ml.config import AlertsConfig
from edge_ml.kernels.alerting import NEVER, OPENED, RESOLVED, alert_batch
from edge_ml.kernels.explain import VIEWS
from edge_ml.records import AlertEvent
from edge_ml.slots import SlotArrays, SlotField

# What an alert carries to say why: (view, fields and their shares, usual range or None).
Explanation = tuple[str, dict[str, float], tuple[float, float] | None]


def explain(view: int, stream: str, expected: np.ndarray) -> Explanation:
    """The explanation of a per-field level: its view, the stream itself, its usual range.

    Examples
    --------
    >>> explain(0, "sensors/t", np.array([18.0, 22.0]))
    ('seasonal', {'sensors/t': 1.0}, (18.0, 22.0))
    >>> explain(1, "sensors/t", np.array([np.nan, np.nan]))
    ('stuck', {'sensors/t': 1.0}, None)
    """
    low, high = float(expected[0]), float(expected[1])
    usual = (low, high) if np.isfinite(low) and np.isfinite(high) else None
    return VIEWS[int(view)], {stream: 1.0}, usual


def stored_explanation(row: dict[str, Any]) -> Explanation | None:
    """The explanation held in a stored alert row or an event's ``to_dict()`` (None if none).

    Examples
    --------
    >>> stored_explanation({"view": "stuck", "fields": {"a": 1.0}, "expected_low": 1.0,
    ...                     "expected_high": 2.0})
    ('stuck', {'a': 1.0}, (1.0, 2.0))
    >>> stored_explanation({"view": None}) is None
    True
    """
    if not row.get("view"):
        return None
    expected = row.get("expected")
    if expected is None and row.get("expected_low") is not None:
        expected = (row["expected_low"], row["expected_high"])
    return row["view"], dict(row.get("fields") or {}), expected and tuple(expected)


def severity(level: float, threshold: float) -> str:
    """``critical`` when the level is ten times deeper into the tail than the threshold."""
    return "critical" if 1.0 - level <= (1.0 - threshold) / 10.0 else "warning"


class AlertTracker:
    """Alert state of every stream slot."""

    def __init__(self, config: AlertsConfig, capacity: int = 16) -> None:
        self.config = config
        self.state = SlotArrays(
            [
                SlotField("above", np.int32),
                SlotField("below", np.int32),
                SlotField("is_open", np.uint8),
                SlotField("peak", np.float64),
                SlotField("closed_at", np.float64, np.nan),
                SlotField("since_open", np.int64, NEVER),
            ],
            capacity,
        )
        # slot -> (alert_id, opened_at) of the alert open on that stream
        self.open_alerts: dict[int, tuple[str, float]] = {}
        # slot -> why the alert open on it opened (its resolve repeats it); not checkpointed:
        # a resolve after a restart carries none.
        self.explanations: dict[int, Explanation] = {}

    def grow(self, capacity: int) -> None:
        self.state.grow(capacity)

    def evaluate(
        self, slots: np.ndarray, levels: np.ndarray, values: np.ndarray, ts: np.ndarray,
        warming: np.ndarray, names: list[str], view: np.ndarray | None = None,
        expected: np.ndarray | None = None,
        explainer: Callable[[int, int], Explanation] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[AlertEvent]]:
        """Event codes, cooldown flags and the alert events of a micro-batch, in order.

        ``view[i]`` (``kernels.explain`` codes) and ``expected[i]`` (usual range) explain an
        opening per-field alert; ``explainer(i, slot)``, when given, explains it instead
        (a device's joint view). Without either, events carry no explanation.
        """
        c, s = self.config, self.state
        codes, cooling = alert_batch(
            slots, levels, ts, warming, s.above, s.below, s.is_open, s.peak, s.closed_at,
            s.since_open, c.threshold, c.resolve_threshold, c.debounce, c.cooldown_s,
            c.cooldown_readings,
        )
        events: list[AlertEvent] = []
        for i in np.flatnonzero(codes).tolist():
            slot = int(slots[i])
            level, value, at = float(levels[i]), float(values[i]), float(ts[i])
            if codes[i] == OPENED:
                alert_id = uuid.uuid4().hex[:16]
                self.open_alerts[slot] = (alert_id, at)
                why: Explanation | None = None
                if explainer is not None:
                    why = explainer(i, slot)
                elif view is not None and expected is not None:
                    why = explain(int(view[i]), names[slot], expected[i])
                if why is not None:
                    self.explanations[slot] = why
                events.append(
                    AlertEvent(alert_id, names[slot], "open", level, value, at, at, None,
                               severity(level, c.threshold), None, *(why or (None,) * 3))
                )
            elif codes[i] == RESOLVED:
                alert_id, opened_at = self.open_alerts.pop(slot, (uuid.uuid4().hex[:16], at))
                why = self.explanations.pop(slot, None)
                peak = float(s.peak[slot])
                events.append(
                    AlertEvent(alert_id, names[slot], "resolved", peak, value, at, opened_at, at,
                               severity(peak, c.threshold), None, *(why or (None,) * 3))
                )
        return codes, cooling, events

    def explanation(self, slot: int) -> Explanation | None:
        """Why the alert open on ``slot`` opened (None: none open, or opened before a restart)."""
        return self.explanations.get(slot) if slot in self.open_alerts else None

    def open_alert_id(self, slot: int) -> str | None:
        entry = self.open_alerts.get(slot)
        return entry[0] if entry else None

    def close(self, slot: int) -> None:
        """Forget the alert open on ``slot`` without an event (nothing to announce).

        For restored state that holds an alert the database does not have open (see
        :func:`edge_ml.state.reconcile_alerts`). Debounce counts restart; the
        cooldown since the alert opened still applies, so a level that stays high opens a new
        alert only once that has passed.
        """
        s = self.state
        s.is_open[slot] = 0
        s.above[slot] = 0
        s.below[slot] = 0
        self.open_alerts.pop(slot, None)
        self.explanations.pop(slot, None)
