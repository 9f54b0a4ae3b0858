"""Bad input to ``replay`` and ``train``: a clear error naming the file and line, or a counted
skip (as for ``nan``); never a traceback, never rows silently lost.

The CLI cases run as real subprocesses, started together (each spends most of its second
importing NumPy and Numba).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_ml import replay as replay_module
from edge_ml.config import parse_config
from edge_ml.errors import CheckpointError, ReplayError, ReplayOutputError
from edge_ml.kernels import csvio
from edge_ml.pipeline import Pipeline
from edge_ml.replay import replay_csv, replay_tree
from edge_ml.storage import Storage
from edge_ml.train import _jsonl_chunks
from edge_ml.train import train as train_history

CONFIG = {"model": {"n_trees": 5, "height": 4, "window_size": 10, "warmup": 5,
                    "drift_block": 3, "drift_min_blocks": 2},
          "alerts": {"threshold": 0.3, "resolve_threshold": 0.2, "cooldown_readings": 0}}


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


def _replay_both_paths(monkeypatch: pytest.MonkeyPatch, source: Path,
                       folder: Path) -> tuple[bytes, replay_module.ReplaySummary]:
    """Replay output of the kernel path, checked equal to the Python reader's."""
    fast, slow = folder / f"{source.stem}.fast", folder / f"{source.stem}.slow"
    summary = replay_csv(Pipeline(parse_config(CONFIG)), source, fast)
    with monkeypatch.context() as patch:
        patch.setattr(replay_module, "parse_rows",
                      lambda data, start, *_: (csvio.REFUSED, start, 0, 0))
        python = replay_csv(Pipeline(parse_config(CONFIG)), source, slow)
    assert fast.read_bytes() == slow.read_bytes()
    counts = (summary.rows, summary.readings, summary.alerts, summary.skipped)
    assert (python.rows, python.readings, python.alerts, python.skipped) == counts
    return fast.read_bytes(), summary


def _rows(n: int) -> list[str]:
    return [f"2024-01-01 00:{i // 60:02d}:{i % 60:02d},{10 + np.sin(i / 5):.4f}"
            for i in range(n)]


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


def test_a_byte_that_is_not_utf8_is_named_with_its_line_in_any_chunk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_module, "REPLAY_CHUNK", 4)
    rows = _rows(20)
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
    body = "\r\n".join(_rows(40)) + "\r\n"
    for header in ("timestamp,value", "timestamp,a,b"):
        text = body if header.count(",") == 1 else body.replace("\r\n", ",1.5\r\n")
        plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
        plain.write_text(f"{header}\r\n{text}", newline="")
        bom.write_text(f"\ufeff{header}\r\n{text}", newline="")
        want, summary = _replay_both_paths(monkeypatch, plain, tmp_path)
        got, bom_summary = _replay_both_paths(monkeypatch, bom, tmp_path)
        assert got == want and got.startswith(b"timestamp,value,anomaly_score,alert\r\n")
        assert (bom_summary.rows, bom_summary.skipped) == (summary.rows, 0) == (40, 0)
    pipeline = Pipeline(parse_config(CONFIG))
    replay_csv(pipeline, bom, None)
    assert pipeline.streams.names == ["bom/a", "bom/b"]


def test_an_empty_value_is_skipped_and_counted_as_nan_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows(30)
    with_nan, with_gap = list(rows), list(rows)
    for i, gap in ((3, ""), (17, " "), (29, "")):
        stamp = rows[i].split(",")[0]
        with_nan[i], with_gap[i] = f"{stamp},nan", f"{stamp},{gap}"
    nan_file, gap_file = tmp_path / "nan.csv", tmp_path / "gap.csv"
    nan_file.write_text("timestamp,value\n" + "\n".join(with_nan) + "\n")
    gap_file.write_text("timestamp,value\n" + "\n".join(with_gap))  # the last one at EOF
    want, nan_summary = _replay_both_paths(monkeypatch, nan_file, tmp_path)
    got, gap_summary = _replay_both_paths(monkeypatch, gap_file, tmp_path)
    assert gap_summary.skipped == nan_summary.skipped == 3
    assert got == want  # the same scores; the value written empty, as for nan
    assert (gap_summary.rows, gap_summary.readings, gap_summary.skipped) == (30, 27, 3)
    assert got.splitlines()[4] == rows[3].split(",")[0].encode() + b",,0.0,0"
    # Several columns: only the empty cell is skipped, the row's other value is scored.
    multi = tmp_path / "multi.csv"
    multi.write_text("timestamp,a,b\n" + "".join(f"{i},{i % 7},{'' if i == 5 else i}\n"
                                                 for i in range(20)))
    pipeline = Pipeline(parse_config(CONFIG))
    summary = replay_csv(pipeline, multi, tmp_path / "multi.out")
    assert (summary.rows, summary.readings, summary.skipped) == (20, 39, 1)
    assert pipeline.streams.stats.readings[:2].tolist() == [20, 19]


def test_a_value_that_is_not_a_number_names_its_line(tmp_path: Path) -> None:
    rows = _rows(12)
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


def test_output_that_cannot_be_written_is_named_and_the_input_kept(tmp_path: Path) -> None:
    source = tmp_path / "series.csv"
    source.write_text("timestamp,value\n" + "\n".join(_rows(50)) + "\n")
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
    monkeypatch.setattr(replay_module, "REPLAY_CHUNK", 10)  # several chunks are written first
    source = tmp_path / "series.csv"
    source.write_text("timestamp,value\n" + "\n".join(_rows(60)) + "\n1,2,3\n")
    out = tmp_path / "out.csv"
    with pytest.raises(ReplayError, match=r"series.csv:62: expected 2 fields"):
        replay_csv(Pipeline(parse_config(CONFIG)), source, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series.csv"]  # no out, no .part
    out.write_text("an earlier, complete output\n")
    with pytest.raises(ReplayError):
        replay_csv(Pipeline(parse_config(CONFIG)), source, out)
    assert out.read_text() == "an earlier, complete output\n"  # kept as it was
    good = tmp_path / "good.csv"
    good.write_text("timestamp,value\n" + "\n".join(_rows(60)) + "\n")
    replay_csv(Pipeline(parse_config(CONFIG)), good, out)
    assert out.read_text().count("\n") == 61  # replaced once complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.csv", "out.csv", "series.csv"]


def test_jsonl_history_null_bom_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"stream": "a", "ts": 1, "value": 2}\n\n'
                     b'{"stream": "a", "ts": 2, "value": null}\n'
                     b'{"stream": "a", "ts": "2024-01-01T00:00:03Z", "value": NaN}\n')
    [(names, ts, values)] = list(_jsonl_chunks(path))
    assert names == ["a"] * 3 and ts[:2].tolist() == [1.0, 2.0]
    assert values[0] == 2.0 and np.isnan(values[1:]).all()
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"history.jsonl: empty file"):
        list(_jsonl_chunks(path))
    for line, reason in ((b'{"stream": "a", "ts": 1}', "'value'"),
                         (b'{"stream": "a", "ts"', "Expecting"),
                         (b'{"stream": "caf\\udce9", "ts": 1, "value": 2}', "surrogates"),
                         (b"[" * 100_000, "expected"),
                         (b'{"stream": "a", "ts": 1e400, "value": 1' + b"0" * 400 + b"}",
                          "int too large")):
        path.write_bytes(b'{"stream": "a", "ts": 1, "value": 2}\n' + line + b"\n")
        with pytest.raises(CheckpointError, match=rf"history.jsonl:2: .*{reason}"):
            list(_jsonl_chunks(path))


def test_train_reports_what_it_skipped(tmp_path: Path) -> None:
    csv_file, jsonl = tmp_path / "boiler.csv", tmp_path / "fleet.jsonl"
    csv_file.write_text("timestamp,value\n1,2\n2,\n3,nan\n4,5\n")
    jsonl.write_text('{"stream": "x", "ts": 1, "value": null}\n'
                     '{"stream": "x", "ts": 2, "value": 3}\n')
    storage = Storage(str(tmp_path / "state.db"))
    result = train_history(Pipeline(parse_config(CONFIG)), storage, [csv_file, jsonl], None, 5)
    assert (result.readings, result.skipped) == (3, 3)
