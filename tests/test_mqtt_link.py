"""The broker link against a real mosquitto: failures say what went wrong instead of going quiet.

A broker that cannot be reached is logged with the reason (refused, DNS), once and then rarely,
and is in ``state.last_error`` (the health record's ``mqtt_error``); an exception while setting
up a connection is logged and reported, and paho's network thread lives on. A subscription the
broker refuses is named in the log and the state; what is pending is counted without paho's
private queues. The persistent session, end to end through the daemon (``python -m edge_ml
run``, counting into SQLite): no QoS 1 reading is lost across broker restarts, nor while the
daemon, the broker or both were down (mosquitto stopped with SIGTERM, so it saves its sessions).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from daemon_helpers import (
    DaemonProcess,
    Observer,
    connected_since,
    counters,
    status,
    wait_for,
    write_config,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edge_ml.config import parse_config
from edge_ml.localbroker import LocalBroker
from edge_ml.mqtt import MqttLink, PendingPublishes, RedeliveryFilter, SubscribeRequests

pytestmark = pytest.mark.timeout(90)


def _link(mqtt: dict[str, Any]) -> MqttLink:
    # Retry fast: 0.1 s, 0.2 s, 0.4 s, ... up to 1 s between attempts.
    config = parse_config({"mqtt": {"client_id": "link-test", "reconnect_min_s": 0.1,
                                    "reconnect_max_s": 1.0, **mqtt}})
    return MqttLink(config.mqtt, lambda t, p, ts: None, "edge-ml/status")


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "edge_ml.mqtt" and r.levelno >= logging.WARNING and text in r.getMessage()]


def test_refused_connections_are_logged_once_reported_and_cleared_on_connect(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_ml.mqtt")
    broker.stop()  # nothing listens on its port now
    link = _link({"port": broker.port})
    link.start()
    try:
        wait_for(lambda: link.state.connect_failures >= 4, 30, "several failed attempts")
        assert not link.state.connected
        assert link.state.last_error == (
            f"cannot connect to 127.0.0.1:{broker.port}: connection refused (nothing listens on "
            "that port?)")
        # Several attempts, one message: a long outage must not flood the journal.
        assert len(_warnings(caplog, "cannot connect")) == 1, caplog.text
        broker.start()
        assert link.wait_connected(30), link.state
        assert link.state.last_error is None and link.state.connect_failures == 0
        assert "failed attempts" in caplog.text
    finally:
        link.stop()


def test_unknown_host_is_reported_as_a_dns_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_ml.mqtt")
    link = _link({"host": "nonexistent.invalid"})  # .invalid never resolves (RFC 6761)
    link.start()
    try:
        wait_for(lambda: link.state.last_error, 60, "the DNS failure")
        assert "DNS lookup failed" in (link.state.last_error or ""), link.state
        assert "nonexistent.invalid:1883" in (link.state.last_error or "")
        wait_for(lambda: _warnings(caplog, "DNS lookup failed"), 10, "the log line")
    finally:
        link.stop()


def _raising(exc: Exception) -> Callable[[], None]:
    def callback() -> None:
        raise exc
    return callback


@pytest.mark.parametrize("how", ["invalid topic filter", "on_connect callback raises"])
def test_an_exception_while_connecting_is_reported_and_the_network_thread_lives(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    link = _link({"port": broker.port})
    if how == "invalid topic filter":
        # What an unvalidated config used to reach: paho raises in subscribe().
        link._subscriptions = [("s11/#", 1), ("a/#/b", 1)]
        expected = "Invalid subscription filter"
    else:
        link.on_connect(_raising(RuntimeError("boom")))
        expected = "boom"
    watcher = Observer(broker, ["out/#"], client_id="link-watcher")
    link.start()
    try:
        assert link.wait_connected(10), link.state
        wait_for(lambda: link.state.last_error, 10, "the error in the state")
        assert expected in (link.state.last_error or "")
        assert any(expected in r.getMessage() or (r.exc_info and expected in str(r.exc_info[1]))
                   for r in caplog.records if r.name == "edge_ml.mqtt"), caplog.text
        # paho's thread still runs: a publish goes out.
        time.sleep(0.3)
        link.publish("out/still-alive", b"1", qos=1)
        wait_for(lambda: watcher.on("out/still-alive"), 10, "a publish after the error")
    finally:
        watcher.close()
        link.stop()


def test_valid_config_topics_subscribe(broker: LocalBroker) -> None:
    got: list[str] = []
    config = parse_config({"mqtt": {"port": broker.port, "client_id": "link-sub",
                                    "topics": ["s11/#", "a/+/b"]}})
    link = MqttLink(config.mqtt, lambda t, p, ts: got.append(t),
                    "edge-ml/status")
    link.start()
    pub = Observer(broker, ["unused/#"], client_id="link-pub")
    try:
        assert link.wait_connected(10)
        time.sleep(0.3)  # the SUBACK
        pub.publish("s11/x", "1")
        pub.publish("a/z/b", "2")
        wait_for(lambda: len(got) == 2, 10, "both readings")
        assert link.state.last_error is None
    finally:
        pub.close()
        link.stop()


def test_a_resend_of_a_message_already_received_is_dropped_and_counted() -> None:
    f = RedeliveryFilter(size=3)
    assert not f.is_redelivery(7, "sensors/a", b"1.0", dup=False)
    assert f.is_redelivery(7, "sensors/a", b"1.0", dup=True)  # the broker's resend
    # Not a resend: no DUP flag, or another message under a reused packet id.
    assert not f.is_redelivery(7, "sensors/a", b"1.0", dup=False)
    assert not f.is_redelivery(7, "sensors/a", b"2.0", dup=True)
    assert not f.is_redelivery(8, "sensors/b", b"1.0", dup=True)  # never seen: process it
    for mid in (9, 10, 11):  # the memory is bounded: packet id 7 falls out
        f.is_redelivery(mid, "sensors/a", b"x", dup=False)
    assert not f.is_redelivery(7, "sensors/a", b"2.0", dup=True)
    f.forget()  # a new session: nothing from the old one is a resend
    assert not f.is_redelivery(11, "sensors/a", b"x", dup=True)
    assert f.dropped == 1


def test_a_burst_remembered_in_bulk_is_remembered_as_one_by_one() -> None:
    bulk, single = RedeliveryFilter(size=4), RedeliveryFilter(size=4)
    bursts = [[(1, "a", b"1"), (2, "a", b"2")], [(3, "b", b"3"), (1, "a", b"4")],
              [(5, "c", b"5"), (6, "c", b"6")]]
    for burst in bursts:
        bulk.remember([mid for mid, _, _ in burst], [(t, p) for _, t, p in burst])
        for mid, topic, payload in burst:
            assert not single.is_redelivery(mid, topic, payload, dup=False)
    # Packet id 1 came again with a new message: that one is the newest, and only it.
    assert list(bulk.recent.items()) == list(single.recent.items())
    assert list(bulk.recent) == [3, 1, 5, 6]
    assert bulk.is_redelivery(1, "a", b"4", dup=True)
    assert not bulk.is_redelivery(2, "a", b"2", dup=True)  # fell out of the memory


def _message(mid: int, topic: str, payload: bytes, qos: int = 1,
             dup: bool = False) -> mqtt.MQTTMessage:
    message = mqtt.MQTTMessage(mid=mid, topic=topic.encode())
    message.payload, message.qos, message.dup = payload, qos, dup
    return message


def test_a_burst_hands_over_in_order_without_the_resends_it_holds() -> None:
    bursts: list[list[tuple[str, bytes, float]]] = []
    config = parse_config({"mqtt": {"client_id": "link-unit"}})
    link = MqttLink(config.mqtt, lambda t, p, ts: None, "edge-ml/status",
                    on_messages=bursts.append)
    link._on_burst([_message(1, "s/a", b"1"), _message(2, "s/b", b"2"),
                    _message(0, "s/q0", b"0", qos=0)])
    # The broker sends 2 again (its PUBACK was lost), then a new message under a reused id.
    link._on_burst([_message(2, "s/b", b"2", dup=True), _message(3, "s/c", b"3"),
                    _message(1, "s/a", b"9", dup=True)])
    assert [[(t, p) for t, p, _ in burst] for burst in bursts] == [
        [("s/a", b"1"), ("s/b", b"2"), ("s/q0", b"0")], [("s/c", b"3"), ("s/a", b"9")]]
    assert link.redelivery.dropped == 1
    assert 0 not in link.redelivery.recent  # QoS 0 has no resends to remember
    link._on_burst([_message(2, "s/b", b"2", dup=True)])  # only resends: nothing handed over
    assert len(bursts) == 2 and link.redelivery.dropped == 2
    # Without on_messages, the per-message callback gets each one.
    got: list[str] = []
    single = MqttLink(config.mqtt, lambda t, p, ts: got.append(t), "edge-ml/status")
    single._on_burst([_message(5, "s/x", b"1"), _message(6, "s/y", b"2")])
    assert got == ["s/x", "s/y"]


def test_a_backlog_arrives_in_bursts_every_message_once_and_in_order(
    broker: LocalBroker,
) -> None:
    """A persistent session's backlog is read many packets per wake-up and handed over as
    lists (one hand-over per burst), every message once and in order."""
    bursts: list[list[tuple[str, bytes, float]]] = []
    config = parse_config({"mqtt": {"port": broker.port, "client_id": "link-burst",
                                    "topics": ["sensors/#"]}})
    link = MqttLink(config.mqtt, lambda t, p, ts: None, "edge-ml/status",
                    on_messages=bursts.append)
    link.start()
    assert link.wait_connected(10), link.state
    wait_for(lambda: not link.state.subscribe_refused and link.state.connects, 5, "subscribed")
    time.sleep(0.3)
    link.stop()
    pub = Observer(broker, ["unused/#"], client_id="burst-pub")
    try:
        for i in range(2000):  # queued for the persistent session while it is away
            pub.client.publish(f"sensors/s{i % 7}", str(i), qos=1)
        pub.publish("sensors/last", "2000")
        link = MqttLink(config.mqtt, lambda t, p, ts: None, "edge-ml/status",
                        on_messages=bursts.append)
        link.start()
        wait_for(lambda: sum(map(len, bursts)) >= 2001, 20, "the backlog")
    finally:
        pub.close()
        link.stop()
    payloads = [int(p) for burst in bursts for _, p, _ in burst]
    assert payloads == list(range(2001))
    assert max(map(len, bursts)) > 1  # read in bursts, not one message per wake-up
    assert len(bursts) < 2001
    assert len(link.redelivery.recent) == 2001  # every one remembered for its resend


# -- refused subscriptions ------------------------------------------------------------------
@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A mosquitto that lets clients subscribe to ``other/#`` only: ``sensors/#`` gets 0x80."""
    with LocalBroker(workdir=tmp_path / "acl-broker", subscribe_only=("other/#",)) as running:
        yield running


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_subscription_the_broker_refuses_is_logged_reported_and_the_link_runs_on(
    acl_broker: LocalBroker, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    caplog.set_level(logging.INFO, logger="edge_ml.mqtt")
    got: list[str] = []
    config = parse_config({"mqtt": {"port": acl_broker.port, "client_id": "link-acl",
                                    "protocol": protocol, "topics": ["sensors/#", "other/#"]}})
    link = MqttLink(config.mqtt, lambda t, p, ts: got.append(t), "edge-ml/status")
    link.start()
    pub = Observer(acl_broker, ["unused/#"], client_id="acl-pub")
    try:
        assert link.wait_connected(10), link.state
        wait_for(lambda: link.state.subscribe_refused, 10, "the refused SUBACK")
        assert link.state.subscribe_refused == ["sensors/#"]
        assert "sensors/#" in (link.state.last_error or ""), link.state
        assert "other/#" not in (link.state.last_error or "")
        errors = [r.getMessage() for r in caplog.records
                  if r.name == "edge_ml.mqtt" and r.levelno == logging.ERROR]
        assert any("refused the subscription to sensors/#" in m for m in errors), caplog.text
        # The granted filter still delivers: the link runs on.
        pub.publish("other/x", "1")
        wait_for(lambda: got == ["other/x"], 10, "a reading under the granted filter")
        assert link.state.connected
    finally:
        pub.close()
        link.stop()


def test_a_granted_subscription_reports_no_refusal(broker: LocalBroker) -> None:
    link = _link({"port": broker.port})
    link.start()
    try:
        assert link.wait_connected(10)
        time.sleep(0.3)  # the SUBACK
        assert link.state.subscribe_refused == []
        assert link.state.last_error is None
    finally:
        link.stop()


def test_a_suback_that_overtakes_subscribe_returning_still_names_its_filters() -> None:
    granted, refused = ReasonCode(PacketTypes.SUBACK, identifier=1), ReasonCode(
        PacketTypes.SUBACK, identifier=0x80)
    requests = SubscribeRequests()
    assert requests.sent(1, ["a/#", "b/#"]) == []
    assert requests.answered(1, [granted, refused]) == [("a/#", granted), ("b/#", refused)]
    # The SUBACK first (subscribe() from the main thread had not returned its packet id yet).
    assert requests.answered(2, [refused]) == []
    assert requests.sent(2, ["c/#"]) == [("c/#", refused)]
    assert requests.answered(2, [granted]) == []  # answered once: not matched twice


# -- pending publishes ----------------------------------------------------------------------
def test_pending_publishes_count_until_confirmed_even_when_confirmed_first() -> None:
    pending = PendingPublishes()
    for mid in (1, 2, 3):
        pending.sent(mid)
    assert len(pending) == 3
    pending.confirmed(2)
    assert len(pending) == 2
    # paho's on_publish for 4 ran before publish() returned 4: never counted as pending.
    pending.confirmed(4)
    assert len(pending) == 2
    pending.sent(4)
    assert len(pending) == 2
    pending.confirmed(1)
    pending.confirmed(3)
    assert len(pending) == 0
    # A packet id used again counts again.
    pending.sent(1)
    assert len(pending) == 1


def test_pending_publishes_from_many_threads_add_up() -> None:
    pending = PendingPublishes()

    def send(first: int) -> None:
        for mid in range(first, first + 1000):
            pending.sent(mid)

    def confirm(first: int) -> None:
        for mid in range(first, first + 1000):
            pending.confirmed(mid)

    threads = [threading.Thread(target=f, args=(first,)) for first in (0, 1000, 2000)
               for f in (send, confirm)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pending) == 0


def test_the_link_counts_publishes_pending_while_the_broker_is_away(broker: LocalBroker) -> None:
    broker.stop()
    link = _link({"port": broker.port})
    link.start()
    try:
        for i in range(5):
            link.publish(f"out/{i}", b"1", qos=1)  # queued by paho until it connects
        assert link.pending_publishes == 5
        broker.start()
        assert link.wait_connected(30), link.state
        wait_for(lambda: link.pending_publishes == 0, 10, "the broker acknowledged all")
        for i in range(200):
            link.publish(f"out/{i}", b"2", qos=1)
        wait_for(lambda: link.pending_publishes == 0, 10, "all acknowledged")
    finally:
        link.stop()


# -- the persistent session, through the daemon ------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_broker_restarts_lose_no_qos1_reading(tmp_path: Path, broker: LocalBroker,
                                               daemon_env: tuple[Path, Path]) -> None:
    config, db = daemon_env
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    pub = Observer(broker, ["edge-ml/status"], client_id="fault-publisher")
    try:
        wait_for(lambda: b"online" in pub.on("edge-ml/status"), 30, "daemon online")
        sent = 0
        for _ in range(4):
            for i in range(300):
                # paho queues while the broker is down and resends after reconnecting.
                pub.client.publish(f"sensors/r/{i % 3}", str(float(i % 7)), qos=1)
                sent += 1
            time.sleep(0.3)
            broker.stop()  # SIGTERM: mosquitto saves its queues (a SIGKILL loses its last second)
            time.sleep(0.5)
            restarted = time.time()
            broker.start()
            # The daemon is connected again (its stored health says so) before the next burst.
            wait_for(lambda at=restarted: connected_since(db, at), 30, "daemon reconnected")
        wait_for(lambda: not pub.client._out_messages, 30, "publisher acked")
        wait_for(lambda: counters(db).get("readings_total", 0) >= sent, 60,
                 f"{sent} readings stored")
        time.sleep(1.0)
        assert counters(db)["readings_total"] == sent
        assert status(db)["readings_total"] == sent
    finally:
        pub.close()
        assert daemon.stop() == 0, daemon.log()


CLIENT_ID = "edge-ml-test"


def _readings(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM counters WHERE name = 'readings_total'").fetchone()
    return int(row[0]) if row else 0


def _publish_acked(broker: LocalBroker, prefix: str, count: int) -> None:
    """Publish ``count`` QoS 1 readings with a fresh client; return once the broker has them all."""
    connected = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"session-pub-{prefix}")
    client.on_connect = lambda *_: connected.set()
    client.max_inflight_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connected.wait(10), "publisher could not connect"
        infos = [client.publish(f"sensors/{prefix}/{i % 3}", str(float(i % 11)), qos=1)
                 for i in range(count)]
        for info in infos:
            info.wait_for_publish(10)
        assert all(info.is_published() for info in infos)
    finally:
        client.disconnect()
        client.loop_stop()


def _daemon_connects(broker: LocalBroker) -> int:
    """How often the broker's log shows the daemon connecting (this broker's whole life)."""
    return broker.log_path.read_text(errors="replace").count(f" as {CLIENT_ID} ")


def _config(tmp_path: Path, broker: LocalBroker, protocol: str = "3.1.1",
            reconnect_s: float = 0.2) -> tuple[Path, Path]:
    db = tmp_path / "state" / "edge-ml.db"
    config = write_config(tmp_path / "edge-ml.toml", broker, db)
    text = config.read_text().replace(
        "[mqtt]\n", f'[mqtt]\nprotocol = "{protocol}"\nreconnect_min_s = {reconnect_s}\n'
        f"reconnect_max_s = {max(reconnect_s, 1.0)}\n", 1)
    config.write_text(text)
    return config, db


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_readings_sent_while_daemon_and_broker_were_down_are_all_counted(
    tmp_path: Path, broker: LocalBroker, protocol: str,
) -> None:
    config, db = _config(tmp_path, broker, protocol)
    watch = Observer(broker, ["edge-ml/status"], client_id="session-watch")
    try:
        first = DaemonProcess(config, tmp_path / "daemon-1.log")
        wait_for(lambda: b"online" in watch.on("edge-ml/status"), 30, "daemon subscribed")
        _publish_acked(broker, "before", 50)
        wait_for(lambda: _readings(db) >= 50, 30, "first readings stored")
        assert first.stop() == 0, first.log()  # SIGTERM: a clean DISCONNECT keeps the session

        _publish_acked(broker, "away", 400)  # queued in the daemon's session
        broker.stop()  # SIGTERM: mosquitto writes its persistence file
        assert (broker.workdir / "mosquitto.db").exists(), "the broker saved no sessions"
        broker.start()
        _publish_acked(broker, "after", 150)  # the restored session queues these too

        second = DaemonProcess(config, tmp_path / "daemon-2.log")
        try:
            wait_for(lambda: _readings(db) >= 600, 60, "every queued reading stored")
            time.sleep(1.0)  # nothing more arrives (no duplicates either)
            assert _readings(db) == 600
            assert "session present: True" in second.log()
        finally:
            assert second.stop() == 0, second.log()
    finally:
        watch.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_readings_sent_before_the_daemon_reconnects_to_a_restarted_broker(
    tmp_path: Path, broker: LocalBroker,
) -> None:
    # The daemon retries every 3 s, so a burst right after the restart lands in its session
    # while it is still away.
    config, db = _config(tmp_path, broker, reconnect_s=3.0)
    watch = Observer(broker, ["edge-ml/status"], client_id="session-watch")
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: b"online" in watch.on("edge-ml/status"), 30, "daemon subscribed")
        _publish_acked(broker, "before", 50)
        wait_for(lambda: _readings(db) >= 50, 30, "first readings stored")

        connects = _daemon_connects(broker)
        broker.stop()
        broker.start()
        _publish_acked(broker, "gap", 500)
        assert _daemon_connects(broker) == connects, "the daemon reconnected before the burst"

        wait_for(lambda: _readings(db) >= 550, 60, "the burst stored")
        time.sleep(1.0)
        assert _readings(db) == 550
        assert "session present: True" in daemon.log()
    finally:
        watch.close()
        assert daemon.stop() == 0, daemon.log()
