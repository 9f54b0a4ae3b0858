"""Many gateways, one broker: ``edge-ml fleet`` from retained status and health, and the
tested path of two gateways bridged to a central mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_ml.fleet import gateways, status_filters
from edge_ml.mqtt import ReceivedMessage

NOW = 1_800_000_000.0


def _health(**fields: Any) -> dict[str, Any]:
    return {"gateway_id": "gw-a", "version": "0.1.0", "readings_total": 1000,
            "readings_per_s": 12.5, "streams": 3, "open_alerts": 1, "dropped_total": 2,
            "last_checkpoint_at": NOW - 60, "health_interval_s": 10.0, "updated_at": NOW - 1,
            **fields}


def _msg(topic: str, payload: bytes | dict[str, Any]) -> ReceivedMessage:
    data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return ReceivedMessage(topic, data, True, NOW)


def test_a_gateway_is_listed_with_what_its_health_says() -> None:
    (gw,) = gateways([_msg("edge-ml/status", b"online"),
                      _msg("edge-ml/status/health", _health())], now=NOW)
    assert (gw.prefix, gw.gateway_id, gw.state) == ("edge-ml", "gw-a", "online")
    assert (gw.readings_per_s, gw.streams, gw.open_alerts, gw.dropped_total) == (12.5, 3, 1, 2)
    assert gw.last_checkpoint_at == NOW - 60 and gw.health_age_s == 1.0
    assert gw.to_dict()["last_checkpoint_iso"].startswith("2027-01-15T")


def test_two_health_samples_give_a_measured_rate() -> None:
    (gw,) = gateways([_msg("p/edge-ml/status", b"online"),
                      _msg("p/edge-ml/status/health", _health(readings_total=1000,
                                                              updated_at=NOW - 11)),
                      _msg("p/edge-ml/status/health", _health(readings_total=1500,
                                                              updated_at=NOW - 1))], now=NOW)
    assert gw.readings_per_s == 50.0


@pytest.mark.parametrize(("status", "age", "state"), [
    (b"online", 1.0, "online"),
    (b"online", 29.0, "online"),  # within three intervals, or 30 s
    (b"online", 31.0, "stale"),  # its local broker died with it: no last will reached us
    (b"offline", 1.0, "offline"),
    (None, 1.0, "unknown"),
])
def test_state_from_status_and_health_age(status: bytes | None, age: float, state: str) -> None:
    messages = [_msg("edge-ml/status/health", _health(updated_at=NOW - age))]
    if status is not None:
        messages.append(_msg("edge-ml/status", status))
    (gw,) = gateways(messages, now=NOW)
    assert gw.state == state
    if state == "offline":
        assert gw.readings_per_s == 0.0


def test_other_status_topics_and_bad_health_are_not_gateways() -> None:
    """ESPHome and others publish <node>/status online/offline too."""
    found = gateways([_msg("esphome-1/status", b"online"),
                      _msg("junk/status/health", b"not json"),
                      _msg("list/status/health", b"[1, 2]"),
                      _msg("other/status/health", {"temperature": 3})], now=NOW)
    assert found == []


def test_gateways_are_told_apart_by_prefix_and_sorted_by_id() -> None:
    found = gateways([_msg("b/edge-ml/status", b"online"),
                      _msg("b/edge-ml/status/health", _health(gateway_id="gw-b")),
                      _msg("a/edge-ml/status", b"offline"),
                      _msg("a/edge-ml/status/health", _health(gateway_id="gw-a"))], now=NOW)
    assert [(g.gateway_id, g.prefix, g.state) for g in found] == [
        ("gw-a", "a/edge-ml", "offline"), ("gw-b", "b/edge-ml", "online")]


def test_status_filters_cover_health_below_each() -> None:
    assert status_filters(["+/status", "s/+/edge-ml/status"]) == [
        "+/status", "+/status/health", "s/+/edge-ml/status", "s/+/edge-ml/status/health"]


def _fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ml", "fleet", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_fleet_names_an_unreachable_broker(tmp_path: Path) -> None:
    from edge_ml.localbroker import free_port

    result = _fleet("--config", str(tmp_path / "none.toml"))
    assert result.returncode == 2 and "none.toml" in result.stderr  # a named file must exist
    result = _fleet("--host", "127.0.0.1", "--port", str(free_port()))
    assert result.returncode == 1
    assert "cannot connect to 127.0.0.1:" in result.stderr and "refused" in result.stderr


def test_fleet_refuses_a_topic_that_is_not_a_status_filter() -> None:
    for bad in ("site/#", "a/+x/status", "site/+/edge-ml"):
        result = _fleet("--topic", bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert "--topic" in result.stderr
