"""``edge-ml replay`` (and ``train``'s bad input) through subprocesses: one output row per input
row, the same pipeline; bad input a clear error, never a traceback.

The bad-input cases run as real subprocesses, started together (each spends most of its second
importing NumPy and Numba).
"""

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
    assert "1500 rows, " in result.stderr and " 0 drift events, " in result.stderr
    assert " 0 of 1 streams heavy-tailed, " in result.stderr  # Gaussian noise
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1500
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "alert", "alert_open",
                             "explanation"]
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


def test_a_heavy_tail_floor_quiets_a_heavy_tailed_sensor(tmp_path: Path) -> None:
    """A 1 Hz Student-t3 sensor (no anomaly at all) replayed with the shipped settings and with
    ``[model] heavy_tail_floor = 0``: its shoulder tells the heavy tail within its first
    minutes (the replay says so on stderr, whatever the floor), and its false alerts fall to a
    quarter (12 -> 3 on this seed)."""
    source = tmp_path / "t3.csv"
    _write_series(source, 20.0 + np.random.default_rng(0).standard_t(3, 8000))
    alerts = []
    for floor in (1.0, 0.0):
        config = tmp_path / f"floor{floor}.toml"
        config.write_text(f"[model]\nheavy_tail_floor = {floor}\n")
        out = tmp_path / f"out{floor}.csv"
        result = subprocess.run(
            [sys.executable, "-m", "edge_ml", "replay", str(source), "--config", str(config),
             "--out", str(out)], capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert " 1 of 1 streams heavy-tailed, " in result.stderr  # at any floor
        alerts.append(sum(row["alert"] == "1" for row in csv.DictReader(out.open())))
    shipped, quiet = alerts
    assert shipped >= 6 and 3 * quiet <= shipped


def test_replay_of_a_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "broken.csv"
    source.write_text("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:00:01,abc\n")
    result = subprocess.run([sys.executable, "-m", "edge_ml", "replay", str(source)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "broken.csv" in result.stderr and "Traceback" not in result.stderr


def _run_all(*commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """``python -m edge_ml <args>`` for each command, all running at once."""
    running = [subprocess.Popen([sys.executable, "-m", "edge_ml", *args], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for args in commands]
    done = []
    for args, process in zip(commands, running, strict=True):
        out, err = process.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(args, process.returncode, out, err))
    return done




def test_cli_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    latin1 = tmp_path / "bad.csv"  # what a Latin-1 export looks like to a UTF-8 reader
    latin1.write_bytes(b"timestamp,value\n1,2\n3,\xe94\n")
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"stream": "a", "ts": 1, "value": 2}\n{"stream": "caf\xe9", "ts": 2}\n')
    empty_csv = tmp_path / "empty.csv"
    empty_csv.touch()
    good = tmp_path / "good.csv"
    good.write_text("timestamp,value\n1,2\n")
    dbs = iter(range(100))

    def db() -> str:  # one database each: the processes run at the same time
        return str(tmp_path / "db" / f"state{next(dbs)}.db")

    (tmp_path / "db").mkdir()
    cases = [  # (args, exit code, what stderr says)
        (["replay", str(latin1)], 1, "bad.csv:3: not UTF-8 text (byte 0xe9 at column 3)"),
        (["train", str(latin1), "--db", db()], 1, "bad.csv:3: not UTF-8 text"),
        (["train", str(jsonl), "--db", db()], 1, "bad.jsonl:2: not UTF-8 text (byte 0xe9"),
        (["replay", str(empty_csv)], 1, "empty.csv: empty file"),
        (["replay", str(tmp_path / "missing.csv")], 2, "missing.csv' does not exist"),
        (["train", str(tmp_path / "missing.csv"), "--db", db()], 2, "does not exist"),
        (["train", str(tmp_path), "--db", db()], 2, "is a directory"),
        (["replay", str(good), "--out", str(tmp_path / "no" / "such" / "o.csv")], 2,
         f"--out: {tmp_path / 'no' / 'such' / 'o.csv'}: cannot write: No such file"),
        (["replay", str(good), "--out", str(tmp_path)], 2,
         f"--out: {tmp_path}: cannot write: Is a directory"),
        (["replay", str(tmp_path), "--out", str(good)], 2, f"--out: {good}: cannot create"),
    ]
    for (args, code, message), result in zip(cases, _run_all(*(c[0] for c in cases)),
                                             strict=True):
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert result.returncode == code and message in result.stderr, (args, result.stderr)
    assert good.read_text() == "timestamp,value\n1,2\n"  # not taken for a folder's output
