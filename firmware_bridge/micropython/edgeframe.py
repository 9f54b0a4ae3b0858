"""edgeframe: send firmware_bridge v1 frames over a UART from MicroPython.

Copy this one file to the board (``mpremote cp edgeframe.py :``). It needs only ``struct`` and
runs unchanged under CPython, where the gateway's tests use it. Wire format per frame::

    COBS(msgpack_map + crc16_ccitt_false_big_endian) + b"\\x00"

with the map ``{"v": 1, "dev": str, "seq": int, "ts": float, "m": {name: number}}``.

Example (ESP32, UART2 on GPIO17/16)::

    from machine import UART
    import time, edgeframe
    uart = UART(2, baudrate=115200, tx=17, rx=16)
    seq = 0
    while True:
        edgeframe.send(uart, "node-7", seq, edgeframe.EpochMs(epoch_ms()), {"temperature": t})
        seq = (seq + 1) & 0xFFFFFFFF
        time.sleep_ms(100)

Most ESP32 and RP2040 MicroPython builds have single-precision floats: a float epoch time such as
1700000000.5 keeps only about 7 digits (errors of minutes). Pass ``EpochMs(milliseconds)`` (a
plain int) and the exact float64 is built with integer arithmetic. Some ports count time from
2000-01-01: add 946684800 seconds to get Unix epoch time.
"""

try:
    import struct
except ImportError:  # very old MicroPython ports
    import ustruct as struct

PROTOCOL_VERSION = 1


class EpochMs:
    """An epoch time in integer milliseconds, encoded as an exact float64 of seconds."""

    __slots__ = ("ms",)

    def __init__(self, ms):
        self.ms = int(ms)


def f64_from_ms(ms):
    """Big-endian IEEE-754 float64 bytes of ms / 1000, correctly rounded, integers only."""
    if ms == 0:
        return b"\x00" * 8
    sign = 0
    if ms < 0:
        sign, ms = 1, -ms
    num, den, exp = ms, 1000, 0
    while num >= den << 53:
        den <<= 1
        exp += 1
    while num < den << 52:
        num <<= 1
        exp -= 1
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q & 1):
        q += 1
        if q == 1 << 53:
            q >>= 1
            exp += 1
    bits = (sign << 63) | ((exp + 52 + 1023) << 52) | (q - (1 << 52))
    return bits.to_bytes(8, "big")


def _pack_str(s, out):
    b = s.encode("utf-8")
    n = len(b)
    if n < 32:
        out.append(0xA0 | n)
    elif n < 0x100:
        out.append(0xD9)
        out.append(n)
    elif n < 0x10000:
        out.append(0xDA)
        out.extend(struct.pack(">H", n))
    else:
        out.append(0xDB)
        out.extend(struct.pack(">I", n))
    out.extend(b)


def _pack_int(i, out):
    if 0 <= i < 0x80:
        out.append(i)
    elif -32 <= i < 0:
        out.append(i & 0xFF)
    elif 0 <= i < 0x100:
        out.append(0xCC)
        out.append(i)
    elif 0 <= i < 0x10000:
        out.append(0xCD)
        out.extend(struct.pack(">H", i))
    elif 0 <= i < 0x100000000:
        out.append(0xCE)
        out.extend(struct.pack(">I", i))
    elif 0 <= i < 0x10000000000000000:
        out.append(0xCF)
        out.extend(i.to_bytes(8, "big"))
    elif -0x80 <= i < 0:
        out.append(0xD0)
        out.extend(struct.pack(">b", i))
    elif -0x8000 <= i < 0:
        out.append(0xD1)
        out.extend(struct.pack(">h", i))
    elif -0x80000000 <= i < 0:
        out.append(0xD2)
        out.extend(struct.pack(">i", i))
    elif -0x8000000000000000 <= i < 0:
        out.append(0xD3)
        out.extend((i + (1 << 64)).to_bytes(8, "big"))
    else:
        raise ValueError("int out of 64-bit range")


def pack(obj, out):
    """Append the msgpack encoding of obj (dict, str, int, float, bool, None, EpochMs) to out."""
    if obj is None:
        out.append(0xC0)
    elif obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif isinstance(obj, int):
        _pack_int(obj, out)
    elif isinstance(obj, float):
        out.append(0xCB)
        out.extend(struct.pack(">d", obj))
    elif isinstance(obj, EpochMs):
        out.append(0xCB)
        out.extend(f64_from_ms(obj.ms))
    elif isinstance(obj, str):
        _pack_str(obj, out)
    elif isinstance(obj, dict):
        n = len(obj)
        if n < 16:
            out.append(0x80 | n)
        elif n < 0x10000:
            out.append(0xDE)
            out.extend(struct.pack(">H", n))
        else:
            out.append(0xDF)
            out.extend(struct.pack(">I", n))
        for key in obj:
            pack(key, out)
            pack(obj[key], out)
    else:
        raise TypeError("cannot pack %s" % type(obj))
    return out


def crc16(data):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); crc16(b"123456789") == 0x29B1."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def cobs_encode(data):
    """COBS-encode data: the result holds no zero byte (the delimiter is not added)."""
    out = bytearray(b"\x00")
    code_at = 0
    code = 1
    for byte in data:
        if byte:
            out.append(byte)
            code += 1
        if not byte or code == 0xFF:
            out[code_at] = code
            code = 1
            code_at = len(out)
            out.append(0)
    out[code_at] = code
    # A run of exactly 254 bytes at the very end needs no trailing code byte.
    if code == 1 and len(data) and data[-1] and len(out) > 1:
        out = out[:-1]
    return bytes(out)


def encode_frame(dev, seq, ts, measurements):
    """msgpack bytes of one v1 frame (keys in protocol order)."""
    out = bytearray()
    out.append(0x85)  # fixmap of 5 entries, written in order: v, dev, seq, ts, m
    for key, value in (("v", PROTOCOL_VERSION), ("dev", dev), ("seq", seq)):
        pack(key, out)
        pack(value, out)
    pack("ts", out)
    pack(ts if isinstance(ts, EpochMs) else float(ts), out)
    pack("m", out)
    pack(measurements, out)
    return bytes(out)


def frame_packet(dev, seq, ts, measurements):
    """One frame ready for the wire: COBS(frame + crc16 big-endian) followed by 0x00."""
    body = encode_frame(dev, seq, ts, measurements)
    crc = crc16(body)
    return cobs_encode(body + bytes(((crc >> 8) & 0xFF, crc & 0xFF))) + b"\x00"


def send(uart, dev, seq, ts, measurements):
    """Write one framed v1 frame to uart (anything with a write(bytes) method)."""
    packet = frame_packet(dev, seq, ts, measurements)
    uart.write(packet)
    return len(packet)
