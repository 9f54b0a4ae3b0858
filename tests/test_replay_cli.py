"""``edge-ml replay`` through a subprocess: one output row per input row, same pipeline."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_ml.config import parse_config
from edge_ml.pipeline import Pipeline
from edge_ml.replay import replay_csv


def _write_series(path: Path, values: np.ndarray, extra: np.ndarray | None = None) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"] + (["other"] if extra is not None else []))
        for i, v in enumerate(values):
            stamp = f"2024-01-01 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
            writer.writerow([stamp, v] + ([extra[i]] if extra is not None else []))


def test_replay_writes_one_scored_row_per_input_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(10.0, 0.5, 1500)
    values[1200:1205] += 8.0
    source = tmp_path / "series.csv"
    _write_series(source, values)
    config = tmp_path / "c.toml"
    config.write_text("[model]\nwindow_size = 100\nwarmup = 150\n")
    out = tmp_path / "out.csv"
    result = subprocess.run(
        [sys.executable, "-m", "edge_ml", "replay", str(source), "--config", str(config),
         "--out", str(out)], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1500
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "alert"]
    scores = np.array([float(r["anomaly_score"]) for r in rows])
    alerts = np.array([int(r["alert"]) for r in rows])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert not scores[:150].any()  # warm-up is "unknown", scored 0
    assert alerts[1200:1210].any()
    # The same pipeline in-process gives the same scores (the CLI adds nothing).
    again = tmp_path / "again.csv"
    replay_csv(Pipeline(parse_config({"model": {"window_size": 100, "warmup": 150}})), source,
               again)
    assert again.read_text() == out.read_text()


def test_replay_several_columns_and_gaps(tmp_path: Path) -> None:
    values = np.sin(np.arange(400) / 10.0)
    other = np.cos(np.arange(400) / 10.0)
    other[50] = np.nan
    source = tmp_path / "multi.csv"
    _write_series(source, values, other)
    pipeline = Pipeline(parse_config({}))
    summary = replay_csv(pipeline, source, tmp_path / "out.csv")
    assert (summary.rows, summary.readings, summary.skipped) == (400, 799, 1)
    assert pipeline.streams.names == ["multi/value", "multi/other"]


def test_replay_of_a_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "broken.csv"
    source.write_text("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:00:01,abc\n")
    result = subprocess.run([sys.executable, "-m", "edge_ml", "replay", str(source)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "broken.csv" in result.stderr and "Traceback" not in result.stderr
