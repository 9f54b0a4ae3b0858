"""The systemd units verify cleanly and keep ``systemd-analyze security`` at 2.0 or below;
``systemctl reload edge-ml`` reaches a running daemon.

``systemd-analyze`` comes with Debian's ``systemd`` package; the offline analyzer needs no
running systemd, so these tests work in a container.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_helpers import DaemonProcess, Observer, wait_for, write_config

from edge_ml.localbroker import LocalBroker, find_mosquitto, free_port

UNITS = Path(__file__).resolve().parent.parent / "systemd"
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze not installed (Debian/Ubuntu package: systemd)",
)

# (unit file, the name it is analysed under: an instance for the template)
CASES = [
    ("edge-ml.service", "edge-ml.service"),
    ("firmware-bridge@.service", "firmware-bridge@ttyUSB0.service"),
]


def _venv_bin(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed in this venv (pip install -e .)")
    return found


def _local_copy(tmp_path: Path, unit: str, as_name: str) -> Path:
    """The unit with ExecStart pointing at this venv, since /opt/edge-ml does not exist here."""
    text = (UNITS / unit).read_text(encoding="utf-8")
    for tool in ("edge-ml", "firmware-bridge"):
        text = text.replace(f"/opt/edge-ml/venv/bin/{tool} ", f"{_venv_bin(tool)} ")
    path = tmp_path / as_name
    path.write_text(text, encoding="utf-8")
    return path


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60,
                          check=False)


@needs_analyze
@pytest.mark.parametrize(("unit", "as_name"), CASES)
def test_unit_verifies(tmp_path: Path, unit: str, as_name: str) -> None:
    result = _analyze("verify", str(_local_copy(tmp_path, unit, as_name)))
    assert result.returncode == 0, result.stderr
    # verify reports unknown keys and bad values as warnings without failing.
    problems = [line for line in result.stderr.splitlines() if as_name in line]
    assert not problems, result.stderr


@needs_analyze
@pytest.mark.parametrize(("unit", "as_name"), CASES)
def test_security_exposure_is_low(tmp_path: Path, unit: str, as_name: str) -> None:
    result = _analyze("security", "--offline=yes", str(_local_copy(tmp_path, unit, as_name)))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def _settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in (UNITS / unit).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_edge_ml_unit_settings() -> None:
    s = _settings("edge-ml.service")
    assert s["Type"] == ["notify"]
    assert s["Restart"] == ["on-failure"]
    exec_start = "/opt/edge-ml/venv/bin/edge-ml run --config /etc/edge-ml/edge-ml.toml"
    assert s["ExecStart"] == [exec_start]
    assert s["StateDirectory"] == ["edge-ml"] and s["CacheDirectory"] == ["edge-ml"]
    assert s["ConfigurationDirectory"] == ["edge-ml"]
    assert "NUMBA_CACHE_DIR=%C/edge-ml" in s["Environment"]
    assert s["DynamicUser"] == ["yes"]
    assert int(s["WatchdogSec"][0]) > 0
    # Numba's JIT needs writable+executable pages.
    assert s.get("MemoryDenyWriteExecute", ["no"]) == ["no"]


def test_bridge_unit_settings() -> None:
    s = _settings("firmware-bridge@.service")
    assert "--port /dev/%I" in s["ExecStart"][0]
    assert s["DeviceAllow"] == ["/dev/%I rw"]
    assert s["DevicePolicy"] == ["closed"]
    assert s["SupplementaryGroups"] == ["dialout"]
    assert s["Restart"] == ["on-failure"]


def test_install_script_parses() -> None:
    script = UNITS / "install.sh"
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    text = script.read_text(encoding="utf-8")
    for needed in ("/opt/edge-ml", "edge-ml.service", "firmware-bridge@.service",
                   "edge-ml.example.toml", "daemon-reload", "mosquitto-edge-ml.conf",
                   "/etc/mosquitto/conf.d", "systemctl restart mosquitto"):
        assert needed in text


def test_edge_ml_unit_can_be_reloaded() -> None:
    """README, docs/deploy.md and the rollback/import/train messages say `systemctl reload`."""
    s = _settings("edge-ml.service")
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert Path("/bin/kill").exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_exec_reload_reloads_a_running_daemon(broker: LocalBroker, tmp_path: Path) -> None:
    """What systemd runs for `systemctl reload`, against the real daemon: it reloads, and lives."""
    (command,) = _settings("edge-ml.service")["ExecReload"]
    config = write_config(tmp_path / "edge-ml.toml", broker, tmp_path / "edge-ml.db")
    observer = Observer(broker, ["edge-ml/status"])
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: b"online" in observer.on("edge-ml/status")
                 or daemon.proc.poll() is not None, 120, "the daemon to come online")
        assert daemon.proc.poll() is None, daemon.log()
        loads_before = daemon.log().count("no usable checkpoint")
        argv = shlex.split(command.replace("$MAINPID", str(daemon.proc.pid)))
        subprocess.run(argv, check=True, timeout=10)
        wait_for(lambda: daemon.log().count("no usable checkpoint") > loads_before, 30,
                 "the daemon to reload its checkpoint")
        assert daemon.proc.poll() is None, daemon.log()  # SIGHUP's default action kills
    finally:
        observer.close()
        assert daemon.stop() == 0, daemon.log()


def _mosquitto_settings() -> dict[str, str]:
    out = {}
    for raw in (UNITS / "mosquitto-edge-ml.conf").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition(" ")
            assert key not in out, f"{key} twice"
            out[key] = value.strip()
    return out


def test_mosquitto_snippet_settings() -> None:
    s = _mosquitto_settings()
    assert int(s["max_queued_messages"]) >= 100_000  # mosquitto's 1000 drops bursts silently
    assert s["persistence"] == "true" and s["autosave_on_changes"] == "false"
    assert 60 <= int(s["autosave_interval"]) <= 1800  # SD cards: not on every change
    assert s["set_tcp_nodelay"] == "true"
    assert s["persistent_client_expiration"].endswith("d")
    # conf.d must not fight the main file: Debian's sets these, and some are refused twice.
    assert not set(s) & {"listener", "persistence_location", "log_dest", "pid_file",
                         "include_dir", "user"}


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="needs mosquitto-clients")
def test_mosquitto_snippet_keeps_a_burst_a_stock_broker_drops(tmp_path: Path) -> None:
    """Issue 16, item 1: `mosquitto_pub -q 1 -l` of 3,000 readings to a stock mosquitto reached
    the daemon as ~1,350. Beside Debian's main config, the shipped conf.d snippet keeps them."""
    port = free_port()
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    shutil.copy(UNITS / "mosquitto-edge-ml.conf", conf_d / "edge-ml.conf")
    main_conf = tmp_path / "mosquitto.conf"
    main_conf.write_text("\n".join([  # /etc/mosquitto/mosquitto.conf on Debian, plus a listener
        "user root" if os.geteuid() == 0 else "",
        "persistence true", f"persistence_location {tmp_path}/",
        f"log_dest file {tmp_path}/mosquitto.log", f"include_dir {conf_d}",
        f"listener {port} 127.0.0.1", "allow_anonymous true", ""]))
    mosquitto = subprocess.Popen([find_mosquitto(), "-c", str(main_conf)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    broker = LocalBroker(workdir=tmp_path / "unused", port=port)  # for write_config's port
    daemon = None
    try:
        wait_for(lambda: _listening(port), 10, "mosquitto to listen")
        db = tmp_path / "edge-ml.db"
        config = write_config(tmp_path / "edge-ml.toml", broker, db)
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        wait_for(lambda: "connected to" in daemon.log() or daemon.proc.poll() is not None,
                 120, "the daemon to connect")
        lines = "".join(f"{20 + (i % 7) * 0.1:.4f}\n" for i in range(3000))
        subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", "sensors/burst/t",
                        "-l"], input=lines, text=True, check=True, timeout=60)
        wait_for(lambda: _counters(db).get("readings_total") == 3000, 60,
                 "all 3,000 readings to be stored")
        log = (tmp_path / "mosquitto.log").read_text(errors="replace")
        assert "dropped" not in log, log
    finally:
        if daemon is not None:
            assert daemon.stop() == 0, daemon.log()
        mosquitto.terminate()
        mosquitto.wait(10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _counters(db: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(db) as conn:
            return dict(conn.execute("SELECT name, value FROM counters").fetchall())
    except sqlite3.Error:
        return {}
