"""The replay writer (edge_ml.replay.writer): rows byte for byte as ``csv.writer`` writes them,
and an output that is complete or not there at all."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from replay_helpers import CONFIG, series_rows

from edge_ml.config import parse_config
from edge_ml.errors import ReplayError, ReplayOutputError
from edge_ml.pipeline import Pipeline
from edge_ml.replay import reader, replay_csv, replay_tree
from edge_ml.replay.writer import RowMarks, output_rows

_floats = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-1e6, 1e6).map(
    lambda v: round(v, 5))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=25), _floats, st.floats(0.0, 1.0), st.booleans(),
                          st.booleans(), st.integers(0, 2)),
                min_size=1, max_size=40),
       st.lists(st.text(max_size=12), min_size=3, max_size=3), st.booleans())
def test_output_rows_are_what_csv_writer_writes(
        rows: list[tuple[str, float, float, bool, bool, int]], texts: list[str],
        device: bool) -> None:
    stamps = [r[0] for r in rows]
    first = np.array([r[1] for r in rows])
    # A device's file has one more column, its device_score (here: the score reversed).
    device_score = np.array([r[2] for r in rows])[::-1].copy() if device else None
    marks = RowMarks(np.array([r[2] for r in rows]), np.array([r[3] for r in rows]),
                     np.array([r[4] for r in rows]), np.array([r[5] for r in rows]),
                     tuple(texts), device_score)
    buffer = io.StringIO(newline="")
    columns = [stamps, [repr(v) if math.isfinite(v) else "" for v in first.tolist()],
               np.round(marks.score, 6).tolist(), marks.alert.astype(np.int8).tolist(),
               marks.alert_open.astype(np.int8).tolist(), [texts[r[5]] for r in rows]]
    if device_score is not None:
        columns.append(np.round(device_score, 6).tolist())
    csv.writer(buffer).writerows(zip(*columns, strict=True))
    fast = output_rows(stamps, first, marks)
    if fast is None:  # csv.writer quotes some text: replay lets it write the chunk
        assert any(c in "".join(stamps + texts) for c in '",\r\n')
    else:
        assert fast == buffer.getvalue()


def test_output_that_cannot_be_written_is_named_and_the_input_kept(tmp_path: Path) -> None:
    source = tmp_path / "series.csv"
    source.write_text("timestamp,value\n" + "\n".join(series_rows(50)) + "\n")
    kept = source.read_bytes()
    with pytest.raises(ReplayOutputError, match=r"series.csv: is the input file"):
        replay_csv(Pipeline(parse_config(CONFIG)), source, tmp_path / "." / "series.csv")
    with pytest.raises(ReplayOutputError, match=r"series.csv: is the input file"):
        replay_tree(parse_config(CONFIG), tmp_path, tmp_path)
    assert source.read_bytes() == kept
    (tmp_path / "blocked").write_text("a file where the output folder must go")
    with pytest.raises(ReplayOutputError, match=r"blocked: cannot create the folder"):
        replay_tree(parse_config(CONFIG), tmp_path, tmp_path / "blocked")
    # A header that cannot be read fails before the output is created.
    bad = tmp_path / "in" / "bad.csv"
    bad.parent.mkdir()
    bad.write_text("when,value\n1,2\n")
    with pytest.raises(ReplayError, match="expected a header"):
        replay_csv(Pipeline(parse_config(CONFIG)), bad, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_a_replay_that_fails_halfway_leaves_no_partial_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "REPLAY_CHUNK", 10)  # several chunks are written first
    source = tmp_path / "series.csv"
    source.write_text("timestamp,value\n" + "\n".join(series_rows(60)) + "\n1,2,3\n")
    out = tmp_path / "out.csv"
    with pytest.raises(ReplayError, match=r"series.csv:62: expected 2 fields"):
        replay_csv(Pipeline(parse_config(CONFIG)), source, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series.csv"]  # no out, no .part
    out.write_text("an earlier, complete output\n")
    with pytest.raises(ReplayError):
        replay_csv(Pipeline(parse_config(CONFIG)), source, out)
    assert out.read_text() == "an earlier, complete output\n"  # kept as it was
    good = tmp_path / "good.csv"
    good.write_text("timestamp,value\n" + "\n".join(series_rows(60)) + "\n")
    replay_csv(Pipeline(parse_config(CONFIG)), good, out)
    assert out.read_text().count("\n") == 61  # replaced once complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.csv", "out.csv", "series.csv"]
