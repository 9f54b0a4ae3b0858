"""The report in a real headless Chromium: the charts are drawn and nothing is fetched.

Chromium (the Debian ``chromium`` package) is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: no port, no websocket library). The page must draw its charts
(plotly's SVG lines in the DOM, and the screenshot is neither blank nor chart-less) and request
nothing but itself: every request the page makes is recorded by the DevTools ``Network``
domain, the browser's own net log is read for requests a page started, and the proxy is a
closed port on 127.0.0.1, so a request could not reach the network anyway. A control page with
one remote image checks that these checks do see a fetch.

Skipped with the reason when Chromium is not installed, except in CI (``CI=true``), where it
must run.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_ml.config import parse_config
from edge_ml.report import build_report, write_report

pytest.importorskip("plotly", reason="the report extra (pip install 'edge-ml[report]')")
Image = pytest.importorskip("PIL.Image", reason="pillow reads the screenshot")
pytestmark = pytest.mark.slow  # a browser start each

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WIDTH, HEIGHT = 1300, 1250


def _browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}",
                                                                        os.X_OK) else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    found = _browser()
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI: Chromium is required for the report's browser test "
                        "(apt-get install chromium; make test-packages installs it)")
        pytest.skip("Chromium not installed (apt-get install chromium); runs in CI")
    return found


def _closed_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DevTools:
    """A headless Chromium and one page, over the DevTools protocol on fds 3 and 4."""

    def __init__(self, binary: str, workdir: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child must see them as fds 3 (commands in) and 4 (replies out): park them above
        # 3 and 4 first, so that moving one does not close the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
        os.close(to_browser_r)
        os.close(from_browser_w)

        def child_fds() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.net_log = workdir / "net-log.json"
        args = [
            binary, "--headless", "--remote-debugging-pipe",
            # Tests run as root in containers, where Chromium's sandbox cannot start.
            "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={workdir / 'profile'}", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions",
            # Anything sent to the network goes to a closed port on 127.0.0.1.
            f"--proxy-server=127.0.0.1:{_closed_port()}", "--proxy-bypass-list=<-loopback>",
            f"--log-net-log={self.net_log}", "--net-log-capture-mode=Default",
            f"--window-size={WIDTH},{HEIGHT}", "about:blank",
        ]
        with (workdir / "chromium.log").open("wb") as log:
            # close_fds=False: fds 3 and 4 are made in child_fds (the parent's other fds are
            # not inheritable, so they close at exec).
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                preexec_fn=child_fds, close_fds=False)
        for fd in high:
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def call(self, method: str, session: str | None = None, timeout: float = 30.0,
             **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, session=self.session, **params)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def open(self, url: str) -> None:
        self.page("Network.enable")
        self.page("Page.enable")
        self.page("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)
        self.page("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", timeout=60)

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        return result["result"].get("value")

    def screenshot(self) -> Any:
        data = self.page("Page.captureScreenshot", format="png")["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def requested(self) -> list[str]:
        """Every URL the page asked for, as the DevTools Network domain saw it."""
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> list[str]:
        """Quit; the URLs of requests a page started, from the net log (not the browser's own
        background requests: those carry no initiator origin)."""
        with contextlib.suppress(RuntimeError, TimeoutError):
            self.call("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        log = json.loads(self.net_log.read_text() or "{}")
        types = log["constants"]["logEventTypes"]
        start = types["URL_REQUEST_START_JOB"]
        begun = [e["params"] for e in log.get("events", [])
                 if e["type"] == start and "url" in e.get("params", {})]  # not the END phase
        return [p["url"] for p in begun if p.get("initiator") != "not an origin"]


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[DevTools]:
    tools = DevTools(chromium, tmp_path)
    try:
        yield tools
    finally:
        if tools.process.poll() is None:
            tools.process.kill()
            tools.process.wait()


LOCAL = ("file:", "data:", "blob:", "about:")


def _report(tmp_path: Path) -> Path:
    """Replay-shaped output of two streams with a daily cycle, spikes, alerts and labels."""
    rng = np.random.default_rng(11)
    results = tmp_path / "results" / "plant"
    results.mkdir(parents=True)
    start = np.datetime64("2024-03-01T00:00:00")
    labels = {}
    for name, spikes in (("boiler.csv", (900, 2300)), ("pump.csv", (1700,))):
        n = 3000
        t = np.arange(n)
        values = 60 + 8 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 0.8, n)
        scores = np.clip(np.abs(rng.normal(0.08, 0.06, n)), 0, 1)
        scores[:300] = 0.0  # a replay writes level 0 while a stream warms up
        opened = np.zeros(n, dtype=int)
        for s in spikes:
            values[s:s + 6] += 25
            scores[s:s + 6] = 0.85
            opened[s] = 1
        stamps = [str(start + np.timedelta64(5 * i, "m")).replace("T", " ") for i in t]
        lines = ["timestamp,value,anomaly_score,alert"] + [
            f"{stamps[i]},{values[i]:.3f},{scores[i]:.6f},{opened[i]}" for i in t]
        (results / name).write_text("\n".join(lines) + "\n")
        labels[f"plant/{name}"] = [[stamps[s - 20], stamps[s + 30]] for s in spikes[:1]]
    windows = tmp_path / "windows.json"
    windows.write_text(json.dumps(labels))
    report = build_report(results.parent, parse_config({}, None), windows)
    return write_report(report, tmp_path / "report.html")


def test_report_renders_charts_and_fetches_nothing(browser: DevTools, tmp_path: Path) -> None:
    page = _report(tmp_path)
    browser.open(page.resolve().as_uri())
    plots = browser.evaluate("document.querySelectorAll('.js-plotly-plot').length")
    lines = browser.evaluate("Array.from(document.querySelectorAll('.scatterlayer path.js-line'))"
                             ".filter(p => (p.getAttribute('d') || '').length > 100).length")
    shapes = browser.evaluate("document.querySelectorAll('.shapelayer path').length")
    assert plots == 2
    assert lines >= 4  # per stream: the values and the level, each a long SVG path
    assert shapes >= 2 * 3  # per stream: warm-up, a label window, at least one alert span
    shot = browser.screenshot()
    shot.save(tmp_path / "report.png")
    pixels = np.asarray(shot, dtype=np.int16)
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    ink = (pixels < 235).any(axis=2)
    assert 0.03 < ink.mean() < 0.6, f"screenshot {ink.mean():.1%} non-white: blank or broken"
    assert pixels.std() > 20

    def near(color: str, tolerance: int = 40) -> int:
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels - rgb).max(axis=2) < tolerance).sum())

    assert near("#1f4e79") > 500, "the value line is not on screen"
    assert near("#6a3d9a") > 300, "the anomaly level line is not on screen"
    requested = browser.requested()
    assert requested and requested[0] == page.resolve().as_uri()
    assert [u for u in requested if not u.startswith(LOCAL)] == []
    assert [u for u in browser.close() if not u.startswith(LOCAL)] == []


def test_the_checks_see_a_fetch(browser: DevTools, tmp_path: Path) -> None:
    """Control: a page with one remote image is caught by both network checks."""
    page = tmp_path / "fetches.html"
    page.write_text("<!DOCTYPE html><p>hello</p><img src='http://example.invalid/x.png'>")
    browser.open(page.as_uri())
    assert "http://example.invalid/x.png" in browser.requested()
    assert "http://example.invalid/x.png" in browser.close()
