"""``edge-ml replay``: CSV files through the :class:`~edge_ml.pipeline.Pipeline` the daemon runs.

Rows are read in chunks of ``REPLAY_CHUNK`` lines, parsed and written by the Numba kernels of
:mod:`edge_ml.kernels.csvio` where a chunk is plain (timestamps as ``YYYY-MM-DD HH:MM:SS`` or
numbers, plain decimals), by Python otherwise, byte-identically; reading and writing run on
their own threads beside the model. A folder replays file by file into a mirrored tree.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import math
import operator
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_ml.config import Config
from edge_ml.errors import ReplayError, ReplayOutputError
from edge_ml.kernels.alerting import OPENED
from edge_ml.kernels.csvio import NEED_MORE, REFUSED, ROW_EXTRA, format_rows, parse_rows
from edge_ml.pipeline import Pipeline

REPLAY_CHUNK = 8192


def parse_timestamp(text: str) -> float:
    """Epoch seconds from a number or an ISO 8601 / ``YYYY-MM-DD HH:MM:SS`` text (UTC if naive)."""
    try:
        return float(text)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


_count_commas = operator.methodcaller("count", ",")


@dataclass
class _Chunk:
    """One chunk of replay input: ``REPLAY_CHUNK`` lines, blank ones skipped.

    Parsed by :func:`edge_ml.kernels.csvio.parse_rows` (``data`` and ``first`` set: the
    output rows are written from the input bytes) or by the Python reader (``stamps`` set).
    """

    ts: np.ndarray
    values: np.ndarray  # [rows, columns]
    stamps: list[str] | None = None
    data: np.ndarray | None = None  # the bytes the rows were parsed from
    first: np.ndarray | None = None  # csvio's per-row offsets and first value

    def stamp_texts(self) -> list[str]:
        if self.stamps is None:
            assert self.data is not None and self.first is not None
            data = self.data
            self.stamps = [data[a:b].tobytes().decode() for a, b in self.first[:, :2].tolist()]
        return self.stamps


# Excel's "CSV UTF-8" (and other Windows tools) start the file with a byte order mark: it is
# taken as part of the header line (its bytes are skipped with it), not as part of a name.
BOM = "\ufeff"


def _utf8_size(path: Path, first_line: int, lines: list[str]) -> int:
    """The UTF-8 byte length of ``lines`` (read with ``errors="surrogateescape"``).

    Bytes that are not UTF-8 came in as lone surrogates: ReplayError naming the first line
    (``first_line`` is the file line of ``lines[0]``) and the byte, instead of a
    ``UnicodeDecodeError``. The whole file is refused rather than the line skipped: such a
    byte means the file is in another encoding (Latin-1, Windows-1252), not one bad reading.
    """
    try:
        return len("".join(lines).encode("utf-8"))
    except UnicodeEncodeError:
        pass
    for i, line in enumerate(lines):
        try:
            line.encode("utf-8")
        except UnicodeEncodeError as exc:
            before = line[:exc.start].encode("utf-8", "surrogateescape")
            byte = line[exc.start].encode("utf-8", "surrogateescape")
            raise ReplayError(f"{path}:{first_line + i}: not UTF-8 text (byte 0x{byte.hex()} "
                              f"at column {len(before) + 1}); save the file as UTF-8") from None
    raise AssertionError("unreachable: the joined lines did not encode")


def _read_header(path: Path) -> tuple[list[str], int]:
    """The value column names and the byte length of the header line (a BOM included)."""
    try:
        with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
            line = handle.readline()
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not line:
        raise ReplayError(f"{path}: empty file (expected a header 'timestamp,value[,...]')")
    size = _utf8_size(path, 1, [line])
    try:
        header = next(csv.reader([line.removeprefix(BOM)]), [])
    except csv.Error as exc:
        raise ReplayError(f"{path}:1: {exc}") from exc
    if len(header) < 2 or header[0].strip().lower() not in ("timestamp", "ts", "time"):
        raise ReplayError(f"{path}: expected a header 'timestamp,value[,...]', got {header}")
    return [c.strip() for c in header[1:]], size


def _text_chunk(path: Path, lines: list[str], width: int, line_no: int) -> _Chunk | None:
    """Python reader of one chunk (``line_no``: the file line before it); None if all blank.

    Chunks without quote characters are split with ``str.split`` (the ``csv`` module costs more
    than the whole model per row); a chunk with quotes goes through ``csv.reader``. Both give
    the same fields.
    """
    first_line = line_no + 1
    text = "".join(lines)

    def line_of(row: int) -> int:  # the file line of a row (blank lines are not rows)
        nonblank = [i for i, line in enumerate(lines) if line.strip("\r\n")]
        return first_line + nonblank[row]

    if '"' in text or "\r" in text.replace("\r\n", "\n"):
        try:
            rows = [row for row in csv.reader(lines) if row]
        except csv.Error as exc:  # a field beyond csv's size limit (an unclosed quote)
            raise ReplayError(f"{path} (lines {first_line}-{line_no + len(lines)}): "
                              f"{exc}") from exc
        bad = next((i for i, row in enumerate(rows) if len(row) != width), None)
    else:
        rows_text = list(filter(None, text.replace("\r\n", "\n").split("\n")))
        rows = None
        bad = None
        if set(map(_count_commas, rows_text)) - {width - 1}:  # C loop; rare: find it
            bad = next(i for i, line in enumerate(rows_text)
                       if line.count(",") != width - 1)
    if bad is not None:
        raise ReplayError(f"{path}:{line_of(bad)}: expected {width} fields")
    if rows is None:
        if not rows_text:  # blank lines only (",".join([]) would give one empty row)
            return None
        flat = ",".join(rows_text).split(",")
        stamps = flat[0::width]
        values_text = [flat[i::width] for i in range(1, width)]
    else:
        stamps = [row[0] for row in rows]
        values_text = [[row[i] for row in rows] for i in range(1, width)]
    if not stamps:
        return None
    ts, values = _convert(path, line_of, stamps, values_text)
    return _Chunk(ts, values, stamps=stamps)


REPLAY_READ_BYTES = 1 << 22


def _read_blocks(path: Path, header: tuple[list[str], int] | None = None,
                 ) -> Iterator[tuple[list[str], _Chunk]]:
    """``(value column names, chunk)`` per chunk of ``REPLAY_CHUNK`` lines.

    The bytes go through :func:`edge_ml.kernels.csvio.parse_rows`; a chunk it refuses is read
    again by :func:`_text_chunk`, which gives the same numbers where both apply (and the
    errors, with their line numbers, everywhere else). ``header``: what :func:`_read_header`
    gave, when the caller has read it already. A file that cannot be read raises ReplayError.
    """
    try:
        yield from _blocks(path, header or _read_header(path))
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _blocks(path: Path, header: tuple[list[str], int]) -> Iterator[tuple[list[str], _Chunk]]:
    columns, offset = header
    width = len(columns) + 1
    ts = np.empty(REPLAY_CHUNK, dtype=np.float64)
    values = np.empty((REPLAY_CHUNK, width - 1), dtype=np.float64)
    first = np.empty((REPLAY_CHUNK, 5), dtype=np.int64)
    line_no = 1
    with path.open("rb") as raw:
        raw.seek(offset)
        buffer = raw.read(REPLAY_READ_BYTES)
        at_eof = not buffer
        base = offset  # file offset of buffer[0]
        pos = 0
        while True:
            data = np.frombuffer(buffer, dtype=np.uint8)
            status, end, lines, rows = parse_rows(data, pos, REPLAY_CHUNK, at_eof, ts, values,
                                                  first)
            if status == NEED_MORE:
                more = raw.read(REPLAY_READ_BYTES)
                at_eof = not more
                buffer = buffer[pos:] + more
                base += pos
                pos = 0
                continue
            if status == REFUSED:
                raw.seek(base + pos)
                # surrogateescape: a byte that is not UTF-8 is reported with its line by
                # _utf8_size, not as a UnicodeDecodeError somewhere in the chunk.
                text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape",
                                        newline="")
                text_lines = list(itertools.islice(text, REPLAY_CHUNK))
                text.detach()
                if not text_lines:
                    return
                size = _utf8_size(path, line_no + 1, text_lines)
                chunk = _text_chunk(path, text_lines, width, line_no)
                line_no += len(text_lines)
                if chunk is not None:
                    yield columns, chunk
                base += pos + size
                raw.seek(base)
                buffer = raw.read(REPLAY_READ_BYTES)
                at_eof = not buffer
                pos = 0
                continue
            if lines == 0:
                return
            line_no += lines
            if rows:
                yield columns, _Chunk(ts[:rows].copy(), values[:rows].copy(), data=data,
                                      first=first[:rows].copy())
            pos = end


def _read_chunks(path: Path) -> Iterator[tuple[list[str], list[str], np.ndarray, np.ndarray]]:
    """``(value column names, timestamp texts, ts, values[rows, columns])`` per chunk."""
    for columns, chunk in _read_blocks(path):
        yield columns, chunk.stamp_texts(), chunk.ts, chunk.values


def _parse_timestamps(stamps: list[str]) -> np.ndarray:
    """:func:`parse_timestamp` over a chunk, vectorised when the texts allow it.

    Epoch numbers convert in one NumPy call; ISO texts of one fixed length (one format) parse as
    ``datetime64[us]``, checked against :func:`parse_timestamp` at the first, middle and last
    row; anything else goes text by text.
    """
    try:
        return np.array(stamps, dtype=np.float64)
    except ValueError:
        pass
    n = len(stamps)
    length = len(stamps[0])
    if set(map(len, stamps)) == {length} and stamps[0] == stamps[0].strip():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy warns on offsets it would convert
                micros = np.array(stamps, dtype="datetime64[us]").astype(np.int64)
        except (ValueError, TypeError, DeprecationWarning, UserWarning):
            micros = None
        if micros is not None:
            ts = micros / 1e6
            if all(ts[i] == parse_timestamp(stamps[i]) for i in {0, n // 2, n - 1}):
                return ts
    return np.array([parse_timestamp(s) for s in stamps], dtype=np.float64)


def _shown(text: str, limit: int = 40) -> str:
    """``repr`` of a field for an error message, cut short."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _convert(path: Path, line_of: Callable[[int], int], stamps: list[str],
             values_text: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps and values ``[rows, columns]`` of a chunk's texts.

    An empty value field (``2024-01-01 00:00:00,``, or blanks only) is a missing reading: NaN,
    so replay skips and counts it as it does ``nan`` (a gap in a series, which the daemon would
    not receive at all), and the good rows and columns around it are scored. Any other text
    that is not a number, and a timestamp that cannot be read, raise ReplayError naming the
    file line (``line_of(row)``).
    """
    try:
        ts = _parse_timestamps(stamps)
    except ValueError as exc:
        for row, stamp in enumerate(stamps):
            try:
                parse_timestamp(stamp)
            except ValueError as bad:
                raise ReplayError(f"{path}:{line_of(row)}: timestamp {_shown(stamp)} is "
                                  f"neither epoch seconds nor ISO 8601 ({str(bad)[:80]})") from None
        raise ReplayError(f"{path} (lines {line_of(0)}-{line_of(len(stamps) - 1)}): "
                          f"{exc}") from exc
    try:
        values = np.array(values_text, dtype=np.float64).T.copy()
    except ValueError:
        values_text = [[text if text.strip() else "nan" for text in column]
                       for column in values_text]
        try:
            values = np.array(values_text, dtype=np.float64).T.copy()
        except ValueError:
            for column, texts in enumerate(values_text, start=2):
                for row, text in enumerate(texts):
                    try:
                        np.array([text], dtype=np.float64)
                    except ValueError:
                        raise ReplayError(f"{path}:{line_of(row)}: field {column}: "
                                          f"{_shown(text)} is not a number") from None
            raise
    return ts, values


_NEEDS_QUOTES = ('"', ",", "\r", "\n")


def _output_rows(stamps: list[str], first: np.ndarray, score: np.ndarray,
                 alert: np.ndarray) -> str | None:
    """Output rows of a chunk exactly as ``csv.writer`` writes them, or None to let it quote.

    csv.writer formats each row field by field (~3 us a row, more than the model); here the
    fields are built column-wise and joined once. Floats are written as ``repr`` (what csv
    does), a non-finite value as an empty field, lines end with ``\r\n``. Only a timestamp
    text can need quoting (the other fields are numbers): then None.
    """
    joined = "".join(stamps)
    if any(c in joined for c in _NEEDS_QUOTES):
        return None
    n = len(stamps)
    if np.isfinite(first).all():
        value_texts = list(map(float.__repr__, first.tolist()))
    else:
        value_texts = [repr(v) if math.isfinite(v) else "" for v in first.tolist()]
    parts = [","] * (8 * n)
    parts[0::8] = stamps
    parts[2::8] = value_texts
    parts[4::8] = map(float.__repr__, np.round(score, 6).tolist())
    parts[6::8] = np.where(alert, "1", "0").tolist()
    parts[7::8] = ["\r\n"] * n
    return "".join(parts)


def _chunk_output(chunk: _Chunk, score: np.ndarray, alert: np.ndarray) -> Any:
    """The output rows of a chunk as bytes (``timestamp,value,anomaly_score,alert``, CR LF).

    Written from the input bytes by :func:`edge_ml.kernels.csvio.format_rows` when the chunk
    was parsed there; otherwise (or for a score outside [0, 1]) as ``csv.writer`` writes them.
    """
    if chunk.first is not None:
        first = chunk.first
        out = np.empty(int((first[:, 1] - first[:, 0]).sum()) + len(first) * ROW_EXTRA,
                       dtype=np.uint8)
        size = format_rows(chunk.data, first, score, alert, out)
        if size >= 0:
            return out[:size]
    stamps = chunk.stamp_texts()
    values = chunk.values[:, 0]
    text = _output_rows(stamps, values, score, alert)
    if text is None:  # a timestamp text that csv.writer would quote
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows(
            zip(stamps, [repr(v) if math.isfinite(v) else "" for v in values.tolist()],
                np.round(score, 6).tolist(), alert.astype(np.int8).tolist(), strict=True)
        )
        text = buffer.getvalue()
    return text.encode("utf-8")


# Replay reads and parses chunks on one background thread and writes them on another, while
# the model runs on the caller's: csvio's kernels release the GIL (the model's do not), so on
# two cores most of the reading and writing is hidden behind the model. Each thread keeps at
# most this many chunks between itself and the model.
REPLAY_QUEUE = 2
_END = object()


def _ahead(items: Iterator[Any]) -> Iterator[Any]:
    """The items of ``items``, produced on a background thread; its exception is raised here."""
    out: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(REPLAY_QUEUE)
    stop = threading.Event()

    def put(item: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # the consumer raises it
            put((_END, exc))
        finally:
            close = getattr(items, "close", None)
            if close:
                close()

    thread = threading.Thread(target=produce, name="edge-ml-replay-read", daemon=True)
    thread.start()
    try:
        while True:
            item, error = out.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _Behind:
    """Calls ``consume(item)`` for each item put, in order, on a background thread."""

    def __init__(self, consume: Any) -> None:
        self.items: queue.Queue[Any] = queue.Queue(REPLAY_QUEUE)
        self.error: BaseException | None = None
        self.consume = consume
        self.thread = threading.Thread(target=self._run, name="edge-ml-replay-write",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.items.get()) is not _END:
            if self.error is None:
                try:
                    self.consume(item)
                except BaseException as exc:  # put() and close() raise it
                    self.error = exc

    def put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self.items.put(item)

    def close(self, raise_error: bool = True) -> None:
        """Wait until every item is consumed (idempotent); raise what consuming raised."""
        if self.thread.is_alive():
            self.items.put(_END)
            self.thread.join()
        if raise_error and self.error is not None:
            raise self.error


@dataclass(frozen=True)
class ReplaySummary:
    rows: int
    readings: int
    alerts: int
    skipped: int
    seconds: float


def _open_output(source: Path, out: Path) -> tuple[Any, Path | None]:
    """A handle to write ``out`` through, and the partial file behind it (None: ``out`` itself).

    A regular file is written as ``.<name>.<pid>.part`` beside it and renamed over ``out`` only
    once complete: a replay that fails halfway leaves no truncated output to be mistaken for a
    whole one, and an older output stays as it was. A device or pipe (``/dev/stdout``) is
    written directly. ReplayOutputError if ``out`` cannot be written, or is ``source`` (that
    would empty the input before a line of it is read).
    """
    try:
        same = out.exists() and out.samefile(source)
    except OSError:
        same = False
    if same:
        raise ReplayOutputError(f"{out}: is the input file {source}; write the output "
                                "elsewhere")
    if out.is_dir():
        raise ReplayOutputError(f"{out}: cannot write: Is a directory")
    partial = None if out.exists() and not out.is_file() else out.with_name(
        f".{out.name}.{os.getpid()}.part")
    try:
        return (partial or out).open("wb"), partial
    except OSError as exc:
        raise ReplayOutputError(f"{out}: cannot write: {exc.strerror or exc}") from exc


def replay_csv(pipeline: Pipeline, source: Path, out: Path | None,
               stream_prefix: str | None = None) -> ReplaySummary:
    """Run a CSV through the pipeline; write ``timestamp,value,anomaly_score,alert`` per row.

    Each value column is a stream (``<name>`` for a single column, ``<name>/<column>`` for
    several, where ``<name>`` is the file's stem). A row's score is the highest level of its
    columns and ``alert`` is 1 on the row where an alert opens on any of them. Non-finite
    values and empty value fields are skipped (scored 0, counted; written as an empty value),
    as the daemon would reject them.

    The input is UTF-8; a byte order mark before the header is skipped (the output's header is
    always ``timestamp,value,anomaly_score,alert``, without one). A header that cannot be read
    fails before ``out`` is created. Raises ReplayError (the file and line named), and
    ReplayOutputError for an ``out`` that cannot be opened.
    """
    started = time.perf_counter()
    name = stream_prefix or source.stem
    header = _read_header(source)
    handle, partial = _open_output(source, out) if out else (None, None)
    writer = None
    rows = readings = alerts = skipped = 0
    try:
        if handle:
            handle.write(b"timestamp,value,anomaly_score,alert\r\n")  # as csv.writer does
            writer = _Behind(lambda item: handle.write(_chunk_output(*item)))
        for columns, chunk in _ahead(_read_blocks(source, header)):
            ts, values = chunk.ts, chunk.values
            n_rows, n_cols = values.shape
            streams = [name] if n_cols == 1 else [f"{name}/{c}" for c in columns]
            flat_values = values.reshape(-1)
            flat_ts = np.repeat(ts, n_cols)
            ok = np.isfinite(flat_values)
            flat_names = streams * n_rows
            score = np.zeros(n_rows * n_cols)
            opened = np.zeros(n_rows * n_cols, dtype=bool)
            if ok.all():
                output = pipeline.process_readings(flat_names, flat_ts, flat_values)
                score[:] = output.reported_levels(pipeline.config.alerts.threshold)
                opened[:] = output.codes == OPENED
            else:
                keep = np.flatnonzero(ok)
                output = pipeline.process_readings(
                    [flat_names[i] for i in keep.tolist()], flat_ts[keep], flat_values[keep]
                )
                score[keep] = output.reported_levels(pipeline.config.alerts.threshold)
                opened[keep] = output.codes == OPENED
                skipped += int((~ok).sum())
            row_score = score.reshape(n_rows, n_cols).max(axis=1)
            row_alert = opened.reshape(n_rows, n_cols).any(axis=1)
            rows += n_rows
            readings += int(ok.sum())
            alerts += int(row_alert.sum())
            if writer:
                writer.put((chunk, row_score, row_alert))
        if writer:
            writer.close()
        if handle:
            handle.close()  # its last flush may fail too
        if partial is not None and out is not None:
            os.replace(partial, out)
            partial = None
    except OSError as exc:  # reading errors are ReplayErrors already: writing the output
        if out is None:
            raise
        raise ReplayError(f"{out}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if writer:
            writer.close(raise_error=False)
        if handle:
            with contextlib.suppress(OSError):  # the error on its way says more
                handle.close()
        if partial is not None:  # failed: no half-written output
            partial.unlink(missing_ok=True)
    return ReplaySummary(rows, readings, alerts, skipped, time.perf_counter() - started)


def replay_tree(config: Config, source: Path, out: Path) -> list[tuple[Path, ReplaySummary]]:
    """Replay every ``*.csv`` under ``source`` into the same relative path under ``out``.

    Each file gets a fresh pipeline: files are independent series, not streams of one gateway.
    A folder under ``out`` that cannot be created raises ReplayOutputError.
    """
    files = sorted(p for p in source.rglob("*.csv") if p.is_file())
    if not files:
        raise ReplayError(f"{source}: no .csv files found")
    results = []
    for path in files:
        target = out / path.relative_to(source)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReplayOutputError(f"{target.parent}: cannot create the folder: "
                                    f"{exc.strerror or exc}") from exc
        results.append((path, replay_csv(Pipeline(config), path, target)))
    return results
