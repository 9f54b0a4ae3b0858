"""Issue 16 item 9: the same fault gets the same exit code and message in every command, rejects
read as text, the demo never says "-0.0 s" nor names a log it deletes, and ``rollback`` says
what really happens with the daemon that runs (or does not)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_ml.demo import format_report
from edge_ml.records import Reject
from edge_ml.storage import PendingWrites, Storage
from tests.test_cli import edge_ml

DB_COMMANDS = [["status"], ["alerts"], ["checkpoints", "list"], ["checkpoints", "show", "1"],
               ["checkpoints", "export", "1", "out.ckpt"], ["checkpoints", "rollback", "1"],
               ["checkpoints", "save"]]


def test_a_missing_database_is_a_usage_error_with_one_message(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    messages = set()
    for args in DB_COMMANDS:
        result = edge_ml(*args, "--db", str(missing))
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        messages.add(result.stderr.strip().splitlines()[-1])
    assert len(messages) == 1, messages
    (message,) = messages
    assert f"--db: no database at {missing}" in message
    assert not missing.exists()


def test_a_missing_database_from_the_config_names_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "edge-ml.toml"
    config.write_text(f'[storage]\ndb = "{tmp_path}/missing.db"\n')
    for args in (["status"], ["alerts"]):
        result = edge_ml(*args, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert f"{config}: key 'storage.db': no database at" in result.stderr, result.stderr


def _db_with_rejects(path: Path) -> Path:
    storage = Storage(path)
    rejects = [Reject("sensors/a", reason, "why", b"x", 1_700_000_000.0)
               for reason in ["bad_json"] * 3 + ["non_finite"]]
    storage.write(PendingWrites(rejects=rejects, readings=10), [])
    storage.close()
    return path


def test_status_prints_rejects_as_text_and_json_as_json(tmp_path: Path) -> None:
    db = _db_with_rejects(tmp_path / "state.db")
    text = edge_ml("status", "--db", str(db))
    assert text.returncode == 0, text.stderr
    line = next(ln for ln in text.stdout.splitlines() if ln.startswith("rejects"))
    assert "bad_json: 3, non_finite: 1" in line and "{" not in line, line
    doc = edge_ml("status", "--db", str(db), "--json")
    assert json.loads(doc.stdout)["rejects_by_reason"] == {"bad_json": 3, "non_finite": 1}


def test_demo_report_never_says_minus_zero() -> None:
    t0 = 1000.0
    anomaly = {"stream": "sensors/a", "kind": "spike", "start": t0 + 10.0, "end": t0 + 12.0}
    alert = {"opened_at": t0 + 9.96, "score": 0.99, "severity": "warning", "stream": "sensors/a"}
    false_alarm = {"opened_at": t0 - 0.01, "score": 0.98, "stream": "sensors/b"}
    report = format_report([(anomaly, alert)], [false_alarm], t0)
    assert "-0.0" not in report, report
    assert "+0.0 s" in report and "at    0.0 s" in report, report


def test_demo_names_no_path_it_deletes(tmp_path: Path) -> None:
    report = tmp_path / "report.html"  # kept: the one path the demo may name
    run = subprocess.run([sys.executable, "-m", "edge_ml", "demo", "--seconds", "15", "--rate",
                          "40", "--sensors", "4", "--report", str(report)],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "kept" not in run.stdout  # a clean run removes its temporary folder...
    named = re.findall(r"(/\S+)", run.stdout)
    # ...so the output names nothing in it (the daemon log was named in the daemon line).
    assert not [p for p in named if "edge-ml-demo-" in p and p != str(report)], run.stdout
    assert "-0.0" not in run.stdout, run.stdout


def _db_with_checkpoints(path: Path, health: dict[str, object] | None) -> Path:
    storage = Storage(path)
    for n in (1, 2):
        storage.save_checkpoint(b"blob%d" % n, {"readings_total": n, "streams": 1}, "timer",
                                "sum", 10)
    if health is not None:
        storage.set_health(health)
    storage.close()
    return path


@pytest.mark.parametrize("running", [True, False])
def test_rollback_says_what_the_running_daemon_does(tmp_path: Path, running: bool) -> None:
    """The daemon looks for an operator's choice every few seconds (checkpointer.CHOICE_POLL_S),
    whatever its checkpoint interval: the message must not promise the interval (it promised
    "within 300 s" while the daemon ticked every 30 s)."""
    health = ({"state": "running", "pid": os.getpid(), "health_interval_s": 10.0,
               "updated_at": time.time()} if running else None)
    db = _db_with_checkpoints(tmp_path / "state.db", health)
    config = tmp_path / "edge-ml.toml"
    config.write_text(f'[storage]\ndb = "{db}"\ncheckpoint_interval_s = 30\n')
    for target, where in (("1", ("--db", str(db))), ("2", ("--config", str(config)))):
        result = edge_ml("checkpoints", "rollback", target, *where)
        assert result.returncode == 0, result.stderr
        assert "300" not in result.stdout and "30 s" not in result.stdout, result.stdout
        if running:
            assert f"pid {os.getpid()}" in result.stdout and "SIGHUP" in result.stdout, \
                result.stdout
            assert "within a few seconds" in result.stdout, result.stdout
        else:
            assert "no daemon is running" in result.stdout and "next start" in result.stdout
