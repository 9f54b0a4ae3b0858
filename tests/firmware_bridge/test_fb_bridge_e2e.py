"""End to end: MicroPython-encoded frames through a real pty, a bridge process, mosquitto."""

from __future__ import annotations

import time

import pytest
from fb_helpers import BridgeProcess, FakeSerial, Subscriber, wait_for

from edge_ml.localbroker import LocalBroker
from firmware_bridge.frame import decode_frame
from firmware_bridge.micropython import edgeframe
from firmware_bridge.serial_framing import cobs_encode, crc16

pytestmark = pytest.mark.timeout(60)


def _packets(dev: str, seqs: range, base_ts: int = 1_700_000_000_000) -> list[bytes]:
    """Frames as a board would send them, with a mix of value types and an exact EpochMs."""
    return [
        edgeframe.frame_packet(
            dev, seq, edgeframe.EpochMs(base_ts + 125 * seq),
            {"temperature": 20.0 + seq / 8, "count": seq * 1000, "offset": -3 - seq},
        )
        for seq in seqs
    ]


def test_micropython_frames_arrive_decoded_identically(
    bridge: BridgeProcess, fake_serial: FakeSerial, subscriber: Subscriber
) -> None:
    sent = [(dev, p) for s in range(20) for dev, p in
            (("node-1", _packets("node-1", range(s, s + 1))[0]),
             ("node-2", _packets("node-2", range(s, s + 1))[0]))]
    for _, packet in sent:
        fake_serial.write(packet)
    got1 = wait_for(lambda: len(p := subscriber.on("sensors/node-1")) >= 20 and p, 10, "node-1")
    got2 = wait_for(lambda: len(p := subscriber.on("sensors/node-2")) >= 20 and p, 10, "node-2")
    for dev, got in (("node-1", got1), ("node-2", got2)):
        expected = [edgeframe.encode_frame(
            dev, seq, edgeframe.EpochMs(1_700_000_000_000 + 125 * seq),
            {"temperature": 20.0 + seq / 8, "count": seq * 1000, "offset": -3 - seq})
            for seq in range(20)]
        assert [decode_frame(p) for p in got] == [decode_frame(e) for e in expected]
        assert got == expected  # the canonical re-encoding is byte-identical to the device's
    assert decode_frame(got1[3]).ts == 1_700_000_000.375
    assert bridge.terminate() == 0


def _crc_broken(packet: bytes) -> bytes:
    frame = edgeframe.encode_frame("node-9", 1, 1.0, {"t": 1.0})
    body = bytearray(frame + crc16(frame).to_bytes(2, "big"))
    body[5] ^= 0x01
    return cobs_encode(bytes(body)) + b"\x00"


def test_bad_input_is_counted_and_skipped(
    bridge: BridgeProcess, fake_serial: FakeSerial, subscriber: Subscriber
) -> None:
    good = _packets("node-1", range(0, 10))
    bad_version = edgeframe.encode_frame("node-1", 99, 1.0, {"t": 1.0}).replace(
        b"\xa1v\x01", b"\xa1v\x02")
    stream = [
        good[0],
        b"hello world\x00",  # garbage: invalid COBS
        good[1],
        good[2][: len(good[2]) // 2] + b"\x00",  # truncated, then a line break
        good[2],
        good[3],
        _crc_broken(good[4]),
        good[4],
        b"\x55" * 3000 + b"\x00",  # oversize (longer than any frame)
        good[5],
        cobs_encode(bad_version + crc16(bad_version).to_bytes(2, "big")) + b"\x00",
        good[6],
        good[6],  # duplicate: dropped
        good[8],  # gap: seq 7 lost
        good[9],
        _packets("node-1", range(0, 1), base_ts=1_800_000_000_000)[0],  # restart
    ]
    for chunk in stream:
        fake_serial.write(chunk)
    got = wait_for(lambda: len(p := subscriber.on("sensors/node-1")) >= 10 and p, 10, "frames")
    assert [decode_frame(p).seq for p in got] == [0, 1, 2, 3, 4, 5, 6, 8, 9, 0]

    def counters() -> dict | None:
        health = subscriber.last_health()
        return health["reader"] if health and health["reader"]["frames_ok"] == 10 else None

    reader = wait_for(counters, 5, "health with all counters")
    assert reader["crc_errors"] + reader["decode_errors"] == 4  # garbage, truncated, crc, version
    assert reader["crc_errors"] >= 1
    assert reader["oversize"] == 1
    assert reader["duplicates"] == 1
    assert (reader["gaps"], reader["lost"], reader["restarts"]) == (1, 1, 1)
    assert reader["devices"]["node-1"]["last_seq"] == 0
    assert bridge.terminate() == 0


def test_unplugged_port_is_reopened(
    bridge: BridgeProcess, fake_serial: FakeSerial, subscriber: Subscriber
) -> None:
    fake_serial.write(_packets("node-1", range(0, 3))[0])
    wait_for(lambda: subscriber.on("sensors/node-1"), 10, "first frame")
    half = _packets("node-1", range(1, 2))[0]
    fake_serial.write(half[:7])  # unplugged mid-frame (once the bridge holds the half)
    first_len = len(_packets("node-1", range(0, 1))[0])
    wait_for(lambda: (h := subscriber.last_health()) and h["reader"]["bytes_in"] == first_len + 7,
             5, "half a frame read")
    fake_serial.unplug()
    wait_for(lambda: (h := subscriber.last_health()) and h["port_state"] in ("lost", "waiting"),
             10, "bridge to notice the unplug")
    time.sleep(0.5)  # a few failed reopen attempts
    fake_serial.plug()
    wait_for(lambda: (h := subscriber.last_health()) and h["opens"] == 2
             and h["port_state"] == "open", 15, "bridge to reopen the port")
    for packet in _packets("node-1", range(1, 5)):
        fake_serial.write(packet)
    got = wait_for(lambda: len(p := subscriber.on("sensors/node-1")) >= 5 and p, 10, "frames")
    assert [decode_frame(p).seq for p in got] == [0, 1, 2, 3, 4]
    health = subscriber.last_health()
    assert health is not None
    assert health["port_errors"] == 1 and health["reader"]["truncated"] == 1
    assert bridge.terminate() == 0


def test_frames_are_buffered_while_the_broker_is_away(
    bridge: BridgeProcess, fake_serial: FakeSerial, subscriber: Subscriber, broker: LocalBroker
) -> None:
    packets = _packets("node-3", range(0, 40))
    for packet in packets[:10]:
        fake_serial.write(packet)
    wait_for(lambda: len(subscriber.on("sensors/node-3")) >= 10, 10, "frames before the outage")
    broker.stop()
    for packet in packets[10:]:
        fake_serial.write(packet)
    time.sleep(1.0)  # the bridge reads them while the broker is down
    broker.start()
    got = wait_for(lambda: len(p := subscriber.on("sensors/node-3")) >= 40 and p, 20,
                   "buffered frames after the broker came back")
    seqs = [decode_frame(p).seq for p in got]
    assert sorted(set(seqs)) == list(range(40))
    assert seqs[10:] == sorted(seqs[10:])  # oldest first
    assert bridge.terminate() == 0
    assert "MQTT disconnected" in bridge.log()  # so they really waited in the bridge's buffer


def test_sigterm_says_offline(
    bridge: BridgeProcess, subscriber: Subscriber
) -> None:
    assert bridge.terminate(timeout=5) == 0
    wait_for(lambda: b"offline" in subscriber.on("firmware-bridge/ttyFB/status"), 5, "offline")
    assert subscriber.on("firmware-bridge/ttyFB/status")[0] == b"online"
