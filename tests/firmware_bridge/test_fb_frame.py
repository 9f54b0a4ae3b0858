"""Frame v1 codec: validation, hard limits, round trips, and the MicroPython encoder's equality."""

from __future__ import annotations

import ast
import contextlib
import math
import struct
from pathlib import Path

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import BridgeError, FrameError
from firmware_bridge.frame import (
    MAX_FRAME_SIZE,
    MAX_MEASUREMENTS,
    MAX_SEQ,
    Frame,
    decode_frame,
    encode_frame,
)
from firmware_bridge.micropython import edgeframe

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-"
names = st.text(NAME_CHARS, min_size=1, max_size=64)
numbers = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
measurements = st.dictionaries(names, numbers, min_size=1, max_size=MAX_MEASUREMENTS)
timestamps = st.floats(min_value=0, max_value=1e12, allow_nan=False)


def _raw(**overrides: object) -> bytes:
    frame: dict[str, object] = {"v": 1, "dev": "n1", "seq": 1, "ts": 1.5, "m": {"t": 1.0}}
    frame.update(overrides)
    return msgpack.packb({k: v for k, v in frame.items() if v is not ...})


def test_frame_error_is_a_bridge_error() -> None:
    assert issubclass(FrameError, BridgeError)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_raw(v=2), "unsupported protocol version 2"),
        (_raw(v=True), "unsupported protocol version"),
        (_raw(v=...), "unsupported protocol version None"),
        (_raw(dev="a/b"), "outside"),
        (_raw(dev="x" * 65), "1..64 characters"),
        (_raw(dev=""), "1..64 characters"),
        (_raw(dev=7), "dev must be a string"),
        (_raw(seq=-1), "seq -1 outside"),
        (_raw(seq=2**32), "outside"),
        (_raw(seq=1.0), "seq must be an integer"),
        (_raw(ts=float("inf")), "finite"),
        (_raw(ts=-1.0), ">= 0"),
        (_raw(ts="now"), "ts must be a number"),
        (_raw(m={}), "1..32 measurements"),
        (_raw(m={f"m{i}": i for i in range(33)}), "not valid msgpack"),  # map limit
        (_raw(m={"t": float("nan")}), "not finite"),
        (_raw(m={"t": True}), "must be a number"),
        (_raw(m={"t": "hot"}), "must be a number"),
        (_raw(m={"t+": 1}), "outside"),
        (_raw(m=[1, 2]), "not valid msgpack"),  # arrays are not allowed at all
        (_raw(extra=1), "unexpected ['extra']"),
        (msgpack.packb([1, 2]), "not valid msgpack"),
        (msgpack.packb(3), "not a map"),
        (msgpack.packb({"v": 1, "dev": b"bin"}), "not valid msgpack"),
        (b"", "not valid msgpack"),
        (b"\xc1", "not valid msgpack"),
        (_raw() + b"\x00", "not valid msgpack"),  # trailing bytes
        (b"\x80" * (MAX_FRAME_SIZE + 1), "more than 1024"),
    ],
)
def test_decode_rejects_with_a_clear_message(raw: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=None) as info:
        decode_frame(raw)
    assert message in str(info.value)


def test_hostile_length_headers_cannot_allocate() -> None:
    # A str32 header claiming 4 GiB, and a map32 claiming 4 billion entries, in a few bytes.
    for raw in (b"\xdb\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff"):
        with pytest.raises(FrameError):
            decode_frame(raw)


def test_encode_validates_and_caps_size() -> None:
    with pytest.raises(FrameError, match="more than 1024"):
        encode_frame("n", 0, 0.0, {f"{'x' * 60}{i:02d}": 1.0 for i in range(32)})
    with pytest.raises(FrameError, match="seq"):
        encode_frame("n", MAX_SEQ + 1, 0.0, {"t": 1.0})
    assert len(encode_frame("n", MAX_SEQ, 0.0, {"t": 1.0})) == 45


def test_integer_ts_reads_as_float() -> None:
    frame = decode_frame(_raw(ts=1_700_000_000))
    assert frame.ts == 1_700_000_000.0 and isinstance(frame.ts, float)


@settings(max_examples=300, deadline=None)
@given(dev=names, seq=st.integers(0, MAX_SEQ), ts=timestamps, m=measurements)
def test_round_trip(dev: str, seq: int, ts: float, m: dict[str, float]) -> None:
    try:
        data = encode_frame(dev, seq, ts, m)
    except FrameError as exc:
        assume("more than" not in str(exc))
        raise
    assert decode_frame(data) == Frame(dev, seq, ts, m)
    # The MicroPython encoder writes exactly the same bytes.
    assert edgeframe.encode_frame(dev, seq, ts, m) == data


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=MAX_FRAME_SIZE + 8))
def test_decoder_only_raises_frame_error_on_bytes(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(data)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=80) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=6),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {"v": st.sampled_from([1, 1, 2, 1.0, True]), "dev": st.one_of(names, msgpack_values),
         "seq": st.one_of(st.integers(-5, 2**33), msgpack_values),
         "ts": st.one_of(timestamps, msgpack_values),
         "m": st.one_of(measurements, msgpack_values)},
        optional={"x": msgpack_values},
    )
)
def test_decoder_only_raises_frame_error_on_near_frames(obj: dict[str, object]) -> None:
    try:
        frame = decode_frame(msgpack.packb(obj))
    except FrameError:
        return
    assert all(math.isfinite(v) for v in frame.m.values())


def test_micropython_epoch_ms_is_exact() -> None:
    for ms in (0, 1, 999, 1_700_000_000_123, 1_700_000_000_999, 4_102_444_800_000):
        assert edgeframe.f64_from_ms(ms) == struct.pack(">d", ms / 1000)
    frame = decode_frame(edgeframe.encode_frame("n", 1, edgeframe.EpochMs(1_700_000_000_125),
                                                {"t": 1}))
    assert frame.ts == 1_700_000_000.125


def test_micropython_module_has_no_package_imports() -> None:
    tree = ast.parse(Path(edgeframe.__file__).read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    assert modules == {"struct", "ustruct"}  # ustruct only as a guarded fallback
    assert not any(isinstance(node, ast.ImportFrom) for node in ast.walk(tree))
