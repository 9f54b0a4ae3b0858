"""Anomaly levels to alert events: warm-up, threshold, debounce, hysteresis and cooldown.

The per-reading state machine runs in :func:`edge_ml.kernels.alerting.alert_batch`; this module
keeps its arrays and turns the (rare) open/resolve codes into :class:`AlertEvent` records.
"""

from __future__ import annotations

import uuid

import numpy as np

from edge_ml.config import AlertsConfig
from edge_ml.kernels.alerting import NEVER, OPENED, RESOLVED, alert_batch
from edge_ml.records import AlertEvent
from edge_ml.slots import SlotArrays, SlotField


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

    def grow(self, capacity: int) -> None:
        self.state.grow(capacity)

    def evaluate(
        self, slots: np.ndarray, levels: np.ndarray, values: np.ndarray, ts: np.ndarray,
        warming: np.ndarray, names: list[str],
    ) -> tuple[np.ndarray, np.ndarray, list[AlertEvent]]:
        """Event codes, cooldown flags and the alert events of a micro-batch, in order."""
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
                events.append(
                    AlertEvent(alert_id, names[slot], "open", level, value, at, at, None,
                               severity(level, c.threshold))
                )
            elif codes[i] == RESOLVED:
                alert_id, opened_at = self.open_alerts.pop(slot, (uuid.uuid4().hex[:16], at))
                peak = float(s.peak[slot])
                events.append(
                    AlertEvent(alert_id, names[slot], "resolved", peak, value, at, opened_at, at,
                               severity(peak, c.threshold))
                )
        return codes, cooling, events

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
