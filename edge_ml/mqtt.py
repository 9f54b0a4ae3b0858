"""The broker connection (paho-mqtt 2.x, VERSION2 callbacks). The only module that imports paho.

Startup never fails because the broker is late: ``connect_async`` + ``loop_start`` and paho's
reconnect with backoff. Subscriptions are made in ``on_connect`` so every reconnect restores
them; the session is persistent (clean_session false / MQTT 5 session expiry) so QoS 1
readings published while we were away are delivered when we come back. Messages are read a
burst at a time on paho's network thread (:class:`BurstClient`) and only handed over. A
subscription the broker refuses (an ACL: SUBACK 0x80) is logged and kept in the state, so the
health record shows why nothing arrives. What is pending (sent, not yet acknowledged) is
counted here from paho's public callbacks, not read from its private queues.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_ml.config import MqttConfig, TlsConfig
from edge_ml.errors import ConfigError, MqttError

log = logging.getLogger(__name__)

OnMessage = Callable[[str, bytes, float], None]
# A burst of messages (topic, payload, received_at), in arrival order.
OnMessages = Callable[[list[tuple[str, bytes, float]]], None]
# Packets read per wake-up of the network loop at most (see BurstClient).
BURST_PACKETS = 512

# While the broker stays unreachable, the same failure is logged again at most this often (a
# reconnect every few seconds for a day must not flood the journal); a new reason at once.
CONNECT_FAIL_LOG_INTERVAL_S = 300.0
# MQTT 5 DISCONNECT reason 0x8E: another client connected with our client id.
SESSION_TAKEN_OVER = 0x8E
# Under MQTT 3.1.1 a broker just closes the older of two connections with one client id; the
# two clients then reconnect and kick each other out, each connection lasting about one
# reconnect delay. This many connections in a row that the broker closed within
# TAKEOVER_WINDOW_S of accepting them are taken for such a takeover (a broker restart or a
# network fault does not accept us again and again only to drop us at once).
TAKEOVER_QUICK_DROPS = 3
TAKEOVER_WINDOW_S = 5.0


class RedeliveryFilter:
    """Drops a QoS 1 message the broker sends again after we already had it.

    A broker that restarts before our PUBACK reached it delivers those messages again with the
    DUP flag and their packet id (measured: 15 of 1,200 readings across four broker restarts
    were counted twice). A message flagged DUP whose packet id, topic and payload match one of
    the last ``size`` messages received is that message again. Packet ids are only reused after
    an acknowledgement, and the broker sets DUP only on a resend, so a new reading is dropped
    only if it repeats the topic, payload and packet id of a message acknowledged moments before
    and arrives flagged as a resend: not a case a broker produces.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.recent: OrderedDict[int, tuple[str, bytes]] = OrderedDict()
        self.dropped = 0

    def is_redelivery(self, mid: int, topic: str, payload: bytes, dup: bool) -> bool:
        """True for a resend of a message already seen; otherwise remember this one."""
        key = (topic, payload)
        if dup and self.recent.get(mid) == key:
            self.dropped += 1
            return True
        self.recent[mid] = key
        self.recent.move_to_end(mid)
        if len(self.recent) > self.size:
            self.recent.popitem(last=False)
        return False

    def remember(self, mids: list[int], keys: list[tuple[str, bytes]]) -> None:
        """Remember a burst of messages none of which is flagged DUP, as ``is_redelivery``
        would one by one (a packet id seen again moves to the newest end), in bulk."""
        recent = self.recent
        for mid in recent.keys() & mids:  # reused packet ids: their new message is the newest
            del recent[mid]
        recent.update(zip(mids, keys, strict=True))
        for _ in range(len(recent) - self.size):
            recent.popitem(last=False)

    def forget(self) -> None:
        """A new session (the broker kept nothing): old packet ids mean nothing now."""
        self.recent.clear()


class BurstClient(paho.Client):
    """paho's client, reading every packet waiting on the socket per wake-up of its network loop.

    paho's loop (``loop_start`` / ``loop_forever``) calls :meth:`loop_read` once per ``select``
    wake-up, and that reads ``max(1, messages awaiting an ack)`` packets: a subscriber that
    publishes little pays a ``select``, a wake-up pipe read and a loop pass per message. Here
    ``loop_read`` goes on reading while packets keep delivering messages (up to
    ``burst_packets``), and the messages of one wake-up go to ``on_burst`` as one list, after
    paho has queued their acknowledgements (sent when ``loop_read`` returns, as before).
    Reconnects, keep-alives and callbacks stay paho's own. Messages routed by
    ``message_callback_add`` still go to their callbacks one by one.

    ``load.py``'s bare counter runs this same client, so the daemon is compared with a
    consumer driven the same way.
    """

    def __init__(self, *args: Any, on_burst: Callable[[list[paho.MQTTMessage]], None],
                 burst_packets: int = BURST_PACKETS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arrived: list[paho.MQTTMessage] = []
        self._on_burst = on_burst
        self.burst_packets = burst_packets
        self.on_message = self._arrive

    def _arrive(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._arrived.append(message)

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:
        arrived = self._arrived
        n = len(arrived)
        rc = super().loop_read(max_packets)
        reads = 1
        # A read that delivered no message: the socket is empty (or it was an ack): stop.
        while rc == paho.MQTT_ERR_SUCCESS and len(arrived) > n and reads < self.burst_packets:
            n = len(arrived)
            rc = super().loop_read(max_packets)
            reads += 1
        if arrived:
            self._arrived = []
            try:
                self._on_burst(arrived)
            except Exception:
                # As paho does for on_message with suppress_exceptions: an exception here
                # would end the network thread (no more readings, no reconnects).
                log.exception("handling %d received messages failed", len(arrived))
        return rc


class PendingPublishes:
    """Messages handed to paho and not yet confirmed by its ``on_publish``, counted by packet id.

    ``on_publish`` runs on the network thread and can come before ``publish`` returns its packet
    id (the broker's PUBACK beat a descheduled main thread); such an early confirmation is kept
    until ``sent`` names the id, so the count never drifts. Keyed by packet id, a message paho
    dropped without a confirmation is forgotten when its id is used again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[int] = set()
        self._confirmed_early: set[int] = set()

    def sent(self, mid: int) -> None:
        """paho took the message with packet id ``mid`` (queued or sent)."""
        with self._lock:
            if mid in self._confirmed_early:
                self._confirmed_early.discard(mid)
            else:
                self._waiting.add(mid)

    def confirmed(self, mid: int) -> None:
        """paho's ``on_publish`` for ``mid``: acknowledged (QoS 1/2) or written (QoS 0)."""
        with self._lock:
            if mid in self._waiting:
                self._waiting.discard(mid)
            else:
                self._confirmed_early.add(mid)

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)


class SubscribeRequests:
    """Which topic filters each SUBSCRIBE asked for, to name them when the SUBACK comes back.

    As with publishes, the SUBACK can overtake ``subscribe`` returning its packet id (a
    subscription made from the main thread); its reason codes then wait here for the filters.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._filters: dict[int, list[str]] = {}
        self._early: dict[int, list[ReasonCode]] = {}

    def sent(self, mid: int, filters: list[str]) -> list[tuple[str, ReasonCode]]:
        """Remember ``filters`` under ``mid``; (filter, reason) pairs if its SUBACK came first."""
        with self._lock:
            reasons = self._early.pop(mid, None)
            if reasons is None:
                self._filters[mid] = filters
                return []
        return list(zip(filters, reasons, strict=False))

    def answered(self, mid: int, reasons: list[ReasonCode]) -> list[tuple[str, ReasonCode]]:
        """The SUBACK for ``mid``: (filter, reason) pairs, or none yet if ``mid`` is not known."""
        with self._lock:
            filters = self._filters.pop(mid, None)
            if filters is None:
                self._early[mid] = reasons
                return []
        return list(zip(filters, reasons, strict=False))


# mosquitto's count of messages it dropped (all clients): a persistent session's queue past
# ``max_queued_messages`` (default 1,000), an outgoing queue too long. Published (retained)
# every ``sys_interval`` seconds (default 10) where the broker offers $SYS at all.
SYS_DROPPED = "$SYS/broker/publish/messages/dropped"
# While the broker keeps dropping, one warning this often at most.
DROPPED_LOG_INTERVAL_S = 60.0


class BrokerDropCounter:
    """How many messages the broker dropped since we first heard its $SYS counter.

    The first value is the baseline (drops before we came are not ours to report); a value
    lower than the last one is a broker restart (its counter starts again at 0), so what it
    counts from then on is added. ``total`` stays None while the broker has said nothing (it
    offers no $SYS, or its ACL hides it).

    Examples
    --------
    >>> c = BrokerDropCounter()
    >>> [c.update(v) for v in (b"500", b"500", b"2500", b"3")], c.total
    ([0, 0, 2000, 3], 2003)
    """

    def __init__(self) -> None:
        self.total: int | None = None
        self._last: int | None = None

    def update(self, payload: bytes) -> int:
        """A new value of the broker's counter; returns how much it grew (0 for the baseline)."""
        try:
            value = int(payload.strip())
        except ValueError:
            return 0
        if self._last is None:
            grew = 0
        elif value >= self._last:
            grew = value - self._last
        else:  # the broker restarted
            grew = value
        self._last = value
        self.total = (self.total or 0) + grew
        return grew


@dataclass
class ConnectionState:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    last_error: str | None = None
    refused: bool = False  # the broker said no (bad credentials, not authorised)
    connect_failures: int = 0  # attempts that got no connection (refused socket, DNS, TLS)
    # Topic filters whose SUBACK said no (an ACL): the link runs on, but they deliver nothing.
    subscribe_refused: list[str] = field(default_factory=list)
    # Disconnects because another client connected with our client id (see _on_disconnect).
    taken_over: int = 0
    quick_drops: int = 0  # connections in a row the broker closed soon after accepting them


def read_password(path: str, source: str | None = None) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", key="mqtt.password_file",
                          path=source) from exc


def _check_tls_files(tls: TlsConfig, source: str | None) -> None:
    """Each TLS file exists and loads, so a bad one is named by its key (paho loads them all)."""
    for key, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"no such file: {path}", key=f"mqtt.tls.{key}", path=source)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca:
        try:
            context.load_verify_locations(cafile=tls.ca)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"cannot load CA certificates from {tls.ca}: {exc}",
                              key="mqtt.tls.ca", path=source) from exc
    if tls.cert:
        try:
            # An empty password: an encrypted key is an error here, not a prompt on a tty.
            context.load_cert_chain(tls.cert, tls.key, password="")
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"cannot load {tls.cert} with key {tls.key}: {exc}",
                              key="mqtt.tls.cert", path=source) from exc


def check_files(config: MqttConfig, source: str | None = None) -> None:
    """The password and TLS files :class:`MqttLink` will load, read now (ConfigError naming the
    key): what ``edge-ml config check`` and ``run`` both check before any broker is tried."""
    if config.username and config.password_file:
        read_password(config.password_file, source)
    if config.tls.ca or config.tls.cert:
        _check_tls_files(config.tls, source)


def describe_connect_error(exc: BaseException | None) -> str:
    """A short reason for a failed connection attempt, for the log and the health record."""
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens on that port?)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) if exc else "connection failed"


class MqttLink:
    """One client: subscribe to sensor topics, publish alerts and status.

    Parameters
    ----------
    config
        The ``[mqtt]`` section.
    on_message
        Called on paho's network thread with ``(topic, payload, received_at)``; must not block
        for long.
    on_messages
        When given, called instead of ``on_message`` with every burst of messages read in one
        wake-up of the network loop, a list of ``(topic, payload, received_at)`` (one lock and
        one hand-over per burst rather than per message).
    status_topic
        Where ``online``/``offline`` (retained) and the last will go.
    source
        The config file, named in a :class:`~edge_ml.errors.ConfigError` about a password or
        TLS file.
    """

    def __init__(self, config: MqttConfig, on_message: OnMessage, status_topic: str,
                 source: str | None = None, on_messages: OnMessages | None = None) -> None:
        self.config = config
        self.status_topic = status_topic
        self.state = ConnectionState()
        self.redelivery = RedeliveryFilter()
        self._fail_logged: tuple[str, float] | None = None  # (reason, when) last logged
        self._connected_at = 0.0  # monotonic time of the last successful connect
        self._takeover_logged_at = -CONNECT_FAIL_LOG_INTERVAL_S
        self._fails_unlogged = 0
        self._on_message_cb = on_message
        self._on_messages_cb = on_messages
        self._connected = threading.Event()
        self._extra_on_connect: list[Callable[[], None]] = []
        self._subscriptions: list[tuple[str, int]] = [(t, config.qos) for t in config.topics]
        self._pending = PendingPublishes()
        self._subscribe_requests = SubscribeRequests()
        self._optional: set[str] = set()  # extra filters a broker may refuse without harm
        self.broker_dropped = BrokerDropCounter()
        self._dropped_logged_at = -DROPPED_LOG_INTERVAL_S
        self._dropped_unlogged = 0
        v5 = config.protocol == "5"
        kwargs: dict[str, Any] = {
            "callback_api_version": CallbackAPIVersion.VERSION2,
            "client_id": config.client_id,
            "protocol": MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        }
        if not v5:
            kwargs["clean_session"] = config.clean_session
        client = BurstClient(on_burst=self._on_burst, **kwargs)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
        client.max_queued_messages_set(0)  # unlimited: alerts wait for the broker to return
        client.max_inflight_messages_set(100)
        client.will_set(status_topic, b"offline", qos=1, retain=True)
        if config.username:
            password = (read_password(config.password_file, source) if config.password_file
                        else None)
            client.username_pw_set(config.username, password)
        tls = config.tls
        if tls.ca or tls.cert:
            _check_tls_files(tls, source)
            try:
                client.tls_set(ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key,
                               cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as exc:
                files = ", ".join(p for p in (tls.ca, tls.cert, tls.key) if p)
                raise ConfigError(f"cannot load certificates ({files}): {exc}", key="mqtt.tls",
                                  path=source) from exc
            client.tls_insecure_set(tls.insecure)
        self.client = client
        # Loss at the broker is invisible to us otherwise: a message it drops never arrives.
        self.subscribe_extra(SYS_DROPPED, self._on_broker_dropped, qos=0, optional=True)

    # -- paho callbacks (network thread) --------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self.state.last_error = f"connection refused: {reason_code}"
            self.state.refused = True
            log.error("broker %s:%s refused the connection: %s", self.config.host,
                      self.config.port, reason_code)
            return
        self.state.connected = True
        self.state.refused = False
        self.state.connects += 1
        self._connected_at = time.monotonic()
        self.state.last_error = None
        failed, self.state.connect_failures = self.state.connect_failures, 0
        if not getattr(flags, "session_present", False):
            self.redelivery.forget()
        self._fail_logged, self._fails_unlogged = None, 0
        log.info("connected to %s:%s (session present: %s)%s", self.config.host,
                 self.config.port, getattr(flags, "session_present", None),
                 f" after {failed} failed attempts" if failed else "")
        try:
            self._subscribe(self._subscriptions)
            self.publish(self.status_topic, b"online", qos=1, retain=True)
            for callback in self._extra_on_connect:
                callback()
        except Exception as exc:
            # paho re-raises a callback's exception, which ends its network thread: no more
            # readings and no reconnects, silently. Say so instead (log and health).
            self.state.last_error = f"after connecting: {type(exc).__name__}: {exc}"
            log.exception("setting up the connection to %s:%s failed (subscriptions %s)",
                          self.config.host, self.config.port, self._subscriptions)
        self._connected.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` around the connect attempt and does
        # not pass the exception: it is the one being handled.
        exc = sys.exc_info()[1]
        reason = describe_connect_error(exc)
        self.state.connect_failures += 1
        self.state.last_error = (f"cannot connect to {self.config.host}:{self.config.port}: "
                                 f"{reason}")
        now = time.monotonic()
        last = self._fail_logged
        if last is None or last[0] != reason or now - last[1] >= CONNECT_FAIL_LOG_INTERVAL_S:
            more = (f" ({self._fails_unlogged} more failed attempts since the last message)"
                    if self._fails_unlogged else "")
            log.warning("%s; retrying every %g-%g s%s", self.state.last_error,
                        self.config.reconnect_min_s, self.config.reconnect_max_s, more)
            self._fail_logged, self._fails_unlogged = (reason, now), 0
        else:
            self._fails_unlogged += 1

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._connected.clear()
        if self.state.connected:
            self.state.disconnects += 1
        was_connected, self.state.connected = self.state.connected, False
        if self.state.refused and not was_connected:
            # paho follows a refused CONNACK with a disconnect ("Unspecified error"): keep the
            # refusal as the error people see, it says what to fix.
            return
        if not reason_code.is_failure:
            return
        state = self.state
        if was_connected and time.monotonic() - self._connected_at < TAKEOVER_WINDOW_S:
            state.quick_drops += 1
        elif was_connected:
            state.quick_drops = 0
        if reason_code.value == SESSION_TAKEN_OVER or state.quick_drops >= TAKEOVER_QUICK_DROPS:
            state.taken_over += 1
            how = ("the broker says session taken over" if reason_code.value == SESSION_TAKEN_OVER
                   else f"the broker closed our last {state.quick_drops} connections within "
                        f"{TAKEOVER_WINDOW_S:g} s of accepting them")
            state.last_error = (f"session taken over: another client connected with client id "
                                f"{self.config.client_id!r} ({how})")
            now = time.monotonic()
            if now - self._takeover_logged_at >= CONNECT_FAIL_LOG_INTERVAL_S:
                # Once per interval: the two clients flap about once per reconnect delay.
                log.error("%s; two clients with one id push each other off the broker in turn: "
                          "give each its own [mqtt] client_id (is a second edge-ml running with "
                          "this config?) [%d takeovers so far]", state.last_error,
                          state.taken_over)
                self._takeover_logged_at = now
            return
        state.last_error = f"disconnected: {reason_code}"
        log.warning("disconnected from broker: %s (reconnecting)", reason_code)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int,
                      reason_code_list: list[ReasonCode], properties: Any) -> None:
        self._subscribe_answered(self._subscribe_requests.answered(mid, reason_code_list))

    def _subscribe_answered(self, answers: list[tuple[str, ReasonCode]]) -> None:
        """Keep the refused filters in the state (health) and log each refusal once per SUBACK."""
        for topic, reason in answers:
            if topic in self._optional and reason.is_failure:
                log.info("broker %s:%s refused the subscription to %s (%s): its counts are not "
                         "reported", self.config.host, self.config.port, topic, reason)
        answers = [(topic, reason) for topic, reason in answers if topic not in self._optional]
        refused = [(topic, reason) for topic, reason in answers if reason.is_failure]
        granted = {topic for topic, reason in answers if not reason.is_failure}
        state = self.state
        state.subscribe_refused = sorted(
            (set(state.subscribe_refused) - granted) | {topic for topic, _ in refused})
        for topic, reason in refused:
            log.error("broker %s:%s refused the subscription to %s: %s (no readings arrive "
                      "from it; check the broker's ACL for client %s)", self.config.host,
                      self.config.port, topic, reason, self.config.client_id)
        if refused:
            state.last_error = "subscription refused: " + ", ".join(
                f"{topic} ({reason})" for topic, reason in refused)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        self._pending.confirmed(mid)

    def _on_broker_dropped(self, payload: bytes) -> None:
        grew = self.broker_dropped.update(payload)
        if not grew:
            return
        self._dropped_unlogged += grew
        now = time.monotonic()
        if now - self._dropped_logged_at >= DROPPED_LOG_INTERVAL_S:
            log.warning("the broker %s:%s dropped %d messages (%d since we connected; its "
                        "$SYS counter covers all clients): readings are being lost before they "
                        "reach us. Raise mosquitto's max_queued_messages (default 1000) and "
                        "see docs/deploy.md", self.config.host, self.config.port,
                        self._dropped_unlogged, self.broker_dropped.total or 0)
            self._dropped_logged_at, self._dropped_unlogged = now, 0

    def _on_burst(self, messages: list[paho.MQTTMessage]) -> None:
        """The messages of one wake-up: resends dropped, the rest handed over in order."""
        now = time.time()
        topics = [m.topic for m in messages]
        payloads = [m.payload for m in messages]
        if any([m.dup for m in messages]):  # a resend among them: one by one, exactly
            redelivered = self.redelivery.is_redelivery
            batch = [(t, p, now) for m, t, p in zip(messages, topics, payloads, strict=True)
                     if not (m.qos > 0 and redelivered(m.mid, t, p, bool(m.dup)))]
        else:
            qos = [m.qos for m in messages]
            if all(qos):  # QoS 1/2, every one remembered for its possible resend
                self.redelivery.remember([m.mid for m in messages],
                                         list(zip(topics, payloads, strict=True)))
            elif any(qos):
                kept = [i for i, q in enumerate(qos) if q]
                self.redelivery.remember([messages[i].mid for i in kept],
                                         [(topics[i], payloads[i]) for i in kept])
            batch = [(t, p, now) for t, p in zip(topics, payloads, strict=True)]
        if not batch:
            return
        if self._on_messages_cb is not None:
            self._on_messages_cb(batch)
        else:
            for topic, payload, received_at in batch:
                self._on_message_cb(topic, payload, received_at)

    # -- lifecycle (main thread) ----------------------------------------------------------
    def on_connect(self, callback: Callable[[], None]) -> None:
        """Also run ``callback`` on every (re)connect, on the network thread."""
        self._extra_on_connect.append(callback)

    def subscribe_extra(self, topic: str, on_payload: Callable[[bytes], None],
                        qos: int = 1, optional: bool = False) -> None:
        """Add a subscription kept across reconnects whose messages go to ``on_payload``.

        Paho routes them there and not to the readings' callback (e.g. Home Assistant's
        status, even under a ``#`` sensor filter). ``on_payload`` runs on the network thread.
        An ``optional`` one the broker refuses is logged at info level only: not an error in
        the health record (e.g. $SYS, which many brokers restrict).
        """
        if optional:
            self._optional.add(topic)
        self.client.message_callback_add(
            topic, lambda client, userdata, message: on_payload(message.payload))
        self._subscriptions.append((topic, qos))
        if self.state.connected:
            self._subscribe([(topic, qos)])

    def _subscribe(self, subscriptions: list[tuple[str, int]]) -> None:
        result, mid = self.client.subscribe(subscriptions)
        if result == paho.MQTT_ERR_SUCCESS and mid is not None:
            topics = [topic for topic, _ in subscriptions]
            self._subscribe_answered(self._subscribe_requests.sent(mid, topics))

    def start(self) -> None:
        """Connect in the background; returns at once even when the broker is down."""
        properties = None
        clean_start: Any = paho.MQTT_CLEAN_START_FIRST_ONLY
        if self.config.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.config.session_expiry_s
            clean_start = self.config.clean_session
        self.client.connect_async(self.config.host, self.config.port, self.config.keepalive_s,
                                  clean_start=clean_start, properties=properties)
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> paho.MQTTMessageInfo:
        """Publish through paho; the message counts as pending until paho confirms it."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        # QoS 1/2 stay in paho's queue while the broker is away (NO_CONN) and are sent on
        # reconnect; QoS 0 is only sent if paho took it now. Anything else was not queued.
        queued = info.rc == paho.MQTT_ERR_SUCCESS or (qos > 0 and info.rc == paho.MQTT_ERR_NO_CONN)
        if queued:
            self._pending.sent(info.mid)
        return info

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline``, wait for pending QoS 1 publishes, disconnect cleanly."""
        if self.state.connected:
            info = self.publish(self.status_topic, b"offline", qos=1, retain=True)
            deadline = time.monotonic() + timeout
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
            # Let other queued QoS 1 messages (alerts) finish too.
            while self.pending_publishes and time.monotonic() < deadline:
                time.sleep(0.02)
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def pending_publishes(self) -> int:
        """Messages published and not yet confirmed (QoS 1/2: acknowledged by the broker)."""
        return len(self._pending)


# -- a short-lived subscriber: what a broker holds retained (edge-ml fleet) -----------------


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    topic: str
    payload: bytes
    retained: bool
    received_at: float


def collect_messages(config: MqttConfig, filters: list[str], wait_s: float, *,
                     source: str | None = None,
                     connect_timeout_s: float = 10.0) -> list[ReceivedMessage]:
    """Subscribe to ``filters`` and return what arrives within ``wait_s`` of the subscription.

    The retained messages come at once after the SUBACK, then live ones. A clean session
    under a client id of its own (never ``config.client_id``: that would take the daemon's
    session over), credentials and TLS from ``config``. Raises :class:`MqttError` when the
    broker cannot be reached or refuses, naming the broker and why.
    """
    v5 = config.protocol == "5"
    kwargs: dict[str, Any] = {
        "callback_api_version": CallbackAPIVersion.VERSION2,
        "client_id": f"edge-ml-fleet-{os.getpid()}-{secrets.token_hex(3)}",
        "protocol": MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
    }
    if not v5:
        kwargs["clean_session"] = True
    client = paho.Client(**kwargs)
    if config.username:
        password = (read_password(config.password_file, source) if config.password_file
                    else None)
        client.username_pw_set(config.username, password)
    tls = config.tls
    if tls.ca or tls.cert:
        _check_tls_files(tls, source)
        client.tls_set(ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key,
                       cert_reqs=ssl.CERT_REQUIRED)
        client.tls_insecure_set(tls.insecure)
    lock = threading.Lock()
    received: list[ReceivedMessage] = []
    subscribed = threading.Event()
    refused: list[str] = []

    def on_connect(client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                   properties: Any) -> None:
        if reason_code.is_failure:
            refused.append(str(reason_code))
            subscribed.set()
            return
        client.subscribe([(f, 1) for f in filters])

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with lock:
            received.append(ReceivedMessage(message.topic, message.payload,
                                            bool(message.retain), time.time()))

    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = on_message
    where = f"{config.host}:{config.port}"
    try:
        client.connect(config.host, config.port, config.keepalive_s)
    except (OSError, ssl.SSLError) as exc:
        raise MqttError(f"cannot connect to {where}: {describe_connect_error(exc)}") from exc
    client.loop_start()
    try:
        if not subscribed.wait(connect_timeout_s):
            raise MqttError(f"no answer from {where} within {connect_timeout_s:g} s")
        if refused:
            raise MqttError(f"{where} refused the connection: {refused[0]}")
        time.sleep(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return list(received)
