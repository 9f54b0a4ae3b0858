"""The alert kernel (``edge_ml/kernels/alerting.py``) under clocks that jump: cooldowns end."""

from __future__ import annotations

import numpy as np
import pytest

from edge_ml.kernels.alerting import OPENED, RESOLVED, alert_batch

pytestmark = pytest.mark.kernels  # also run without the JIT (make test)


def _run_alerts(ts: list[float], levels: list[float], cooldown_s: float) -> list[int]:
    n = len(ts)
    slots = np.zeros(n, dtype=np.int64)
    state = dict(above=np.zeros(1, np.int32), below=np.zeros(1, np.int32),
                 is_open=np.zeros(1, np.uint8), peak=np.zeros(1), closed_at=np.full(1, np.nan),
                 since_open=np.full(1, 2**31 - 1, dtype=np.int64))
    events, _ = alert_batch(
        slots, np.asarray(levels, float), np.asarray(ts, float), np.zeros(n, np.uint8),
        state["above"], state["below"], state["is_open"], state["peak"], state["closed_at"],
        state["since_open"], 0.99, 0.9, 1, cooldown_s, 0,
    )
    return events.tolist()


def test_far_future_timestamp_does_not_wedge_the_cooldown() -> None:
    # An alert resolves on a reading stamped in 2200; later readings are stamped today.
    ts = [1e9, 7.2e9, 1e9 + 10, 1e9 + 20]
    events = _run_alerts(ts, [1.0, 0.0, 1.0, 0.0], cooldown_s=60.0)
    assert events[:2] == [OPENED, RESOLVED]
    assert events[2] == OPENED, "a clock stepped back must not keep the stream cooling forever"


def test_cooldown_still_holds_for_ordinary_time() -> None:
    events = _run_alerts([0.0, 1.0, 2.0, 100.0], [1.0, 0.0, 1.0, 1.0], cooldown_s=60.0)
    assert events == [OPENED, RESOLVED, 0, OPENED]
