"""Replay test helpers: a small model config, series rows, and replays down the Python path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_ml.config import parse_config
from edge_ml.pipeline import Pipeline
from edge_ml.replay import ReplaySummary, kernels, reader, replay_csv

CONFIG = {"model": {"n_trees": 5, "height": 4, "window_size": 10, "warmup": 5,
                    "drift_block": 3, "drift_min_blocks": 2},
          "alerts": {"threshold": 0.3, "resolve_threshold": 0.2, "cooldown_readings": 0}}


def series_rows(n: int) -> list[str]:
    """``n`` rows ``YYYY-MM-DD HH:MM:SS,value`` of a smooth series, one a second."""
    return [f"2024-01-01 00:{i // 60:02d}:{i % 60:02d},{10 + np.sin(i / 5):.4f}"
            for i in range(n)]


def python_replay(monkeypatch: pytest.MonkeyPatch, source: Path, out: Path) -> ReplaySummary:
    """replay_csv with every chunk refused by the kernel: the Python reader and writer."""
    with monkeypatch.context() as patch:
        patch.setattr(reader, "parse_rows", lambda data, start, *_: (kernels.REFUSED, start, 0, 0))
        return replay_csv(Pipeline(parse_config(CONFIG)), source, out)


def replay_both_paths(monkeypatch: pytest.MonkeyPatch, source: Path,
                      folder: Path) -> tuple[bytes, ReplaySummary]:
    """Replay output of the kernel path, checked equal to the Python reader's."""
    fast, slow = folder / f"{source.stem}.fast", folder / f"{source.stem}.slow"
    summary = replay_csv(Pipeline(parse_config(CONFIG)), source, fast)
    python = python_replay(monkeypatch, source, slow)
    assert fast.read_bytes() == slow.read_bytes()
    counts = (summary.rows, summary.readings, summary.alerts, summary.skipped)
    assert (python.rows, python.readings, python.alerts, python.skipped) == counts
    return fast.read_bytes(), summary
