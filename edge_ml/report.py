"""``edge-ml report``: one self-contained HTML page of what the detector saw in a replay.

Per stream: the values with each alert's span shaded (from the row it opened to the row it
resolved), the anomaly level with the open and resolve thresholds, the label windows when
given, and a table of the alerts (with their explanation when the replay output carries an
``explanation`` column). An index lists the streams worst first: with labels by how far the
stream's alerts fall short of a perfect NAB score (:mod:`edge_ml.evaluate` does the scoring),
without labels by alert count.

The charts are drawn by plotly, an optional extra (``pip install edge-ml[report]``) imported
only here and only when a report is written; plotly.js is inlined once in the page, so the file
opens with no network. Long streams are downsampled for the chart (every alert row, and the
lowest and highest value and level of each bucket, are kept); the page says so.

Replay output marks the row where an alert opens (``alert`` = 1) but not where it resolves: a
``resolved`` column (1 on the resolving row) is used when present, otherwise the resolve is
found as the daemon finds it, the first time the level stays under ``[alerts]
resolve_threshold`` for ``debounce`` readings (rows with no value are not readings).

Examples
--------
>>> import numpy as np
>>> scores = np.array([0.1, 0.7, 0.6, 0.3, 0.2, 0.9, 0.8])
>>> opened = np.array([0, 1, 0, 0, 0, 1, 0], dtype=bool)
>>> alert_spans(scores, opened, resolve_threshold=0.4, debounce=1)
((1, 3), (5, None))
"""

from __future__ import annotations

import csv
import html
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_ml.config import AlertsConfig, Config
from edge_ml.errors import EdgeMLError
from edge_ml.evaluate import (
    PROFILES,
    TIMESTAMP_CHARS,
    Counts,
    EvaluationError,
    FileResults,
    Profile,
    best_threshold_score,
    load_labels,
    score_detections,
    window_rows,
)

__all__ = [
    "CHART_POINTS",
    "AlertSpan",
    "Report",
    "ReportDependencyError",
    "ReportError",
    "StreamReport",
    "StreamResults",
    "alert_spans",
    "build_report",
    "chart_rows",
    "load_stream",
    "render_html",
    "require_plotly",
    "write_report",
]

#: Points drawn per chart line at most. Each bucket of rows gives up to four (its lowest and
#: highest value and level); 5,000 points keep a page of a few dozen streams quick to open.
CHART_POINTS = 5000

INSTALL_HINT = "pip install 'edge-ml[report]'"


class ReportError(EdgeMLError):
    """Replay output or labels that cannot be reported on, or a report that cannot be written."""


class ReportDependencyError(ReportError):
    """The optional plotting library is not installed (``pip install edge-ml[report]``)."""


@dataclass(frozen=True, eq=False)
class StreamResults:
    """One replay output file, as read (rows in file order).

    ``values`` is NaN where the replay skipped a value (no reading); ``explanations`` holds the
    optional ``explanation`` column (None when the file has none).
    """

    name: str
    timestamps: tuple[str, ...]
    values: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]
    opened: npt.NDArray[np.bool_]
    resolved: npt.NDArray[np.bool_] | None = None
    explanations: tuple[str, ...] | None = None

    @property
    def rows(self) -> int:
        return len(self.timestamps)


@dataclass(frozen=True)
class AlertSpan:
    """One alert: rows where it opened and resolved (``resolved`` None: open at the end)."""

    opened: int
    resolved: int | None
    peak: float
    explanation: str = ""


@dataclass(frozen=True, eq=False)
class StreamReport:
    """One stream of the report: its results, alerts, label windows and (with labels) score."""

    results: StreamResults
    alerts: tuple[AlertSpan, ...]
    labels: tuple[tuple[str, str], ...] | None  # None: no labels for this stream
    window_rows: tuple[tuple[int, int], ...] = ()
    counts: Counts | None = None  # the alert column scored under the report's profile
    verdicts: tuple[str, ...] = ()  # with labels: what NAB made of each alert
    null_raw: float = 0.0
    perfect_raw: float = 0.0

    @property
    def score(self) -> float | None:
        """NAB score of this stream alone (null 0, perfect 100); None without labels/windows."""
        if self.counts is None or self.perfect_raw == self.null_raw:
            return None
        return 100.0 * (self.counts.raw - self.null_raw) / (self.perfect_raw - self.null_raw)

    @property
    def shortfall(self) -> float | None:
        """Raw NAB points this stream is short of a perfect detector (0 is perfect)."""
        return None if self.counts is None else self.perfect_raw - self.counts.raw


@dataclass(frozen=True, eq=False)
class Report:
    """Everything the page shows, streams worst first."""

    source: str
    streams: tuple[StreamReport, ...]
    alerts_config: AlertsConfig
    warmup: int
    profile: Profile | None = None
    labels_path: str | None = None
    unmatched_labels: tuple[str, ...] = ()
    corpus: dict[str, float] = field(default_factory=dict)


def _float(text: str, path: Path, line: int, column: str) -> float:
    try:
        return float(text) if text.strip() else math.nan
    except ValueError:
        raise ReportError(f"{path}:{line}: {column} {text[:40]!r} is not a number") from None


def load_stream(path: str | Path, name: str | None = None) -> StreamResults:
    """Read one replay output file (``timestamp,value,anomaly_score,alert[,...]``).

    Optional columns: ``resolved`` (1 on the row where an alert resolves) and ``explanation``
    (text shown beside the alert that opens on that row). Raises ReportError naming the line.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [c.strip() for c in next(reader, [])]
            need = ("timestamp", "anomaly_score", "alert")
            missing = [c for c in need if c not in header]
            if missing:
                raise ReportError(f"{path}: not replay output: missing column(s) "
                                  f"{', '.join(missing)} (expected timestamp,value,"
                                  "anomaly_score,alert from edge-ml replay)")
            at = {c: header.index(c) for c in header}
            stamps: list[str] = []
            values: list[float] = []
            scores: list[float] = []
            opened: list[bool] = []
            resolved: list[bool] = []
            explanations: list[str] = []
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < len(header):
                    row += [""] * (len(header) - len(row))
                stamps.append(row[at["timestamp"]])
                values.append(_float(row[at["value"]], path, line, "value")
                              if "value" in at else math.nan)
                score = _float(row[at["anomaly_score"]], path, line, "anomaly_score")
                if not 0.0 <= score <= 1.0:
                    raise ReportError(f"{path}:{line}: anomaly_score {score} not in [0, 1]")
                scores.append(score)
                opened.append(_flag(row[at["alert"]], path, line, "alert"))
                if "resolved" in at:
                    resolved.append(_flag(row[at["resolved"]], path, line, "resolved"))
                if "explanation" in at:
                    explanations.append(row[at["explanation"]])
    except OSError as exc:
        raise ReportError(f"cannot read results {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path}: {exc}") from exc
    return StreamResults(
        name=name or path.name,
        timestamps=tuple(stamps),
        values=np.asarray(values, dtype=np.float64),
        scores=np.asarray(scores, dtype=np.float64),
        opened=np.asarray(opened, dtype=bool),
        resolved=np.asarray(resolved, dtype=bool) if "resolved" in at else None,
        explanations=tuple(explanations) if "explanation" in at else None,
    )


def _flag(text: str, path: Path, line: int, column: str) -> bool:
    value = _float(text, path, line, column)
    if value not in (0.0, 1.0):
        raise ReportError(f"{path}:{line}: {column} {text!r} is not 0 or 1")
    return value == 1.0


def alert_spans(
    scores: npt.NDArray[np.float64],
    opened: npt.NDArray[np.bool_],
    resolve_threshold: float,
    debounce: int,
    readable: npt.NDArray[np.bool_] | None = None,
    resolved: npt.NDArray[np.bool_] | None = None,
) -> tuple[tuple[int, int | None], ...]:
    """``(open row, resolve row or None)`` for each alert opening in ``opened``.

    Parameters
    ----------
    scores, opened
        The replay output's ``anomaly_score`` and ``alert`` columns.
    resolve_threshold, debounce
        ``[alerts]`` settings: an open alert resolves on the ``debounce``-th reading in a row
        under ``resolve_threshold`` (as :mod:`edge_ml.kernels.alerting` decides).
    readable
        Rows that were readings (default: all); other rows neither resolve nor break a run.
    resolved
        A ``resolved`` column, when the output has one: used instead of the thresholds.
    """
    opens = np.flatnonzero(opened)
    if resolved is not None:
        ends = np.flatnonzero(resolved)
    else:
        rows = np.flatnonzero(readable) if readable is not None else np.arange(len(scores))
        below = scores[rows] < resolve_threshold
        index = np.arange(len(rows))
        last_above = np.maximum.accumulate(np.where(below, -1, index)) if len(rows) else index
        run = index - last_above  # readings in a row under the threshold, ending here
        ends = rows[run >= max(int(debounce), 1)]
    spans = []
    for i, start in enumerate(opens.tolist()):
        k = int(np.searchsorted(ends, start, side="right"))
        end = int(ends[k]) if k < len(ends) else None
        if i + 1 < len(opens) and end is not None and end > opens[i + 1]:
            end = int(opens[i + 1])  # inconsistent input: never let spans overlap
        spans.append((start, end))
    return tuple(spans)


def chart_rows(values: npt.NDArray[np.float64], scores: npt.NDArray[np.float64],
               keep: npt.NDArray[np.intp], max_points: int = CHART_POINTS) -> npt.NDArray[np.intp]:
    """Rows to draw: all of them when few, else per bucket the extremes, plus ``keep``.

    Rows are cut into ``max_points // 4`` equal buckets; each gives the rows of its lowest and
    highest value and lowest and highest level (NaN values ignored), so no spike or dip
    disappears from the chart. ``keep`` (alert rows, window edges) is always drawn.

    Examples
    --------
    >>> v = np.zeros(1000); v[500] = 9.0
    >>> rows = chart_rows(v, np.zeros(1000), np.array([777]), max_points=40)
    >>> bool(500 in rows and 777 in rows and len(rows) <= 40 + 1)
    True
    """
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    buckets = max(max_points // 4, 1)
    size = math.ceil(n / buckets)
    pad = buckets * size - n
    chosen = [np.asarray(keep, dtype=np.intp), np.array([0, n - 1])]
    for column in (values, scores):
        low = np.concatenate([np.where(np.isnan(column), np.inf, column), np.full(pad, np.inf)])
        high = np.concatenate([np.where(np.isnan(column), -np.inf, column),
                               np.full(pad, -np.inf)])
        offsets = np.arange(buckets) * size
        for grid, pick in ((low, np.argmin), (high, np.argmax)):
            rows = offsets + pick(grid.reshape(buckets, size), axis=1)
            chosen.append(rows[rows < n])
    return np.unique(np.concatenate(chosen))


def _label_key(name: str, labels: dict[str, Any]) -> str | None:
    """The labels entry of a results file: its relative path, else a unique same file name."""
    if name in labels:
        return name
    base = Path(name).name
    matches = [key for key in labels if Path(key).name == base]
    return matches[0] if len(matches) == 1 else None


def _scored(stream: StreamResults, alerts: tuple[AlertSpan, ...],
            windows: tuple[tuple[str, str], ...], profile: Profile) -> StreamReport:
    """The stream with its NAB score: :mod:`edge_ml.evaluate` on its ``alert`` column.

    ``null`` never detects, ``perfect`` detects each window at its first scored row: both are
    scored by the same function, so they follow NAB's learning period and weights.
    """
    stamps = [t[:TIMESTAMP_CHARS] for t in stream.timestamps]
    try:
        rows = window_rows(stream.name, stamps, windows)
    except EvaluationError as exc:
        raise ReportError(f"labels: {exc}") from exc
    results = FileResults(stream.name, stream.scores, stream.opened, rows)
    sweep = results.sweep
    perfect = np.zeros(stream.rows, dtype=bool)
    in_window = np.flatnonzero(sweep.scorable & (sweep.window >= 0))
    _, first = np.unique(sweep.window[in_window], return_index=True)
    perfect[in_window[first]] = True
    verdicts = []
    windows_hit: set[int] = set()
    for alert in alerts:
        window = int(sweep.window[alert.opened])
        if not sweep.scorable[alert.opened]:
            verdicts.append("learning period (not scored)")
        elif window < 0:
            verdicts.append("false alert")
        elif window in windows_hit:
            verdicts.append("window already hit")
        else:
            windows_hit.add(window)
            verdicts.append("hit")
    return StreamReport(
        results=stream,
        alerts=alerts,
        labels=windows,
        window_rows=rows,
        counts=score_detections(stream.opened, sweep, profile),
        verdicts=tuple(verdicts),
        null_raw=score_detections(np.zeros(stream.rows, dtype=bool), sweep, profile).raw,
        perfect_raw=score_detections(perfect, sweep, profile).raw,
    )


def _results_files(source: Path) -> list[tuple[Path, str]]:
    if source.is_file():
        return [(source, source.name)]
    if not source.is_dir():
        raise ReportError(f"{source}: no such file or folder")
    files = sorted(p for p in source.rglob("*.csv") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ReportError(f"{source}: no .csv replay output found")
    return [(p, p.relative_to(source).as_posix()) for p in files]


def build_report(source: str | Path, config: Config, labels: str | Path | None = None,
                 profile: str = "standard") -> Report:
    """Read replay output (a file or a folder of them) and, optionally, NAB label windows.

    Parameters
    ----------
    source
        What ``edge-ml replay`` wrote: one CSV, or a folder (searched recursively); a file's
        stream name is its path relative to the folder, as in the labels.
    config
        Its ``[alerts]`` thresholds are drawn and decide where alerts resolve.
    labels
        NAB ``combined_windows.json``: streams are matched by relative path, else by a unique
        file name (so one replayed file matches ``group/name.csv``).
    profile
        NAB profile the alerts are scored under (:data:`edge_ml.evaluate.PROFILES`).

    Raises
    ------
    ReportError
        Unreadable results or labels, an unknown profile, a window edge that is not a row.
    """
    if profile not in PROFILES:
        raise ReportError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    weights = PROFILES[profile]
    alerts_config = config.alerts
    label_map: dict[str, tuple[tuple[str, str], ...]] | None = None
    if labels is not None:
        try:
            label_map = load_labels(labels)
        except EvaluationError as exc:
            raise ReportError(str(exc)) from exc
    streams = []
    used: set[str] = set()
    for path, name in _results_files(Path(source)):
        stream = load_stream(path, name)
        missing = np.isnan(stream.values)
        spans = alert_spans(stream.scores, stream.opened, alerts_config.resolve_threshold,
                            alerts_config.debounce,
                            # no value column at all: every row counts as a reading
                            readable=None if missing.all() else ~missing,
                            resolved=stream.resolved)
        alerts = tuple(
            AlertSpan(start, end,
                      float(stream.scores[start:(end if end is not None else stream.rows) + 1]
                            .max()),
                      stream.explanations[start] if stream.explanations else "")
            for start, end in spans
        )
        key = _label_key(name, label_map) if label_map is not None else None
        if key is not None and label_map is not None:
            used.add(key)
            streams.append(_scored(stream, alerts, label_map[key], weights))
        else:
            streams.append(StreamReport(stream, alerts, None))
    corpus: dict[str, float] = {}
    scored = [s for s in streams if s.counts is not None]
    if scored:
        files = [FileResults(s.results.name, s.results.scores, s.results.opened, s.window_rows)
                 for s in scored]
        null = sum(s.null_raw for s in scored)
        perfect = sum(s.perfect_raw for s in scored)
        raw = sum(s.counts.raw for s in scored if s.counts is not None)
        threshold, threshold_raw = best_threshold_score(files, weights)
        span = perfect - null
        corpus = {
            "alert_score": 100.0 * (raw - null) / span if span else 0.0,
            "threshold": threshold,
            "threshold_score": 100.0 * (threshold_raw - null) / span if span else 0.0,
        }
    streams.sort(key=_worst_first)
    return Report(
        source=str(source),
        streams=tuple(streams),
        alerts_config=alerts_config,
        warmup=config.model.warmup,
        profile=weights if label_map is not None else None,
        labels_path=str(labels) if labels is not None else None,
        # One replayed file is matched to its entry; the rest of the corpus is not "missing".
        unmatched_labels=(tuple(sorted(set(label_map) - used))
                          if label_map and Path(source).is_dir() else ()),
        corpus=corpus,
    )


def _worst_first(stream: StreamReport) -> tuple[int, float, float, str]:
    """Scored streams first, most points short of perfect first; then by alert count."""
    if stream.shortfall is not None:
        return (0, -stream.shortfall, -len(stream.alerts), stream.results.name)
    peak = float(stream.results.scores.max()) if stream.results.rows else 0.0
    return (1, -len(stream.alerts), -peak, stream.results.name)


# --- rendering -------------------------------------------------------------------------------

def _plotly() -> Any:
    try:
        import plotly
        import plotly.graph_objects as go
        import plotly.io as pio
        import plotly.offline
        from plotly.subplots import make_subplots
    except ImportError as exc:
        raise ReportDependencyError(
            f"edge-ml report draws its charts with plotly, which is not installed: "
            f"{INSTALL_HINT}") from exc
    return plotly, go, pio, make_subplots


def require_plotly() -> None:
    """Raise ReportDependencyError now, before reading any results, when plotly is missing."""
    _plotly()


_ISO = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?$")


def _x_axis(stamps: Sequence[str]) -> list[str] | None:
    """Timestamps as plotly reads them (UTC, ``YYYY-MM-DD HH:MM:SS``); None: use row numbers."""
    out = []
    for text in stamps:
        text = text.strip()
        if _ISO.match(text):
            out.append(text.replace("T", " "))
            continue
        try:
            out.append(datetime.fromtimestamp(float(text), UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))
            continue
        except (ValueError, OverflowError, OSError):
            pass
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        out.append(parsed.isoformat(sep=" "))
    return out


COLORS = {
    "value": "#1f4e79",
    "level": "#6a3d9a",
    "alert": "#d62728",
    "resolve": "#ff7f0e",
    "label": "#2ca02c",
    "warmup": "#7f7f7f",
}


def warmup_rows(scores: npt.NDArray[np.float64], warmup: int) -> int:
    """Rows of a stream's warm-up, read from its levels: up to its first scored row, at most
    ``[model] warmup``. A stream that spans two days is scored before ``warmup`` readings
    (from a third of it, once its time-of-day slot is grown), and what the replay wrote is the
    one record of when that happened; a level of exactly 0 is what a warming row carries.

    >>> warmup_rows(np.array([0.0, 0.0, 0.3, 0.0, 0.6]), 300)
    2
    >>> warmup_rows(np.array([0.0, 0.0, 0.0]), 2), warmup_rows(np.zeros(0), 300)
    (2, 0)
    """
    scored = np.flatnonzero(np.nan_to_num(scores) > 0.0)
    first = int(scored[0]) if len(scored) else len(scores)
    return min(first, warmup, len(scores))


def _figure(stream: StreamReport, report: Report, x_all: list[str] | None,
            max_points: int) -> tuple[Any, int]:
    """The stream's two charts (values above, level below, one time axis); rows drawn."""
    _, go, _, make_subplots = _plotly()
    res = stream.results
    n = res.rows
    keep = [a.opened for a in stream.alerts] + [a.resolved for a in stream.alerts
                                                if a.resolved is not None]
    keep += [r for pair in stream.window_rows for r in pair]
    rows = chart_rows(res.values, res.scores, np.asarray(keep, dtype=np.intp), max_points)

    def x(i: int) -> Any:
        return x_all[i] if x_all is not None else i

    xs = [x(i) for i in rows.tolist()]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        row_heights=[0.58, 0.42])
    fig.add_trace(go.Scatter(x=xs, y=np.where(np.isnan(res.values[rows]), None,
                                              res.values[rows]).tolist(),
                             mode="lines", name="value", connectgaps=False,
                             line={"color": COLORS["value"], "width": 1.2}), row=1, col=1)
    fig.add_trace(go.Scatter(x=xs, y=res.scores[rows].tolist(), mode="lines",
                             name="anomaly level", line={"color": COLORS["level"], "width": 1.1}),
                  row=2, col=1)
    cfg = report.alerts_config
    for level, name, color in ((cfg.threshold, "open threshold", COLORS["alert"]),
                               (cfg.resolve_threshold, "resolve threshold", COLORS["resolve"])):
        fig.add_trace(go.Scatter(x=[x(0), x(n - 1)] if n else [], y=[level, level],
                                 mode="lines", name=f"{name} {level:g}", hoverinfo="name",
                                 line={"color": color, "width": 1.4, "dash": "dash"}),
                      row=2, col=1)

    def end(alert: AlertSpan) -> int:
        return alert.resolved if alert.resolved is not None else n - 1

    shapes = []
    legend_seen: set[str] = set()

    def span(x0: Any, x1: Any, color: str, name: str, opacity: float, edge: float = 0) -> None:
        # ``edge``: an outline, so that a span of a few rows in a long stream still shows.
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1,
                       "y0": 0, "y1": 1, "fillcolor": color, "opacity": opacity,
                       "line": {"width": edge, "color": color}, "layer": "below", "name": name,
                       "showlegend": name not in legend_seen, "legendgroup": name})
        legend_seen.add(name)

    warm = warmup_rows(res.scores, report.warmup)
    if warm:
        span(x(0), x(warm - 1), COLORS["warmup"], "warm-up (no alerts)", 0.10)
    for start, stop in stream.window_rows:
        span(x(start), x(stop), COLORS["label"], "labelled anomaly window", 0.22)
    for a in stream.alerts:
        span(x(a.opened), x(end(a)), COLORS["alert"], "alert open → resolved", 0.3, 1)
    if stream.alerts:
        opens = [a.opened for a in stream.alerts]
        hover = [
            f"alert opened, peak level {a.peak:.3f}"
            + ("" if a.resolved is not None else " (still open at the end)")
            + (f"<br>{html.escape(a.explanation)}" if a.explanation else "")
            for a in stream.alerts
        ]
        for row, ys in ((1, res.values[opens]), (2, res.scores[opens])):
            fig.add_trace(go.Scatter(
                x=[x(i) for i in opens], y=np.where(np.isnan(ys), None, ys).tolist(),
                mode="markers", name="alert opens", legendgroup="opens", showlegend=row == 1,
                marker={"color": COLORS["alert"], "symbol": "triangle-up", "size": 9,
                        "line": {"color": "white", "width": 1}},
                hovertext=hover, hoverinfo="text+x"), row=row, col=1)
    fig.update_layout(
        shapes=shapes, height=470, margin={"l": 60, "r": 20, "t": 10, "b": 40},
        template="plotly_white", hovermode="x unified",
        legend={"orientation": "h", "y": -0.1, "x": 0, "font": {"size": 11}},
        font={"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
    )
    fig.update_yaxes(title_text="value", row=1, col=1)
    fig.update_yaxes(title_text="anomaly level", range=[0, 1.02], row=2, col=1)
    if x_all is None:
        fig.update_xaxes(title_text="row", row=2, col=1)
    return fig, len(rows)


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 0; background: #fafafa; }
main { max-width: 1280px; margin: 0 auto; padding: 18px 28px 40px; }
h1 { font-size: 22px; margin: 6px 0 2px; }
h2 { font-size: 17px; margin: 0 0 4px; word-break: break-all; }
.meta, .note { color: #555; font-size: 13px; margin: 2px 0; }
.note { font-style: italic; }
.fact { white-space: nowrap; }
section.stream { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px;
                 padding: 14px 16px 8px; margin: 18px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f3f3f3; font-weight: 600; }
td.name, th.name, td.text { text-align: left; }
td.name a { color: #1f4e79; text-decoration: none; }
.bad { color: #b00020; font-weight: 600; } .good { color: #1b7f2a; font-weight: 600; }
.summary { display: flex; gap: 28px; flex-wrap: wrap; margin: 10px 0; }
.summary div { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px;
               padding: 8px 14px; }
.summary b { display: block; font-size: 20px; }
"""


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _anchor(i: int) -> str:
    return f"s{i}"


def _index(report: Report) -> str:
    labelled = report.profile is not None
    head = ["<th class=name>stream</th>", "<th>rows</th>", "<th>alerts</th>",
            "<th>peak level</th>"]
    if labelled:
        head += ["<th>windows</th>", "<th>hit</th>", "<th>missed</th>",
                 "<th>false alerts</th>", "<th>NAB score</th>", "<th>short of perfect</th>"]
    lines = ["<table class=index><tr>" + "".join(head) + "</tr>"]
    for i, s in enumerate(report.streams):
        res = s.results
        peak = float(res.scores.max()) if res.rows else 0.0
        cells = [f"<td class=name><a href='#{_anchor(i)}'>{html.escape(res.name)}</a></td>",
                 f"<td>{res.rows:,}</td>", f"<td>{len(s.alerts)}</td>", f"<td>{peak:.3f}</td>"]
        if labelled:
            if s.counts is None:
                cells += ["<td colspan=6 class=text>no labels for this stream</td>"]
            else:
                c = s.counts
                cls = "bad" if (s.shortfall or 0) > 0.5 else "good"
                cells += [f"<td>{len(s.window_rows)}</td>", f"<td>{c.tp}</td>",
                          f"<td>{c.fn}</td>", f"<td>{c.fp}</td>",
                          f"<td>{_fmt(s.score)}</td>",
                          f"<td class={cls}>{_fmt(s.shortfall, 2)}</td>"]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _alert_table(stream: StreamReport, x_all: list[str] | None) -> str:
    if not stream.alerts:
        return "<p class=meta>No alert opened.</p>"
    res = stream.results
    show_explanation = res.explanations is not None

    def when(i: int | None) -> str:
        if i is None:
            return "still open"
        return html.escape(res.timestamps[i]) if x_all is None else html.escape(x_all[i][:19])

    verdicts = stream.verdicts or ("",) * len(stream.alerts)
    head = ("<tr><th>#</th><th class=name>opened</th><th class=name>resolved</th>"
            "<th>readings</th><th>peak level</th>"
            + ("<th class=name>labels say</th>" if stream.verdicts else "")
            + ("<th class=name>explanation</th>" if show_explanation else "") + "</tr>")
    lines = ["<table class=alerts>", head]
    styles = {"hit": "good", "false alert": "bad"}
    for k, (a, verdict) in enumerate(zip(stream.alerts, verdicts, strict=True), start=1):
        length = (a.resolved if a.resolved is not None else res.rows - 1) - a.opened + 1
        lines.append(
            f"<tr><td>{k}</td><td class=text>{when(a.opened)}</td>"
            f"<td class=text>{when(a.resolved)}</td><td>{length:,}</td><td>{a.peak:.3f}</td>"
            + (f"<td class='text {styles.get(verdict, '')}'>{verdict}</td>"
               if stream.verdicts else "")
            + (f"<td class=text>{html.escape(a.explanation)}</td>" if show_explanation else "")
            + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def render_html(report: Report, max_points: int = CHART_POINTS) -> str:
    """The whole page: plotly.js inlined once, then the index and one section per stream."""
    plotly, _, pio, _ = _plotly()
    cfg = report.alerts_config
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        f"<title>edge-ml report: {html.escape(Path(report.source).name)}</title>",
        f"<style>{CSS}</style>",
        # plotly.js once for every chart; "</script" cannot occur inside it unescaped.
        "<script>" + plotly.offline.get_plotlyjs().replace("</script", "<\\/script")
        + "</script>",
        "</head><body><main>",
        "<h1>edge-ml replay report</h1>",
        "<p class=meta>" + " · ".join(f"<span class=fact>{fact}</span>" for fact in (
            html.escape(report.source), f"{len(report.streams)} stream(s)",
            f"{sum(len(s.alerts) for s in report.streams)} alert(s)",
            f"open threshold {cfg.threshold:g}, resolve threshold "
            f"{cfg.resolve_threshold:g}, debounce {cfg.debounce}",
            f"cooldown {cfg.cooldown_readings} readings", f"warm-up up to {report.warmup} readings",
            f"written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")) + "</p>",
    ]
    if report.profile is not None:
        parts.append(f"<p class=meta>labels {html.escape(report.labels_path or '')}, scored "
                     f"NAB-style under the {html.escape(report.profile.name)} profile "
                     f"(TP {report.profile.tp:g}, FN {report.profile.fn:g}, "
                     f"FP {report.profile.fp:g}) by edge_ml.evaluate</p>")
        if report.corpus:
            thr = report.corpus["threshold"]
            parts.append(
                "<div class=summary>"
                f"<div>alerts as raised<b>{report.corpus['alert_score']:.1f}</b>"
                "NAB score (0 null, 100 perfect)</div>"
                f"<div>best single threshold<b>{report.corpus['threshold_score']:.1f}</b>"
                + (f"at level ≥ {thr:.4g}, tuned on these labels" if math.isfinite(thr)
                   else "no threshold beats never alerting")
                + "</div></div>")
        if report.unmatched_labels:
            parts.append(f"<p class=note>{len(report.unmatched_labels)} labelled file(s) "
                         "have no results here and are not shown.</p>")
    order = ("by NAB points short of perfect (worst first)" if report.profile is not None
             else "by alert count (most first)")
    parts += [f"<h2 style='margin-top:18px'>Streams, {order}</h2>", _index(report)]
    if any(s.results.resolved is None and s.alerts for s in report.streams):
        parts.append("<p class=note>Replay output marks where an alert opens; it resolves "
                     "where the level stays under the resolve threshold for the debounce "
                     "count, as the daemon decides.</p>")
    config = {"displaylogo": False, "responsive": True,
              "modeBarButtonsToRemove": ["select2d", "lasso2d"]}
    for i, stream in enumerate(report.streams):
        res = stream.results
        x_all = _x_axis(res.timestamps)
        fig, drawn = _figure(stream, report, x_all, max_points)
        facts = [f"{res.rows:,} rows", f"{len(stream.alerts)} alert(s)"]
        if stream.counts is not None:
            c = stream.counts
            facts += [f"{len(stream.window_rows)} labelled window(s): {c.tp} hit, {c.fn} "
                      f"missed, {c.fp} false alert(s)", f"NAB score {_fmt(stream.score)}"]
        elif report.profile is not None:
            facts.append("no labels for this stream")
        parts += [f"<section class=stream id={_anchor(i)}>",
                  f"<h2>{html.escape(res.name)}</h2>",
                  f"<p class=meta>{' · '.join(facts)}</p>"]
        if drawn < res.rows:
            parts.append(f"<p class=note>Chart downsampled: {drawn:,} of {res.rows:,} rows "
                         "drawn (the lowest and highest value and level of each stretch, and "
                         "every alert and window edge, are kept); the table lists every "
                         "alert.</p>")
        parts.append(pio.to_html(fig, include_plotlyjs=False, full_html=False, config=config,
                                 div_id=f"chart-{i}"))
        parts.append(_alert_table(stream, x_all))
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(report: Report, out: str | Path, max_points: int = CHART_POINTS) -> Path:
    """Render and write the page (through a temporary file renamed into place)."""
    out = Path(out)
    if out.is_dir():
        raise ReportError(f"{out}: is a folder; name the .html file to write")
    page = render_html(report, max_points)
    partial = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ReportError(f"{out}: cannot write: {exc.strerror or exc}") from exc
    return out
