"""``edge-ml train`` and ``edge-ml checkpoints ...`` through subprocesses on a real state file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def edge_ml(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ml", *args], capture_output=True,
                          text=True, timeout=120)


def test_train_then_list_show_export_import_rollback(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    config = tmp_path / "c.toml"
    config.write_text("[model]\nwindow_size = 50\nwarmup = 60\n")
    history = tmp_path / "boiler.csv"
    values = np.random.default_rng(1).normal(60.0, 1.0, 400)
    history.write_text("timestamp,value\n" + "".join(
        f"{1.7e9 + 60 * i},{v:.4f}\n" for i, v in enumerate(values)))

    first = edge_ml("train", str(history), "--config", str(config), "--db", str(db))
    assert first.returncode == 0, first.stderr
    assert "400 readings, 1 streams" in first.stdout
    second = edge_ml("train", str(history), "--stream", "sensors/boiler", "--config",
                     str(config), "--db", str(db))
    assert second.returncode == 0, second.stderr

    listed = edge_ml("checkpoints", "list", "--db", str(db), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["reason"] for r in rows] == ["train", "train"]
    newest, older = rows[0]["id"], rows[1]["id"]

    shown = edge_ml("checkpoints", "show", str(newest), "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    header = json.loads(shown.stdout)["header"]
    # Trained on top of the first: both streams, live counters of the first (none).
    assert header["trained_readings"] == 400 and header["readings_total"] == 0
    assert header["streams"] == 2 and header["trained_streams"] == ["sensors/boiler"]
    assert "1 streams trained (the other 1 from checkpoint" in second.stdout

    blob = tmp_path / "older.ckpt"
    exported = edge_ml("checkpoints", "export", str(older), str(blob), "--db", str(db))
    assert exported.returncode == 0, exported.stderr
    assert blob.stat().st_size > 0
    imported = edge_ml("checkpoints", "import", str(blob), "--db", str(db), "--config",
                       str(config))
    assert imported.returncode == 0, imported.stderr
    assert re.search(r"imported as checkpoint \d+", imported.stdout)

    rolled = edge_ml("checkpoints", "rollback", str(older), "--db", str(db))
    assert rolled.returncode == 0, rolled.stderr
    active = {json.loads(line)["id"]: json.loads(line)["active"] for line in
              edge_ml("checkpoints", "list", "--db", str(db), "--json").stdout.splitlines()}
    assert active[older] == 1 and active[newest] == 0

    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(blob.read_bytes()[:-10])
    refused = edge_ml("checkpoints", "import", str(corrupt), "--db", str(db))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr


def test_every_command_in_the_readme_exists() -> None:
    # The reverse of test_cli's check: a command documented but missing from the CLI fails here.
    documented = set(re.findall(r"`edge-ml ([a-z]+)", README.read_text()))
    documented |= {"checkpoints " + sub for sub in
                   re.search(r"`edge-ml checkpoints ([a-z|\\]+)", README.read_text()).group(1)
                   .replace("\\", "").split("|")}
    for command in sorted(documented):
        result = edge_ml(*command.split(), "--help")
        assert result.returncode == 0, f"edge-ml {command}: {result.stderr}"


def test_export_to_a_path_that_cannot_be_written_names_it(tmp_path: Path) -> None:
    from edge_ml.config import parse_config
    from edge_ml.pipeline import Pipeline
    from edge_ml.storage import Storage
    from edge_ml.train import train

    db = tmp_path / "state.db"
    history = tmp_path / "boiler.csv"
    history.write_text("timestamp,value\n" + "".join(f"{i},{i % 5}\n" for i in range(50)))
    checkpoint_id = train(Pipeline(parse_config({})), Storage(str(db)), [history], None,
                          5).checkpoint_id
    target = tmp_path / "no" / "such" / "cp.bin"
    result = edge_ml("checkpoints", "export", str(checkpoint_id), str(target), "--db", str(db))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{target}: cannot write: No such file or directory" in result.stderr
