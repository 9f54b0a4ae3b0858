"""``edge-ml train``: warm start from history files, grafted onto the newest checkpoint.

History (CSV as ``edge-ml replay`` reads it, or JSONL ``{"stream", "ts", "value"}`` lines) is
learned by a fresh :class:`~edge_ml.pipeline.Pipeline`; the streams it trained replace or join
those of the newest loadable checkpoint, and the result is saved as a new checkpoint (reason
``train``), which the daemon loads at its next start, timer tick or SIGHUP.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ml.checkpoint_format import encode
from edge_ml.checkpointer import resume
from edge_ml.errors import ReplayError
from edge_ml.pipeline import Pipeline
from edge_ml.replay.reader import read_ahead, read_chunks, read_header
from edge_ml.state import export_state, graft
from edge_ml.storage import Storage
from edge_ml.timestamps import parse_timestamp

# History readings are learned in batches of this many (JSONL lines; a CSV's chunks are the
# reader's).
JSONL_CHUNK = 8192


def _csv_chunks(path: Path, stream: str | None) -> Iterator[tuple[list[str], np.ndarray,
                                                                   np.ndarray]]:
    """``(stream names, ts, values)`` per chunk of a CSV history file, as replay reads it.

    Each value column is a stream, named as ``edge-ml replay`` names it (``stream`` or the
    file's stem). Bad input raises ReplayError naming the file and line.
    """
    header = read_header(path)
    streams = header.streams(stream or path.stem)
    for chunk in read_ahead(read_chunks(path, header)):
        yield chunk.readings(streams)


def _jsonl_chunks(path: Path, chunk: int = JSONL_CHUNK) -> Iterator[tuple[list[str], np.ndarray,
                                                                          np.ndarray]]:
    """``(stream names, ts, values)`` per ``chunk`` lines of a JSONL history file.

    Lines are UTF-8 (a byte order mark at the start is skipped); ``"value": null`` is a
    missing reading, NaN like ``NaN`` (skipped and counted by :func:`train`, as an empty CSV
    field is). Anything else that is not ``{"stream", "ts", "value"}`` raises ReplayError
    naming the file and line, as does an empty file.
    """
    names: list[str] = []
    ts: list[float] = []
    values: list[float] = []
    seen = False
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below; only the open is guarded)
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ReplayError(
                    f"{path}:{line_no}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                    f"{exc.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                continue
            seen = True
            try:
                item = json.loads(line)
                stamp, value = item["ts"], item["value"]
                name = str(item["stream"])
                name.encode("utf-8")  # a lone surrogate ("\udce9") cannot be stored
                when = (float(stamp) if isinstance(stamp, int | float) else
                        parse_timestamp(str(stamp)))
                reading = math.nan if value is None else float(value)
            # OverflowError: an integer beyond float; RecursionError: nesting json cannot parse
            except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
                raise ReplayError(f"{path}:{line_no}: expected "
                                  f'{{"stream", "ts", "value"}}: {exc}') from exc
            names.append(name)
            ts.append(when)
            values.append(reading)
            if len(names) == chunk:
                yield names, np.array(ts), np.array(values)
                names, ts, values = [], [], []
    if not seen:
        raise ReplayError(f"{path}: empty file (expected JSON lines "
                          f'{{"stream", "ts", "value"}})')
    if names:
        yield names, np.array(ts), np.array(values)


@dataclass(frozen=True)
class TrainResult:
    """What ``edge-ml train`` wrote."""

    checkpoint_id: int
    base_id: int | None  # the checkpoint the other streams were taken from (None: none)
    readings: int  # history readings learned
    trained: list[str]  # streams added or replaced
    streams: int  # streams in the new checkpoint
    skipped: int = 0  # history values not learned: missing (empty, null) or not finite


def train(pipeline: Pipeline, storage: Storage, sources: Sequence[str | Path],
          stream: str | None, retention: int) -> TrainResult:
    """Warm start: learn history files in batch, then save a checkpoint (reason ``train``).

    ``.jsonl`` lines are ``{"stream", "ts", "value"}``; a CSV is ``timestamp,value[,...]`` with
    the stream named ``stream`` or the file's stem (as ``edge-ml replay``). The history is
    learned by ``pipeline`` (fresh, without storage), then put into the state of the newest
    loadable checkpoint in ``storage`` (:func:`~edge_ml.state.graft`): the trained
    streams are added, or replace the streams of those names, and every other stream keeps its
    learned state. So the checkpoint holds the whole fleet; what a running daemon learned after
    that newest checkpoint is not in it. Counters stay those of that checkpoint (trained
    readings are not live readings), and alerts the history raised are dropped.

    The checkpoint becomes the one loaded at start; a running daemon loads it within a few
    seconds, or at once on SIGHUP (see :class:`Checkpointer`).
    """
    skipped = 0
    for source in sources:
        path = Path(source)
        jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
        chunks = _jsonl_chunks(path) if jsonl else _csv_chunks(path, stream)
        device: dict[str, str] | None = None  # several CSV columns: one device, as in replay
        for names, ts, values in chunks:
            if device is None and not jsonl and len(set(names)) > 1:
                device = dict.fromkeys(names, stream or path.stem)
            ok = np.isfinite(values)
            skipped += int((~ok).sum())
            pipeline.process_readings([n for n, k in zip(names, ok, strict=True) if k],
                                      ts[ok], values[ok], device)
    fleet = Pipeline(pipeline.config)
    base_id = resume(fleet, storage, reject=False)
    trained = graft(fleet, export_state(pipeline))
    document = export_state(fleet)
    document["header"].update(base_checkpoint=base_id, trained_streams=trained,
                              trained_readings=pipeline.readings_total)
    encoded = encode(document)
    checkpoint_id = storage.save_checkpoint(encoded.blob, encoded.header, "train",
                                            encoded.checksum, retention)
    return TrainResult(int(checkpoint_id), base_id, pipeline.readings_total, trained,
                       len(fleet.streams), skipped)
