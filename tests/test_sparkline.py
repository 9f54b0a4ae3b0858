"""Issue 17, the terminal part: a one-line sparkline of each stream's anomaly level over the last
hour, kept by the daemon as a ring of 60 one-minute maxima per stream (struct-of-arrays, one
Numba call per batch), written with the stream rows, shown by ``status`` and ``alerts``."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from edge_ml.storage import MIGRATIONS, Storage
from edge_ml.streams import StreamRegistry
from tests.pipeline_helpers import ALERT_CONFIG
from tests.test_cli import edge_ml

NAN = math.nan


def test_render_a_known_series() -> None:
    from edge_ml.sparkline import render

    assert render([0, 0.5, 1]) == "▁▄█"
    assert render([NAN, 0.2, None, 0.99]) == " ▂ █"
    assert render([0.125, 0.126, 0.875, 0.876]) == "▁▂▇█"  # (k/8, (k+1)/8] is block k
    assert render([]) == ""


def _record(registry: StreamRegistry, names: list[str], ts: list[float], levels: list[float],
            warming: list[int] | None = None) -> None:
    slots = registry.resolve(names)
    n = len(names)
    registry.record(slots, np.array(ts), np.zeros(n), np.array(levels),
                    np.array(warming or [0] * n, dtype=np.uint8))


def test_the_ring_keeps_minute_maxima_for_an_hour() -> None:
    from edge_ml.sparkline import decode

    t0 = 1_700_000_040.0  # second 0 of a minute
    registry = StreamRegistry()
    _record(registry, ["a", "a", "b", "a"], [t0, t0 + 10, t0, t0 + 61],
            [0.2, 0.7, 0.9, 0.1])
    _record(registry, ["a", "a"], [t0 + 5, t0 + 130], [0.95, 0.3], [0, 1])  # late; warming
    blobs = registry.recent_rows(np.array([0, 1]))
    now = t0 + 130
    a, b = decode(blobs[0], now), decode(blobs[1], now)
    assert len(a) == 60 and len(b) == 60
    assert a[-3:-1] == pytest.approx([0.95, 0.1], abs=0.5 / 254)
    assert math.isnan(a[-1])  # a warming reading is no level
    assert all(math.isnan(v) for v in a[:-3])
    assert b[-3] == pytest.approx(0.9, abs=0.5 / 254) and all(math.isnan(v) for v in b[-2:])
    # An hour and more later the old minutes are gone.
    _record(registry, ["a"], [t0 + 3700], [0.5])
    a = decode(registry.recent_rows(np.array([0]))[0], t0 + 3700)
    assert a[-1] == 0.5 and all(math.isnan(v) for v in a[:-1])
    # Quiet since: the minutes up to now are blank, not the old ones shifted in.
    assert all(math.isnan(v) for v in decode(registry.recent_rows(np.array([0]))[0],
                                             t0 + 3700 + 3600))


def test_a_checkpoint_restore_keeps_the_ring_sized() -> None:
    big = StreamRegistry()
    names = [f"s{i}" for i in range(40)]
    _record(big, names, [1_700_000_000.0] * 40, [0.5] * 40)
    registry = StreamRegistry()
    _record(registry, ["a"], [1_700_000_000.0], [0.5])
    registry.restore(names, big.stats.export(40))
    _record(registry, ["s39", "new"], [1_700_000_000.0] * 2, [0.5] * 2)
    rows = registry.recent_rows(np.array([0, 39, 40]))
    assert rows[0][4:] == bytes(60)  # restored: an empty hour, not another stream's
    from edge_ml.sparkline import decode

    for row in rows[1:]:
        assert decode(row, 1_700_000_000.0)[-1] == 0.5


def test_stream_rows_carry_the_sparkline_and_status_and_alerts_show_it(tmp_path: Path) -> None:
    from edge_ml.config import parse_config
    from edge_ml.pipeline import Pipeline

    assert "streams.recent_levels" in [name for name, _ in MIGRATIONS]
    db = tmp_path / "state.db"
    storage = Storage(db)
    pipeline = Pipeline(parse_config(ALERT_CONFIG), storage)
    now = time.time()
    n = 600
    ts = now - 1800 + np.arange(n) * 3.0  # the last half hour, one reading each 3 s
    values = np.random.default_rng(1).normal(20.0, 1.0, n)
    values[500:520] += 30.0  # a spike near the end: an alert
    pipeline.process_readings(["sensors/x"] * n, ts, values)
    pipeline.flush()
    row = storage.streams()[0]
    assert isinstance(row["recent_levels"], bytes) and len(row["recent_levels"]) == 64
    storage.close()

    out = edge_ml("status", "--db", str(db)).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("sensors/x "))
    assert "█" in line or "▇" in line, out
    assert any(c in line for c in "▁▂▃"), out
    assert "last hour" in out
    alerts = edge_ml("alerts", "--db", str(db)).stdout
    assert "last hour" in alerts.splitlines()[0], alerts
    assert any(c in alerts for c in "▁▂▃▄▅▆▇█"), alerts


def test_minutes_skipped_over_are_blanked() -> None:
    from edge_ml.sparkline import decode

    t0 = 1_700_000_040.0
    registry = StreamRegistry()
    _record(registry, ["c"] * 60, [t0 + 60 * k for k in range(60)], [0.5] * 60)
    last = t0 + 59 * 60
    _record(registry, ["c"], [last + 600], [0.9])  # ten minutes later
    levels = decode(registry.recent_rows(np.array([0]))[0], last + 600)
    assert levels[-1] == pytest.approx(0.9, abs=0.5 / 254)
    assert all(math.isnan(v) for v in levels[-10:-1])  # not the cells of an hour ago
    assert levels[:-10] == pytest.approx([0.5] * 50, abs=0.5 / 254)
