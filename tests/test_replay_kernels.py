"""The replay kernels (edge_ml.replay.kernels) against ``float``, ``repr`` and the Python path.

Whatever the kernels accept must come out byte for byte as the Python reader and writer give
it; what they refuse goes through the Python path, chunk by chunk.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replay_helpers import CONFIG, python_replay

from edge_ml.config import parse_config
from edge_ml.pipeline import Pipeline
from edge_ml.replay import kernels, reader, replay_csv
from edge_ml.timestamps import parse_timestamp

pytestmark = pytest.mark.kernels  # also run without the JIT (make test)


def _parse_one(line: str, columns: int = 1) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    data = np.frombuffer(line.encode(), dtype=np.uint8)
    ts = np.zeros(1)
    values = np.zeros((1, columns))
    first = np.zeros((1, 5), dtype=np.int64)
    status, _end, _lines, _rows = kernels.parse_rows(data, 0, 1, True, ts, values, first)
    return status, ts, values, first


def test_decimals_parse_as_float_and_print_as_repr() -> None:
    rng = random.Random(4)
    texts = ["0", "-0", "0.0", "-0.0", "00.50", "0.0001", "0.00001", "123456789012345",
             "1234567890123456", "999999999999999.0", "1000000000000000", "10000000000000000",
             "0.000000000000000000001", "1.", ".5", "-", "", "1e5", "nan", " 1", "+1"]
    for _ in range(20_000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 18)))
        cut = rng.randint(0, len(digits))
        text = digits[:cut] + ("." + digits[cut:] if cut < len(digits) else "")
        texts.append(("-" if rng.random() < 0.3 else "") + text)
        texts.append(f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 9)}f}")
        texts.append(repr(rng.uniform(-1, 1) * 10.0 ** rng.randint(-8, 17)))
    accepted = 0
    out = np.empty(200, dtype=np.uint8)
    for text in texts:
        line = f"2024-01-01 00:00:00,{text}\n"
        status, _ts, values, first = _parse_one(line)
        if status != kernels.OK:
            continue
        accepted += 1
        value = float(text)
        assert values[0, 0] == value and math.copysign(1, values[0, 0]) == math.copysign(1, value)
        data = np.frombuffer(line.encode(), dtype=np.uint8)
        size = kernels.format_rows(data, first, np.array([0.25]), np.array([False]),
                                   np.array([True]), *_why(1, "model"), out)
        want = f"2024-01-01 00:00:00,{value!r},0.25,0,1,model\r\n"
        assert bytes(out[:size]).decode() == want, text
    assert accepted > len(texts) // 2


@pytest.mark.needs_jit
def test_every_rounded_score_prints_as_repr() -> None:
    scores = np.arange(1_000_001) / 1e6
    rng = np.random.default_rng(0)
    scores = np.concatenate([scores, rng.random(100_000) ** 4,
                             [-0.0, 4.9e-7, 5e-7, 5.1e-7, 0.9999995, 0.99999949, 1e-300]])
    data = np.frombuffer(b"x,1\n", dtype=np.uint8)
    first = np.zeros((len(scores), 5), dtype=np.int64)
    first[:, 1] = 1
    first[:, 3] = 1
    out = np.empty(len(scores) * (1 + kernels.ROW_EXTRA), dtype=np.uint8)
    none = np.zeros(len(scores), dtype=bool)
    size = kernels.format_rows(data, first, scores, none, none, *_why(len(scores)), out)
    got = bytes(out[:size]).decode().split("\r\n")[:-1]
    want = [f"x,1.0,{s!r},0,0," for s in np.round(scores, 6).tolist()]
    assert got == want
    for bad in (1.0000006, -0.0000006, math.nan, math.inf):
        assert kernels.format_rows(data, first[:1], np.array([bad]), none[:1], none[:1],
                                   *_why(1), out) == -1


def _why(rows: int, text: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row explained by ``text``: format_rows' (why, why_text, why_end) arguments."""
    return (np.zeros(rows, dtype=np.int64), np.frombuffer(text.encode() or b" ", np.uint8),
            np.array([len(text)], dtype=np.int64))


def test_iso_timestamps_as_parse_timestamp() -> None:
    rng = random.Random(5)
    start = datetime(1900, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        when = start + timedelta(seconds=rng.randint(0, 301 * 365 * 86400 - 1))
        stamp = when.strftime("%Y-%m-%d" + rng.choice(" T") + "%H:%M:%S")
        status, ts, _values, _first = _parse_one(f"{stamp},1\n")
        if when.year > 2200:
            assert status == kernels.REFUSED
            continue
        assert status == kernels.OK and ts[0] == parse_timestamp(stamp), stamp
    for stamp in ("2023-02-29 00:00:00", "2024-13-01 00:00:00", "2024-00-10 00:00:00",
                  "2024-04-31 00:00:00", "2024-01-01 24:00:00", "2024-01-01 00:60:00",
                  "2024-01-01 00:00:60", "1899-12-31 23:59:59", "2024-01-01x00:00:00",
                  "2024/01/01 00:00:00", "2024-01-01 00:00:0a"):
        assert _parse_one(f"{stamp},1\n")[0] == kernels.REFUSED, stamp
    assert _parse_one("2000-02-29 12:00:00,1\n")[0] == kernels.OK


BASE = datetime(2024, 1, 1, tzinfo=UTC)
STAMPS = [
    lambda d: d.strftime("%Y-%m-%d %H:%M:%S"),
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S"),
    lambda d: str(int(d.timestamp())),
    lambda d: f"{d.timestamp():.3f}",
    lambda d: d.isoformat(),  # refused: the Python reader's
]
VALUES = st.one_of(
    st.floats(-1e4, 1e4).map(lambda v: f"{v:.5f}"),
    st.integers(-1000, 1000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "-0.0", "1.50", '"2.5"', "nan", " 3", "", " ", '""']),
)


@st.composite
def csv_files(draw: st.DrawFn) -> str:
    n_cols = draw(st.integers(1, 3))
    bom = "\ufeff" if draw(st.integers(0, 5)) == 0 else ""  # Excel's "CSV UTF-8"
    lines = [bom + "timestamp," + ",".join(f"c{i}" for i in range(n_cols))]
    mixed = draw(st.booleans())
    fmt = draw(st.sampled_from(STAMPS[:4]))
    for i in range(draw(st.integers(0, 60))):
        when = BASE + timedelta(seconds=i * 60 + draw(st.integers(0, 59)))
        stamp = (draw(st.sampled_from(STAMPS)) if mixed else fmt)(when)
        lines.append(",".join([stamp, *(draw(VALUES) for _ in range(n_cols))]))
        if draw(st.integers(0, 15)) == 0:
            lines.append("")
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + (newline if draw(st.booleans()) else "")


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(csv_files())
def test_replay_output_matches_the_python_path(tmp_path_factory: pytest.TempPathFactory,
                                               monkeypatch: pytest.MonkeyPatch,
                                               text: str) -> None:
    folder = tmp_path_factory.mktemp("fast")
    source = folder / "in.csv"
    source.write_bytes(text.encode())
    # Small chunks and reads: chunk boundaries, refills and refused chunks between taken ones.
    monkeypatch.setattr(reader, "REPLAY_CHUNK", 7)
    monkeypatch.setattr(reader, "REPLAY_READ_BYTES", 61)
    fast, slow = folder / "fast.csv", folder / "slow.csv"
    replay_csv(Pipeline(parse_config(CONFIG)), source, fast)
    python_replay(monkeypatch, source, slow)
    assert fast.read_bytes() == slow.read_bytes()


def test_whole_files_stay_on_the_kernel_path_across_reads(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that ends inside a line asks for more bytes; it never refuses the chunk."""
    statuses: list[int] = []
    parse = reader.parse_rows

    def counting(*args):  # type: ignore[no-untyped-def]
        result = parse(*args)
        statuses.append(int(result[0]))
        return result

    monkeypatch.setattr(reader, "parse_rows", counting)
    monkeypatch.setattr(reader, "REPLAY_CHUNK", 5)
    for newline in ("\n", "\r\n"):
        rows = [f"2024-01-01 00:{i // 60:02d}:{i % 60:02d},{i * 0.25 - 3:.2f},{i}"
                for i in range(90)]
        rows[7] = ""
        rows[30] = "1704067230.5,-0.5,12"
        source = tmp_path / "whole.csv"
        source.write_text("timestamp,a,b\n" + newline.join(rows) + newline, newline="")
        for read_bytes in (1, 7, 29, 64, 1 << 20):
            monkeypatch.setattr(reader, "REPLAY_READ_BYTES", read_bytes)
            statuses.clear()
            replay_csv(Pipeline(parse_config(CONFIG)), source, tmp_path / "out.csv")
            assert kernels.REFUSED not in statuses and kernels.OK in statuses
