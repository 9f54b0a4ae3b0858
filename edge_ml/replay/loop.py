"""``edge-ml replay``: CSV files through the :class:`~edge_ml.pipeline.Pipeline` the daemon runs.

Chunks come from :mod:`edge_ml.replay.reader`, are scored here, and go to
:mod:`edge_ml.replay.writer`; reading and writing run on their own threads beside the model. A
folder replays file by file into a mirrored tree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ml.config import Config
from edge_ml.errors import ReplayError, ReplayOutputError
from edge_ml.kernels.alerting import OPENED
from edge_ml.pipeline import Pipeline
from edge_ml.replay.reader import read_ahead, read_chunks, read_header
from edge_ml.replay.writer import ReplayOutput


@dataclass(frozen=True)
class ReplaySummary:
    rows: int
    readings: int
    alerts: int
    skipped: int
    seconds: float


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
    header = read_header(source)
    streams = header.streams(stream_prefix or source.stem)
    output = ReplayOutput(source, out) if out else None
    threshold = pipeline.config.alerts.threshold
    rows = readings = alerts = skipped = 0
    try:
        for chunk in read_ahead(read_chunks(source, header)):
            names, ts, values = chunk.readings(streams)
            n_rows, n_cols = chunk.values.shape
            ok = np.isfinite(values)
            score = np.zeros(n_rows * n_cols)
            opened = np.zeros(n_rows * n_cols, dtype=bool)
            if ok.all():
                result = pipeline.process_readings(names, ts, values)
                score[:] = result.reported_levels(threshold)
                opened[:] = result.codes == OPENED
            else:
                keep = np.flatnonzero(ok)
                result = pipeline.process_readings([names[i] for i in keep.tolist()],
                                                   ts[keep], values[keep])
                score[keep] = result.reported_levels(threshold)
                opened[keep] = result.codes == OPENED
                skipped += int((~ok).sum())
            row_score = score.reshape(n_rows, n_cols).max(axis=1)
            row_alert = opened.reshape(n_rows, n_cols).any(axis=1)
            rows += n_rows
            readings += int(ok.sum())
            alerts += int(row_alert.sum())
            if output:
                output.put(chunk, row_score, row_alert)
        if output:
            output.commit()
    finally:
        if output:
            output.discard()
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
