"""MQTT security against a real mosquitto: TLS (certificates made here with the openssl CLI)
and a password file (made with mosquitto_passwd), MQTT 3.1.1 and 5.

A client without credentials is refused and the daemon says so (log, health, ``edge-ml
status``) while it keeps running and retrying; bad TLS or password files stop ``edge-ml run``
at once as a config error (exit 2, the key and the config file named).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_ml.config import parse_config
from edge_ml.errors import ConfigError
from edge_ml.localbroker import LocalBroker
from edge_ml.mqtt import MqttLink

OPENSSL = shutil.which("openssl")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or shutil.which(
    "mosquitto_passwd", path="/usr/sbin:/usr/local/sbin"
)
USER, PASSWORD = "gateway", "s3cret-pass"

pytestmark = pytest.mark.skipif(
    OPENSSL is None or MOSQUITTO_PASSWD is None,
    reason="needs the openssl CLI (package openssl) and mosquitto_passwd (package mosquitto)",
)


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA and a server certificate for 127.0.0.1/localhost, P-256 keys (fast)."""
    d = tmp_path_factory.mktemp("pki")
    assert OPENSSL is not None
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _run(OPENSSL, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
         "-subj", "/CN=edge-ml test CA", cwd=d)
    _run(OPENSSL, "req", *ec, "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _run(OPENSSL, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    # A second, unrelated CA: a client trusting only it must refuse our server.
    _run(OPENSSL, "req", "-x509", *ec, "-keyout", "other.key", "-out", "other.crt", "-days",
         "2", "-subj", "/CN=someone else", cwd=d)
    (d / "password").write_text(PASSWORD + "\n")
    (d / "wrong-password").write_text("not-the-password\n")
    return d


@pytest.fixture
def secure_broker(tmp_path: Path, pki: Path) -> Iterator[LocalBroker]:
    """mosquitto with a TLS listener and a password file; anonymous clients refused."""
    passwd = tmp_path / "mosquitto.passwd"
    assert MOSQUITTO_PASSWD is not None
    subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(passwd), USER, PASSWORD], check=True,
                   capture_output=True, timeout=30)
    passwd.chmod(0o600)
    listener = "\n".join([
        f"cafile {pki / 'ca.crt'}",
        f"certfile {pki / 'server.crt'}",
        f"keyfile {pki / 'server.key'}",
    ])
    # LocalBroker keeps a root-started mosquitto root, so it can read pytest's private temp
    # dirs (password file, key); CI containers run as root.
    extra = f"password_file {passwd}\nallow_anonymous false"
    with LocalBroker(workdir=tmp_path / "broker", extra_config=extra,
                     listener_options=listener) as running:
        yield running


def _mqtt_config(broker: LocalBroker, pki: Path, **overrides: object) -> dict[str, object]:
    mqtt: dict[str, object] = {
        "host": "127.0.0.1", "port": broker.port, "client_id": "security-test",
        "username": USER, "password_file": str(pki / "password"),
        "tls": {"ca": str(pki / "ca.crt")},
    }
    mqtt.update(overrides)
    return {k: v for k, v in mqtt.items() if v is not None}


def _link(data: dict[str, object]) -> tuple[MqttLink, list[tuple[str, bytes]]]:
    got: list[tuple[str, bytes]] = []
    config = parse_config({"mqtt": data})
    link = MqttLink(config.mqtt, lambda t, p, ts: got.append((t, p)), "edge-ml/status")
    return link, got


def _publish_tls(broker: LocalBroker, pki: Path, topic: str, payload: bytes) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.tls_set(ca_certs=str(pki / "ca.crt"))
    client.username_pw_set(USER, PASSWORD)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_tls_and_password_connect_and_receive(
    secure_broker: LocalBroker, pki: Path, protocol: str
) -> None:
    link, got = _link(_mqtt_config(secure_broker, pki, protocol=protocol))
    link.start()
    try:
        assert link.wait_connected(10), link.state
        assert not link.state.refused
        _publish_tls(secure_broker, pki, "sensors/secure/t", b"21.5")
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got == [("sensors/secure/t", b"21.5")]
    finally:
        link.stop()


@pytest.mark.parametrize(
    ("overrides", "why"),
    [({"username": None, "password_file": None}, "no credentials"),
     ({"password_file": "WRONG"}, "wrong password")],
)
def test_refused_credentials_are_reported(
    secure_broker: LocalBroker, pki: Path, overrides: dict[str, object], why: str
) -> None:
    if overrides.get("password_file") == "WRONG":
        overrides = {"password_file": str(pki / "wrong-password")}
    link, _ = _link(_mqtt_config(secure_broker, pki, **overrides))
    link.start()
    try:
        deadline = time.monotonic() + 10
        while not link.state.refused and time.monotonic() < deadline:
            time.sleep(0.05)
        assert link.state.refused, why
        assert not link.state.connected
        assert "refused" in (link.state.last_error or "")
    finally:
        link.stop()


def test_untrusted_server_certificate_is_not_connected(
    secure_broker: LocalBroker, pki: Path
) -> None:
    link, _ = _link(_mqtt_config(secure_broker, pki, tls={"ca": str(pki / "other.crt")}))
    link.start()
    try:
        assert not link.wait_connected(2)
        assert not link.state.connected
    finally:
        link.stop()


@pytest.mark.parametrize(
    "tls",
    [{"ca": "/nonexistent/ca.crt"},
     {"ca": "CA", "cert": "/nonexistent/client.crt", "key": "/nonexistent/client.key"},
     {"ca": "GARBAGE"}],
)
def test_bad_tls_files_raise_config_error(pki: Path, tmp_path: Path, tls: dict[str, str]) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    tls = {k: {"CA": str(pki / "ca.crt"), "GARBAGE": str(garbage)}.get(v, v)
           for k, v in tls.items()}
    config = parse_config({"mqtt": {"tls": tls}})
    with pytest.raises(ConfigError, match=r"mqtt\.tls\.(ca|cert)"):
        MqttLink(config.mqtt, lambda t, p, ts: None, "edge-ml/status")


def test_unreadable_password_file_raises_config_error(tmp_path: Path) -> None:
    config = parse_config({"mqtt": {"username": "u", "password_file": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match=r"mqtt\.password_file"):
        MqttLink(config.mqtt, lambda t, p, ts: None, "edge-ml/status")


def _toml(tmp_path: Path, mqtt: dict[str, object], extra: str = "") -> Path:
    lines = ["[mqtt]"]
    tls = mqtt.pop("tls", None)
    for key, value in mqtt.items():
        lines.append(f"{key} = {json.dumps(value)}")
    if tls:
        lines.append("[mqtt.tls]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in tls.items())  # type: ignore[union-attr]
    lines += ["[storage]", f'db = "{tmp_path / "state.db"}"', extra]
    path = tmp_path / "edge-ml.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_with_bad_tls_file_exits_2_with_message(tmp_path: Path) -> None:
    config = _toml(tmp_path, {"port": 1, "tls": {"ca": str(tmp_path / "missing-ca.crt")}})
    result = subprocess.run(
        [sys.executable, "-m", "edge_ml", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "mqtt.tls.ca" in result.stderr and "missing-ca.crt" in result.stderr
    assert str(config) in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("case", ["missing password_file", "ca not a certificate"])
def test_run_with_bad_credential_files_is_a_config_error(tmp_path: Path, case: str) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    mqtt: dict[str, object] = {"port": 1}
    if case == "missing password_file":
        mqtt |= {"username": "u", "password_file": str(tmp_path / "no-such-password")}
        key = "mqtt.password_file"
    else:
        mqtt |= {"tls": {"ca": str(garbage)}}
        key = "mqtt.tls.ca"
    config = _toml(tmp_path, mqtt)
    result = subprocess.run(
        [sys.executable, "-m", "edge_ml", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert key in result.stderr and str(config) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_daemon_refused_keeps_running_and_reports(
    secure_broker: LocalBroker, pki: Path, tmp_path: Path
) -> None:
    mqtt = _mqtt_config(secure_broker, pki, password_file=str(pki / "wrong-password"))
    mqtt["reconnect_min_s"] = 0.2
    mqtt["reconnect_max_s"] = 1.0
    config = _toml(tmp_path, mqtt, "[daemon]\nhealth_interval_s = 0.5")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_ml", "run", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        health: dict[str, object] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            assert proc.poll() is None, "".join(lines)
            status = subprocess.run(
                [sys.executable, "-m", "edge_ml", "status", "--db", str(tmp_path / "state.db"),
                 "--json"], capture_output=True, text=True, timeout=30,
            )
            if status.returncode == 0:
                health = json.loads(status.stdout).get("health") or {}
                retried = sum("refused the connection" in line for line in lines) >= 2
                if "refused" in str(health.get("mqtt_error")) and retried:
                    break
        assert "refused" in str(health.get("mqtt_error")), health
        assert health.get("connected") is False
        refusals = sum("refused the connection" in line for line in lines)
        assert refusals >= 2, "".join(lines)  # retrying, and saying so each time
        assert proc.poll() is None  # not crash-looping
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
