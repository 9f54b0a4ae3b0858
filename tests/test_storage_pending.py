"""The bounded rows waiting for a flush (edge_ml.storage.pending)."""

from __future__ import annotations

import pytest

import edge_ml.storage.pending as pending_module
from edge_ml.records import AlertEvent
from edge_ml.storage import PendingWrites


def _event(alert_id: str, state: str, ts: float) -> AlertEvent:
    return AlertEvent(alert_id, "sensors/t", state, 0.9, 1.0, ts, ts if state == "open" else 0.0,
                      ts if state == "resolved" else None, "warning")


def test_pending_alerts_beyond_the_bound_go_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pending_module, "MAX_PENDING_ROWS", 3)
    pending = PendingWrites(alerts=[
        _event("a", "open", 1.0), _event("b", "open", 2.0), _event("a", "resolved", 3.0),
        _event("c", "open", 4.0), _event("b", "resolved", 5.0),
    ])
    pending.bound()  # 2 rows too many: alert a goes, open and resolve together
    assert [(e.alert_id, e.state) for e in pending.alerts] == [
        ("b", "open"), ("c", "open"), ("b", "resolved")]
    assert pending.dropped == 2
