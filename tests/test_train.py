"""``edge-ml train`` (edge_ml.train): history from CSV and JSONL, what it skips, and bad input
as an input error naming the file and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from replay_helpers import CONFIG

from edge_ml.config import parse_config
from edge_ml.errors import ReplayError
from edge_ml.pipeline import Pipeline
from edge_ml.replay import replay_csv
from edge_ml.state import export_state
from edge_ml.storage import Storage
from edge_ml.train import _jsonl_chunks
from edge_ml.train import train as train_history


def test_jsonl_history_null_bom_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"stream": "a", "ts": 1, "value": 2}\n\n'
                     b'{"stream": "a", "ts": 2, "value": null}\n'
                     b'{"stream": "a", "ts": "2024-01-01T00:00:03Z", "value": NaN}\n')
    [(names, ts, values)] = list(_jsonl_chunks(path))
    assert names == ["a"] * 3 and ts[:2].tolist() == [1.0, 2.0]
    assert values[0] == 2.0 and np.isnan(values[1:]).all()
    path.write_bytes(b"")
    with pytest.raises(ReplayError, match=r"history.jsonl: empty file"):
        list(_jsonl_chunks(path))
    for line, reason in ((b'{"stream": "a", "ts": 1}', "'value'"),
                         (b'{"stream": "a", "ts"', "Expecting"),
                         (b'{"stream": "caf\\udce9", "ts": 1, "value": 2}', "surrogates"),
                         (b"[" * 100_000, "expected"),
                         (b'{"stream": "a", "ts": 1e400, "value": 1' + b"0" * 400 + b"}",
                          "int too large")):
        path.write_bytes(b'{"stream": "a", "ts": 1, "value": 2}\n' + line + b"\n")
        with pytest.raises(ReplayError, match=rf"history.jsonl:2: .*{reason}"):
            list(_jsonl_chunks(path))


def test_train_reports_what_it_skipped(tmp_path: Path) -> None:
    csv_file, jsonl = tmp_path / "boiler.csv", tmp_path / "fleet.jsonl"
    csv_file.write_text("timestamp,value\n1,2\n2,\n3,nan\n4,5\n")
    jsonl.write_text('{"stream": "x", "ts": 1, "value": null}\n'
                     '{"stream": "x", "ts": 2, "value": 3}\n')
    storage = Storage(str(tmp_path / "state.db"))
    result = train_history(Pipeline(parse_config(CONFIG)), storage, [csv_file, jsonl], None, 5)
    assert (result.readings, result.skipped) == (3, 3)


def test_bad_history_is_an_input_error_naming_the_file_and_line(tmp_path: Path) -> None:
    """Bad history is a ReplayError (as replay reports bad input), not a CheckpointError, and no
    checkpoint is saved."""
    csv_file, jsonl = tmp_path / "boiler.csv", tmp_path / "fleet.jsonl"
    csv_file.write_text("timestamp,value\n1,2\n2,3\n3,12 kPa\n")
    jsonl.write_text('{"stream": "x", "ts": 1, "value": 2}\n{"stream": "x", "ts": "yesterday", '
                     '"value": 3}\n')
    storage = Storage(str(tmp_path / "state.db"))
    cases = ((csv_file, r"boiler.csv:4: field 2: '12 kPa' is not a number"),
             (jsonl, r'fleet.jsonl:2: expected \{"stream", "ts", "value"\}: Invalid isoformat'))
    for source, message in cases:
        with pytest.raises(ReplayError, match=message) as caught:
            train_history(Pipeline(parse_config(CONFIG)), storage, [source], None, 5)
        assert type(caught.value) is ReplayError
    assert storage.checkpoints() == []


def test_cli_train_bad_history_exits_as_replay_does(tmp_path: Path) -> None:
    jsonl = tmp_path / "fleet.jsonl"
    jsonl.write_text('{"stream": "x", "ts": 1, "value": 2}\n{"stream": "x", "ts": 2}\n')
    result = subprocess.run([sys.executable, "-m", "edge_ml", "train", str(jsonl), "--db",
                             str(tmp_path / "state.db")], capture_output=True, text=True,
                            timeout=120)
    assert "Traceback" not in result.stderr
    assert result.returncode == 1  # what replay exits with for bad input (ClickException)
    assert "fleet.jsonl:2: expected" in result.stderr and "'value'" in result.stderr


def test_csv_history_is_learned_as_replay_reads_it(tmp_path: Path) -> None:
    """train reads a CSV through the replay reader: the same streams, readings and state as a
    replay of the file gives."""
    source = tmp_path / "plant.csv"
    source.write_text("timestamp,a,b\n" + "".join(
        f"2024-01-01 00:{i // 60:02d}:{i % 60:02d},{np.sin(i / 7):.4f},"
        f"{'' if i % 13 == 0 else f'{np.cos(i / 5):.3f}'}\n" for i in range(300)))
    trained = Pipeline(parse_config(CONFIG))
    result = train_history(trained, Storage(str(tmp_path / "state.db")), [source], None, 5)
    replayed = Pipeline(parse_config(CONFIG))
    summary = replay_csv(replayed, source, None)
    assert (result.readings, result.skipped) == (summary.readings, summary.skipped) == (576, 24)
    assert trained.streams.names == replayed.streams.names == ["plant/a", "plant/b",
                                                               "plant/joint"]
    _assert_same(export_state(trained)["state"], export_state(replayed)["state"])


def _assert_same(left: object, right: object, where: str = "state") -> None:
    if isinstance(left, dict):
        assert isinstance(right, dict) and left.keys() == right.keys(), where
        for key in left:
            _assert_same(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, np.ndarray):
        np.testing.assert_array_equal(left, right, err_msg=where)
    else:
        assert left == right, where
