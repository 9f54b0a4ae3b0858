"""The state file's migrations (edge_ml.storage.schema), on real SQLite files."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from edge_ml.storage import MIGRATIONS, Storage


def test_processes_opening_a_new_file_at_once_all_get_the_schema(tmp_path: Path) -> None:
    # The daemon creating its database while the CLI opens it: each migration must run once.
    db = tmp_path / "race.db"
    start = time.time() + 1.0
    code = ("import sys, time\n"
            "from edge_ml.storage import Storage\n"
            "while time.time() < float(sys.argv[2]): pass\n"
            "Storage(sys.argv[1]).close()\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), str(start)],
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    storage = Storage(db)
    try:
        assert storage.schema_version == len(MIGRATIONS)
        assert storage.db["schema_migrations"].count == len(MIGRATIONS)
    finally:
        storage.close()


def test_importing_storage_does_not_import_sqlite_utils() -> None:
    # Replay names edge_ml.storage but opens no database: ~0.1 s of its startup (a30017e).
    code = ("import sys\nimport edge_ml.storage\n"
            "assert 'sqlite_utils' not in sys.modules, 'imported at import time'\n"
            "edge_ml.storage.Storage(':memory:').close()\n"
            "assert 'sqlite_utils' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
