"""Typed configuration from a TOML file: every key defaulted, unknown keys and bad values refused.

Lookup order for the file: ``--config PATH``, then ``$EDGE_ML_CONFIG``, then
``/etc/edge-ml/edge-ml.toml``. A missing default file means "all defaults"; a missing file that
was asked for by name is an error. Standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from edge_ml.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/edge-ml/edge-ml.toml")
DEFAULT_DB_PATH = Path("/var/lib/edge-ml/edge-ml.db")


def _check(*, low: float | None = None, high: float | None = None, choices: tuple = ()) -> Any:
    return {"low": low, "high": high, "choices": choices}


def _f(default: Any, **check: Any) -> Any:
    return field(default=default, metadata=_check(**check))


@dataclass(frozen=True)
class TlsConfig:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False  # skip hostname verification (self-signed lab brokers only)


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = _f(1883, low=1, high=65535)
    # Resolved at load time when not set: "edge-ml-<[daemon] gateway_id>", unique per gateway
    # and stable across restarts (the broker keeps the persistent session under it).
    client_id: str = ""
    username: str | None = None
    password_file: str | None = None
    tls: TlsConfig = field(default_factory=TlsConfig)
    topics: list[str] = field(default_factory=lambda: ["sensors/#"])
    qos: int = _f(1, choices=(0, 1, 2))
    protocol: str = _f("3.1.1", choices=("3.1.1", "5"))
    keepalive_s: int = _f(30, low=5, high=3600)
    # Persistent session: the broker queues QoS 1 readings while the daemon is away.
    clean_session: bool = False
    session_expiry_s: int = _f(86400, low=0)
    reconnect_min_s: float = _f(1.0, low=0.1)
    reconnect_max_s: float = _f(60.0, low=1.0)
    max_payload_bytes: int = _f(65536, low=16, high=16 * 1024 * 1024)


@dataclass(frozen=True)
class StorageConfig:
    db: str = ""  # resolved at load time: $STATE_DIRECTORY/edge-ml.db under systemd
    # A checkpoint of 1,000 streams warmed up is a ~2.2 MB blob, ~4 MB written with its share
    # of WAL copy-back (docs/benchmarks.md, disk writes): every 2 h, ~48 MB a day; hourly would
    # leave the 200 MB/day budget no margin. Also at stop and on request; skipped when idle.
    checkpoint_interval_s: float = _f(7200.0, low=1.0)
    retention: int = _f(10, low=1)  # checkpoints kept
    alert_retention_days: float = _f(90.0, low=0.0)  # 0 keeps alerts forever
    rejects_kept: int = _f(10000, low=10)
    # Alerts are written at once, drift events (and the first reject) within this.
    flush_interval_s: float = _f(1.0, low=0.05, high=60.0)
    # Per-stream statistics, reading counters and the health record are written this often
    # (and before each checkpoint and at stop), as one transaction: 1,000 streams rewritten
    # every second would be ~9 GB a day on an SD card (docs/benchmarks.md, disk writes).
    stats_interval_s: float = _f(600.0, low=0.05, high=86400.0)
    # How long the daemon's writes wait for a lock held by another process (a backup, a
    # Datasette write) before giving up until a later retry: the worker must not stall on it.
    busy_timeout_s: float = _f(0.1, low=0.0, high=10.0)


@dataclass(frozen=True)
class ModelConfig:
    backend: str = _f("numba", choices=("numba", "river"))
    # 20 trees of height 7: the node masses of 10 trees of height 8 (same bytes per stream),
    # a steadier score (Shuttle ROC-AUC 0.99 over forest seeds; docs/benchmarks.md).
    n_trees: int = _f(20, low=1, high=256)
    height: int = _f(7, low=1, high=20)
    window_size: int = _f(250, low=2, high=1_000_000)
    seed: int = _f(42, low=0)
    # Readings a stream must have seen before its scores may raise alerts; a third of them
    # once it also spans two days and the reading's time-of-day slot is grown (a slow stream:
    # hourly, 4 days instead of 12.5; kernels/calibration.py, warming_up).
    warmup: int = _f(300, low=0)
    paper_score: bool = False
    # Drift (edge_ml.drift): Page-Hinkley on per-stream block means of the value, in units of
    # the stream's own spread. "reset" gives a drifted stream a fresh model; "none" only
    # records/publishes the event.
    drift_reaction: str = _f("reset", choices=("reset", "none"))
    drift_block: int = _f(50, low=1, high=100_000)  # scored readings per block mean
    drift_threshold: float = _f(5.0, low=0.0)  # Page-Hinkley lambda, in stream sd units
    drift_delta: float = _f(0.5, low=0.0)  # change of the block mean tolerated, in sd
    drift_min_blocks: int = _f(10, low=1)  # blocks before a drift can be reported
    # How far a stream whose moderate extremes (|z| > 2.58) come more often than a Gaussian's
    # may have its z-scores lowered, read from those within its first hundreds of readings
    # (kernels/calibration.py, shoulder_scale): 1 = never (shipped; the stream's own tail
    # alone, learned over ~10,000 readings), 0.5 = at most halved, 0 = as far as they say.
    # Lower: fewer false alerts from heavy-tailed sensors, more labelled extremes missed on
    # spiky ones (docs/benchmarks.md, round 16).
    heavy_tail_floor: float = _f(1.0, low=0.0, high=1.0)


@dataclass(frozen=True)
class FeaturesConfig:
    # The seasonal cycle the time-of-day profile follows, and its slots (48 = half-hours).
    season_s: float = _f(86400.0, low=1.0)
    season_bins: int = _f(48, low=1, high=1440)


@dataclass(frozen=True)
class AlertsConfig:
    topic_prefix: str = "edge-ml"
    # Level 0.5 is a tail probability of 1e-5 (see kernels/calibration.py).
    threshold: float = _f(0.5, low=0.0, high=1.0)
    # Hysteresis: an open alert resolves when the level falls below this.
    resolve_threshold: float = _f(0.4, low=0.0, high=1.0)
    debounce: int = _f(1, low=1, high=10000)
    # No new alert on a stream within this many readings of its last one opening...
    cooldown_readings: int = _f(150, low=0)
    # ...nor within this many seconds of its last one resolving.
    cooldown_s: float = _f(0.0, low=0.0)
    homeassistant: bool = False
    homeassistant_prefix: str = "homeassistant"


@dataclass(frozen=True)
class DaemonConfig:
    queue_size: int = _f(100_000, low=10)
    batch_size: int = _f(2048, low=1, high=1_000_000)
    # Under load (the previous micro-batch had more than one message) the worker waits this
    # long for a batch to fill; an idle stream's reading is processed at once.
    batch_linger_s: float = _f(0.001, low=0.0, high=1.0)
    health_interval_s: float = _f(10.0, low=0.5)
    metrics_port: int = _f(0, low=0, high=65535)  # 0 = no Prometheus endpoint
    # Streams held at most (~12 KB each, as much again in the checkpoint snapshot); readings for
    # new streams beyond it are rejected as "stream_limit", so a publisher with an id in its
    # topics cannot exhaust memory. 10,000 fit in ~300 MB (docs/benchmarks.md).
    max_streams: int = _f(10_000, low=1, high=10_000_000)
    # This gateway's name wherever several meet (a central broker, Home Assistant): in the
    # health document, the default client id and the Home Assistant device. Resolved at load
    # time when not set: the host name.
    gateway_id: str = ""


@dataclass(frozen=True)
class DevicesConfig:
    # MQTT filters grouping streams of several topics into devices (edge_ml.devices): a stream
    # matching one belongs to the device named by its levels before the pattern's last
    # wildcard ("sensors/+/+" puts sensors/pump1/flow in device sensors/pump1). The fields of
    # one JSON/msgpack map or frame form a device without any pattern.
    patterns: list[str] = field(default_factory=list)
    # A field's last value older than this (seconds) does not complete a device's row.
    stale_s: float = _f(3600.0, low=0.0)


@dataclass(frozen=True)
class Config:
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    source: str | None = None  # the file it came from, for messages

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


def default_db_path() -> str:
    state_dir = os.environ.get("STATE_DIRECTORY")
    if state_dir:
        # systemd may pass several colon-separated directories; the first is ours.
        return str(Path(state_dir.split(":")[0]) / "edge-ml.db")
    return str(DEFAULT_DB_PATH)



# A gateway id goes into client ids, Home Assistant ids and `edge-ml fleet` listings: letters,
# digits, '.', '_' and '-' (a host name fits), never an MQTT wildcard or level separator.
GATEWAY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def default_gateway_id() -> str:
    """The host name, made a valid gateway id (``localhost`` when nothing usable is left).

    Examples
    --------
    >>> bool(GATEWAY_ID.match(default_gateway_id()))
    True
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("-._")[:64]
    return name or "localhost"


def _convert(value: Any, tp: Any, key: str, path: str | None) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return _convert(value, args[0], key, path)
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {value!r}", key=key, path=path)
        return [_convert(v, item_tp, f"{key}[{i}]", path) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", key=key, path=path)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", key=key, path=path)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {value!r}", key=key, path=path)
        if not math.isfinite(value):
            raise ConfigError(f"expected a finite number, got {value!r}", key=key, path=path)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", key=key, path=path)
        return value
    raise ConfigError(f"unsupported type for {value!r}", key=key, path=path)


def _build(cls: type, data: dict[str, Any], section: str, path: str | None) -> Any:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{section}.{name}" if section else name
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key (known here: {known})", key=key, path=path)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError("expected a table", key=key, path=path)
            kwargs[name] = _build(tp, value, key, path)
            continue
        converted = _convert(value, tp, key, path)
        meta = fields[name].metadata
        if meta.get("choices") and converted not in meta["choices"]:
            allowed = ", ".join(repr(c) for c in meta["choices"])
            raise ConfigError(f"must be one of {allowed}, got {value!r}", key=key, path=path)
        if meta.get("low") is not None and converted < meta["low"]:
            raise ConfigError(f"must be >= {meta['low']}, got {value!r}", key=key, path=path)
        if meta.get("high") is not None and converted > meta["high"]:
            raise ConfigError(f"must be <= {meta['high']}, got {value!r}", key=key, path=path)
        kwargs[name] = converted
    return cls(**kwargs)


# MQTT limits a topic (name or filter) to 65535 bytes of UTF-8 (the length is a 16-bit field).
MAX_TOPIC_BYTES = 65535


def topic_filter_problem(text: str) -> str | None:
    """Why ``text`` is not a valid MQTT subscription filter, or None when it is.

    The broker-independent rules of MQTT 3.1.1/5: not empty, no NUL, at most 65535 UTF-8 bytes,
    ``#`` only as the whole last level, ``+`` only as a whole level.

    Examples
    --------
    >>> topic_filter_problem("sensors/+/temp") is None, topic_filter_problem("a/#") is None
    (True, True)
    >>> topic_filter_problem("a/#/b")
    "'#' is only allowed as the whole last level (like 'a/#')"
    """
    if not text:
        return "must not be empty"
    if "\0" in text:
        return "must not contain a NUL character"
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid UTF-8"
    if size > MAX_TOPIC_BYTES:
        return f"is {size} bytes of UTF-8, MQTT allows {MAX_TOPIC_BYTES}"
    levels = text.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' is only allowed as the whole last level (like 'a/#')"
        if "+" in level and level != "+":
            return "'+' is only allowed as a whole level (like 'a/+/b')"
    return None


def _publish_prefix_problem(text: str) -> str | None:
    """Why ``text`` cannot start the topics edge-ml publishes to, or None when it can."""
    if not text or text.startswith("/"):
        return "must be a plain topic prefix, not empty and not starting with '/'"
    if "#" in text or "+" in text:
        return "must be a plain topic prefix without wildcards ('#', '+')"
    return topic_filter_problem(text)  # NUL, UTF-8, length


def _validate(config: Config, path: str | None) -> None:
    mqtt = config.mqtt
    if not mqtt.topics:
        raise ConfigError("needs at least one topic filter", key="mqtt.topics", path=path)
    for i, topic in enumerate(mqtt.topics):
        problem = topic_filter_problem(topic)
        if problem:
            raise ConfigError(f"{topic!r} is not a valid MQTT topic filter: {problem}",
                              key=f"mqtt.topics[{i}]", path=path)
    if not mqtt.host.strip() or any(c.isspace() for c in mqtt.host):
        raise ConfigError(f"must be a host name or address, got {mqtt.host!r}", key="mqtt.host",
                          path=path)
    # paho refuses an empty id with a persistent session; Home Assistant ids derive from it.
    if not mqtt.client_id or "\0" in mqtt.client_id:
        raise ConfigError(f"must be a non-empty client id, got {mqtt.client_id!r}",
                          key="mqtt.client_id", path=path)
    gateway_id = config.daemon.gateway_id
    if not GATEWAY_ID.match(gateway_id):
        raise ConfigError(
            f"must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit), "
            f"got {gateway_id!r}", key="daemon.gateway_id", path=path)
    if mqtt.password_file is not None and not mqtt.username:
        raise ConfigError("needs mqtt.username (the password goes with a user name)",
                          key="mqtt.password_file", path=path)
    if config.alerts.resolve_threshold > config.alerts.threshold:
        raise ConfigError(
            "must not exceed alerts.threshold (hysteresis)", key="alerts.resolve_threshold",
            path=path,
        )
    if config.mqtt.reconnect_min_s > config.mqtt.reconnect_max_s:
        raise ConfigError(
            "must not exceed mqtt.reconnect_max_s", key="mqtt.reconnect_min_s", path=path
        )
    for name in ("topic_prefix", "homeassistant_prefix"):
        prefix = getattr(config.alerts, name)
        problem = _publish_prefix_problem(prefix)
        if problem:
            raise ConfigError(f"{problem}, got {prefix!r}", key=f"alerts.{name}", path=path)
    for i, pattern in enumerate(config.devices.patterns):
        problem = topic_filter_problem(pattern)
        if problem is None and "+" not in pattern and "#" not in pattern:
            problem = "needs a wildcard ('+' or '#'): the device is the levels before it"
        if problem is None and pattern.split("/")[0] in ("+", "#"):
            problem = "needs a level before its first wildcard, to name the device"
        if problem:
            raise ConfigError(f"{pattern!r} is not a device pattern: {problem}",
                              key=f"devices.patterns[{i}]", path=path)
    tls = config.mqtt.tls
    if (tls.cert is None) != (tls.key is None):
        raise ConfigError("cert and key go together", key="mqtt.tls.cert", path=path)


def parse_config(data: dict[str, Any], path: str | None = None) -> Config:
    """Build a validated :class:`Config` from already-parsed TOML data."""
    config: Config = _build(Config, data, "", path)
    # "edge-ml/" means "edge-ml": one spelling, so that every topic built from it agrees
    # (the daemon's status topic once read "edge-ml//status" while Home Assistant watched
    # "edge-ml/status").
    config = dataclasses.replace(config, alerts=dataclasses.replace(
        config.alerts, topic_prefix=config.alerts.topic_prefix.rstrip("/"),
        homeassistant_prefix=config.alerts.homeassistant_prefix.rstrip("/")))
    if not config.storage.db:
        config = dataclasses.replace(
            config, storage=dataclasses.replace(config.storage, db=default_db_path())
        )
    if "gateway_id" not in data.get("daemon", {}):
        config = dataclasses.replace(config, daemon=dataclasses.replace(
            config.daemon, gateway_id=default_gateway_id()))
    if "client_id" not in data.get("mqtt", {}):
        # Unique per gateway, so gateways sharing a broker do not take each other's session
        # over; stable while the gateway id is, so the persistent session survives restarts.
        config = dataclasses.replace(config, mqtt=dataclasses.replace(
            config.mqtt, client_id=f"edge-ml-{config.daemon.gateway_id}"))
    _validate(config, path)
    return dataclasses.replace(config, source=path)


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> tuple[Path | None, bool]:
    """The file to read and whether it must exist (named explicitly or by environment)."""
    if explicit:
        return Path(explicit), True
    env = os.environ.get("EDGE_ML_CONFIG")
    if env:
        return Path(env), True
    return DEFAULT_CONFIG_PATH, False


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Read, parse and validate the configuration.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "edge-ml.toml"
    >>> _ = p.write_text("[model]\\nn_trees = 25\\n")
    >>> load_config(p).model.n_trees
    25
    """
    path, required = resolve_config_path(explicit)
    if path is None or not path.exists():
        if required:
            raise ConfigError("file not found", path=str(path))
        return parse_config({}, None)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(path)) from exc
    return parse_config(data, str(path))
