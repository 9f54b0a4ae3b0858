"""``firmware-bridge``: the serial bridge and the fleet simulator (click lives only here).

Exit codes: 0 ok, 1 runtime failure, 2 usage error.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from firmware_bridge.bridge import BridgeSettings, SerialBridge, port_name
from firmware_bridge.errors import BridgeError
from firmware_bridge.fleet_publisher import FORMATS, run_simulation
from firmware_bridge.mqtt import MqttLink, MqttSettings
from firmware_bridge.simulator import Fleet

log = logging.getLogger(__name__)

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _mqtt_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The MQTT connection options shared by both commands."""
    options = [
        click.option("--mqtt-host", default="127.0.0.1", show_default=True, help="Broker host."),
        click.option("--mqtt-port", default=1883, show_default=True, type=click.IntRange(1, 65535),
                     help="Broker port."),
        click.option("--client-id", default=None, help="MQTT client id."),
        click.option("--username", default=None, help="MQTT user name."),
        click.option("--password-file", type=_FILE, default=None,
                     help="File holding the MQTT password (trailing newline ignored)."),
        click.option("--tls-ca", type=_FILE, default=None, help="CA bundle; turns TLS on."),
        click.option("--tls-cert", type=_FILE, default=None, help="Client certificate (TLS)."),
        click.option("--tls-key", type=_FILE, default=None, help="Client key (TLS)."),
        click.option("--topic-prefix", default="sensors", show_default=True,
                     help="Frames go to <prefix>/<dev>."),
        click.option("-v", "--verbose", count=True, help="More logging (-vv for debug)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _mqtt_settings(opts: dict[str, Any], default_client_id: str) -> MqttSettings:
    if opts["password_file"] and not opts["username"]:
        raise click.UsageError("--password-file needs --username")
    if (opts["tls_cert"] is None) != (opts["tls_key"] is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    return MqttSettings(
        host=opts["mqtt_host"],
        port=opts["mqtt_port"],
        client_id=opts["client_id"] or default_client_id,
        username=opts["username"],
        password_file=opts["password_file"],
        tls_ca=opts["tls_ca"],
        tls_cert=opts["tls_cert"],
        tls_key=opts["tls_key"],
    )


def _logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _on_signals(stop: Callable[[], None]) -> None:
    """Call ``stop`` on SIGTERM and SIGINT (the loops then finish cleanly)."""

    def handler(signum: int, frame: object) -> None:
        log.info("signal %s: stopping", signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Bridge microcontroller sensor frames to MQTT, or simulate a sensor fleet."""


@main.command()
@click.option("--port", required=True, help="Serial device, e.g. /dev/ttyUSB0.")
@click.option("--baud", default=115200, show_default=True, type=click.IntRange(50, 10_000_000),
              help="Line speed.")
@click.option("--health-prefix", default="firmware-bridge", show_default=True,
              help="Status and health go to <health-prefix>/<port-name>/{status,health}.")
@click.option("--health-interval", default=5.0, show_default=True,
              type=click.FloatRange(0.1, 3600), help="Seconds between health messages.")
@click.option("--buffer", "buffer_size", default=10_000, show_default=True,
              type=click.IntRange(1, 10_000_000),
              help="Frames kept while the broker is away (oldest dropped beyond).")
@_mqtt_options
def serial(port: str, baud: int, health_prefix: str, health_interval: float, buffer_size: int,
           **opts: Any) -> None:
    """Read framed v1 frames from a serial port and publish them to <prefix>/<dev> (QoS 1)."""
    _logging(opts["verbose"])
    settings = BridgeSettings(
        port=port, baud=baud, topic_prefix=opts["topic_prefix"], health_prefix=health_prefix,
        health_interval=health_interval, buffer_size=buffer_size,
    )
    mqtt_settings = _mqtt_settings(opts, f"firmware-bridge-{port_name(port)}")
    try:
        bridge = SerialBridge(settings, mqtt_settings)
        _on_signals(bridge.stop)
        bridge.run()
    except BridgeError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--sensors", default=8, show_default=True, type=click.IntRange(1, 100_000),
              help="Number of nodes (node-1..node-N).")
@click.option("--rate", default=10.0, show_default=True, type=click.FloatRange(0.001, 10_000),
              help="Messages per second per node.")
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(0.001),
              help="Run length.")
@click.option("--truth", "truth_path", required=True, type=click.Path(dir_okay=False,
              path_type=Path), help="JSON-lines file of injected anomalies.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="frame", show_default=True,
              help="Payload: v1 frame (msgpack) or JSON.")
@click.option("--seed", type=int, default=None, help="Random seed (default: random, printed).")
@click.option("--anomaly-after", type=click.FloatRange(0), default=None,
              help="No anomaly before this many seconds [default: 40% of --seconds].")
@click.option("--anomalies", type=click.IntRange(0), default=None,
              help="Anomalies in the whole fleet [default: one per node].")
@click.option("--day-seconds", type=click.FloatRange(0.001), default=86_400.0, show_default=True,
              help="Period of the simulated daily cycle.")
@click.option("--qos", type=click.IntRange(0, 1), default=1, show_default=True,
              help="MQTT QoS of the readings.")
@_mqtt_options
def simulate(sensors: int, rate: float, seconds: float, truth_path: Path, fmt: str,
             seed: int | None, anomaly_after: float | None, anomalies: int | None,
             day_seconds: float, qos: int, **opts: Any) -> None:
    """Publish a simulated sensor fleet with injected anomalies; write the truth file."""
    _logging(opts["verbose"])
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    fleet = Fleet(sensors=sensors, rate=rate, seconds=seconds, seed=seed,
                  prefix=opts["topic_prefix"], anomaly_after=anomaly_after,
                  anomalies=anomalies, day_seconds=day_seconds)
    stop = threading.Event()
    _on_signals(stop.set)
    try:
        link = MqttLink(_mqtt_settings(opts, f"firmware-bridge-sim-{seed}"),
                        buffer_size=max(10_000, int(sensors * rate * 10)))
        result = run_simulation(fleet, link, truth_path=truth_path, fmt=fmt, qos=qos, stop=stop)
    except (BridgeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"sent {result.sent} messages from {sensors} sensors in {result.elapsed_s:.1f}s, "
        f"{result.anomalies} anomalies in {truth_path}, seed {seed}, dropped {result.dropped}"
        + ("" if result.delivered else ", NOT all delivered")
    )
    if not result.delivered:
        raise SystemExit(1)
