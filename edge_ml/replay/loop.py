"""``edge-ml replay``: CSV files through the :class:`~edge_ml.pipeline.Pipeline` the daemon runs.

Chunks come from :mod:`edge_ml.replay.reader`, are scored here, and go to
:mod:`edge_ml.replay.writer`; reading and writing run on their own threads beside the model. A
folder replays file by file into a mirrored tree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge_ml.config import Config
from edge_ml.errors import ReplayError, ReplayOutputError
from edge_ml.kernels.alerting import OPENED
from edge_ml.kernels.explain import JOINT, VIEWS
from edge_ml.pipeline import Pipeline
from edge_ml.replay.reader import read_ahead, read_chunks, read_header
from edge_ml.replay.writer import ReplayOutput, RowMarks


@dataclass(frozen=True)
class ReplaySummary:
    rows: int
    readings: int
    alerts: int
    skipped: int
    seconds: float
    drifts: int = 0  # drift events (each a reset of its stream under the default reaction)
    streams: int = 0  # streams the file held
    heavy_tailed: int = 0  # streams whose shoulder reads a heavy tail (docs/deploy.md)


def replay_csv(pipeline: Pipeline, source: Path, out: Path | None,
               stream_prefix: str | None = None) -> ReplaySummary:
    """Run a CSV through the pipeline; write ``timestamp,value,anomaly_score,alert,alert_open,
    explanation`` per row (and ``device_score`` for several value columns).

    Each value column is a stream (``<name>`` for a single column, ``<name>/<column>`` for
    several, where ``<name>`` is the file's stem). A row's score is the highest level of its
    columns, ``alert`` is 1 on the row where an alert opens on any of them, ``alert_open`` 1
    while one is open, and ``explanation`` the view (and column) of the row's score
    (:func:`row_marks`). With several value columns, ``device_score`` is the raw score of the
    file's device (its joint forest over all columns, :mod:`edge_ml.kernels.joint`) on the
    row: unsaturated, for ranking rows; 0 before the forest's first window is full and on a
    row the device was not scored on (a value missing). Non-finite
    values and empty value fields are skipped (scored 0, counted; written as an empty value),
    as the daemon would reject them.

    The input is UTF-8; a byte order mark before the header is skipped (the output's header is
    always ``timestamp,value,anomaly_score,alert,alert_open,explanation[,device_score]``,
    without one). A
    header that cannot be read fails before ``out`` is created. Raises ReplayError (the file
    and line named), and ReplayOutputError for an ``out`` that cannot be opened.
    """
    started = time.perf_counter()
    drifts_before = pipeline.drifts_seen
    header = read_header(source)
    streams = header.streams(stream_prefix or source.stem)
    output = ReplayOutput(source, out, device=len(streams) > 1) if out else None
    threshold = pipeline.config.alerts.threshold
    texts = explanation_texts(header.columns)
    rows = readings = alerts = skipped = 0
    # Several value columns are one device (named after the file) as well as one stream each:
    # the joint view is an extra column here, explained by its worst field.
    device = dict.fromkeys(streams, stream_prefix or source.stem) if len(streams) > 1 else None
    is_open = np.zeros(len(streams) + 1, dtype=bool)  # per column (+ joint): open after a row
    try:
        for chunk in read_ahead(read_chunks(source, header)):
            names, ts, values = chunk.readings(streams)
            n_rows, n_cols = chunk.values.shape
            ok = np.isfinite(values)
            score = np.zeros(n_rows * n_cols)
            codes = np.zeros(n_rows * n_cols, dtype=np.int8)
            view = np.zeros(n_rows * n_cols, dtype=np.int8)
            joint_level = np.zeros(n_rows * n_cols)
            joint_code = np.zeros(n_rows * n_cols, dtype=np.int8)
            worst = np.zeros(n_rows * n_cols, dtype=np.int64)
            joint_score = np.zeros(n_rows * n_cols)
            keep = slice(None) if ok.all() else np.flatnonzero(ok)
            if ok.all():
                result = pipeline.process_readings(names, ts, values, device)
            else:
                result = pipeline.process_readings([names[i] for i in keep.tolist()],
                                                   ts[keep], values[keep], device)
                skipped += int((~ok).sum())
            score[keep] = result.reported_levels(threshold)
            codes[keep] = result.codes
            view[keep] = result.view
            if result.joint is not None:
                joint_level[keep] = result.joint_levels
                joint_code[keep] = result.joint_codes
                worst[keep] = result.joint.worst
                joint_score[keep] = result.joint.score
            marks, is_open = row_marks(*_with_joint(
                score.reshape(n_rows, n_cols), codes.reshape(n_rows, n_cols),
                view.reshape(n_rows, n_cols), joint_level.reshape(n_rows, n_cols),
                joint_code.reshape(n_rows, n_cols), worst.reshape(n_rows, n_cols)),
                is_open, texts)
            if device is not None:  # one device score per row (at most one reading has one)
                marks = replace(marks, device_score=joint_score.reshape(n_rows, n_cols).max(axis=1))
            rows += n_rows
            readings += int(ok.sum())
            alerts += int(marks.alert.sum())
            if output:
                output.put(chunk, marks)
        if output:
            output.commit()
    finally:
        if output:
            output.discard()
    return ReplaySummary(rows, readings, alerts, skipped, time.perf_counter() - started,
                         pipeline.drifts_seen - drifts_before, len(pipeline.streams),
                         pipeline.heavy_tailed_count())


def explanation_texts(columns: list[str]) -> tuple[str, ...]:
    """The explanations a row can get: ``""`` (no level), then ``<view>`` for a single column or
    ``<view>:<column>`` for each view and column, column by column.

    Examples
    --------
    >>> explanation_texts(["value"])[:3]
    ('', 'seasonal', 'stuck')
    >>> explanation_texts(["flow", "current"])[1:3]
    ('seasonal:flow', 'stuck:flow')
    """
    if len(columns) == 1:
        return ("", *VIEWS)
    return ("", *(f"{view}:{column}" for column in columns for view in VIEWS))


def _with_joint(score: np.ndarray, codes: np.ndarray, view: np.ndarray,
                joint_level: np.ndarray, joint_code: np.ndarray, worst: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``[rows, columns]`` arrays with the device's joint view as one more column.

    A device is scored at most once a row (on the reading that completes it), so each row's
    joint cell is the one non-zero among its readings; its explanation names its worst field.
    """
    n_rows, n_cols = score.shape
    at = joint_level.argmax(axis=1)
    pick = (np.arange(n_rows), at)
    field = np.concatenate([np.broadcast_to(np.arange(n_cols), (n_rows, n_cols)),
                            worst[pick][:, None]], axis=1)
    return (np.concatenate([score, joint_level[pick][:, None]], axis=1),
            np.concatenate([codes, joint_code.max(axis=1)[:, None]], axis=1),
            np.concatenate([view, np.full((n_rows, 1), JOINT, dtype=view.dtype)], axis=1),
            field)


def row_marks(score: np.ndarray, codes: np.ndarray, view: np.ndarray, field: np.ndarray | None,
              was_open: np.ndarray, texts: tuple[str, ...]) -> tuple[RowMarks, np.ndarray]:
    """What to write of each row of a chunk, from its ``[rows, columns]`` levels, alert codes
    and view codes; and which columns have an alert open after it.

    A row's score is the highest level of its columns, and its explanation that column's view
    and field (``field[r, c]``, the input column a cell speaks of: its own, or a joint view's
    worst field; None: its own), ``""`` for a level of 0 (warming up or nothing read).
    ``alert`` is 1 on the row where an alert opens on any column; ``alert_open`` is 1 from that
    row up to the row before the one where the level resolves it (``was_open``: the columns
    open before this chunk).
    """
    n_rows, n_cols = score.shape
    top = score.argmax(axis=1)
    row_score = score[np.arange(n_rows), top]
    named = top if field is None else field[np.arange(n_rows), top]
    why = 1 + named * len(VIEWS) + view[np.arange(n_rows), top]
    why[row_score <= 0.0] = 0
    # Per column, the last open/resolve code at or before each row decides whether it is open.
    index = np.where(codes != 0, np.arange(n_rows)[:, None], -1)
    last = np.maximum.accumulate(index, axis=0)
    decided = codes[np.maximum(last, 0), np.arange(n_cols)] == OPENED
    open_now = np.where(last >= 0, decided, was_open[None, :])
    marks = RowMarks(row_score, (codes == OPENED).any(axis=1), open_now.any(axis=1),
                     why.astype(np.int64), texts)
    return marks, open_now[-1].copy() if n_rows else was_open


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
