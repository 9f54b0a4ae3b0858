"""``edge-ml``: thin commands over the library. Exit codes: 0 ok, 1 runtime failure, 2 usage
or config error (with the key and the file named)."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from edge_ml import __version__
from edge_ml.config import Config, load_config
from edge_ml.errors import (
    ConfigError,
    DaemonError,
    DaemonRunningError,
    EdgeMLError,
    StorageError,
    StoragePathError,
)
from edge_ml.sparkline import BLOCKS, render
from edge_ml.status import (
    daemon_liveness,
    follow_alerts,
    recent_sparklines,
    request_checkpoint,
    status_document,
)
from edge_ml.storage import Storage, open_existing


class UsageError(click.UsageError):
    exit_code = 2


class RefusedError(click.ClickException):
    """Not started because of something outside this command (another daemon): exit 2."""

    exit_code = 2


def _config(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc


def _storage_error(exc: EdgeMLError, db: str | None, config: Config | None) -> click.ClickException:
    """Name where the database path came from: ``--db``, or ``storage.db`` and the config file.

    A path that cannot be used is a usage or config error (exit 2); anything else exits 1.
    """
    if db:
        message = f"--db: {exc}"
    else:
        message = str(ConfigError(str(exc), key="storage.db",
                                  path=config.source if config else None))
    if isinstance(exc, StoragePathError):
        return UsageError(message)
    return click.ClickException(message)


def _open(db: str | None, config_path: str | None = None) -> Storage:
    config = None if db else _config(config_path)
    try:
        return open_existing(config.storage.db if config else str(db))
    except EdgeMLError as exc:
        raise _storage_error(exc, db, config) from exc


def _since(text: str | None) -> float | None:
    """Epoch seconds from ``1700000000``, ISO 8601, or a relative ``15m``/``2h``/``3d``."""
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    from edge_ml.timestamps import parse_timestamp

    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise UsageError(f"--since: cannot read {text!r} (try 1h, 2d or ISO 8601)") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-ml")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Edge anomaly detection for IoT sensor streams (MQTT in, alerts out)."""
    level = logging.WARNING - 10 * verbose if verbose else logging.INFO
    logging.basicConfig(
        level=max(level, logging.DEBUG), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config (default: $EDGE_ML_CONFIG or /etc/edge-ml/edge-ml.toml).")
def run(config_path: str | None) -> None:
    """Run the daemon in the foreground (what systemd runs)."""
    from edge_ml.daemon import Daemon

    config = _config(config_path)
    try:
        daemon = Daemon(config)
    except ConfigError as exc:  # a password/TLS file, the database path
        raise UsageError(str(exc)) from exc
    except DaemonRunningError as exc:  # another daemon holds the database
        raise RefusedError(str(exc)) from exc
    except EdgeMLError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(daemon.run())


@main.command()
@click.option("--seconds", default=30.0, show_default=True, help="How long the fleet publishes.")
@click.option("--sensors", default=8, show_default=True, help="Simulated sensor nodes.")
@click.option("--rate", default=20.0, show_default=True, help="Readings per second per node.")
@click.option("--seed", default=7, show_default=True, help="Seed of the simulated fleet.")
@click.option("--workdir", type=click.Path(file_okay=False),
              help="Keep the broker, database and logs here (default: a temp dir).")
@click.option("--report", type=click.Path(dir_okay=False), default="edge-ml-demo-report.html",
              show_default=True, help="Write the HTML report of the run here.")
def demo(seconds: float, sensors: int, rate: float, seed: int, workdir: str | None,
         report: str) -> None:
    """Private broker + simulated sensors + the daemon; alerts found vs anomalies injected."""
    from edge_ml.demo import run_demo

    try:
        ok = run_demo(seconds=seconds, sensors=sensors, rate=rate, seed=seed,
                      workdir=Path(workdir) if workdir else None, report=Path(report),
                      out=click.echo)
    except EdgeMLError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(0 if ok else 1)


def _why(row: dict[str, Any]) -> str:
    """``view expected LOW..HIGH fields a=0.7,b=0.3`` of an alert row ('' when unknown)."""
    if not row.get("view"):
        return ""
    parts = [row["view"]]
    if row.get("expected_low") is not None and row.get("expected_high") is not None:
        parts.append(f"expected {row['expected_low']:.4g}..{row['expected_high']:.4g}")
    fields = row.get("fields") or {}
    if fields and list(fields) != [row["stream"]]:  # a per-field alert's field is its stream
        parts.append("fields " + ",".join(f"{k}={v:.2f}" for k, v in fields.items()))
    return " ".join(parts)


def _alert_table(rows: list[dict[str, Any]], sparklines: dict[str, str] | None = None) -> str:
    """Alert rows; with ``sparklines``, each stream's last hour after its name."""
    if not rows:
        return "no alerts"
    width = max((len(r["stream"]) for r in rows), default=6)
    spark = "" if sparklines is None else "  last hour (a minute a character)"
    lines = [f"{'time (UTC)':<24} {'state':<9} {'severity':<9} {'score':>7} {'value':>12}  "
             f"{'stream':<{width}}{spark}  why".rstrip()]
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4g}"
        recent = "" if sparklines is None else f"  {sparklines.get(r['stream'], '')}"
        lines.append(
            f"{(r['ts_iso'] or '')[:23]:<24} {r['state']:<9} {r['severity']:<9} "
            f"{r['score']:>7.4f} {value:>12}  {r['stream']:<{width}}{recent}  {_why(r)}".rstrip()
        )
    return "\n".join(lines)


@main.command()
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: from config).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config.")
@click.option("--stream", "stream_glob", help="Only streams matching this glob (sensors/*/temp).")
@click.option("--since", help="Only alerts since: 1h, 2d, epoch seconds or ISO 8601.")
@click.option("--open", "open_only", is_flag=True, help="Only alerts still open.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@click.option("--limit", default=100, show_default=True, help="At most this many rows.")
@click.option("--follow", is_flag=True, help="Keep printing new alerts as they are stored.")
def alerts(db: str | None, config_path: str | None, stream_glob: str | None, since: str | None,
           open_only: bool, as_json: bool, limit: int, follow: bool) -> None:
    """List alerts (one row per open and per resolve), newest first."""
    storage = _open(db, config_path)
    try:
        rows = storage.alerts(stream_glob, _since(since), open_only, limit)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
    else:
        try:
            recent = recent_sparklines(storage, {r["stream"] for r in rows})
        except StorageError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(_alert_table(rows, recent))
    if not follow:
        return
    shown = max((r["id"] for r in rows), default=None)
    try:
        for row in follow_alerts(storage, shown, stream_glob):
            click.echo(json.dumps(row) if as_json else _alert_table([row]).splitlines()[1])
    except KeyboardInterrupt:
        pass
    except StorageError as exc:
        raise click.ClickException(str(exc)) from exc


def _counts(by_reason: dict[str, int]) -> str:
    """``bad_json: 3, non_finite: 1``: most first."""
    return ", ".join(f"{k}: {v}" for k, v in sorted(by_reason.items(), key=lambda kv: -kv[1]))


def _status_text(status: dict[str, Any]) -> str:
    summary = status["summary"]
    aside = (f", {summary['set_aside']:,} set aside by a rollback (not in the daemon's state)"
             if summary["set_aside"] else "")
    source = ("from the running daemon" if status["readings_source"] == "daemon"
              else "counted in this database")
    stored = (f"; {status['readings_stored']:,} counted in this database"
              if status["readings_stored"] != status["readings_total"] else "")
    lines = [
        f"streams         {summary['streams']:,} ({summary['warming_up']:,} warming up, "
        f"{summary['open_alerts']:,} with an open alert){aside}",
        f"readings        {status['readings_total']:,} ({source}{stored})",
        f"rejects         {status['rejects_total']:,}"
        + (f" ({_counts(status['rejects_by_reason'])})" if status["rejects_by_reason"] else ""),
        f"alerts          {status['alerts_total']:,} events, {status['open_alerts']:,} open",
        f"drift events    {status['drift_events']:,}",
    ]
    cp = status["last_checkpoint"]
    if cp:
        checkpoint = (f"{cp['id']} at {cp['created_at_iso']} ({cp['reason']}, "
                      f"{cp['readings_total'] or 0:,} readings, {cp['streams'] or 0:,} streams)")
        if status["checkpoints_set_aside"]:
            checkpoint += f"; {status['checkpoints_set_aside']} newer set aside by a rollback"
    else:
        checkpoint = "-"
    lines.append(f"last checkpoint {checkpoint}")
    for bad in status.get("checkpoints_rejected", []):
        lines.append(f"  rejected      checkpoint {bad['id']} ({bad['created_at_iso']}): "
                     f"{bad['error']}")
    if status.get("stream_names_error"):
        lines.append(f"  unreadable    {status['stream_names_error']}")
    health, daemon = status.get("health"), status.get("daemon")
    if health:
        gateway = f"gateway {health['gateway_id']}, " if health.get("gateway_id") else ""
        lines.append(f"daemon          {gateway}pid {health.get('pid')}, "
                     f"up {health.get('uptime_s')} s, "
                     f"connected {health.get('connected')}, queue {health.get('queue_depth')}")
        if health.get("mqtt_error") not in (None, "None", ""):
            lines.append(f"broker error    {health['mqtt_error']}")
        lost = [f"{health[key]} {what}" for key, what in (
            ("dropped_total", "dropped here (queue full)"),
            ("broker_dropped", "dropped by the broker since connected"),
            ("frames_missing", "firmware frames missing (seq gaps)")) if health.get(key)]
        if lost:
            lines.append(f"lost            {', '.join(lost)}")
    elif daemon:
        seen = (f"last seen {daemon['last_seen_iso']}, {daemon['last_seen_age_s']:.0f} s ago"
                if daemon.get("last_seen_iso") else "never seen")
        lines.append(f"daemon          not running ({seen}: {daemon['reason']})")
    else:
        lines.append("daemon          never ran on this database")
    lines.append(f"database        {status['db']} (schema {status['schema_version']})")
    lines.append("")
    lines.append(f"{'stream':<40} {'readings':>9} {'state':<10} {'scale':<5} {'score':>7}  "
                 f"{'open alert':<12}  "
                 f"last hour (a minute a character, {BLOCKS[0]} 0 .. {BLOCKS[-1]} 1)")
    for s in status["streams"]:
        if s["set_aside"]:
            state = "set aside"
        elif s["warming_up"] is None:
            state = "trained"  # in the checkpoint a start loads, no reading since
        else:
            state = "warming" if s["warming_up"] else "scoring"
        score = "-" if s["last_score"] is None else f"{s['last_score']:.4f}"
        lines.append(f"{s['stream']:<40} {s['readings']:>9} {state:<10} "
                     f"{s.get('scale') or '-':<5} {score:>7}  "
                     f"{s['open_alert'] or '':<12}  {render(s['recent_levels'])}".rstrip())
    more = status["streams_matching"] - len(status["streams"])
    if more > 0:
        lines.append(f"... {more:,} more (narrow with --stream GLOB, or --limit N)")
    return "\n".join(lines)


# ``status`` lists at most this many streams by default: 10,000 streams must not be 10,000
# lines on an SSH session (the summary above the table counts them all).
STATUS_LIMIT = 50


@main.command()
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: from config).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config.")
@click.option("--stream", "stream_glob", help="Only streams matching this glob (sensors/*/temp).")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help=f"At most this many streams (default {STATUS_LIMIT}; --json: all; 0: all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def status(db: str | None, config_path: str | None, stream_glob: str | None,
           limit: int | None, as_json: bool) -> None:
    """A summary (streams, readings, rejects, alerts, checkpoint, daemon), then the streams."""
    storage = _open(db, config_path)
    try:
        document = status_document(storage, stream_glob,
                                   limit if as_json or limit is not None else STATUS_LIMIT)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(document, indent=2) if as_json else _status_text(document))


@main.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config.")
@click.option("--out", type=click.Path(),
              help="Output CSV (default: stdout); a folder when SOURCE is a folder.")
def replay(source: str, config_path: str | None, out: str | None) -> None:
    """Run a CSV (timestamp,value[,...]) or a folder of them through the pipeline offline.

    Writes timestamp,value,anomaly_score,alert,alert_open,explanation per input row (and
    device_score with several value columns); a folder is mirrored under --out.
    No broker needed.
    """
    import gc

    # NumPy, Numba and its setup build ~200,000 objects that live until exit. The collector's
    # passes over them (while they are built, during the replay, and the interpreter's last
    # full collection at exit) free nothing and cost ~0.3 s: off until they are frozen.
    gc.disable()
    from edge_ml.errors import ReplayError, ReplayOutputError
    from edge_ml.kernels import prepare as prepare_kernels
    from edge_ml.pipeline import Pipeline
    from edge_ml.replay import replay_csv, replay_tree

    cfg = _config(config_path)
    # The rates below count everything from building the pipeline (Numba's setup, loading the
    # compiled kernels) to the last row written; not the interpreter's start and imports.
    started = time.perf_counter()
    prepare_kernels()  # what the first Pipeline() would do, so that the freeze covers it
    gc.freeze()
    gc.enable()
    try:
        if Path(source).is_dir():
            if not out:
                raise UsageError("--out FOLDER is required when SOURCE is a folder")
            results = replay_tree(cfg, Path(source), Path(out))
            rows = sum(r.rows for _, r in results)
            seconds = time.perf_counter() - started
            click.echo(f"{len(results)} files, {rows} rows, "
                       f"{sum(r.alerts for _, r in results)} alerts, "
                       f"{sum(r.drifts for _, r in results)} drift events, "
                       f"{sum(r.heavy_tailed for _, r in results)} of "
                       f"{sum(r.streams for _, r in results)} streams heavy-tailed, "
                       f"{rows / max(seconds, 1e-9):,.0f} rows/s", err=True)
            return
        target = Path(out) if out else Path("/dev/stdout")
        summary = replay_csv(Pipeline(cfg), Path(source), target)
    except ReplayOutputError as exc:  # a path to fix: a usage error, as for --db
        raise UsageError(f"--out: {exc}" if out else str(exc)) from exc
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from exc
    seconds = time.perf_counter() - started
    click.echo(
        f"{summary.rows} rows, {summary.alerts} alerts, {summary.drifts} drift events, "
        f"{summary.skipped} skipped values, "
        f"{summary.heavy_tailed} of {summary.streams} streams heavy-tailed, "
        f"{summary.readings / max(seconds, 1e-9):,.0f} readings/s", err=True,
    )


@main.command()
@click.argument("results", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
              help="NAB combined_windows.json.")
@click.option("--profile", "profiles", multiple=True,
              help="standard, reward_low_FP_rate, reward_low_FN_rate (default: all three).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option("--detail", is_flag=True, help="Per-file rows too.")
def evaluate(results: str, labels: str, profiles: tuple[str, ...], as_json: bool,
             detail: bool) -> None:
    """NAB-style score of replay output: best corpus threshold, and the pipeline's own alerts."""
    from edge_ml.errors import EvaluationError
    from edge_ml.evaluate import PROFILES, format_report
    from edge_ml.evaluate import evaluate as run_evaluation

    try:
        report = run_evaluation(results, labels, profiles or tuple(PROFILES))
    except EvaluationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json
               else format_report(report, detail=detail))


@main.command()
@click.argument("sources", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--stream", help="Stream name for a CSV (default: the file's stem).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config.")
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: from config).")
def train(sources: tuple[str, ...], stream: str | None, config_path: str | None,
          db: str | None) -> None:
    """Warm start: learn history (CSV timestamp,value or JSONL stream/ts/value), save a checkpoint.

    The trained streams are added to (or replace those of the same name in) the newest
    checkpoint's state, so every other stream keeps what it learned. Use the daemon's config.
    A running daemon loads the result within a few seconds, at once on SIGHUP
    (systemctl reload edge-ml), or at its next start; what it learned after its newest
    checkpoint is not kept.
    """
    from edge_ml.pipeline import Pipeline
    from edge_ml.train import train as train_history

    cfg = _config(config_path)
    pipeline = Pipeline(cfg)
    try:
        storage = Storage(db or cfg.storage.db, rejects_kept=cfg.storage.rejects_kept)
    except EdgeMLError as exc:
        raise _storage_error(exc, db, cfg) from exc
    try:
        result = train_history(pipeline, storage, list(sources), stream,
                               cfg.storage.retention)
    except EdgeMLError as exc:
        raise click.ClickException(str(exc)) from exc
    base = (f"the other {result.streams - len(result.trained)} from checkpoint "
            f"{result.base_id}" if result.base_id is not None else "no earlier checkpoint")
    skipped = (f"; {result.skipped} missing or non-finite values skipped"
               if result.skipped else "")
    click.echo(f"checkpoint {result.checkpoint_id}: {result.readings} readings, "
               f"{len(result.trained)} streams trained ({base}); {result.streams} streams in all"
               f"{skipped}")
    click.echo(_takes_effect(storage))


def _takes_effect(storage: Storage) -> str:
    """When a checkpoint chosen from the CLI is loaded (edge_ml.checkpointer.Checkpointer), by
    the daemon that runs on ``storage`` now, if one does."""
    try:
        live = daemon_liveness(storage.health()) if storage.has_health() else None
    except StorageError:
        live = None
    if not live or not live["running"]:
        return "no daemon is running on this database: the next start loads it"
    pid = live["pid"]
    # It looks every few seconds (checkpointer.CHOICE_POLL_S), whatever its checkpoint interval.
    return (f"daemon pid {pid} is running: it loads it within a few seconds, or at once with "
            f"`systemctl reload edge-ml` (SIGHUP to pid {pid}), and does not save over it; a "
            "start loads it too")


@main.group()
def checkpoints() -> None:
    """List, inspect, export, import and roll back model checkpoints."""


_db_option = click.option("--db", type=click.Path(dir_okay=False),
                          help="SQLite file (default: from config).")
_config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                              help="TOML config.")


@checkpoints.command("list")
@_db_option
@_config_option
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def checkpoints_list(db: str | None, config_path: str | None, as_json: bool) -> None:
    """Checkpoints, newest first (active: 1 loadable, 0 set aside by rollback, -1 rejected)."""
    rows = _open(db, config_path).checkpoints()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    click.echo(f"{'id':>5} {'created (UTC)':<24} {'reason':<9} {'readings':>10} {'streams':>7} "
               f"{'bytes':>10} active")
    for r in rows:
        click.echo(f"{r['id']:>5} {(r['created_at_iso'] or '')[:23]:<24} {r['reason']:<9} "
                   f"{r['readings_total']:>10} {r['streams']:>7} {r['size_bytes']:>10} "
                   f"{r['active']:>6}" + (f"  {r['error']}" if r["error"] else ""))


@checkpoints.command("show")
@click.argument("checkpoint_id", type=int)
@_db_option
@_config_option
def checkpoints_show(checkpoint_id: int, db: str | None, config_path: str | None) -> None:
    """One checkpoint's row and decoded header, as JSON."""
    from edge_ml.checkpointer import describe_row

    try:
        row = describe_row(_open(db, config_path), checkpoint_id)
    except EdgeMLError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(row, indent=2))


@checkpoints.command("export")
@click.argument("checkpoint_id", type=int)
@click.argument("target", type=click.Path(dir_okay=False))
@_db_option
@_config_option
def checkpoints_export(checkpoint_id: int, target: str, db: str | None,
                       config_path: str | None) -> None:
    """Write one checkpoint's blob to a file (self-checking: magic, sha256, msgpack+zlib)."""
    try:
        blob = _open(db, config_path).checkpoint_payload(checkpoint_id)
    except EdgeMLError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        handle = open(target, "wb")  # noqa: SIM115 (a failed open is a usage error, exit 2)
    except OSError as exc:
        raise UsageError(f"{target}: cannot write: {exc.strerror or exc}") from exc
    try:
        with handle:
            handle.write(blob)
    except OSError as exc:  # disk full: a runtime failure
        raise click.ClickException(f"{target}: cannot write: {exc.strerror or exc}") from exc
    click.echo(f"checkpoint {checkpoint_id}: {len(blob)} bytes to {target}")


@checkpoints.command("import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@_db_option
@_config_option
def checkpoints_import(source: str, db: str | None, config_path: str | None) -> None:
    """Verify a checkpoint file and store it as the one the daemon loads (see rollback)."""
    from edge_ml.checkpointer import import_blob

    cfg = _config(config_path)
    try:
        blob = Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    storage = _open(db, config_path)
    try:
        checkpoint_id = import_blob(storage, blob, cfg.storage.retention)
    except EdgeMLError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"imported as checkpoint {checkpoint_id}: "
               f"{_takes_effect(storage)}")


@checkpoints.command("rollback")
@click.argument("checkpoint_id", type=int)
@_db_option
@_config_option
def checkpoints_rollback(checkpoint_id: int, db: str | None, config_path: str | None) -> None:
    """Make CHECKPOINT_ID what the daemon loads (newer ones set aside).

    A running daemon loads it within a few seconds or on SIGHUP, and does not save
    over it meanwhile (not even when it stops); otherwise the next start loads it.
    """
    storage = _open(db, config_path)
    try:
        storage.rollback_checkpoint(checkpoint_id)
    except EdgeMLError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"checkpoint {checkpoint_id} is the one the daemon loads: "
               f"{_takes_effect(storage)}")


@checkpoints.command("save")
@_db_option
@_config_option
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for it.")
def checkpoints_save(db: str | None, config_path: str | None, timeout: float) -> None:
    """Ask the running daemon for a checkpoint now (SIGUSR1 to its pid) and wait for it."""
    try:
        checkpoint_id = request_checkpoint(_open(db, config_path), timeout)
    except (DaemonError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"checkpoint {checkpoint_id} saved")


@main.group()
def config() -> None:
    """Inspect configuration."""


@config.command("check")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config.")
def config_check(config_path: str | None) -> None:
    """Validate a config file as `run` would (password and TLS files, the database path) and
    print the effective settings as JSON. Creates and changes nothing."""
    from edge_ml.preflight import check_config

    cfg = _config(config_path)
    try:
        check_config(cfg)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    click.echo(json.dumps({"source": cfg.source, **cfg.to_dict()}, indent=2))


@main.command()
@click.option("--host", help="Broker host (default: [mqtt] host of the config).")
@click.option("--port", type=click.IntRange(1, 65535), help="Broker port (default: [mqtt] port).")
@click.option("--username", help="Broker user (default: [mqtt] username).")
@click.option("--password-file", type=click.Path(dir_okay=False),
              help="File holding the password (default: [mqtt] password_file).")
@click.option("--ca", type=click.Path(dir_okay=False), help="CA bundle: connect with TLS.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config whose [mqtt] section says how to connect.")
@click.option("--topic", "patterns", multiple=True,
              help="Status topic filter of the gateways, e.g. 'sites/+/edge-ml/status' "
                   "(repeatable; default: +/status, +/+/status, +/+/+/status).")
@click.option("--wait", "wait_s", type=click.FloatRange(0.1, 600), default=1.0,
              show_default=True,
              help="Seconds to listen; a health report within it gives a measured rate.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def fleet(host: str | None, port: int | None, username: str | None, password_file: str | None,
          ca: str | None, config_path: str | None, patterns: tuple[str, ...], wait_s: float,
          as_json: bool) -> None:
    """The gateways a broker sees: online or not, readings/s, streams, alerts, checkpoints."""
    import dataclasses

    from edge_ml.config import topic_filter_problem
    from edge_ml.fleet import DEFAULT_STATUS_FILTERS, format_table, survey

    cfg = _config(config_path)
    mqtt = cfg.mqtt
    overrides = {k: v for k, v in (("host", host), ("port", port), ("username", username),
                                   ("password_file", password_file)) if v is not None}
    if ca:
        overrides["tls"] = dataclasses.replace(mqtt.tls, ca=ca)
    mqtt = dataclasses.replace(mqtt, **overrides)
    for pattern in patterns:
        problem = topic_filter_problem(pattern) or (
            None if pattern.endswith("/status") else "must end in /status (<prefix>/status)")
        if problem:
            raise UsageError(f"--topic {pattern!r}: {problem}")
    chosen = list(patterns) or list(DEFAULT_STATUS_FILTERS)
    if not patterns and cfg.alerts.topic_prefix.count("/") >= len(DEFAULT_STATUS_FILTERS):
        chosen.append(f"{cfg.alerts.topic_prefix}/status")  # deeper than the defaults reach
    try:
        found = survey(mqtt, chosen, wait_s, source=cfg.source)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    except EdgeMLError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({"broker": f"{mqtt.host}:{mqtt.port}",
                               "gateways": [g.to_dict() for g in found]}, indent=2))
    else:
        click.echo(format_table(found))


@main.command()
@click.argument("results", type=click.Path(exists=True))
@click.option("--labels", type=click.Path(exists=True, dir_okay=False),
              help="NAB combined_windows.json: draw the windows, score and rank by them.")
@click.option("--profile", default="standard", show_default=True,
              help="NAB profile for the scores: standard, reward_low_FP_rate, "
                   "reward_low_FN_rate.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML config (its [alerts] thresholds are drawn).")
@click.option("--out", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="HTML file to write.")
def report(results: str, labels: str | None, profile: str, config_path: str | None,
           out: str) -> None:
    """One self-contained HTML page of replay output (a file or a folder): charts per stream.

    Values with alert spans, the anomaly level with the open and resolve thresholds, label
    windows when given; streams listed worst first. Needs the optional extra:
    pip install 'edge-ml[report]'.
    """
    from edge_ml.report import (
        ReportDependencyError,
        ReportError,
        build_report,
        require_plotly,
        write_report,
    )

    cfg = _config(config_path)
    try:
        require_plotly()  # before reading a corpus of results, not after
        built = build_report(results, cfg, labels, profile)
        path = write_report(built, out)
    except ReportDependencyError as exc:
        raise UsageError(str(exc)) from exc
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    alerts = sum(len(s.alerts) for s in built.streams)
    click.echo(f"report of {len(built.streams)} stream(s), {alerts} alert(s): "
               f"{path.resolve()} ({path.stat().st_size / 1e6:.1f} MB, opens offline)")


if __name__ == "__main__":
    main()
