"""Replay output's ``alert_open`` and ``explanation`` columns (issue 14), on both write paths."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from replay_helpers import replay_both_paths

from edge_ml.kernels.alerting import OPENED, RESOLVED
from edge_ml.kernels.device_forest import JOINT_WINDOW
from edge_ml.kernels.explain import MODEL, SEASONAL, STUCK
from edge_ml.replay import reader
from edge_ml.replay.loop import explanation_texts, row_marks


def _pump_rows(n: int) -> list[str]:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(n):
        flow = 10 + rng.normal(0, 0.2)
        current = 5 + rng.normal(0, 0.1) + (4.0 if i == 300 else 0.0)  # one spike, on current
        rows.append(f"2024-01-01 {i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d},"
                    f"{flow:.4f},{current:.4f}")
    return rows


def test_multi_column_output_says_which_column_and_view_and_when_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks, so an alert stays open across a chunk boundary.
    monkeypatch.setattr(reader, "REPLAY_CHUNK", 64)
    source = tmp_path / "pump.csv"
    source.write_text("timestamp,flow,current\n" + "\n".join(_pump_rows(600)) + "\n")
    out, summary = replay_both_paths(monkeypatch, source, tmp_path)  # kernel == Python bytes
    rows = list(csv.DictReader(out.decode().splitlines()))
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "alert", "alert_open",
                             "explanation", "device_score"]
    assert len(rows) == 600 and summary.alerts >= 1
    # The device's raw forest score: 0 while its first window fills, then in (0, 1].
    device_score = np.array([float(r["device_score"]) for r in rows])
    assert (device_score[:JOINT_WINDOW] == 0).all()
    assert (device_score[JOINT_WINDOW:] > 0).all() and (device_score <= 1).all()
    spike = rows[300]
    assert spike["alert"] == "1" and spike["alert_open"] == "1"
    assert spike["explanation"] == "seasonal:current"
    # alert_open runs from every opening row until the level resolves it, and only then.
    is_open, opened_rows = False, 0
    for row in rows:
        if row["alert"] == "1":
            is_open, opened_rows = True, opened_rows + 1
        elif is_open and float(row["anomaly_score"]) < 0.2:  # the resolve threshold
            is_open = False
        assert row["alert_open"] == ("1" if is_open else "0"), row
        # A level has a view; a row with none (warming up) has no explanation.
        assert (row["explanation"] != "") == (float(row["anomaly_score"]) > 0)
        assert row["explanation"].split(":")[-1] in ("", "flow", "current")
    assert opened_rows == summary.alerts
    assert sum(r["alert_open"] == "1" for r in rows) > summary.alerts  # open beyond its row


def test_row_marks_carries_open_alerts_across_chunks() -> None:
    texts = explanation_texts(["a", "b"])
    score = np.array([[0.1, 0.6], [0.2, 0.1], [0.0, 0.0], [0.3, 0.05]])
    codes = np.array([[0, OPENED], [0, 0], [0, 0], [0, RESOLVED]], dtype=np.int8)
    view = np.array([[STUCK, SEASONAL], [MODEL, MODEL], [0, 0], [STUCK, 0]], dtype=np.int8)
    marks, still = row_marks(score, codes, view, None, np.array([False, False]), texts)
    assert marks.alert.tolist() == [True, False, False, False]
    assert marks.alert_open.tolist() == [True, True, True, False]
    assert marks.explanations() == ["seasonal:b", "model:a", "", "stuck:a"]
    assert still.tolist() == [False, False]
    # Open before the chunk, resolved on its second row.
    codes = np.array([[0, 0], [RESOLVED, 0], [0, 0]], dtype=np.int8)
    marks, still = row_marks(score[:3], codes, view[:3], None, np.array([True, False]), texts)
    assert marks.alert_open.tolist() == [True, False, False]
    assert explanation_texts(["value"])[1:] == ("seasonal", "stuck", "model", "joint", "shift")


def test_replay_cli_single_column_gets_the_columns(tmp_path: Path) -> None:
    source = tmp_path / "temp.csv"
    rng = np.random.default_rng(1)
    values = rng.normal(20, 0.5, 400)
    values[350] += 10
    source.write_text("timestamp,value\n" + "".join(
        f"{1_700_000_000 + 60 * i},{v:.4f}\n" for i, v in enumerate(values)))
    out = tmp_path / "out.csv"
    subprocess.run([sys.executable, "-m", "edge_ml", "replay", str(source), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    rows = list(csv.DictReader(out.open(newline="")))
    assert rows[350]["alert"] == rows[350]["alert_open"] == "1"
    assert rows[350]["explanation"] == "seasonal"


def test_a_multi_column_file_is_one_device_whose_joint_view_finds_a_broken_relationship(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 1500
    load = 0.5 + 0.35 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 0.05, n)
    current = 2 + 6 * load + rng.normal(0, 0.15, n)
    flow = 10 * load + rng.normal(0, 0.2, n)
    fault = 1400
    # current of a busy hour, flow of a quiet one: each usual, the pair not
    current[fault], flow[fault] = 2 + 6 * 0.7, 10 * 0.3
    source = tmp_path / "pump.csv"
    source.write_text("timestamp,current,flow\n" + "".join(
        f"{1_700_000_000 + 300 * i},{c:.4f},{f:.4f}\n"
        for i, (c, f) in enumerate(zip(current, flow, strict=True))))
    out = tmp_path / "out.csv"
    subprocess.run([sys.executable, "-m", "edge_ml", "replay", str(source), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    rows = list(csv.DictReader(out.open(newline="")))
    assert rows[fault]["alert"] == "1"
    assert rows[fault]["explanation"] in ("joint:current", "joint:flow")
    assert {r["explanation"].split(":")[0] for r in rows} <= {"", "seasonal", "stuck", "model",
                                                               "joint", "shift"}
