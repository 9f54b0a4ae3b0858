"""What ``edge-ml run`` checks before it starts, and ``edge-ml config check`` with it.

A config that loads (:func:`edge_ml.config.load_config`) can still name files the daemon cannot
use: a password or TLS file that is missing, a database path it cannot create or that is not a
database. One function checks them all without a broker and without writing anything, so a
config that passes ``config check`` is one ``run`` accepts.
"""

from __future__ import annotations

from edge_ml.config import Config
from edge_ml.errors import ConfigError, StoragePathError
from edge_ml.mqtt import check_files
from edge_ml.storage import check_path


def check_config(config: Config) -> None:
    """Raise ConfigError (naming the key and the file) for anything ``run`` would refuse."""
    check_files(config.mqtt, config.source)
    try:
        check_path(config.storage.db)
    except StoragePathError as exc:
        raise ConfigError(str(exc), key="storage.db", path=config.source) from exc
