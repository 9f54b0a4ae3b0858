"""Replay's output: ``timestamp,value,anomaly_score,alert,alert_open,explanation`` rows (and
``device_score`` for a file of several value columns), byte for byte as ``csv.writer`` writes
them.

A chunk parsed by the Numba kernel is written from its input bytes by
:func:`edge_ml.replay.kernels.format_rows`; any other chunk is written column-wise in Python,
or by ``csv.writer`` itself when a timestamp text needs quoting, to the same bytes.
:class:`ReplayOutput` writes on a background thread, into a ``.part`` file renamed over the
output only once it is complete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

import numpy as np

from edge_ml.errors import ReplayError, ReplayOutputError
from edge_ml.replay.kernels import ROW_EXTRA, format_rows
from edge_ml.replay.reader import Chunk

# The output's header line (CR LF, as csv.writer ends lines); a file of several value columns
# (a device) has one more column, DEVICE_COLUMN.
OUTPUT_HEADER = b"timestamp,value,anomaly_score,alert,alert_open,explanation\r\n"
DEVICE_COLUMN = b"device_score"


def output_header(device: bool) -> bytes:
    """The header line: with the ``device_score`` column for a device's file."""
    return OUTPUT_HEADER[:-2] + b"," + DEVICE_COLUMN + b"\r\n" if device else OUTPUT_HEADER


@dataclass(frozen=True)
class RowMarks:
    """What replay says about each row of a chunk besides its timestamp and value.

    ``why[r]`` indexes ``texts``, the few distinct explanations of the chunk (an index rather
    than a string per row: the format kernel copies bytes, and a chunk has 8,192 rows).
    """

    score: np.ndarray  # float64[rows], the row's reported level
    alert: np.ndarray  # bool[rows], an alert opened on the row
    alert_open: np.ndarray  # bool[rows], an alert is open on the row (open .. before resolve)
    why: np.ndarray  # int64[rows], index into texts
    texts: tuple[str, ...]
    # float64[rows], a device's raw joint score (kernels.joint), None for a single column
    device_score: np.ndarray | None = None

    def explanations(self) -> list[str]:
        return [self.texts[k] for k in self.why.tolist()]

_NEEDS_QUOTES = ('"', ",", "\r", "\n")


def output_rows(stamps: list[str], first: np.ndarray, marks: RowMarks) -> str | None:
    """Output rows of a chunk exactly as ``csv.writer`` writes them, or None to let it quote.

    csv.writer formats each row field by field (~3 us a row, more than the model); here the
    fields are built column-wise and joined once. Floats are written as ``repr`` (what csv
    does), a non-finite value as an empty field, lines end with ``\r\n``. Only a timestamp
    or an explanation text can need quoting (the other fields are numbers): then None.
    """
    joined = "".join(stamps) + "".join(marks.texts)
    if any(c in joined for c in _NEEDS_QUOTES):
        return None
    n = len(stamps)
    if np.isfinite(first).all():
        value_texts = list(map(float.__repr__, first.tolist()))
    else:
        value_texts = [repr(v) if math.isfinite(v) else "" for v in first.tolist()]
    width = 12 if marks.device_score is None else 14
    parts = [","] * (width * n)
    parts[0::width] = stamps
    parts[2::width] = value_texts
    parts[4::width] = map(float.__repr__, np.round(marks.score, 6).tolist())
    parts[6::width] = np.where(marks.alert, "1", "0").tolist()
    parts[8::width] = np.where(marks.alert_open, "1", "0").tolist()
    parts[10::width] = marks.explanations()
    if marks.device_score is not None:
        parts[12::width] = map(float.__repr__, np.round(marks.device_score, 6).tolist())
    parts[width - 1::width] = ["\r\n"] * n
    return "".join(parts)


def chunk_bytes(chunk: Chunk, marks: RowMarks) -> bytes | np.ndarray:
    """The output rows of a chunk as bytes (a ``uint8`` array from the kernel), CR LF ended.

    Written from the input bytes by :func:`edge_ml.replay.kernels.format_rows` when the chunk
    was parsed there and no explanation needs quotes; otherwise (or for a score outside [0, 1])
    as ``csv.writer`` writes them.
    """
    if chunk.first is not None and not any(
            c in text for text in marks.texts for c in _NEEDS_QUOTES):
        first = chunk.first
        encoded = [text.encode("utf-8") for text in marks.texts]
        why_end = np.cumsum([len(b) for b in encoded], dtype=np.int64)
        why_text = np.frombuffer(b"".join(encoded) or b" ", dtype=np.uint8)
        widths = np.diff(why_end, prepend=0)[marks.why]
        out = np.empty(int((first[:, 1] - first[:, 0]).sum() + widths.sum())
                       + len(first) * ROW_EXTRA, dtype=np.uint8)
        size = format_rows(chunk.data, first, marks.score, marks.alert, marks.alert_open,
                           marks.why, why_text, why_end, out, marks.device_score)
        if size >= 0:
            return out[:size]
    stamps = chunk.stamp_texts()
    values = chunk.values[:, 0]
    text = output_rows(stamps, values, marks)
    if text is None:  # a text that csv.writer would quote
        buffer = io.StringIO(newline="")
        columns = [stamps, [repr(v) if math.isfinite(v) else "" for v in values.tolist()],
                   np.round(marks.score, 6).tolist(), marks.alert.astype(np.int8).tolist(),
                   marks.alert_open.astype(np.int8).tolist(), marks.explanations()]
        if marks.device_score is not None:
            columns.append(np.round(marks.device_score, 6).tolist())
        csv.writer(buffer).writerows(zip(*columns, strict=True))
        text = buffer.getvalue()
    return text.encode("utf-8")


# The rows are formatted and written on a background thread while the model runs on the
# caller's: the format kernel releases the GIL (the model's kernels do not), so on two cores
# most of the writing is hidden behind the model. At most this many chunks wait for it.
WRITE_BEHIND = 2
_END = None


class ReplayOutput:
    """The output file of one replay: scored chunks in, the file complete or not there at all.

    A regular file is written as ``.<name>.<pid>.part`` beside it and renamed over ``out`` by
    :meth:`commit` only once complete: a replay that fails halfway leaves no truncated output to
    be mistaken for a whole one, and an older output stays as it was (:meth:`discard`). A device
    or pipe (``/dev/stdout``) is written directly. Opening raises ReplayOutputError if ``out``
    cannot be written, or is ``source`` (that would empty the input before a line of it is
    read); a write that fails later raises ReplayError naming ``out``.
    """

    def __init__(self, source: Path, out: Path, device: bool = False) -> None:
        self.path = out
        self._handle, self._partial = _open(source, out)
        self._chunks: queue.Queue[tuple[Chunk, RowMarks] | None] = queue.Queue(WRITE_BEHIND)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_chunks, name="edge-ml-replay-write",
                                        daemon=True)
        try:
            self._handle.write(output_header(device))
        except OSError as exc:
            self.discard()
            self._raise(exc)
        self._thread.start()

    def put(self, chunk: Chunk, marks: RowMarks) -> None:
        """Queue a chunk's rows (what replay says of each); raises what an earlier write did."""
        if self._error is not None:
            self._raise(self._error)
        self._chunks.put((chunk, marks))

    def commit(self) -> None:
        """Write every queued chunk, close, and put the file in place of the output."""
        self._stop()
        if self._error is not None:
            self._raise(self._error)
        try:
            self._handle.close()  # its last flush may fail too
            if self._partial is not None:
                os.replace(self._partial, self.path)
                self._partial = None
        except OSError as exc:
            self._raise(exc)

    def discard(self) -> None:
        """Stop writing and remove the partial file (a no-op after :meth:`commit`)."""
        self._stop()
        with contextlib.suppress(OSError):  # the error on its way says more
            self._handle.close()
        if self._partial is not None:  # failed: no half-written output
            self._partial.unlink(missing_ok=True)
            self._partial = None

    def _write_chunks(self) -> None:
        while (item := self._chunks.get()) is not _END:
            if self._error is None:
                try:
                    self._handle.write(chunk_bytes(*item))
                except BaseException as exc:  # put() and commit() raise it
                    self._error = exc

    def _stop(self) -> None:
        """Wait until every queued chunk is written (idempotent)."""
        if self._thread.is_alive():
            self._chunks.put(_END)
            self._thread.join()

    def _raise(self, exc: BaseException) -> NoReturn:
        if isinstance(exc, OSError):
            raise ReplayError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc
        raise exc


def _open(source: Path, out: Path) -> tuple[BinaryIO, Path | None]:
    """A handle to write ``out`` through, and the partial file behind it (None: ``out`` itself)."""
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
