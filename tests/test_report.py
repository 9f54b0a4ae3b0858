"""``edge-ml report`` on small generated replay output: structure, order, thresholds, windows.

The scores the report shows must be the ones ``edge-ml evaluate`` gives for the same files
(the report only calls :mod:`edge_ml.evaluate`); the alert spans follow the alert kernel's
hysteresis; the page inlines plotly.js once and fetches nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from edge_ml.config import parse_config
from edge_ml.evaluate import evaluate
from edge_ml.report import (
    ReportDependencyError,
    ReportError,
    alert_spans,
    build_report,
    chart_rows,
    load_stream,
    render_html,
    warmup_rows,
)

pytest.importorskip("plotly", reason="the report extra (pip install 'edge-ml[report]')")

T0 = datetime(2020, 1, 1)
ROWS = 400
CONFIG = parse_config({}, None)  # defaults: open 0.5, resolve 0.4, debounce 1, warm-up 300


def stamp(i: int) -> str:
    return (T0 + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S")


def write_results(path: Path, scores: np.ndarray, opened: list[int],
                  explanations: dict[int, str] | None = None) -> None:
    """Replay output (``timestamp,value,anomaly_score,alert``[, ``explanation``])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    alert = np.zeros(len(scores), dtype=int)
    alert[opened] = 1
    header = "timestamp,value,anomaly_score,alert" + (",explanation" if explanations else "")
    lines = [header]
    for i, (s, a) in enumerate(zip(scores.tolist(), alert.tolist(), strict=True)):
        row = f"{stamp(i)},{20.0 + np.sin(i / 9):.4f},{s!r},{a}"
        if explanations is not None:
            row += "," + json.dumps(explanations.get(i, ""))
        lines.append(row)
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")


def spiky(*bursts: tuple[int, int]) -> np.ndarray:
    """Low levels, with each ``(start, length)`` burst at 0.8."""
    scores = np.full(ROWS, 0.1)
    for start, length in bursts:
        scores[start:start + length] = 0.8
    return scores


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    """Three files: one misses its window, one hits it, one has no window and two alerts."""
    results = tmp_path / "results"
    write_results(results / "g" / "miss.csv", spiky((200, 3)), [200])
    write_results(results / "g" / "hit.csv", spiky((330, 5)), [330],
                  explanations={330: "value 3.1 sd above its usual 12:00 level"})
    write_results(results / "h" / "quiet.csv", spiky((310, 2), (370, 4)), [310, 370])
    labels = tmp_path / "windows.json"
    labels.write_text(json.dumps({
        "g/miss.csv": [[stamp(340) + ".000000", stamp(360) + ".000000"]],
        "g/hit.csv": [[stamp(325) + ".000000", stamp(345) + ".000000"]],
        "h/quiet.csv": [],
    }))
    return results, labels


def test_alert_spans_follow_the_hysteresis() -> None:
    scores = np.array([0.1, 0.6, 0.45, 0.3, 0.35, 0.2, 0.7, 0.3, 0.6, 0.3, 0.3])
    opened = np.zeros(len(scores), dtype=bool)
    opened[[1, 6]] = True
    # Under 0.4 once resolves with debounce 1; 0.45 is not under it.
    assert alert_spans(scores, opened, 0.4, 1) == ((1, 3), (6, 7))
    # Debounce 2: two readings in a row under the resolve threshold.
    assert alert_spans(scores, opened, 0.4, 2) == ((1, 4), (6, 10))
    # A row with no value is no reading: it neither resolves nor breaks a run.
    readable = np.ones(len(scores), dtype=bool)
    readable[3] = False
    assert alert_spans(scores, opened, 0.4, 1, readable=readable) == ((1, 4), (6, 7))
    # A resolved column, when the output has one, is taken as written.
    resolved = np.zeros(len(scores), dtype=bool)
    resolved[[5]] = True
    assert alert_spans(scores, opened, 0.4, 1, resolved=resolved) == ((1, 5), (6, None))


def test_chart_rows_keep_extremes_and_alerts() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=100_000)
    values[12_345] = 50.0
    values[54_321] = -50.0
    values[70_000:70_010] = np.nan
    scores = rng.uniform(0, 0.3, size=100_000)
    scores[88_888] = 0.99
    rows = chart_rows(values, scores, np.array([5, 99_998]), max_points=2000)
    assert len(rows) <= 2000 + 4
    for row in (0, 5, 12_345, 54_321, 88_888, 99_998, 99_999):
        assert row in rows
    assert np.all(np.diff(rows) > 0)
    assert len(chart_rows(values[:500], scores[:500], np.array([], dtype=np.intp))) == 500


def test_worst_first_with_labels_and_scores_as_evaluate(corpus: tuple[Path, Path]) -> None:
    results, labels = corpus
    report = build_report(results, CONFIG, labels)
    names = [s.results.name for s in report.streams]
    # miss.csv: its window missed (-1) and a false alert; quiet.csv: two false alerts; hit.csv
    # caught its window early. Worst first by points short of perfect.
    assert names == ["g/miss.csv", "h/quiet.csv", "g/hit.csv"]
    by_name = {s.results.name: s for s in report.streams}
    assert [len(by_name[n].alerts) for n in names] == [1, 2, 1]
    assert by_name["g/miss.csv"].alerts[0].opened == 200
    assert by_name["g/miss.csv"].alerts[0].resolved == 203
    assert by_name["g/hit.csv"].window_rows == ((325, 345),)
    assert by_name["g/hit.csv"].verdicts == ("hit",)
    assert by_name["h/quiet.csv"].verdicts == ("false alert", "false alert")
    # The same numbers as `edge-ml evaluate` on the same files.
    expected = evaluate(results, labels, ["standard"]).profiles[0]
    for row in expected.files:
        assert by_name[row.name].counts == row.alert
    assert report.corpus["alert_score"] == pytest.approx(expected.alert_score)
    assert report.corpus["threshold_score"] == pytest.approx(expected.threshold_score)
    assert report.corpus["threshold"] == pytest.approx(expected.threshold)
    assert by_name["g/hit.csv"].shortfall < by_name["g/miss.csv"].shortfall


def test_without_labels_by_alert_count(corpus: tuple[Path, Path]) -> None:
    results, _ = corpus
    report = build_report(results, CONFIG)
    # Most alerts first; then the highest level, then the name.
    assert [s.results.name for s in report.streams] == ["h/quiet.csv", "g/hit.csv", "g/miss.csv"]
    assert all(s.counts is None for s in report.streams)
    assert report.profile is None and not report.corpus


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "data", "action")]


def _figures(page: str) -> list[dict]:
    """The plotly figures of the page (data and layout), as plotly.io.to_html wrote them."""
    figures = []
    for match in re.finditer(r"Plotly\.newPlot\(\s*\"chart-\d+\",\s*", page):
        decoder = json.JSONDecoder()
        data, end = decoder.raw_decode(page, match.end())
        rest = page[end:].lstrip(", \n")
        layout, _ = decoder.raw_decode(rest)
        figures.append({"data": data, "layout": layout})
    return figures


def test_page_structure(corpus: tuple[Path, Path]) -> None:
    results, labels = corpus
    report = build_report(results, CONFIG, labels)
    page = render_html(report)
    import plotly.offline

    assert page.count(plotly.offline.get_plotlyjs()[:2000]) == 1  # plotly.js inlined once
    parser = _Tags()
    parser.feed(page)
    assert not [u for u in parser.urls if re.match(r"\s*(https?:)?//", u)], parser.urls
    assert not [a for t, a in parser.tags if t in ("script", "img", "link", "iframe")
                and (a.get("src") or a.get("href"))]
    # The index, worst first, links to each stream's section.
    index = page[page.index("<table class=index>"):]
    assert index.index("g/miss.csv") < index.index("h/quiet.csv") < index.index("g/hit.csv")
    figures = _figures(page)
    assert len(figures) == 3
    for i, figure in enumerate(figures):
        traces = {t["name"]: t for t in figure["data"]}
        assert traces["open threshold 0.5"]["y"] == [0.5, 0.5]
        assert traces["resolve threshold 0.4"]["y"] == [0.4, 0.4]
        assert len(traces["value"]["x"]) == ROWS
        shapes = figure["layout"]["shapes"]
        windows = [s for s in shapes if s["name"] == "labelled anomaly window"]
        spans = [s for s in shapes if s["name"] == "alert open → resolved"]
        stream = report.streams[i]
        assert len(windows) == len(stream.window_rows)
        assert len(spans) == len(stream.alerts)
        for shape, alert in zip(spans, stream.alerts, strict=True):
            assert (shape["x0"], shape["x1"]) == (stamp(alert.opened), stamp(alert.resolved))
    hit = figures[2]["layout"]["shapes"]
    assert [(s["x0"], s["x1"]) for s in hit if s["name"] == "labelled anomaly window"] == [
        (stamp(325), stamp(345))]
    # The explanation column is shown for the file that has one.
    assert "value 3.1 sd above its usual 12:00 level" in page
    assert page.count("<th class=name>explanation</th>") == 1
    assert "Chart downsampled" not in page


def test_long_stream_is_downsampled_and_says_so(tmp_path: Path) -> None:
    n = 60_000
    scores = np.full(n, 0.05)
    scores[[1000, 41_234]] = 0.9
    path = tmp_path / "long.csv"
    write_results(path, scores, [1000, 41_234])
    report = build_report(path, CONFIG)
    page = render_html(report, max_points=4000)
    assert "Chart downsampled: " in page
    (figure,) = _figures(page)
    xs = next(t for t in figure["data"] if t["name"] == "anomaly level")["x"]
    assert len(xs) <= 4004
    assert stamp(41_234) in xs and stamp(41_235) in xs  # the alert's open and resolve rows
    assert {a.opened for a in report.streams[0].alerts} == {1000, 41_234}


def test_single_file_matches_its_label_by_name(tmp_path: Path, corpus: tuple[Path, Path]) -> None:
    results, labels = corpus
    report = build_report(results / "g" / "hit.csv", CONFIG, labels)
    (stream,) = report.streams
    assert stream.results.name == "hit.csv"
    assert stream.window_rows == ((325, 345),)
    assert report.unmatched_labels == ()


def test_bad_input_is_a_report_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n2020-01-01 00:00:00,1\n")
    with pytest.raises(ReportError, match="missing column"):
        load_stream(bad)
    bad.write_text("timestamp,value,anomaly_score,alert\n2020-01-01 00:00:00,1,1.5,0\n")
    with pytest.raises(ReportError, match=r"bad.csv:2: anomaly_score 1.5 not in \[0, 1\]"):
        load_stream(bad)
    with pytest.raises(ReportError, match="unknown profile"):
        build_report(bad, CONFIG, profile="lenient")


def test_missing_plotly_says_how_to_install(corpus: tuple[Path, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    results, _ = corpus
    report = build_report(results, CONFIG)  # reading and scoring need no plotly
    monkeypatch.setitem(sys.modules, "plotly", None)
    with pytest.raises(ReportDependencyError, match=r"pip install 'edge-ml\[report\]'"):
        render_html(report)


def _edge_ml(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ml", *args], capture_output=True,
                          text=True, timeout=120, check=False, **kwargs)  # type: ignore[call-overload]


def test_cli_writes_the_page(tmp_path: Path, corpus: tuple[Path, Path]) -> None:
    results, labels = corpus
    out = tmp_path / "report.html"
    done = _edge_ml("report", str(results), "--labels", str(labels), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert str(out.resolve()) in done.stdout
    assert "3 stream(s), 4 alert(s)" in done.stdout
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".*.part"))
    done = _edge_ml("report", str(tmp_path / "report.html"), "--out", str(tmp_path / "x.html"))
    assert done.returncode == 1 and "not replay output" in done.stderr
    done = _edge_ml("report", str(results), "--profile", "lenient", "--out", str(out))
    assert done.returncode == 1 and "unknown profile" in done.stderr


def test_cli_without_plotly_exits_2(tmp_path: Path, corpus: tuple[Path, Path]) -> None:
    results, _ = corpus
    blocker = tmp_path / "noplotly"
    blocker.mkdir()
    (blocker / "plotly.py").write_text("raise ImportError('no plotly here')\n")
    env = {"PYTHONPATH": f"{blocker}:{Path(__file__).resolve().parent.parent}",
           "PATH": "/usr/bin:/bin"}
    done = _edge_ml("report", str(results), "--out", str(tmp_path / "r.html"), env=env)
    assert done.returncode == 2, done.stderr
    assert "pip install 'edge-ml[report]'" in done.stderr


def test_plotly_stays_out_of_the_daemon() -> None:
    code = ("import sys, edge_ml.cli, edge_ml.daemon, edge_ml.report; "
            "sys.exit('plotly' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0


def test_alerts_in_the_learning_period_are_marked(tmp_path: Path) -> None:
    results = tmp_path / "early.csv"
    write_results(results, spiky((10, 2), (330, 2), (338, 2)), [10, 330, 338])
    labels = tmp_path / "windows.json"
    labels.write_text(json.dumps({"early.csv": [[stamp(325), stamp(345)]]}))
    (stream,) = build_report(results, CONFIG, labels).streams
    # NAB does not score the first 15% of rows (60 of 400); only a window's first alert counts.
    assert stream.verdicts == ("learning period (not scored)", "hit", "window already hit")
    assert "learning period (not scored)" in render_html(build_report(results, CONFIG, labels))


def test_edge_cases_render(tmp_path: Path) -> None:
    """A header-only file, and one without a value column and with epoch timestamps."""
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,value,anomaly_score,alert\r\n")
    labels = tmp_path / "windows.json"
    labels.write_text(json.dumps({"empty.csv": []}))
    report = build_report(empty, CONFIG, labels)
    assert report.streams[0].results.rows == 0
    assert len(_figures(render_html(report))) == 1
    bare = tmp_path / "bare.csv"
    bare.write_text("timestamp,anomaly_score,alert\n1700000000,0.1,0\n1700000060,0.7,1\n"
                    "1700000120,0.2,0\n")
    report = build_report(bare, CONFIG)
    assert report.streams[0].alerts[0].opened == 1
    assert report.streams[0].alerts[0].resolved == 2
    (figure,) = _figures(render_html(report))
    level = next(t for t in figure["data"] if t["name"] == "anomaly level")
    assert level["x"][0].startswith("2023-11-14 22:13:20")


@pytest.mark.parametrize("step_s, expected", [(3600.0, 100), (60.0, 300)])
def test_the_warm_up_shade_ends_where_the_stream_was_first_scored(step_s: float,
                                                                   expected: int) -> None:
    # An hourly stream spans two days long before 300 readings and is scored from reading 100;
    # a 1-minute stream keeps its 300. The report reads that from the replayed levels, as
    # written (rounded to 6 decimals).
    from edge_ml.pipeline import Pipeline

    n = 600
    ts = 1_700_000_000.0 + step_s * np.arange(n)
    values = 20.0 + np.random.default_rng(3).normal(0.0, 1.0, n)
    out = Pipeline(CONFIG).process_readings(["s/x"] * n, ts, values)
    first_scored = int(np.flatnonzero(out.warming == 0)[0])
    assert first_scored == expected
    assert warmup_rows(np.round(out.levels, 6), CONFIG.model.warmup) == first_scored
