"""``config check`` runs the same checks as ``run`` (issue 16 item 6): what ``run`` would refuse
before it talks to a broker, ``config check`` refuses too, with the key and the file named, and
without creating or migrating a database."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from edge_ml.config import load_config
from edge_ml.errors import ConfigError
from edge_ml.localbroker import free_port
from tests.test_cli import edge_ml


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge-ml.toml"
    path.write_text(f"[mqtt]\nport = {free_port()}\n{text}")
    return path


BAD = {
    "password file missing": ('username = "gw"\npassword_file = "{tmp}/no-such-password"\n'
                              '[storage]\ndb = "{tmp}/state/edge-ml.db"\n', "mqtt.password_file"),
    "tls ca missing": ('[mqtt.tls]\nca = "{tmp}/no-such-ca.pem"\n'
                       '[storage]\ndb = "{tmp}/state/edge-ml.db"\n', "mqtt.tls.ca"),
    "db in /proc": ('[storage]\ndb = "/proc/edge-ml-test.db"\n', "storage.db"),
    "db not a database": ('[storage]\ndb = "{tmp}/notes.txt"\n', "storage.db"),
    "db under a file": ('[storage]\ndb = "{tmp}/notes.txt/state/edge-ml.db"\n', "storage.db"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", [("config", "check"), ("run",)])
def test_config_check_refuses_what_run_refuses(tmp_path: Path, case: str,
                                               command: tuple[str, ...]) -> None:
    (tmp_path / "notes.txt").write_text("not a database\n")
    text, key = BAD[case]
    config = _config(tmp_path, text.replace("{tmp}", str(tmp_path)))
    result = edge_ml(*command, "--config", str(config), timeout=120)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"key '{key}'" in result.stderr and str(config) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists()


def test_config_check_creates_no_database_and_no_folder(tmp_path: Path) -> None:
    config = _config(tmp_path, f'[storage]\ndb = "{tmp_path}/new/state/edge-ml.db"\n')
    result = edge_ml("config", "check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge-ml.toml"]


def test_config_check_does_not_migrate_an_existing_database(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, "
                 "applied_at REAL)")
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'initial tables', 0)")
    conn.commit()
    conn.close()
    from edge_ml.preflight import check_config

    before = hashlib.sha256(db.read_bytes()).hexdigest()
    check_config(load_config(_config(tmp_path, f'[storage]\ndb = "{db}"\n')))
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge-ml.toml", "old.db"]


def test_check_config_names_the_key(tmp_path: Path) -> None:
    config = _config(tmp_path, '[storage]\ndb = "/proc/edge-ml-test.db"\n')
    from edge_ml.preflight import check_config

    with pytest.raises(ConfigError) as info:
        check_config(load_config(config))
    assert info.value.key == "storage.db" and info.value.path == str(config)
