"""The checkpoint blob: the whole pipeline state as one self-checking, versioned document.

Blob layout (all integers big-endian)::

    MAGIC (8 bytes, b"EDGEMLCK") | sha256 of BODY (32 bytes) | BODY = zlib(msgpack(document))

``document`` is ``{"header": {...}, "state": {...}}`` (see :func:`edge_ml.state.export_state`);
NumPy arrays are msgpack maps ``{"nd": 1, "dtype": "<u2", "shape": [...], "data": <bin>}`` with
only bool/int/uint/float dtypes accepted back. ``"nd": 2`` (schema 5 on, arrays of two or more
axes) stores the same array with its first axis moved last: every array of the state is one row
per stream, and a cell's values across all streams, side by side, compress far better than each
stream's cells in turn (forest masses: 1.4 -> 0.6 MB at 1,000 streams).

No pickle anywhere: a checkpoint file from elsewhere (``edge-ml checkpoints import``) can at
worst be rejected, never run code.

The checksum is verified before anything is decompressed, decompression is bounded
(:data:`MAX_RAW_BYTES`) and msgpack decoding uses hard limits; every failure raises
:class:`~edge_ml.errors.CheckpointError` with the reason.

Both directions work in bounded slices, so a checkpoint's memory is its arrays and a few MB: the
encoder makes the stream-axis-last layout :data:`LAYOUT_SLICE_BYTES` at a time; the decoder
inflates as it reads the document, and inflates each array's payload straight into the array it
returns (the stream-axis-last layout through a scratch block of that size). Neither the whole
inflated document nor a whole payload's bytes exist at once (10,000 streams: a decode's rise
went from 322 to 110 MB, about the 116 MB of arrays it returns; docs/benchmarks.md).

This module is the codec only: it knows nothing of the pipeline, storage or when to save (that
is :mod:`edge_ml.checkpointer`), so it sits low enough for anything to use.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from edge_ml.errors import CheckpointError

MAGIC = b"EDGEMLCK"
# Version of the document layout. Each version only added per-stream detector arrays, so an
# older checkpoint is read and upgraded (``edge_ml.state``): its streams keep their trees,
# profiles and counters, and the added state starts neutral (an upgrade must not throw away
# weeks of learning). A newer version than this build's is refused.
#   2: ``persist``, the persistent view's EWMA and its spread (issue 13): zeros, the view
#      learns again and scores after its first 100 readings;
#   3: ``first_ts``, each stream's first-reading time (warm-up by time span, and how far a
#      young profile slot is trusted): the stream statistics' first reading;
#   4: ``discrete``, each stream's integrality, grid step and zero share (kernels.discrete):
#      zeros, learned again from the next readings (no floor for the first 10).
#   5: no new state; smaller (issue 15): arrays of 2+ axes stored stream axis last ("nd": 2),
#      forest masses as deltas (``forest.mass_deltas``, ``devices.mass_deltas``;
#      edge_ml.kernels.heap_deltas). A build reading 4 at most would misread them: it
#      refuses them.
#   6: ``tail``, each stream's isolated extreme episodes (kernels.calibration, issue 13):
#      zeros, learned again (the scale stays 1 until the stream's episodes outrun the prior).
#   7: ``ptail`` and ``mtail``, the persistent and HST views' episodes (the same columns):
#      zeros, learned again.
#   8: ``visit``, how each stream's profile-slot visits begin (kernels.visits): zeros,
#      learned again (no rescaling for the next 20 visits).
#   9: the drift monitor's ``ref_mean`` and ``ref_mean_m2`` (the spread of its reference
#      block means, edge_ml.drift): zeros, so a stream's drift scale is the within-block
#      spread alone, as before, until its next drift reset.
#  10: the ``scales`` section, each stream's value scale (edge_ml.scales): absent, every stream
#      is raw for good (its model learned raw values; a new stream decides as usual).
#  11: four more columns of each stream's ``scale`` row (a count's root, edge_ml.scales):
#      zeros; a decided stream keeps its decision, one still deciding starts it again.
#  12: ``shoulder``, each stream's moderate extremes (kernels.calibration, issue 13 round 16):
#      zeros, learned again (it scales nothing until ``[model] heavy_tail_floor`` is set).
#  13: ``age_readings``, each stream's readings since its first (with ``first_ts``, its
#      sampling interval, which a fast stream's profile learns by; kernels.window.slot_alpha):
#      the stream statistics' reading count.
#      Since round 18 a ``scale`` row's mode may also be ``RAW_PENDING`` (a stream awaiting its
#      second look, kernels.scale): no new layout, so no new version; a build from before
#      reads it as raw for good, as it would have decided.
#  14: ``runs``, each stream's runs of equal readings (kernels.runs, issue 13 round 19): zeros,
#      learned again (no run is scored before the stream's next 100 changes of value).
SCHEMA_VERSION = 14
OLDEST_READABLE = 1
DETECTOR_ARRAYS_ADDED = {2: ("persist",), 3: ("first_ts",), 4: ("discrete",), 6: ("tail",),
                         7: ("ptail", "mtail"), 8: ("visit",), 12: ("shoulder",),
                         13: ("age_readings",), 14: ("runs",)}
DRIFT_ARRAYS_ADDED = {9: ("ref_mean", "ref_mean_m2")}
_DIGEST = 32
# Decompressed size refused beyond this (a zip bomb must not take the gateway's memory):
# 1,000 streams at default parameters are about 21 MB, so this allows ~50,000 streams.
MAX_RAW_BYTES = 1 << 30
# zlib level 1: several times faster than the default for a few % more bytes.
ZLIB_LEVEL = 1
# The stream-axis-last layout ("nd": 2) is produced and compressed this many bytes at a time:
# made whole, the transposed copy of the forest's masses was a checkpoint's peak memory
# (10,000 streams: +102 MB while encoding). The blob is the same byte for byte (the zlib stream
# does not depend on how its input is cut: tests/test_checkpoint_format.py holds it to that).
LAYOUT_SLICE_BYTES = 4 << 20
_ALLOWED_KINDS = "biuf"


@dataclass(frozen=True)
class EncodedCheckpoint:
    """A finished blob with what the ``checkpoints`` table keeps beside it."""

    blob: bytes
    checksum: str
    header: dict[str, Any]


# -- encoding -----------------------------------------------------------------------------
def _bin_header(n: int) -> bytes:
    return b"\xc6" + struct.pack(">I", n)  # msgpack bin 32


def _stream_axis_last(array: np.ndarray) -> Iterator[memoryview]:
    """The bytes of a C-contiguous ``array`` with its first axis moved last, in slices.

    Each slice is a transient copy of at most ~:data:`LAYOUT_SLICE_BYTES` (at least one cell
    across all streams), so the whole transposed array never exists at once.
    """
    streams = array.shape[0]
    cells = array.reshape(streams, -1).T  # a view: one row per cell, one column per stream
    step = max(1, LAYOUT_SLICE_BYTES // (streams * array.itemsize))
    for lo in range(0, cells.shape[0], step):
        yield memoryview(np.ascontiguousarray(cells[lo:lo + step]).reshape(-1)).cast("B")


def _pieces(obj: Any, packer: msgpack.Packer) -> Iterator[bytes | memoryview]:
    """msgpack of ``obj`` as pieces; array payloads are yielded as views or bounded slices."""
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        if array.dtype.kind not in _ALLOWED_KINDS:
            raise CheckpointError(f"cannot store an array of dtype {array.dtype}")
        rows_last = array.ndim >= 2
        yield packer.pack_map_header(4)
        yield packer.pack("nd") + packer.pack(2 if rows_last else 1)
        yield packer.pack("dtype") + packer.pack(array.dtype.str)
        yield packer.pack("shape") + packer.pack(list(array.shape))
        yield packer.pack("data") + _bin_header(array.nbytes)
        if not array.nbytes:
            return
        if rows_last:
            yield from _stream_axis_last(array)
        else:
            yield memoryview(array.reshape(-1)).cast("B")
    elif isinstance(obj, dict):
        yield packer.pack_map_header(len(obj))
        for key, value in obj.items():
            yield packer.pack(key)
            yield from _pieces(value, packer)
    elif isinstance(obj, list | tuple):
        yield packer.pack_array_header(len(obj))
        for value in obj:
            yield from _pieces(value, packer)
    else:
        yield packer.pack(obj.item() if isinstance(obj, np.generic) else obj)


def encode(document: dict[str, Any]) -> EncodedCheckpoint:
    """Pack, compress and sign a document from :func:`edge_ml.state.export_state`.

    Examples
    --------
    >>> blob = encode({"header": {"schema_version": SCHEMA_VERSION},
    ...                "state": {"x": np.arange(3)}}).blob
    >>> decode(blob)["state"]["x"].tolist()
    [0, 1, 2]
    """
    packer = msgpack.Packer(use_bin_type=True)
    compressor = zlib.compressobj(ZLIB_LEVEL)
    chunks = [compressor.compress(piece) for piece in _pieces(document, packer)]
    chunks.append(compressor.flush())
    body = b"".join(chunks)
    digest = hashlib.sha256(body).digest()
    return EncodedCheckpoint(MAGIC + digest + body, digest.hex(), document.get("header", {}))


# -- decoding -----------------------------------------------------------------------------
# msgpack's limits on what a document may hold, enforced here as msgpack would.
_MAX_STR_LEN = 1 << 20
_MAX_ARRAY_LEN = 1 << 24
_MAX_MAP_LEN = 1 << 16
# A checkpoint nests 6 deep (msgpack allows 1,024): a deeper document is refused here, before
# the decoder's own recursion (two frames a level) could reach Python's limit.
_MAX_DEPTH = 100
# zlib is fed this much of the body at a time, and asked for at most _INFLATE_BYTES each time:
# what is inflated but not yet read is never more than that.
_FEED_BYTES = 16 << 10
_INFLATE_BYTES = 256 << 10


class _Inflating:
    """A zlib body read as a file: inflated only as far as it is read, a bounded chunk at a time.

    A corrupt body, one that stops before its zlib stream ends and one inflating beyond
    :data:`MAX_RAW_BYTES` raise CheckpointError (bytes after the zlib stream are ignored, as
    they always were). Reading past the end of the document raises ValueError.
    """

    def __init__(self, body: bytes | memoryview) -> None:
        self._zlib = zlib.decompressobj()
        self._body = memoryview(body)
        self._fed = 0
        self._inflated = 0
        self._chunk = b""  # the last bytes inflated; those from self._at on are still unread
        self._at = 0

    def _inflate(self, most: int) -> bytes:
        """Up to ``most`` more inflated bytes; b"" only where the zlib stream ends."""
        while True:
            data: bytes | memoryview = self._zlib.unconsumed_tail
            if not data:
                if self._zlib.eof:
                    return b""
                if self._fed == len(self._body):
                    raise CheckpointError("truncated compressed body")
                data = self._body[self._fed:self._fed + _FEED_BYTES]
                self._fed += len(data)
            try:
                out = self._zlib.decompress(data, most)
            except zlib.error as exc:
                raise CheckpointError(f"cannot decompress: {exc}") from exc
            if out:
                self._inflated += len(out)
                if self._inflated > MAX_RAW_BYTES:
                    raise CheckpointError(f"decompresses beyond {MAX_RAW_BYTES} bytes")
                return out

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, b"" at the end (a file's ``read``, for msgpack.Unpacker)."""
        if self._at == len(self._chunk):
            self._chunk, self._at = self._inflate(max(n, _INFLATE_BYTES)), 0
        out = self._chunk[self._at:self._at + n]
        self._at += len(out)
        return out

    def byte(self) -> int:
        """The next byte (ValueError where the document ends first)."""
        if self._at == len(self._chunk):
            self._chunk, self._at = self._inflate(_INFLATE_BYTES), 0
            if not self._chunk:
                raise ValueError("incomplete input")
        self._at += 1
        return self._chunk[self._at - 1]

    def exact(self, n: int) -> bytes:
        """The next ``n`` bytes (ValueError where the document ends first)."""
        end = self._at + n
        if end <= len(self._chunk):
            self._at = end
            return self._chunk[end - n:end]
        parts = [self._chunk[self._at:]]
        have = len(parts[0])
        while have < n:
            chunk = self._inflate(max(n - have, _INFLATE_BYTES))
            if not chunk:
                raise ValueError("incomplete input")
            parts.append(chunk)
            have += len(chunk)
        self._chunk, self._at = parts[-1], len(parts[-1]) - (have - n)
        parts[-1] = self._chunk[:self._at]
        return b"".join(parts)

    def readinto(self, view: memoryview) -> None:
        """Fill ``view`` (bytes) entirely, inflating into it no more than it needs."""
        have = min(len(view), len(self._chunk) - self._at)
        view[:have] = memoryview(self._chunk)[self._at:self._at + have]
        self._at += have
        while have < len(view):
            chunk = self._inflate(min(len(view) - have, _INFLATE_BYTES))
            if not chunk:
                raise ValueError("incomplete input")
            view[have:have + len(chunk)] = chunk
            have += len(chunk)

    def at_end(self) -> bool:
        """Whether all was read, the zlib stream checked to its end (its adler32 too)."""
        return self._at == len(self._chunk) and not self._inflate(1)


def _array_spec(obj: dict[Any, Any]) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The dtype and shape of an array map, refused unless they are ones this codec writes."""
    try:
        dtype = np.dtype(obj["dtype"])
        shape = tuple(int(n) for n in obj["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed array: {exc}") from exc
    if dtype.kind not in _ALLOWED_KINDS or dtype.hasobject:
        raise CheckpointError(f"array dtype {dtype} is not allowed")
    if any(n < 0 for n in shape):
        raise CheckpointError("malformed array payload")
    return dtype, shape


def _check_size(dtype: np.dtype[Any], shape: tuple[int, ...], size: int) -> None:
    if math.prod(shape) * dtype.itemsize != size:
        raise CheckpointError(f"array of {dtype}{list(shape)} has {size} bytes")


def _array_hook(obj: dict[Any, Any]) -> Any:
    """A map read whole, as the array it stands for if it is one.

    Array maps are read so only when :func:`_map` cannot inflate them into place: their keys
    in another order than this codec writes them, or a ``data`` that is not a bin (refused).
    """
    layout = obj.get("nd")
    if layout not in (1, 2) or len(obj) != 4:
        return obj
    dtype, shape = _array_spec(obj)
    data = obj.get("data")
    if not isinstance(data, bytes):
        raise CheckpointError("malformed array payload")
    _check_size(dtype, shape, len(data))
    if layout == 2 and len(shape) >= 2:  # stored with the first axis last
        stored = np.frombuffer(data, dtype=dtype).reshape(*shape[1:], shape[0])
        return np.moveaxis(stored, -1, 0).copy()  # C order, writable (frombuffer is not)
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _read_array(source: _Inflating, layout: int, dtype: np.dtype[Any],
                shape: tuple[int, ...]) -> np.ndarray:
    """An array's payload inflated straight into the array returned.

    The stream-axis-last layout comes back through a scratch block of ~LAYOUT_SLICE_BYTES of
    stored rows, so neither the payload's bytes nor the stored layout exist whole beside it.
    """
    array = np.empty(shape, dtype)
    if not array.size:
        return array
    if layout != 2 or len(shape) < 2:
        source.readinto(memoryview(array.reshape(-1)).cast("B"))
        return array
    streams = shape[0]
    cells = array.reshape(streams, -1)  # a view: the stored layout is its transpose
    step = max(1, LAYOUT_SLICE_BYTES // (streams * dtype.itemsize))
    stored = np.empty((min(step, cells.shape[1]), streams), dtype)
    for lo in range(0, cells.shape[1], step):
        block = stored[:cells.shape[1] - lo]
        source.readinto(memoryview(block.reshape(-1)).cast("B"))
        cells[:, lo:lo + len(block)] = block.T
    return array


_CONSTANTS = {0xc0: None, 0xc2: False, 0xc3: True}
_NUMBERS = {lead: struct.Struct(fmt) for lead, fmt in (
    (0xca, ">f"), (0xcb, ">d"), (0xcc, ">B"), (0xcd, ">H"), (0xce, ">I"), (0xcf, ">Q"),
    (0xd0, ">b"), (0xd1, ">h"), (0xd2, ">i"), (0xd3, ">q"))}
# Lead bytes followed by a big-endian length of so many bytes.
_SIZED = {0xc4: ("bin", 1), 0xc5: ("bin", 2), 0xc6: ("bin", 4),
          0xc7: ("ext", 1), 0xc8: ("ext", 2), 0xc9: ("ext", 4),
          0xd9: ("str", 1), 0xda: ("str", 2), 0xdb: ("str", 4),
          0xdc: ("list", 2), 0xdd: ("list", 4), 0xde: ("map", 2), 0xdf: ("map", 4)}


def _item(source: _Inflating, lead: int, depth: int) -> Any:
    """The msgpack object that begins with byte ``lead``, read as ``msgpack.unpackb`` would
    with this module's limits (strict map keys, str as UTF-8, no ext)."""
    if lead <= 0x7f:
        return lead
    if lead >= 0xe0:
        return lead - 0x100
    if lead >= 0xa0 and lead <= 0xbf:
        return _str(source, lead & 0x1f)
    if lead <= 0x8f:
        return _map(source, lead & 0x0f, depth)
    if lead <= 0x9f:
        return _list(source, lead & 0x0f, depth)
    if lead in _CONSTANTS:
        return _CONSTANTS[lead]
    if lead in _NUMBERS:
        number = _NUMBERS[lead]
        return number.unpack(source.exact(number.size))[0]
    if lead not in _SIZED:
        if 0xd4 <= lead <= 0xd8:  # fixext 1 to 16
            raise ValueError(f"{1 << (lead - 0xd4)} exceeds max_ext_len(0)")
        raise ValueError(f"invalid msgpack byte 0x{lead:02x}")
    kind, width = _SIZED[lead]
    n = int.from_bytes(source.exact(width), "big")
    if kind == "str":
        return _str(source, n)
    if kind == "map":
        return _map(source, n, depth)
    if kind == "list":
        return _list(source, n, depth)
    if kind == "bin":
        return source.exact(_bin_length(n))
    # The codec writes no ext type, so none is read (msgpack's max_ext_len=0 let an empty one
    # through as an ExtType, which no document holds).
    raise ValueError(f"{n} exceeds max_ext_len(0)")


def _bin_length(n: int) -> int:
    if n > MAX_RAW_BYTES:
        raise ValueError(f"{n} exceeds max_bin_len({MAX_RAW_BYTES})")
    return n


def _str(source: _Inflating, n: int) -> str:
    if n > _MAX_STR_LEN:
        raise ValueError(f"{n} exceeds max_str_len({_MAX_STR_LEN})")
    return source.exact(n).decode("utf-8")


def _list(source: _Inflating, n: int, depth: int) -> list[Any]:
    if n > _MAX_ARRAY_LEN:
        raise ValueError(f"{n} exceeds max_array_len({_MAX_ARRAY_LEN})")
    if depth >= _MAX_DEPTH:
        raise ValueError(f"nested deeper than {_MAX_DEPTH}")
    return [_item(source, source.byte(), depth + 1) for _ in range(n)]


def _map(source: _Inflating, n: int, depth: int) -> Any:
    """A dict, or the array a map of this codec's (nd, dtype, shape, then data) stands for."""
    if n > _MAX_MAP_LEN:
        raise ValueError(f"{n} exceeds max_map_len({_MAX_MAP_LEN})")
    if depth >= _MAX_DEPTH:
        raise ValueError(f"nested deeper than {_MAX_DEPTH}")
    out: dict[Any, Any] = {}
    for i in range(n):
        key = _item(source, source.byte(), depth + 1)
        if type(key) is not str and type(key) is not bytes:
            raise ValueError(f"{type(key).__name__} is not allowed for map key "
                             "when strict_map_key=True")
        lead = source.byte()
        if (i == 3 and n == 4 and key == "data" and lead in (0xc4, 0xc5, 0xc6)
                and len(out) == 3 and out.get("nd") in (1, 2) and "shape" in out
                and "dtype" in out):
            dtype, shape = _array_spec(out)
            size = _bin_length(int.from_bytes(source.exact(1 << (lead - 0xc4)), "big"))
            _check_size(dtype, shape, size)
            return _read_array(source, out["nd"], dtype, shape)
        out[key] = _item(source, lead, depth + 1)
    return _array_hook(out)


def checksum_of(blob: bytes) -> str:
    """The hex sha256 stored in the blob (what the ``checksum`` column holds)."""
    return bytes(blob[len(MAGIC):len(MAGIC) + _DIGEST]).hex()


def decode(blob: bytes, expect: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verify and decode a blob into ``{"header", "state"}``.

    Parameters
    ----------
    blob
        Output of :func:`encode`.
    expect
        Header entries that must match (``params``, ``features``; see
        :func:`edge_ml.state.compatibility`); ``None`` checks only the schema version.

    Raises
    ------
    CheckpointError
        Corrupt, truncated, too large, of a schema version this build cannot read, or
        incompatible.
    """
    blob = bytes(blob)
    if len(blob) < len(MAGIC) + _DIGEST or not blob.startswith(MAGIC):
        raise CheckpointError("not a checkpoint (bad magic or truncated header)")
    digest = blob[len(MAGIC):len(MAGIC) + _DIGEST]
    body = memoryview(blob)[len(MAGIC) + _DIGEST:]  # not a copy of the body
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError("checksum mismatch (corrupt or truncated)")
    source = _Inflating(body)
    try:
        document = _item(source, source.byte(), 0)
        if not source.at_end():
            raise ValueError("extra data after the document")
    except CheckpointError:
        raise
    except Exception as exc:  # numpy, struct and UTF-8 decoding raise unrelated types too
        raise CheckpointError(f"cannot decode: {type(exc).__name__}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("header"), dict) \
            or not isinstance(document.get("state"), dict):
        raise CheckpointError("document has no header/state")
    header = document["header"]
    version = header.get("schema_version")
    if not isinstance(version, int) or not OLDEST_READABLE <= version <= SCHEMA_VERSION:
        raise CheckpointError(
            f"schema version {version!r} is not supported (this build reads"
            f" {OLDEST_READABLE} to {SCHEMA_VERSION})"
        )
    for key, wanted in (expect or {}).items():
        have = header.get(key)
        if have != wanted:
            if isinstance(have, dict) and isinstance(wanted, dict):
                diff = {k: (have.get(k), wanted.get(k)) for k in wanted.keys() | have.keys()
                        if have.get(k) != wanted.get(k)}
                detail = ", ".join(f"{k}: checkpoint {a!r}, config {b!r}"
                                   for k, (a, b) in sorted(diff.items()))
            else:
                detail = f"checkpoint {have!r}, config {wanted!r}"
            raise CheckpointError(f"incompatible {key} ({detail})")
    return document


def read_names(blob: bytes) -> list[str]:
    """The stream names in a checkpoint, reading no further into the blob than they are.

    For ``edge-ml status``, which lists the streams a start would load: a full :func:`decode`
    of 10,000 streams inflates ~200 MB, while the names come first in the state. The checksum
    is not verified here (a start does that); a blob this cannot read raises CheckpointError.
    """
    if not bytes(blob[:len(MAGIC)]) == MAGIC:
        raise CheckpointError("not a checkpoint (bad magic or truncated header)")
    unpacker = msgpack.Unpacker(
        _Inflating(memoryview(blob)[len(MAGIC) + _DIGEST:]), raw=False, strict_map_key=True,
        max_buffer_size=MAX_RAW_BYTES, max_str_len=_MAX_STR_LEN, max_array_len=_MAX_ARRAY_LEN,
        max_map_len=_MAX_MAP_LEN, max_ext_len=0, max_bin_len=MAX_RAW_BYTES,
    )
    try:
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() != "state":
                unpacker.skip()
                continue
            for _ in range(unpacker.read_map_header()):
                if unpacker.unpack() == "names":
                    names = unpacker.unpack()
                    if not isinstance(names, list):
                        break
                    return [str(n) for n in names]
                unpacker.skip()
            break
    except Exception as exc:  # msgpack and zlib raise several unrelated types on bad input
        raise CheckpointError(f"cannot read stream names: {type(exc).__name__}: {exc}") from exc
    raise CheckpointError("no stream names in this checkpoint")


def detector_arrays_added_since(version: int) -> tuple[str, ...]:
    """Per-stream detector arrays a checkpoint of schema ``version`` lacks (added later).

    >>> detector_arrays_added_since(1)[:5]
    ('persist', 'first_ts', 'discrete', 'tail', 'ptail')
    >>> detector_arrays_added_since(1)[5:]
    ('mtail', 'visit', 'shoulder', 'age_readings', 'runs')
    >>> detector_arrays_added_since(SCHEMA_VERSION)
    ()
    """
    return _added_since(DETECTOR_ARRAYS_ADDED, version)


def drift_arrays_added_since(version: int) -> tuple[str, ...]:
    """Per-stream drift-monitor arrays a checkpoint of schema ``version`` lacks.

    >>> drift_arrays_added_since(8)
    ('ref_mean', 'ref_mean_m2')
    >>> drift_arrays_added_since(SCHEMA_VERSION)
    ()
    """
    return _added_since(DRIFT_ARRAYS_ADDED, version)


def _added_since(added: dict[int, tuple[str, ...]], version: int) -> tuple[str, ...]:
    return tuple(name for v in range(version + 1, SCHEMA_VERSION + 1)
                 for name in added.get(v, ()))
