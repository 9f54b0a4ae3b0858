"""A private mosquitto broker on a free loopback port.

Used by ``edge-ml demo``, the benchmarks and the test suite: each gets its own broker that it can
stop and restart without touching a system broker that may already listen on 127.0.0.1:1883.
Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


class BrokerError(RuntimeError):
    """mosquitto is missing or would not start."""


def free_port(host: str = LOOPBACK) -> int:
    """Ask the kernel for a TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin, often not on PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise BrokerError("mosquitto not found: install it (apt-get install mosquitto)")
    return found


# mosquitto's dynamic-security plugin, where Debian and a source build put it.
DYNSEC_PLUGIN_GLOBS = ("/usr/lib/*/mosquitto_dynamic_security.so",
                       "/usr/lib/mosquitto_dynamic_security.so",
                       "/usr/local/lib/mosquitto_dynamic_security.so")


def find_dynsec_plugin() -> str:
    """Path of mosquitto's dynamic-security plugin (shipped with mosquitto 2.x)."""
    for pattern in DYNSEC_PLUGIN_GLOBS:
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return str(found[0])
    raise BrokerError("mosquitto_dynamic_security.so not found (mosquitto 2.x ships it)")


class LocalBroker:
    """One mosquitto process bound to loopback, with persistence so restarts keep sessions.

    Parameters
    ----------
    workdir
        Folder for the config, the persistence file and the log (a temp dir when omitted).
    port
        TCP port; a free one is picked when omitted and kept across restarts.
    extra_config
        Lines appended to the generated config after the listener line (TLS, password files).
    subscribe_only
        Topic filters clients may subscribe to; the broker refuses any other subscription
        (SUBACK 0x80, MQTT 5: 0x87 not authorised), as a broker ACL does. mosquitto's
        ``acl_file`` cannot stand in: 2.0 grants every subscription and filters deliveries, so
        this uses its dynamic-security plugin.
    autosave_s
        How often mosquitto writes its sessions to disk (``autosave_interval``; 0: only when it
        stops). Each save writes every queued message, so a broker holding a large backlog
        pauses for it: benchmarks that never restart the broker pass 0.
    max_queued_messages, max_inflight_messages
        Per-client queue limits. The defaults lift them (a million queued, unlimited in
        flight); ``1000`` and ``20`` are mosquitto's stock values, under which a slow or
        stopped persistent client loses messages (``$SYS/broker/publish/messages/dropped``).
    sys_interval
        Seconds between mosquitto's ``$SYS`` updates (None: its default, 10).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        extra_config: str = "",
        listener_options: str = "",
        autosave_s: int = 1,
        subscribe_only: tuple[str, ...] | None = None,
        max_queued_messages: int = 1_000_000,
        max_inflight_messages: int = 0,
        sys_interval: int | None = None,
    ) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edge-ml-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.extra_config = extra_config
        self.listener_options = listener_options
        self.autosave_s = autosave_s
        self.subscribe_only = subscribe_only
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.sys_interval = sys_interval
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "mosquitto.log"

    def _write_subscribe_acl(self) -> str:
        """The dynamic-security lines that let anonymous clients subscribe to ``subscribe_only``."""
        if self.subscribe_only is None:
            return ""
        role = "subscribe-only"
        acls = [{"acltype": "subscribePattern", "topic": topic, "priority": 0, "allow": True}
                for topic in self.subscribe_only]
        path = self.workdir / "dynamic-security.json"
        path.write_text(json.dumps({
            "defaultACLAccess": {"publishClientSend": True, "publishClientReceive": True,
                                 "subscribe": False, "unsubscribe": True},
            "clients": [],
            "groups": [{"groupname": "anonymous", "roles": [{"rolename": role}], "clients": []}],
            "roles": [{"rolename": role, "acls": acls}],
            "anonymousGroup": "anonymous",
        }))
        return f"plugin {find_dynsec_plugin()}\nplugin_opt_config_file {path}"

    def _write_config(self) -> Path:
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    f"listener {self.port} {LOOPBACK}",
                    self.listener_options,
                    "allow_anonymous true" if "password_file" not in self.extra_config else "",
                    # Started as root, mosquitto switches to user "mosquitto" unless told
                    # otherwise; that user cannot write into a private (0700) workdir, so the
                    # persistence file and the log were never written and every restart lost
                    # the persistent sessions (session present: False, queued QoS 1 gone).
                    # Stay root then (a non-root mosquitto never switches user).
                    "user root" if os.geteuid() == 0 else "",
                    "persistence true",
                    f"persistence_location {self.workdir}/",
                    "persistence_file mosquitto.db",
                    # Queue plenty of QoS 1 messages for a persistent session that is away.
                    f"max_queued_messages {self.max_queued_messages}",
                    f"max_inflight_messages {self.max_inflight_messages}",
                    "" if self.sys_interval is None else f"sys_interval {self.sys_interval}",
                    # Send each message at once: with Nagle on (mosquitto's default), a small
                    # alert behind an unacknowledged health message waits for the subscriber's
                    # delayed ACK (up to 40 ms on Linux).
                    "set_tcp_nodelay true",
                    f"autosave_interval {self.autosave_s}",
                    f"log_dest file {self.log_path}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    self._write_subscribe_acl(),
                    self.extra_config,
                    "",
                ]
            )
        )
        return config

    def start(self, timeout: float = 10.0) -> LocalBroker:
        """Start mosquitto and wait until it accepts TCP connections."""
        if self.process and self.process.poll() is None:
            return self
        config = self._write_config()
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr
                err = stderr.read().decode(errors="replace") if stderr else ""
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise BrokerError(f"mosquitto exited with {self.process.returncode}: {err}{log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout}s")

    def stop(self, kill: bool = False) -> None:
        """Stop mosquitto (SIGTERM lets it save persistence; ``kill`` simulates a crash)."""
        if not self.process:
            return
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

