"""Replay's input: a ``timestamp,value[,...]`` CSV file as chunks of timestamps and values.

Rows are read in chunks of ``REPLAY_CHUNK`` lines and parsed by the Numba kernel
:func:`edge_ml.replay.kernels.parse_rows` where a chunk is plain (timestamps as
``YYYY-MM-DD HH:MM:SS`` or numbers, plain decimals), by Python otherwise (quotes, ISO 8601 with
zones, blanks, empty fields), to the same numbers; the Python path also gives every error, with
the file and line. The input is UTF-8: a byte that is not is named with its line.
:func:`read_ahead` reads on a background thread while the model runs on the caller's.
"""

from __future__ import annotations

import csv
import io
import itertools
import operator
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ml.errors import ReplayError
from edge_ml.replay.kernels import NEED_MORE, REFUSED, parse_rows
from edge_ml.timestamps import parse_timestamp, parse_timestamps

REPLAY_CHUNK = 8192
REPLAY_READ_BYTES = 1 << 22

# Excel's "CSV UTF-8" (and other Windows tools) start the file with a byte order mark: it is
# taken as part of the header line (its bytes are skipped with it), not as part of a name.
BOM = "\ufeff"


@dataclass(frozen=True)
class Header:
    """A CSV's header line: its value column names and its length in bytes (a BOM included)."""

    columns: list[str]
    size: int

    def streams(self, name: str) -> list[str]:
        """The stream of each value column: ``name`` for a single column, ``name/<column>`` for
        several (``name`` is the file's stem, or what the caller chose)."""
        return [name] if len(self.columns) == 1 else [f"{name}/{c}" for c in self.columns]


@dataclass
class Chunk:
    """One chunk of input: ``REPLAY_CHUNK`` lines, blank ones skipped.

    Parsed by :func:`edge_ml.replay.kernels.parse_rows` (``data`` and ``first`` set: the output
    rows are written from the input bytes) or by the Python reader (``stamps`` set).
    """

    ts: np.ndarray
    values: np.ndarray  # [rows, columns]
    stamps: list[str] | None = None
    data: np.ndarray | None = None  # the bytes the rows were parsed from
    first: np.ndarray | None = None  # parse_rows' per-row offsets and first value

    def stamp_texts(self) -> list[str]:
        """The timestamp texts of the rows, as written in the file."""
        if self.stamps is None:
            assert self.data is not None and self.first is not None
            data = self.data
            self.stamps = [data[a:b].tobytes().decode() for a, b in self.first[:, :2].tolist()]
        return self.stamps

    def readings(self, streams: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(stream names, ts, values)`` of every cell, row by row (``streams``: one a column)."""
        n_rows, n_cols = self.values.shape
        return streams * n_rows, np.repeat(self.ts, n_cols), self.values.reshape(-1)


def read_header(path: Path) -> Header:
    """The header of ``path``; ReplayError if it cannot be read or is not ``timestamp,...``."""
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
    return Header([c.strip() for c in header[1:]], size)


def read_chunks(path: Path, header: Header) -> Iterator[Chunk]:
    """The chunks of ``path`` after its ``header`` (what :func:`read_header` gave).

    The bytes go through :func:`edge_ml.replay.kernels.parse_rows`; a chunk it refuses is read
    again by :func:`_text_chunk`, which gives the same numbers where both apply (and the
    errors, with their line numbers, everywhere else). A file that cannot be read raises
    ReplayError.
    """
    try:
        yield from _chunks(path, header)
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _chunks(path: Path, header: Header) -> Iterator[Chunk]:
    width = len(header.columns) + 1
    ts = np.empty(REPLAY_CHUNK, dtype=np.float64)
    values = np.empty((REPLAY_CHUNK, width - 1), dtype=np.float64)
    first = np.empty((REPLAY_CHUNK, 5), dtype=np.int64)
    line_no = 1
    with path.open("rb") as raw:
        raw.seek(header.size)
        buffer = raw.read(REPLAY_READ_BYTES)
        at_eof = not buffer
        base = header.size  # file offset of buffer[0]
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
                    yield chunk
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
                yield Chunk(ts[:rows].copy(), values[:rows].copy(), data=data,
                            first=first[:rows].copy())
            pos = end


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


_count_commas = operator.methodcaller("count", ",")


def _text_chunk(path: Path, lines: list[str], width: int, line_no: int) -> Chunk | None:
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
    return Chunk(ts, values, stamps=stamps)


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
        ts = parse_timestamps(stamps)
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


# Reading and parsing run on a background thread while the model runs on the caller's: the
# parse kernel releases the GIL (the model's kernels do not), so on two cores most of the
# reading is hidden behind the model. The thread keeps at most this many chunks ready.
READ_AHEAD = 2
_END = object()


def read_ahead(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """The items of ``chunks``, produced on a background thread; its exception is raised here."""
    out: queue.Queue[tuple[Chunk | object, BaseException | None]] = queue.Queue(READ_AHEAD)
    stop = threading.Event()

    def put(item: tuple[Chunk | object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put((chunk, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # the consumer raises it
            put((_END, exc))
        finally:
            close = getattr(chunks, "close", None)
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
            assert isinstance(item, Chunk)
            yield item
    finally:
        stop.set()
        thread.join()
