"""Frame protocol v1: one sensor node's reading as a small msgpack map.

A frame is the msgpack encoding of exactly this map (key order as shown)::

    {"v": 1, "dev": "node-7", "seq": 1234, "ts": 1700000000.5,
     "m": {"temperature": 21.5, "vibration": 0.02}}

Rules (checked by :func:`encode_frame` and :func:`decode_frame`):

- ``v`` is the protocol version, the integer ``1``.
- ``dev`` is the device id, 1..64 characters from ``[A-Za-z0-9_.:-]``; it becomes an MQTT topic
  level, so ``/``, ``+``, ``#`` and whitespace are refused.
- ``seq`` is the sender's frame counter, an integer in ``0 .. 2**32 - 1`` (it may wrap to 0).
- ``ts`` is the reading time in epoch seconds, a finite number >= 0 (an integer is accepted and
  read as a float).
- ``m`` maps 1..32 measurement names (same alphabet and length as ``dev``) to finite numbers
  (int or float; booleans are not numbers here).
- No other keys. The whole encoded frame is at most :data:`MAX_FRAME_SIZE` bytes, which also caps
  how long names can be when a frame carries many measurements.

Decoding never trusts the input: the byte length is checked first and msgpack is told the largest
string, map, array, bin and ext it may build, so a hostile frame cannot make it allocate more than
a few KB. Every failure is a :class:`~firmware_bridge.errors.FrameError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from firmware_bridge.errors import FrameError

PROTOCOL_VERSION = 1
#: Largest encoded frame (msgpack bytes, before CRC and COBS). 1 KiB fits a frame with 32
#: measurements of short names several times over and keeps a gateway's buffers tiny.
MAX_FRAME_SIZE = 1024
#: Longest device id and measurement name, in characters.
MAX_NAME_LEN = 64
#: Most measurements one frame may carry.
MAX_MEASUREMENTS = 32
#: Largest sequence number; senders count modulo 2**32 (a uint32 on a microcontroller).
MAX_SEQ = 2**32 - 1

_KEYS = ("v", "dev", "seq", "ts", "m")
_NAME_RE = re.compile(rf"[A-Za-z0-9_.:\-]{{1,{MAX_NAME_LEN}}}")
# msgpack hard limits. A name of 64 characters is at most 64 bytes (ASCII alphabet), but a
# hostile frame may carry any UTF-8, so strings are allowed 4 bytes per character before the
# alphabet check rejects them with a clear message. Maps: 5 keys at the top, 32 in "m".
_UNPACK_LIMITS: dict[str, int] = {
    "max_str_len": 4 * MAX_NAME_LEN,
    "max_bin_len": 0,
    "max_array_len": 0,
    "max_map_len": MAX_MEASUREMENTS,
    "max_ext_len": 0,
}

Number = int | float


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded, validated v1 frame.

    Examples
    --------
    >>> frame = Frame("node-1", 7, 1700000000.5, {"temperature": 21.5})
    >>> decode_frame(frame.encode()) == frame
    True
    """

    dev: str
    seq: int
    ts: float
    m: Mapping[str, Number]

    def encode(self) -> bytes:
        """Encode this frame as v1 msgpack bytes (validating it)."""
        return encode_frame(self.dev, self.seq, self.ts, self.m)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise FrameError(f"{what} must be a string, got {type(value).__name__}")
    if not _NAME_RE.fullmatch(value):
        if not value or len(value) > MAX_NAME_LEN:
            raise FrameError(f"{what} must be 1..{MAX_NAME_LEN} characters, got {len(value)}")
        raise FrameError(f"{what} {value!r} has characters outside [A-Za-z0-9_.:-]")
    return value


def _check_fields(dev: object, seq: object, ts: object, measurements: object) -> Frame:
    """Validate the five fields and return them as a Frame (ts as float)."""
    dev = _check_name("dev", dev)
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise FrameError(f"seq must be an integer, got {type(seq).__name__}")
    if not 0 <= seq <= MAX_SEQ:
        raise FrameError(f"seq {seq} outside 0..{MAX_SEQ}")
    if not _is_number(ts):
        raise FrameError(f"ts must be a number, got {type(ts).__name__}")
    ts_f = float(ts)  # type: ignore[arg-type]
    if not math.isfinite(ts_f) or ts_f < 0:
        raise FrameError(f"ts must be finite and >= 0, got {ts_f!r}")
    if not isinstance(measurements, Mapping):
        raise FrameError(f"m must be a map, got {type(measurements).__name__}")
    if not 1 <= len(measurements) <= MAX_MEASUREMENTS:
        raise FrameError(f"m must hold 1..{MAX_MEASUREMENTS} measurements, got {len(measurements)}")
    clean: dict[str, Number] = {}
    for name, value in measurements.items():
        _check_name("measurement name", name)
        if not _is_number(value):
            raise FrameError(f"measurement {name!r} must be a number, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise FrameError(f"measurement {name!r} is not finite: {value!r}")
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            raise FrameError(f"measurement {name!r} integer out of 64-bit range")
        clean[name] = value
    return Frame(dev, seq, ts_f, clean)


def encode_frame(dev: str, seq: int, ts: float, measurements: Mapping[str, Number]) -> bytes:
    """Validate the fields and encode them as v1 frame msgpack bytes.

    Raises
    ------
    FrameError
        When a field breaks the v1 rules or the result is larger than MAX_FRAME_SIZE.

    Examples
    --------
    >>> data = encode_frame("node-1", 1, 1700000000.0, {"temperature": 21.5})
    >>> decode_frame(data).m
    {'temperature': 21.5}
    """
    frame = _check_fields(dev, seq, ts, measurements)
    data = msgpack.packb(
        {"v": PROTOCOL_VERSION, "dev": frame.dev, "seq": frame.seq, "ts": frame.ts,
         "m": dict(frame.m)},
        use_bin_type=True,
    )
    if len(data) > MAX_FRAME_SIZE:
        raise FrameError(f"encoded frame is {len(data)} bytes, more than {MAX_FRAME_SIZE}")
    return data


def decode_frame(data: bytes) -> Frame:
    """Decode and validate v1 frame msgpack bytes; raise FrameError on anything else.

    Examples
    --------
    >>> decode_frame(b"\\x01")
    Traceback (most recent call last):
    ...
    firmware_bridge.errors.FrameError: frame is not a map (got int)
    """
    if len(data) > MAX_FRAME_SIZE:
        raise FrameError(f"frame is {len(data)} bytes, more than {MAX_FRAME_SIZE}")
    try:
        obj: Any = msgpack.unpackb(data, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except Exception as exc:  # msgpack raises a zoo of types on bad input; all mean "bad frame"
        raise FrameError(f"not valid msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError(f"frame is not a map (got {type(obj).__name__})")
    version = obj.get("v")
    if version != PROTOCOL_VERSION or isinstance(version, bool | float):
        raise FrameError(f"unsupported protocol version {version!r} (expected {PROTOCOL_VERSION})")
    keys = set(obj)
    if keys != set(_KEYS):
        missing = sorted(set(_KEYS) - keys)
        extra = sorted(keys - set(_KEYS), key=repr)
        raise FrameError(f"frame keys wrong: missing {missing}, unexpected {extra}")
    return _check_fields(obj["dev"], obj["seq"], obj["ts"], obj["m"])
