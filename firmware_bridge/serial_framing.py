"""Serial framing: COBS + CRC-16/CCITT-FALSE around v1 frames, and an incremental reader.

On the wire each frame is ``COBS(frame_bytes + crc16_be(frame_bytes))`` followed by one ``0x00``.
COBS removes every zero byte from the packet, so ``0x00`` only ever marks a frame end and a
reader can resynchronise after line noise at the next zero. The CRC is CRC-16/CCITT-FALSE (poly
0x1021, init 0xFFFF, not reflected, no final xor; ``crc16(b"123456789") == 0x29B1``) over the
msgpack bytes, appended big-endian. Empty packets (two zeros in a row) are ignored, so a sender
may also send a zero *before* each frame to cut off any half-sent frame the receiver holds.
"""

from __future__ import annotations

import binascii
import logging
from dataclasses import asdict, dataclass, field

from firmware_bridge.errors import FrameError
from firmware_bridge.frame import MAX_FRAME_SIZE, MAX_SEQ, Frame, decode_frame

log = logging.getLogger(__name__)

DELIMITER = b"\x00"
CRC_SIZE = 2
#: Largest COBS-encoded packet (without its delimiter) a valid frame can produce: the frame,
#: its CRC, and one overhead byte per started run of 254 bytes.
MAX_PACKET_SIZE = MAX_FRAME_SIZE + CRC_SIZE + (MAX_FRAME_SIZE + CRC_SIZE) // 254 + 1
#: Devices tracked for sequence statistics; frames from further devices still pass.
MAX_DEVICES = 1024


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data``.

    ``binascii.crc_hqx`` is exactly this CRC (poly 0x1021, MSB first) given init 0xFFFF.

    >>> hex(crc16(b"123456789"))
    '0x29b1'
    """
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (the result has no zero byte; the delimiter is not added).

    >>> cobs_encode(b"\\x11\\x00\\x22").hex()
    '02110222'
    """
    out = bytearray()
    segments = data.split(b"\x00")
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        while len(seg) >= 254:
            out.append(0xFF)
            out += seg[:254]
            seg = seg[254:]
            if not seg and i == last:
                return bytes(out)  # a full run ends the data: no implied zero to encode
        out.append(len(seg) + 1)
        out += seg
    return bytes(out)


def cobs_decode(packet: bytes) -> bytes:
    """Decode one COBS packet (without its delimiter); raise FrameError when it is invalid.

    >>> cobs_decode(bytes.fromhex("02110222"))
    b'\\x11\\x00"'
    """
    out = bytearray()
    i, n = 0, len(packet)
    while i < n:
        code = packet[i]
        end = i + code
        if code == 0 or end > n:
            raise FrameError("invalid COBS packet")
        out += packet[i + 1 : end]
        if code != 0xFF and end < n:
            out.append(0)
        i = end
    if b"\x00" in packet:
        raise FrameError("invalid COBS packet: contains a zero byte")
    return bytes(out)


def frame_to_wire(frame_bytes: bytes) -> bytes:
    """Wrap v1 frame msgpack bytes for the wire: COBS(bytes + crc16 big-endian) + 0x00."""
    return cobs_encode(frame_bytes + crc16(frame_bytes).to_bytes(2, "big")) + DELIMITER


def unwrap_packet(packet: bytes) -> bytes:
    """COBS-decode one packet and check its CRC; return the frame bytes (FrameError if bad)."""
    raw = cobs_decode(packet)
    if len(raw) <= CRC_SIZE:
        raise FrameError("packet too short for a CRC")
    body, tail = raw[:-CRC_SIZE], raw[-CRC_SIZE:]
    if crc16(body) != int.from_bytes(tail, "big"):
        raise CrcError("CRC mismatch")
    return body


class CrcError(FrameError):
    """The packet decoded but its CRC-16 does not match."""


@dataclass
class DeviceStats:
    """Sequence statistics of one device, as seen by one reader."""

    frames: int = 0
    gaps: int = 0
    lost: int = 0
    duplicates: int = 0
    restarts: int = 0
    last_seq: int | None = None


@dataclass
class ReaderStats:
    """Counters of a FrameReader (all cumulative since it was created)."""

    bytes_in: int = 0
    frames_ok: int = 0
    crc_errors: int = 0
    oversize: int = 0
    decode_errors: int = 0
    truncated: int = 0
    gaps: int = 0
    lost: int = 0
    duplicates: int = 0
    restarts: int = 0
    untracked_devices: int = 0
    devices: dict[str, DeviceStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The counters as a JSON-ready dict (devices nested by id)."""
        return asdict(self)


class FrameReader:
    """Turn a byte stream cut into arbitrary chunks into validated frames, counting failures.

    ``feed`` returns the good frames completed by a chunk, in order. Frames whose sequence number
    repeats the previous one from the same device are counted as duplicates and dropped; a jump
    forward counts a gap and the frames lost in it; a jump backwards counts a device restart
    (serial links do not reorder) and the frame passes. Wrapping from 2**32-1 to 0 is normal.

    Examples
    --------
    >>> from firmware_bridge.frame import encode_frame
    >>> wire = frame_to_wire(encode_frame("n1", 5, 1.0, {"t": 1.5}))
    >>> reader = FrameReader()
    >>> reader.feed(b"noise\\x00" + wire[:3]), [f.seq for f in reader.feed(wire[3:])]
    ([], [5])
    >>> reader.stats.frames_ok, reader.stats.decode_errors
    (1, 1)
    """

    def __init__(self, max_packet: int = MAX_PACKET_SIZE) -> None:
        self.max_packet = max_packet
        self.stats = ReaderStats()
        self._buf = bytearray()
        self._discarding = False  # inside an oversize packet: drop bytes until the next zero

    def reset(self) -> None:
        """Forget a half-received packet (the port was closed); counters are kept."""
        if self._buf:
            self.stats.truncated += 1
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame]:
        """Add a chunk of received bytes; return the frames it completed."""
        self.stats.bytes_in += len(data)
        frames: list[Frame] = []
        start = 0
        n = len(data)
        while start < n:
            zero = data.find(0, start)
            if zero < 0:
                self._take(data[start:])
                break
            self._take(data[start:zero])
            if self._discarding:
                self._discarding = False
            elif self._buf:
                frame = self._packet(bytes(self._buf))
                if frame is not None:
                    frames.append(frame)
            self._buf.clear()
            start = zero + 1
        return frames

    def _take(self, part: bytes) -> None:
        if self._discarding or not part:
            return
        if len(self._buf) + len(part) > self.max_packet:
            self.stats.oversize += 1
            log.debug("oversize packet (> %s bytes) dropped", self.max_packet)
            self._buf.clear()
            self._discarding = True
            return
        self._buf += part

    def _packet(self, packet: bytes) -> Frame | None:
        try:
            frame = decode_frame(unwrap_packet(packet))
        except CrcError:
            self.stats.crc_errors += 1
            return None
        except FrameError as exc:
            self.stats.decode_errors += 1
            log.debug("bad packet of %s bytes: %s", len(packet), exc)
            return None
        if not self._track(frame):
            return None
        self.stats.frames_ok += 1
        return frame

    def _track(self, frame: Frame) -> bool:
        """Update sequence statistics; False when the frame is a duplicate to drop."""
        stats = self.stats
        dev = stats.devices.get(frame.dev)
        if dev is None:
            if len(stats.devices) >= MAX_DEVICES:
                stats.untracked_devices += 1
                return True
            dev = stats.devices[frame.dev] = DeviceStats()
        last = dev.last_seq
        seq = frame.seq
        if last is not None:
            expected = 0 if last == MAX_SEQ else last + 1
            if seq == last:
                dev.duplicates += 1
                stats.duplicates += 1
                return False
            if seq < last and not (expected == 0 and seq == 0):
                dev.restarts += 1
                stats.restarts += 1
                log.info("device %s restarted (seq %s after %s)", frame.dev, seq, last)
            elif seq != expected:
                missing = (seq - expected) % (MAX_SEQ + 1)
                dev.gaps += 1
                dev.lost += missing
                stats.gaps += 1
                stats.lost += missing
        dev.last_seq = seq
        dev.frames += 1
        return True
