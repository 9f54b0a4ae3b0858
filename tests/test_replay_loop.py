"""The replay loop (edge_ml.replay.loop): columns as streams, gaps skipped and counted, and the
errors of the reader and writer threads raised in the caller."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from replay_helpers import CONFIG

from edge_ml.config import parse_config
from edge_ml.errors import ReplayError
from edge_ml.pipeline import Pipeline
from edge_ml.replay import reader, replay_csv


def _write_series(path: Path, values: np.ndarray, extra: np.ndarray | None = None) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"] + (["other"] if extra is not None else []))
        for i, v in enumerate(values):
            stamp = f"2024-01-01 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
            writer.writerow([stamp, v] + ([extra[i]] if extra is not None else []))


def test_replay_several_columns_and_gaps(tmp_path: Path) -> None:
    values = np.sin(np.arange(400) / 10.0)
    other = np.cos(np.arange(400) / 10.0)
    other[50] = np.nan
    source = tmp_path / "multi.csv"
    _write_series(source, values, other)
    pipeline = Pipeline(parse_config({}))
    summary = replay_csv(pipeline, source, tmp_path / "out.csv")
    assert (summary.rows, summary.readings, summary.skipped) == (400, 799, 1)
    # one stream per column, and the file's device alerts on one more (its joint view)
    assert pipeline.streams.names == ["multi/value", "multi/other", "multi/joint"]


def test_errors_of_the_reader_and_writer_threads_reach_the_caller(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setattr(reader, "REPLAY_CHUNK", 50)
    source = tmp_path / "series.csv"
    source.write_text("timestamp,value\n" + "".join(
        f"2024-01-01 00:{i // 60:02d}:{i % 60:02d},{i}\n" for i in range(3000)))
    before = threading.active_count()
    # No space left on /dev/full, found by the writer thread: a ReplayError naming the output.
    with pytest.raises(ReplayError, match=r"/dev/full: cannot write"):
        replay_csv(Pipeline(parse_config(CONFIG)), source, Path("/dev/full"))
    source.write_text(source.read_text() + "2024-01-01 01:00:00,1,2\n")
    with pytest.raises(ReplayError, match=r"series.csv:3002: expected 2 fields"):
        replay_csv(Pipeline(parse_config(CONFIG)), source, tmp_path / "out.csv")
    assert threading.active_count() == before


def test_replay_counts_the_drift_events_of_its_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(10.0, 1.0, 6000)
    steady = tmp_path / "steady.csv"
    _write_series(steady, values)
    values[3000:] += 12.0  # a new regime that stays
    shifted = tmp_path / "shifted.csv"
    _write_series(shifted, values)
    pipeline = Pipeline(parse_config(CONFIG))
    assert replay_csv(pipeline, steady, None).drifts == 0
    # The count is the file's own, not the pipeline's running total. (With this config's
    # 3-reading blocks the restarted stream drifts once more while its profile settles.)
    alone = replay_csv(Pipeline(parse_config(CONFIG)), shifted, None).drifts
    assert alone == 2
    assert replay_csv(pipeline, shifted, None).drifts == alone
