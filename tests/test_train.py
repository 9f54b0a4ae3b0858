"""``edge-ml train`` (edge_ml.train): history from CSV and JSONL, what it skips, and bad input
as an input error naming the file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from replay_helpers import CONFIG

from edge_ml.config import parse_config
from edge_ml.errors import ReplayError
from edge_ml.pipeline import Pipeline
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
