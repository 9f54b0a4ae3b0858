"""The replay reader (edge_ml.replay.reader): what it reads, and the file line of every error.

The reference below is the original row-by-row reader (csv.reader + parse_timestamp per row);
hypothesis writes files in every timestamp form and layout replay accepts, and some it refuses.
Bad input is a clear error naming the file and line, or a counted skip (as for ``nan``); never
a traceback, never rows silently lost.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replay_helpers import CONFIG, python_replay, replay_both_paths, series_rows

from edge_ml.config import parse_config
from edge_ml.errors import ReplayError
from edge_ml.pipeline import Pipeline
from edge_ml.replay import reader, replay_csv
from edge_ml.timestamps import parse_timestamp


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
    """What the reader gives: the chunks' timestamp texts, timestamps and values, joined."""
    stamps, ts, values = [], [], []
    for chunk in reader.read_chunks(path, reader.read_header(path)):
        stamps += chunk.stamp_texts()
        ts.append(chunk.ts)
        values.append(chunk.values)
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


def test_errors_name_the_same_line_after_kernel_chunks(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "REPLAY_CHUNK", 4)
    source = tmp_path / "bad.csv"
    rows = [f"2024-01-01 00:00:{i:02d},{i}" for i in range(12)]
    rows[9] = "2024-01-01 00:00:09"
    source.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    with pytest.raises(ReplayError, match=r"bad.csv:11: expected 2 fields"):
        replay_csv(Pipeline(parse_config(CONFIG)), source, tmp_path / "out.csv")


def test_a_chunk_of_blank_lines_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python reader used to turn a chunk of nothing but blank lines into one empty row."""
    monkeypatch.setattr(reader, "REPLAY_CHUNK", 3)
    source = tmp_path / "blank.csv"
    source.write_text("timestamp,value\n1,2\n3,4\n5,6\n\n\n")
    python_replay(monkeypatch, source, tmp_path / "slow.csv")
    replay_csv(Pipeline(parse_config(CONFIG)), source, tmp_path / "fast.csv")
    assert (tmp_path / "slow.csv").read_bytes() == (tmp_path / "fast.csv").read_bytes()
    assert len((tmp_path / "fast.csv").read_bytes().splitlines()) == 4


def test_a_byte_that_is_not_utf8_is_named_with_its_line_in_any_chunk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "REPLAY_CHUNK", 4)
    rows = series_rows(20)
    rows[13] = "2024-01-01 00:00:13,caf\xe9"  # file line 15, in the fourth chunk
    source = tmp_path / "latin.csv"
    source.write_bytes(("timestamp,value\n" + "\n".join(rows) + "\n").encode("latin-1"))
    with pytest.raises(ReplayError, match=r"latin.csv:15: not UTF-8 text \(byte 0xe9 at "
                                          r"column 24\)"):
        replay_csv(Pipeline(parse_config(CONFIG)), source, tmp_path / "out.csv")
    source.write_bytes(b"time\xe9stamp,value\n1,2\n")
    with pytest.raises(ReplayError, match=r"latin.csv:1: not UTF-8"):
        replay_csv(Pipeline(parse_config(CONFIG)), source, None)


def test_a_bom_before_the_header_is_skipped_on_both_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = "\r\n".join(series_rows(40)) + "\r\n"
    for header in ("timestamp,value", "timestamp,a,b"):
        text = body if header.count(",") == 1 else body.replace("\r\n", ",1.5\r\n")
        plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
        plain.write_text(f"{header}\r\n{text}", newline="")
        bom.write_text(f"\ufeff{header}\r\n{text}", newline="")
        want, summary = replay_both_paths(monkeypatch, plain, tmp_path)
        got, bom_summary = replay_both_paths(monkeypatch, bom, tmp_path)
        # Two value columns are a device: one more column, device_score.
        extra = b"" if header.count(",") == 1 else b",device_score"
        assert got == want and got.startswith(
            b"timestamp,value,anomaly_score,alert,alert_open,explanation" + extra + b"\r\n")
        assert (bom_summary.rows, bom_summary.skipped) == (summary.rows, 0) == (40, 0)
    pipeline = Pipeline(parse_config(CONFIG))
    replay_csv(pipeline, bom, None)
    assert pipeline.streams.names == ["bom/a", "bom/b", "bom/joint"]


def test_an_empty_value_is_skipped_and_counted_as_nan_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = series_rows(30)
    with_nan, with_gap = list(rows), list(rows)
    for i, gap in ((3, ""), (17, " "), (29, "")):
        stamp = rows[i].split(",")[0]
        with_nan[i], with_gap[i] = f"{stamp},nan", f"{stamp},{gap}"
    nan_file, gap_file = tmp_path / "nan.csv", tmp_path / "gap.csv"
    nan_file.write_text("timestamp,value\n" + "\n".join(with_nan) + "\n")
    gap_file.write_text("timestamp,value\n" + "\n".join(with_gap))  # the last one at EOF
    want, nan_summary = replay_both_paths(monkeypatch, nan_file, tmp_path)
    got, gap_summary = replay_both_paths(monkeypatch, gap_file, tmp_path)
    assert gap_summary.skipped == nan_summary.skipped == 3
    assert got == want  # the same scores; the value written empty, as for nan
    assert (gap_summary.rows, gap_summary.readings, gap_summary.skipped) == (30, 27, 3)
    assert got.splitlines()[4] == rows[3].split(",")[0].encode() + b",,0.0,0,0,"
    # Several columns: only the empty cell is skipped, the row's other value is scored.
    multi = tmp_path / "multi.csv"
    multi.write_text("timestamp,a,b\n" + "".join(f"{i},{i % 7},{'' if i == 5 else i}\n"
                                                 for i in range(20)))
    pipeline = Pipeline(parse_config(CONFIG))
    summary = replay_csv(pipeline, multi, tmp_path / "multi.out")
    assert (summary.rows, summary.readings, summary.skipped) == (20, 39, 1)
    assert pipeline.streams.stats.readings[:2].tolist() == [20, 19]


def test_a_value_that_is_not_a_number_names_its_line(tmp_path: Path) -> None:
    rows = series_rows(12)
    rows[8] = "2024-01-01 00:00:08,12 kPa"
    source = tmp_path / "units.csv"
    source.write_text("timestamp,value\n\n" + "\n".join(rows) + "\n")
    with pytest.raises(ReplayError, match=r"units.csv:11: field 2: '12 kPa' is not a number"):
        replay_csv(Pipeline(parse_config(CONFIG)), source, None)
    rows[8] = "yesterday,1"
    source.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    with pytest.raises(ReplayError, match=r"units.csv:10: timestamp 'yesterday'"):
        replay_csv(Pipeline(parse_config(CONFIG)), source, None)
    source.write_text('timestamp,value\n1,"' + "x" * 200_000 + "\n")  # an unclosed quote
    with pytest.raises(ReplayError, match=r"units.csv \(lines 2-2\): field larger than"):
        replay_csv(Pipeline(parse_config(CONFIG)), source, None)
