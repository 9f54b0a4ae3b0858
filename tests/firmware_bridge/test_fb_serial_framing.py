"""COBS, CRC-16/CCITT-FALSE and the incremental FrameReader (resync, counters, chunking)."""

from __future__ import annotations

import itertools

import cobs.cobs as reference_cobs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import FrameError
from firmware_bridge.frame import MAX_SEQ, encode_frame
from firmware_bridge.micropython import edgeframe
from firmware_bridge.serial_framing import (
    MAX_PACKET_SIZE,
    FrameReader,
    cobs_decode,
    cobs_encode,
    crc16,
    frame_to_wire,
)


def wire(dev: str, seq: int, value: float = 1.0) -> bytes:
    return frame_to_wire(encode_frame(dev, seq, 1_700_000_000.0 + seq, {"t": value}))


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1
    assert edgeframe.crc16(b"123456789") == 0x29B1


@given(st.binary(max_size=1200))
def test_cobs_matches_reference_package_and_round_trips(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert encoded == reference_cobs.encode(data) == edgeframe.cobs_encode(data)
    assert cobs_decode(encoded) == data


@pytest.mark.parametrize("packet", [b"\x05ab", b"\x00", b"\x02a\x00", b"\x03a"])
def test_cobs_decode_rejects_invalid(packet: bytes) -> None:
    with pytest.raises(FrameError):
        cobs_decode(packet)


def test_micropython_packet_equals_gateway_packet() -> None:
    m = {"temperature": 21.5, "n": 3}
    assert edgeframe.frame_packet("n1", 7, 12.5, m) == frame_to_wire(
        encode_frame("n1", 7, 12.5, m))


def test_reader_resyncs_and_counts() -> None:
    reader = FrameReader()
    good = [wire("a", i) for i in range(5)]
    corrupted = bytearray(good[2])
    corrupted[6] ^= 0x40  # a flipped bit in the middle
    frames = reader.feed(
        b"\x13\x37garbage\x00" + good[0] + good[1][:5] + b"\x00" + good[1] + bytes(corrupted)
        + good[2] + b"\x01" * (MAX_PACKET_SIZE + 10) + b"\x00" + good[3] + b"\x00\x00" + good[4]
    )
    assert [f.seq for f in frames] == [0, 1, 2, 3, 4]
    s = reader.stats
    assert (s.frames_ok, s.oversize, s.crc_errors + s.decode_errors) == (5, 1, 3)
    assert s.gaps == 0 and s.lost == 0 and s.truncated == 0


def test_garbage_without_a_zero_merges_with_the_next_frame_only() -> None:
    reader = FrameReader()
    # Garbage glued to the front of frame 0 spoils it; frame 1 arrives intact.
    frames = reader.feed(b"noise" + wire("a", 0) + wire("a", 1))
    assert [f.seq for f in frames] == [1]
    # A sender that also puts a zero *before* each frame loses nothing to garbage.
    frames = reader.feed(b"noise" + b"\x00" + wire("a", 2))
    assert [f.seq for f in frames] == [2]


def test_sequence_statistics_per_device() -> None:
    reader = FrameReader()
    seqs_a = [5, 6, 6, 9, 10, 2, 3]  # duplicate, gap of 2, restart
    seqs_b = [MAX_SEQ - 1, MAX_SEQ, 0, 1]  # wrap-around is normal
    data = b"".join(wire("a", s) for s in seqs_a) + b"".join(wire("b", s) for s in seqs_b)
    frames = reader.feed(data)
    assert [f.seq for f in frames if f.dev == "a"] == [5, 6, 9, 10, 2, 3]
    a, b = reader.stats.devices["a"], reader.stats.devices["b"]
    assert (a.frames, a.duplicates, a.gaps, a.lost, a.restarts) == (6, 1, 1, 2, 1)
    assert (b.frames, b.duplicates, b.gaps, b.lost, b.restarts) == (4, 0, 0, 0, 0)
    assert reader.stats.to_dict()["devices"]["a"]["last_seq"] == 3


def test_reset_counts_a_truncated_packet() -> None:
    reader = FrameReader()
    reader.feed(wire("a", 0)[:4])
    reader.reset()
    assert reader.stats.truncated == 1
    assert [f.seq for f in reader.feed(wire("a", 1))] == [1]


chunks_of_stream = st.lists(
    st.one_of(
        st.builds(lambda s, v: wire("dev", s, v), st.integers(0, 50),
                  st.floats(-1e6, 1e6, allow_nan=False)),
        st.binary(max_size=40),
        st.just(b"\x00"),
        st.binary(min_size=MAX_PACKET_SIZE, max_size=MAX_PACKET_SIZE + 20).map(
            lambda b: b.replace(b"\x00", b"\x01") + b"\x00"),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(parts=chunks_of_stream, cuts=st.lists(st.integers(0, 50_000), max_size=30))
def test_any_chunking_gives_the_same_frames_and_counters(
    parts: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(parts)
    whole = FrameReader()
    expected = whole.feed(data)
    chunked = FrameReader()
    got = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for lo, hi in itertools.pairwise(points):
        got.extend(chunked.feed(data[lo:hi]))
    assert got == expected
    assert chunked.stats == whole.stats


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3000))
def test_reader_never_raises_on_noise(data: bytes) -> None:
    reader = FrameReader()
    reader.feed(data)
    assert reader.stats.bytes_in == len(data)
