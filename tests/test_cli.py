"""``edge-ml`` commands through real subprocesses on a real SQLite file; every command has help
text and is documented in README.md."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from edge_ml.cli import main
from edge_ml.localbroker import free_port
from edge_ml.records import AlertEvent
from edge_ml.storage import PendingWrites, Storage

README = Path(__file__).resolve().parent.parent / "README.md"
NOW = 1_700_000_000.0


def edge_ml(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_ML_CONFIG"}
    return subprocess.run([sys.executable, "-m", "edge_ml", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _stream_row(stream: str, readings: int, score: float | None, warming: int,
                open_alert: str | None) -> dict[str, object]:
    return {"stream": stream, "first_seen": NOW, "last_seen": NOW + readings,
            "last_seen_iso": "2023-11-14T22:13:20.000+00:00", "new_readings": readings,
            "last_value": 21.5, "last_score": score, "warming_up": warming,
            "open_alert": open_alert}


def _alert(alert_id: str, stream: str, state: str, ts: float) -> AlertEvent:
    return AlertEvent(alert_id, stream, state, 0.995, 80.5, ts, NOW + 10,
                      ts if state == "resolved" else None, "warning")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    """A state file as the daemon leaves it: three streams, one open and one resolved alert."""
    path = tmp_path / "state.db"
    storage = Storage(path)
    pending = PendingWrites(
        alerts=[_alert("a1", "sensors/boiler/temp", "open", NOW + 10),
                _alert("a2", "sensors/pump/vibration", "open", NOW + 20),
                _alert("a2", "sensors/pump/vibration", "resolved", NOW + 30)],
        readings=1000,
    )
    storage.write(pending, [
        _stream_row("sensors/boiler/temp", 600, 0.9951, 0, "a1"),
        _stream_row("sensors/pump/vibration", 300, 0.12, 0, None),
        _stream_row("sensors/new/humidity", 100, None, 1, None),
    ])
    storage.close()
    yield path


def test_status_json_has_the_documented_keys(db: Path) -> None:
    result = edge_ml("status", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["readings_total"] == 1000 and doc["rejects_total"] == 0
    assert "last_checkpoint" in doc
    streams = {s["stream"]: s for s in doc["streams"]}
    assert set(streams) == {"sensors/boiler/temp", "sensors/pump/vibration",
                            "sensors/new/humidity"}
    for s in streams.values():
        assert {"stream", "readings", "warming_up", "last_score", "open_alert"} <= set(s)
    assert streams["sensors/boiler/temp"]["open_alert"] == "a1"
    assert streams["sensors/new/humidity"]["warming_up"] is True


def test_status_table_is_readable(db: Path) -> None:
    result = edge_ml("status", "--db", str(db))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("readings") and "1,000" in line for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("stream "))
    rows = lines[header + 1:]
    assert len(rows) == 3
    boiler = next(r for r in rows if r.startswith("sensors/boiler/temp"))
    assert "600" in boiler and "scoring" in boiler and "0.9951" in boiler and "a1" in boiler
    humidity = next(r for r in rows if r.startswith("sensors/new/humidity"))
    assert "warming" in humidity
    # columns line up: every row has its readings count ending at the same column
    ends = {r.index(str(n)) + len(str(n)) for r, n in zip(
        [next(r for r in rows if r.startswith(s)) for s in
         ("sensors/boiler/temp", "sensors/pump/vibration", "sensors/new/humidity")],
        (600, 300, 100), strict=True)}
    assert len(ends) == 1


def test_alerts_table_json_and_filters(db: Path) -> None:
    table = edge_ml("alerts", "--db", str(db))
    assert table.returncode == 0, table.stderr
    assert len(table.stdout.splitlines()) == 4  # header + 3 events
    rows = [json.loads(line) for line in edge_ml("alerts", "--db", str(db),
                                                  "--json").stdout.splitlines()]
    assert [r["ts"] for r in rows] == sorted((r["ts"] for r in rows), reverse=True)
    open_rows = edge_ml("alerts", "--db", str(db), "--open", "--json").stdout.splitlines()
    assert [json.loads(r)["alert_id"] for r in open_rows] == ["a1"]
    pump = edge_ml("alerts", "--db", str(db), "--stream", "sensors/pump/*", "--json")
    assert {json.loads(r)["stream"] for r in pump.stdout.splitlines()} == {
        "sensors/pump/vibration"}


def test_alerts_without_database_is_a_clear_error(tmp_path: Path) -> None:
    result = edge_ml("alerts", "--db", str(tmp_path / "missing.db"))
    assert result.returncode == 2  # a path to fix: a usage error (README: exit codes)
    assert "missing.db" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_alerts_follow_prints_new_alerts(db: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_ML_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_ml", "alerts", "--db", str(db), "--follow", "--json",
         "--stream", "sensors/boiler/*"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())  # the existing matching alert
        assert first["alert_id"] == "a1"
        storage = Storage(db)  # the daemon's side: a new alert arrives
        storage.write(PendingWrites(alerts=[
            _alert("a3", "sensors/other/x", "open", NOW + 40),  # filtered out
            _alert("a1", "sensors/boiler/temp", "resolved", NOW + 50),
        ]), [])
        storage.close()
        new = json.loads(proc.stdout.readline())
        assert (new["alert_id"], new["state"]) == ("a1", "resolved")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_config_check_prints_effective_settings(tmp_path: Path) -> None:
    config = tmp_path / "edge-ml.toml"
    config.write_text("[model]\nn_trees = 25\n")
    result = edge_ml("config", "check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["source"] == str(config) and doc["model"]["n_trees"] == 25
    assert doc["mqtt"]["topics"] == ["sensors/#"]


def test_config_check_names_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "edge-ml.toml"
    config.write_text("[mqtt]\nprot = 1883\n")
    result = edge_ml("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert "mqtt.prot" in result.stderr and str(config) in result.stderr


def test_example_config_is_valid_and_complete() -> None:
    """systemd/edge-ml.example.toml passes ``config check`` and documents every key."""
    example = Path(__file__).resolve().parent.parent / "systemd" / "edge-ml.example.toml"
    result = edge_ml("config", "check", "--config", str(example))
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    text = example.read_text()

    def keys(doc: dict[str, object], prefix: str = "") -> Iterator[str]:
        for key, value in doc.items():
            if isinstance(value, dict):
                yield from keys(value, f"{prefix}{key}.")
            elif key != "source":
                yield f"{prefix}{key}"

    missing = [k for k in keys(effective)
               if not re.search(rf"^#? ?{re.escape(k.rsplit('.', 1)[-1])} =", text, re.M)]
    assert not missing, f"undocumented keys in the example config: {missing}"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


ALL_COMMANDS = list(_commands(main))


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS,
                         ids=[" ".join(p) for p, _ in ALL_COMMANDS])
def test_every_command_has_help(path: tuple[str, ...], command: click.Command) -> None:
    assert (command.help or "").strip(), f"edge-ml {' '.join(path)} has no help text"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"edge-ml {' '.join(path)} {param.opts[0]} has no help text"


def test_help_runs() -> None:
    result = edge_ml("--help")
    assert result.returncode == 0
    for path, _ in ALL_COMMANDS:
        if len(path) == 1:
            assert path[0] in result.stdout


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS,
                         ids=[" ".join(p) for p, _ in ALL_COMMANDS])
def test_every_command_is_in_readme(path: tuple[str, ...], command: click.Command) -> None:
    if not README.exists():
        pytest.fail("README.md is missing")
    text = README.read_text(encoding="utf-8")
    *groups, leaf = path
    # "edge-ml config check", or a group line listing it: "edge-ml checkpoints list|show"
    pattern = rf"edge-ml {' '.join(map(re.escape, groups))}{' ' if groups else ''}[^\n]*?\b" \
              rf"{re.escape(leaf)}\b" if groups else rf"edge-ml {re.escape(leaf)}\b"
    assert re.search(pattern, text), f"`edge-ml {' '.join(path)}` is not in README.md"


# -- database paths that cannot be used -----------------------------------------------------
def _bad_db(tmp_path: Path, kind: str) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    if kind == "under a file":
        return blocker / "state" / "edge-ml.db"
    return blocker  # an existing file that is not a database


@pytest.mark.parametrize("kind", ["under a file", "not a database"])
@pytest.mark.parametrize("command", ["run", "train", "status", "alerts"])
def test_unusable_db_from_config_is_a_config_error(tmp_path: Path, kind: str,
                                                    command: str) -> None:
    db = _bad_db(tmp_path, kind)
    config = tmp_path / "edge-ml.toml"
    config.write_text(f'[mqtt]\nport = {free_port()}\n[storage]\ndb = "{db}"\n')
    history = tmp_path / "history.csv"
    history.write_text("timestamp,value\n1700000000,1.0\n1700000001,2.0\n")
    args = {"run": ["run"], "train": ["train", str(history)]}.get(command, [command])
    result = edge_ml(*args, "--config", str(config), timeout=120)
    assert result.returncode == 2, result.stderr
    assert "storage.db" in result.stderr and str(config) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["under a file", "not a database"])
def test_unusable_db_option_is_a_usage_error(tmp_path: Path, kind: str) -> None:
    db = _bad_db(tmp_path, kind)
    history = tmp_path / "history.csv"
    history.write_text("timestamp,value\n1700000000,1.0\n")
    for args in (["train", str(history), "--db", str(db)], ["status", "--db", str(db)]):
        result = edge_ml(*args, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "--db" in result.stderr and "a-file" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
