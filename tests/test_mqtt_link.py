"""The broker link against a real mosquitto: failures say what went wrong instead of going quiet.

A broker that cannot be reached is logged with the reason (refused, DNS), once and then rarely,
and is in ``state.last_error`` (the health record's ``mqtt_error``); an exception while setting
up a connection is logged and reported, and paho's network thread lives on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from daemon_helpers import Observer, wait_for

from edge_ml.config import parse_config
from edge_ml.localbroker import LocalBroker
from edge_ml.mqtt import MqttLink, RedeliveryFilter

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
