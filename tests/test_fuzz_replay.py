"""The fast CSV reader of ``replay`` gives exactly what the plain ``csv`` module reading gives.

The reference below is the original row-by-row reader (csv.reader + parse_timestamp per row);
hypothesis writes files in every timestamp form and layout replay accepts, and some it refuses.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_ml.errors import ReplayError
from edge_ml.replay import _output_rows, _read_chunks, parse_timestamp


def _reference(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        stamps, rows = [], []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ReplayError(f"{path}:{line_no}: expected {len(header)} fields")
            stamps.append(row[0])
            rows.append(row[1:])
    ts = np.array([parse_timestamp(s) for s in stamps], dtype=np.float64)
    return stamps, ts, np.array(rows, dtype=np.float64).reshape(len(rows), len(header) - 1)


def _fast(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    stamps, ts, values = [], [], []
    for _columns, s, t, v in _read_chunks(path):
        stamps += s
        ts.append(t)
        values.append(v)
    if not stamps:
        width = len(path.read_text().splitlines()[0].split(",")) - 1
        return [], np.zeros(0), np.zeros((0, width))
    return stamps, np.concatenate(ts), np.concatenate(values)


BASE = datetime(2024, 1, 1, tzinfo=UTC)
FORMATS = [
    lambda d: f"{d.timestamp():.3f}",
    lambda d: str(int(d.timestamp())),
    lambda d: d.strftime("%Y-%m-%d %H:%M:%S"),
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%f"),
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"),
    lambda d: d.isoformat(),
    lambda d: d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S-05:00"),
]


@st.composite
def csv_files(draw: st.DrawFn) -> str:
    n_cols = draw(st.integers(1, 3))
    n_rows = draw(st.integers(0, 40))
    mixed = draw(st.booleans())
    fmt = draw(st.sampled_from(FORMATS))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines = ["timestamp," + ",".join(f"c{i}" for i in range(n_cols))]
    for i in range(n_rows):
        when = BASE + timedelta(seconds=draw(st.integers(0, 10**8)), microseconds=i)
        stamp = (draw(st.sampled_from(FORMATS)) if mixed else fmt)(when)
        values = [repr(draw(st.floats(allow_nan=True, width=64))) for _ in range(n_cols)]
        if draw(st.integers(0, 20)) == 0:
            stamp = f'"{stamp}"'
        lines.append(",".join([stamp, *values]))
        if draw(st.integers(0, 20)) == 0:
            lines.append("")
    return newline.join(lines) + newline


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files())
def test_fast_reader_matches_csv_module(tmp_path_factory: pytest.TempPathFactory,
                                        text: str) -> None:
    path = tmp_path_factory.mktemp("replay") / "in.csv"
    path.write_bytes(text.encode())
    stamps, ts, values = _reference(path)
    fast_stamps, fast_ts, fast_values = _fast(path)
    assert fast_stamps == stamps
    np.testing.assert_array_equal(fast_ts, ts)
    np.testing.assert_array_equal(fast_values, values)


def test_bad_rows_name_the_same_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,value\n1,2\n\n3,4\n5\n6,7\n")
    with pytest.raises(ReplayError, match=r"bad.csv:5: expected 2 fields"):
        _reference(path)
    with pytest.raises(ReplayError, match=r"bad.csv:5: expected 2 fields"):
        _fast(path)
    path.write_text("timestamp,value\n2024-01-01 00:00:00,x\n")
    with pytest.raises(ReplayError):
        _fast(path)


_floats = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-1e6, 1e6).map(
    lambda v: round(v, 5))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=25), _floats, st.floats(0.0, 1.0), st.booleans()),
                min_size=1, max_size=40))
def test_output_rows_are_what_csv_writer_writes(rows: list[tuple[str, float, float, bool]]) -> None:
    stamps = [r[0] for r in rows]
    first = np.array([r[1] for r in rows])
    score = np.array([r[2] for r in rows])
    alert = np.array([r[3] for r in rows])
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(
        zip(stamps, [repr(v) if math.isfinite(v) else "" for v in first.tolist()],
            np.round(score, 6).tolist(), alert.astype(np.int8).tolist(), strict=True))
    fast = _output_rows(stamps, first, score, alert)
    if fast is None:  # csv.writer quotes some timestamp text: replay lets it write the chunk
        assert any(c in "".join(stamps) for c in '",\r\n')
    else:
        assert fast == buffer.getvalue()
