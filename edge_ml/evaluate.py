"""NAB-style scoring of replay output against labelled anomaly windows.

Written from the published Numenta Anomaly Benchmark method (NAB v1.1, ``nab/sweeper.py``):

- The first ``min(floor(0.15 * rows), 750)`` rows of a file are a learning period and are not
  scored (a window whose rows all fall there is not counted at all, as in NAB).
- Inside a window only the earliest detection counts. Row ``i`` of a window whose last row is
  ``right`` and whose width is ``width`` rows sits at ``y = -(right - i + 1) / width`` (``-1`` on
  the first row, ``-1 / width`` on the last) and is worth
  ``tp * scaled_sigmoid(y) / scaled_sigmoid(-1)``, so the first row is worth exactly ``tp``.
- A window with no detection costs ``-fn``.
- A detection outside any window costs ``fp * scaled_sigmoid(y)`` with
  ``y = (i - prev_right) / (prev_width - 1)`` measured from the previous window's last row
  (cheap right after a window, full price ``-fp`` from about one window width on), and exactly
  ``-fp`` before the first window.
- ``normalised = 100 * (raw - null) / (perfect - null)``: null never detects, perfect detects
  every window at its first scorable row.

Two ways to turn a results file into detections are scored:

- *best threshold* (the published protocol): one threshold on ``anomaly_score`` shared by the
  whole corpus, chosen to maximise the total raw score (an exact sweep over the distinct score
  values, ``O(n log n)``);
- *alert decision*: the pipeline's own ``alert`` column, nothing tuned.

Windows are matched to rows by the first 19 characters of the timestamps (the labels carry a
``.000000`` suffix), each edge at the first row carrying that timestamp; scoring is by row
position, so files that repeat a timestamp keep their row order.

Examples
--------
>>> import numpy as np
>>> sweep = sweep_file(n_rows=100, windows=((40, 49),))
>>> hit = np.zeros(100, dtype=bool)
>>> hit[40] = True
>>> score_detections(hit, sweep, PROFILES["standard"]).raw
1.0
>>> score_detections(np.zeros(100, dtype=bool), sweep, PROFILES["standard"]).raw
-1.0
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_ml.errors import EvaluationError

__all__ = [
    "PROFILES",
    "Counts",
    "EvaluationReport",
    "FileReport",
    "FileResults",
    "FileSweep",
    "Profile",
    "ProfileReport",
    "alert_decision_score",
    "best_threshold_score",
    "evaluate",
    "format_report",
    "load_labels",
    "load_results",
    "probationary_length",
    "scaled_sigmoid",
    "score_detections",
    "sweep_file",
]

#: Share of a file's rows given to the detector as a learning period (NAB ``probationPercent``).
PROBATION_FRACTION = 0.15
#: Cap on the learning period: NAB's ``0.15 * 5000`` rows.
PROBATION_MAX_ROWS = 750
#: Timestamps are compared on ``YYYY-MM-DD HH:MM:SS``; the labels add ``.000000``.
TIMESTAMP_CHARS = 19

_REQUIRED_COLUMNS = ("timestamp", "anomaly_score", "alert")


@dataclass(frozen=True)
class Profile:
    """NAB application profile: weights of a true positive, a false negative, a false positive."""

    name: str
    tp: float
    fn: float
    fp: float


#: The three published NAB profiles.
PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", tp=1.0, fn=1.0, fp=0.11),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", tp=1.0, fn=1.0, fp=0.22),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", tp=1.0, fn=2.0, fp=0.11),
}


def scaled_sigmoid(y: float | npt.NDArray[np.float64]) -> Any:
    """NAB's ``scaledSigmoid``: ``2 / (1 + exp(5 y)) - 1``, and exactly ``-1`` for ``y > 3``.

    Parameters
    ----------
    y
        Relative position: ``-1`` at a window's first row, ``0`` at its right edge, positive
        (in window widths) after it.

    Returns
    -------
    float or ndarray
        Value in ``[-1, 1]``: about ``0.98661`` at ``y = -1``, ``0`` at ``y = 0``.

    Examples
    --------
    >>> round(float(scaled_sigmoid(-1.0)), 5), float(scaled_sigmoid(0.0)), float(scaled_sigmoid(4))
    (0.98661, 0.0, -1.0)
    """
    arr = np.asarray(y, dtype=np.float64)
    # exp overflows to inf for very large y, which still gives the right limit (-1).
    with np.errstate(over="ignore"):
        val = np.where(arr > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * arr)) - 1.0)
    return float(val) if np.ndim(val) == 0 else val


def probationary_length(n_rows: int) -> int:
    """Rows at the start of a file that are not scored: ``min(floor(0.15 n), 750)``."""
    return int(min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_MAX_ROWS))


@dataclass(frozen=True, eq=False)
class FileSweep:
    """Per-row scoring material of one file, independent of the detector and the profile.

    Attributes
    ----------
    n_rows
        Rows in the file.
    scorable
        Boolean mask: the row is past the learning period.
    window
        Index of the window holding the row, or ``-1`` outside every window.
    tp_value
        For window rows, ``scaled_sigmoid(y) / scaled_sigmoid(-1)`` (``1`` on the first row).
    fp_value
        For rows outside windows, ``scaled_sigmoid`` of the distance after the previous window
        (``-1`` before any window).
    n_windows
        Windows that have at least one scorable row (the only ones NAB counts).
    """

    n_rows: int
    scorable: npt.NDArray[np.bool_]
    window: npt.NDArray[np.int64]
    tp_value: npt.NDArray[np.float64]
    fp_value: npt.NDArray[np.float64]
    n_windows: int


def sweep_file(n_rows: int, windows: Sequence[tuple[int, int]]) -> FileSweep:
    """Compute NAB's per-row weights for a file of ``n_rows`` rows with row-index windows.

    Parameters
    ----------
    n_rows
        Number of rows in the file.
    windows
        ``(first_row, last_row)`` pairs, inclusive, sorted and not overlapping.

    Returns
    -------
    FileSweep
        Windows without scorable rows are dropped and the rest renumbered ``0..n_windows-1``.

    Raises
    ------
    EvaluationError
        If a window is empty, out of range, unsorted or overlapping.
    """
    idx = np.arange(n_rows, dtype=np.float64)
    window = np.full(n_rows, -1, dtype=np.int64)
    tp_value = np.zeros(n_rows, dtype=np.float64)
    # Before the first window a false positive costs the full price.
    fp_value = np.full(n_rows, -1.0, dtype=np.float64)
    probation = probationary_length(n_rows)
    scorable = np.arange(n_rows) >= probation
    max_tp = scaled_sigmoid(-1.0)
    previous_end = -1
    kept = 0
    for first, last in windows:
        if not 0 <= first <= last < n_rows or first <= previous_end:
            raise EvaluationError(
                f"window rows ({first}, {last}) invalid for {n_rows} rows "
                f"(previous window ends at row {previous_end})"
            )
        width = last - first + 1
        rows = slice(first, last + 1)
        tp_value[rows] = scaled_sigmoid(-(last - idx[rows] + 1.0) / width) / max_tp
        after = slice(last + 1, n_rows)
        # NAB divides by (width - 1); a one-row window makes every later row "far away".
        distance = (
            (idx[after] - last) / (width - 1) if width > 1 else np.full(n_rows - last - 1, 4.0)
        )
        fp_value[after] = scaled_sigmoid(distance)
        fp_value[rows] = 0.0
        if last >= probation:
            window[rows] = kept
            kept += 1
        previous_end = last
    return FileSweep(
        n_rows=n_rows,
        scorable=scorable,
        window=window,
        tp_value=tp_value,
        fp_value=fp_value,
        n_windows=kept,
    )


@dataclass(frozen=True)
class Counts:
    """Score of one set of detections: raw NAB score and window/false-positive counts."""

    raw: float
    tp: int
    fn: int
    fp: int


def score_detections(detections: npt.ArrayLike, sweep: FileSweep, profile: Profile) -> Counts:
    """Score one file's boolean detections under one profile.

    Parameters
    ----------
    detections
        One boolean per row (rows in the learning period are ignored).
    sweep
        The file's :func:`sweep_file` material.
    profile
        Weights.

    Returns
    -------
    Counts
        ``raw`` = sum over windows (earliest detection's value, or ``-fn``) + false-positive
        costs; ``tp``/``fn`` count windows, ``fp`` counts detections outside windows.
    """
    det = np.asarray(detections, dtype=bool)
    if det.shape != (sweep.n_rows,):
        raise EvaluationError(f"expected {sweep.n_rows} detections, got shape {det.shape}")
    active = det & sweep.scorable
    outside = active & (sweep.window < 0)
    fp_cost = float(profile.fp * sweep.fp_value[outside].sum())
    best = np.full(sweep.n_windows, -profile.fn, dtype=np.float64)
    inside = active & (sweep.window >= 0)
    np.maximum.at(best, sweep.window[inside], profile.tp * sweep.tp_value[inside])
    tp = int(np.count_nonzero(np.bincount(sweep.window[inside], minlength=sweep.n_windows)))
    return Counts(
        raw=float(best.sum()) + fp_cost,
        tp=tp,
        fn=sweep.n_windows - tp,
        fp=int(np.count_nonzero(outside)),
    )


@dataclass(frozen=True, eq=False)
class FileResults:
    """One results file: its relative name, scores, alert decisions and window rows."""

    name: str
    scores: npt.NDArray[np.float64]
    alerts: npt.NDArray[np.bool_]
    windows: tuple[tuple[int, int], ...]

    @property
    def sweep(self) -> FileSweep:
        """NAB per-row weights of this file (recomputed on each access; cheap)."""
        return sweep_file(len(self.scores), self.windows)


def load_labels(path: str | Path) -> dict[str, tuple[tuple[str, str], ...]]:
    """Read NAB ``combined_windows.json``: relative file path -> ``((start, end), ...)``.

    Timestamps are cut to their first 19 characters. Files with no windows are kept: they are
    part of the corpus (every detection there is a false positive).

    Raises
    ------
    EvaluationError
        If the file is missing or not shaped like NAB labels.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read labels {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise EvaluationError(f"labels {path}: expected a JSON object of file -> windows")
    labels: dict[str, tuple[tuple[str, str], ...]] = {}
    for name, windows in raw.items():
        try:
            pairs = tuple(
                (str(start)[:TIMESTAMP_CHARS], str(end)[:TIMESTAMP_CHARS]) for start, end in windows
            )
        except (TypeError, ValueError) as exc:
            raise EvaluationError(f"labels {path}: bad windows for {name}: {exc}") from exc
        labels[str(name)] = pairs
    return labels


def window_rows(
    name: str, timestamps: Sequence[str], windows: Iterable[tuple[str, str]]
) -> tuple[tuple[int, int], ...]:
    first_row: dict[str, int] = {}
    for i, ts in enumerate(timestamps):
        first_row.setdefault(ts, i)
    rows = []
    for start, end in windows:
        if start not in first_row or end not in first_row:
            missing = start if start not in first_row else end
            raise EvaluationError(f"{name}: window edge {missing} is not a row of the file")
        rows.append((first_row[start], first_row[end]))
    return tuple(rows)


def _read_results_csv(path: Path) -> tuple[list[str], list[float], list[bool]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise EvaluationError(f"{path}: missing column(s) {', '.join(missing)}")
            timestamps: list[str] = []
            scores: list[float] = []
            alerts: list[bool] = []
            for line, row in enumerate(reader, start=2):
                try:
                    score = float(row["anomaly_score"])
                    alert = int(float(row["alert"]))
                except (TypeError, ValueError) as exc:
                    raise EvaluationError(f"{path}:{line}: {exc}") from exc
                if not 0.0 <= score <= 1.0:
                    raise EvaluationError(f"{path}:{line}: anomaly_score {score} not in [0, 1]")
                if alert not in (0, 1):
                    raise EvaluationError(f"{path}:{line}: alert {alert} is not 0 or 1")
                timestamps.append(row["timestamp"][:TIMESTAMP_CHARS])
                scores.append(score)
                alerts.append(bool(alert))
    except OSError as exc:
        raise EvaluationError(f"cannot read results {path}: {exc}") from exc
    return timestamps, scores, alerts


def load_results(
    results_dir: str | Path, labels: Mapping[str, Sequence[tuple[str, str]]]
) -> list[FileResults]:
    """Read ``<results_dir>/<group>/<name>.csv`` for every labelled file.

    Parameters
    ----------
    results_dir
        Directory mirroring the data tree, as written by ``edge-ml replay``.
    labels
        From :func:`load_labels`; it defines the corpus (other files are ignored).

    Raises
    ------
    EvaluationError
        If a labelled file is missing or malformed, or a window edge is not one of its rows.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise EvaluationError(f"results directory {root} does not exist")
    files = []
    for name in sorted(labels):
        path = root / name
        if not path.is_file():
            raise EvaluationError(f"no results for {name} (expected {path})")
        timestamps, scores, alerts = _read_results_csv(path)
        files.append(
            FileResults(
                name=name,
                scores=np.asarray(scores, dtype=np.float64),
                alerts=np.asarray(alerts, dtype=bool),
                windows=window_rows(name, timestamps, labels[name]),
            )
        )
    return files


def _null_perfect(sweeps: Sequence[FileSweep], profile: Profile) -> tuple[float, float]:
    null = 0.0
    perfect = 0.0
    for sweep in sweeps:
        null -= profile.fn * sweep.n_windows
        best = np.full(sweep.n_windows, -profile.fn)
        inside = sweep.scorable & (sweep.window >= 0)
        np.maximum.at(best, sweep.window[inside], profile.tp * sweep.tp_value[inside])
        perfect += float(best.sum())
    return null, perfect


def _normalise(raw: float, null: float, perfect: float) -> float:
    if perfect == null:  # no scorable window anywhere: only false positives can move the score
        return 0.0
    return 100.0 * (raw - null) / (perfect - null)


def best_threshold_score(
    files: Sequence[FileResults], profile: Profile, sweeps: Sequence[FileSweep] | None = None
) -> tuple[float, float]:
    """The corpus-wide threshold that maximises the total raw score (NAB's optimiser).

    Row ``i`` is a detection when ``score[i] >= threshold``. Every distinct score value is a
    candidate, plus "no detection" (returned as threshold ``inf``). Ties keep the highest
    threshold. Exact and ``O(n log n)``: lowering the threshold past a row adds its false-positive
    cost, or raises its window's best value (a running maximum, in descending score order).

    Parameters
    ----------
    files
        Results from :func:`load_results`.
    profile
        Weights.
    sweeps
        Precomputed ``file.sweep`` for each file (optional, saves recomputing).

    Returns
    -------
    (threshold, raw)
    """
    sweeps = [f.sweep for f in files] if sweeps is None else sweeps
    all_scores = []
    all_deltas = []
    base = 0.0
    for fr, sweep in zip(files, sweeps, strict=True):
        keep = sweep.scorable
        scores = fr.scores[keep]
        window = sweep.window[keep]
        delta = np.where(window < 0, profile.fp * sweep.fp_value[keep], 0.0)
        base -= profile.fn * sweep.n_windows
        for w in range(sweep.n_windows):
            rows = np.flatnonzero(window == w)
            order = rows[np.argsort(-scores[rows], kind="stable")]
            values = profile.tp * sweep.tp_value[keep][order]
            running = np.maximum.accumulate(np.maximum(values, -profile.fn))
            delta[order] = np.diff(running, prepend=-profile.fn)
        all_scores.append(scores)
        all_deltas.append(delta)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    deltas = np.concatenate(all_deltas) if all_deltas else np.zeros(0)
    if scores.size == 0:
        return math.inf, base
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    totals = base + np.cumsum(deltas[order])
    # A threshold includes every row with an equal score: evaluate at the end of each tie group.
    group_end = np.flatnonzero(np.diff(sorted_scores, append=-np.inf) != 0)
    candidates = totals[group_end]
    best = int(np.argmax(candidates))
    if candidates[best] <= base:
        return math.inf, base
    return float(sorted_scores[group_end[best]]), float(candidates[best])


def alert_decision_score(
    files: Sequence[FileResults], profile: Profile, sweeps: Sequence[FileSweep] | None = None
) -> float:
    """Total raw score of the pipeline's own ``alert`` column (no threshold tuned)."""
    sweeps = [f.sweep for f in files] if sweeps is None else sweeps
    return sum(
        score_detections(fr.alerts, sweep, profile).raw
        for fr, sweep in zip(files, sweeps, strict=True)
    )


@dataclass(frozen=True)
class FileReport:
    """One file under one profile: counts at the best threshold and for the alert column."""

    name: str
    rows: int
    windows: int
    threshold: Counts
    alert: Counts


@dataclass(frozen=True)
class ProfileReport:
    """Corpus scores under one profile (``*_score`` are normalised: null 0, perfect 100)."""

    profile: Profile
    threshold: float
    threshold_score: float
    alert_score: float
    threshold_raw: float
    alert_raw: float
    null_raw: float
    perfect_raw: float
    files: tuple[FileReport, ...]


@dataclass(frozen=True)
class EvaluationReport:
    """Result of :func:`evaluate`: corpus size and one :class:`ProfileReport` per profile."""

    n_files: int
    n_rows: int
    n_windows: int
    profiles: tuple[ProfileReport, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (an infinite threshold, i.e. no detection, becomes ``None``)."""
        out = asdict(self)
        for entry in out["profiles"]:
            if not math.isfinite(entry["threshold"]):
                entry["threshold"] = None
        return out


def evaluate(
    results_dir: str | Path,
    labels_path: str | Path,
    profiles: Iterable[str] = tuple(PROFILES),
) -> EvaluationReport:
    """Score a replay results directory against NAB-style labels.

    Parameters
    ----------
    results_dir
        ``<results_dir>/<group>/<name>.csv`` with ``timestamp,value,anomaly_score,alert``.
    labels_path
        ``combined_windows.json``.
    profiles
        Names from :data:`PROFILES`.

    Returns
    -------
    EvaluationReport

    Raises
    ------
    EvaluationError
        Unknown profile, missing or malformed files.
    """
    names = list(profiles)
    unknown = [p for p in names if p not in PROFILES]
    if unknown or not names:
        raise EvaluationError(
            f"unknown profile(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(PROFILES)}"
        )
    files = load_results(results_dir, load_labels(labels_path))
    sweeps = [f.sweep for f in files]
    reports = []
    for name in names:
        profile = PROFILES[name]
        threshold, threshold_raw = best_threshold_score(files, profile, sweeps)
        null, perfect = _null_perfect(sweeps, profile)
        rows = []
        alert_raw = 0.0
        for fr, sweep in zip(files, sweeps, strict=True):
            at_threshold = score_detections(fr.scores >= threshold, sweep, profile)
            by_alert = score_detections(fr.alerts, sweep, profile)
            alert_raw += by_alert.raw
            rows.append(FileReport(fr.name, sweep.n_rows, sweep.n_windows, at_threshold, by_alert))
        reports.append(
            ProfileReport(
                profile=profile,
                threshold=threshold,
                threshold_score=_normalise(threshold_raw, null, perfect),
                alert_score=_normalise(alert_raw, null, perfect),
                threshold_raw=threshold_raw,
                alert_raw=alert_raw,
                null_raw=null,
                perfect_raw=perfect,
                files=tuple(rows),
            )
        )
    return EvaluationReport(
        n_files=len(files),
        n_rows=sum(s.n_rows for s in sweeps),
        n_windows=sum(s.n_windows for s in sweeps),
        profiles=tuple(reports),
    )


def format_report(report: EvaluationReport, detail: bool = False) -> str:
    """Render a report as a text table (``detail`` adds one row per file and profile)."""
    lines = [
        f"{report.n_files} files, {report.n_rows} rows, {report.n_windows} windows",
        "",
        f"{'profile':<20} {'threshold':>10} {'best-threshold':>15} {'alert-decision':>15}",
    ]
    for p in report.profiles:
        thr = f"{p.threshold:.6g}" if math.isfinite(p.threshold) else "none"
        lines.append(
            f"{p.profile.name:<20} {thr:>10} {p.threshold_score:>15.1f} {p.alert_score:>15.1f}"
        )
    if detail:
        for p in report.profiles:
            lines += [
                "",
                f"[{p.profile.name}] per file: raw score, windows hit / missed, false positives",
                f"{'file':<58} {'win':>3} {'thr raw':>8} {'tp/fn/fp':>11} "
                f"{'alert raw':>9} {'tp/fn/fp':>11}",
            ]
            for f in p.files:
                t, a = f.threshold, f.alert
                lines.append(
                    f"{f.name:<58} {f.windows:>3} {t.raw:>8.2f} {f'{t.tp}/{t.fn}/{t.fp}':>11} "
                    f"{a.raw:>9.2f} {f'{a.tp}/{a.fn}/{a.fp}':>11}"
                )
    return "\n".join(lines)
