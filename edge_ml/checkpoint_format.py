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

This module is the codec only: it knows nothing of the pipeline, storage or when to save (that
is :mod:`edge_ml.checkpointer`), so it sits low enough for anything to use.
"""

from __future__ import annotations

import hashlib
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
SCHEMA_VERSION = 10
OLDEST_READABLE = 1
DETECTOR_ARRAYS_ADDED = {2: ("persist",), 3: ("first_ts",), 4: ("discrete",), 6: ("tail",),
                         7: ("ptail", "mtail"), 8: ("visit",)}
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
def _array_hook(obj: dict[Any, Any]) -> Any:
    layout = obj.get("nd")
    if layout not in (1, 2) or len(obj) != 4:
        return obj
    try:
        dtype = np.dtype(obj["dtype"])
        shape = tuple(int(n) for n in obj["shape"])
        data = obj["data"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed array: {exc}") from exc
    if dtype.kind not in _ALLOWED_KINDS or dtype.hasobject:
        raise CheckpointError(f"array dtype {dtype} is not allowed")
    if not isinstance(data, bytes) or any(n < 0 for n in shape):
        raise CheckpointError("malformed array payload")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(data):
        raise CheckpointError(f"array of {dtype}{list(shape)} has {len(data)} bytes")
    if layout == 2 and len(shape) >= 2:  # stored with the first axis last
        stored = np.frombuffer(data, dtype=dtype).reshape(*shape[1:], shape[0])
        return np.moveaxis(stored, -1, 0).copy()  # C order, writable (frombuffer is not)
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


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
    digest, body = blob[len(MAGIC):len(MAGIC) + _DIGEST], blob[len(MAGIC) + _DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError("checksum mismatch (corrupt or truncated)")
    decompressor = zlib.decompressobj()
    try:
        raw = decompressor.decompress(body, MAX_RAW_BYTES)
    except zlib.error as exc:
        raise CheckpointError(f"cannot decompress: {exc}") from exc
    if decompressor.unconsumed_tail:
        raise CheckpointError(f"decompresses beyond {MAX_RAW_BYTES} bytes")
    if not decompressor.eof:
        raise CheckpointError("truncated compressed body")
    try:
        document = msgpack.unpackb(
            raw, raw=False, strict_map_key=True, object_hook=_array_hook,
            max_bin_len=MAX_RAW_BYTES, max_str_len=1 << 20, max_array_len=1 << 24,
            max_map_len=1 << 16, max_ext_len=0,
        )
    except CheckpointError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on bad input
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


class _Inflating:
    """A file-like ``read(n)`` over a zlib body, decompressing only as far as it is read."""

    def __init__(self, body: bytes) -> None:
        self._decompressor = zlib.decompressobj()
        self._body = memoryview(body)
        self._at = 0
        self._buffer = b""

    def read(self, n: int = -1) -> bytes:
        want = n if n >= 0 else MAX_RAW_BYTES
        while len(self._buffer) < want and self._at < len(self._body):
            chunk = self._body[self._at:self._at + 65536]
            self._at += len(chunk)
            self._buffer += self._decompressor.decompress(chunk)
        out, self._buffer = self._buffer[:want], self._buffer[want:]
        return out


def read_names(blob: bytes) -> list[str]:
    """The stream names in a checkpoint, reading no further into the blob than they are.

    For ``edge-ml status``, which lists the streams a start would load: a full :func:`decode`
    of 10,000 streams inflates ~200 MB, while the names come first in the state. The checksum
    is not verified here (a start does that); a blob this cannot read raises CheckpointError.
    """
    if not bytes(blob[:len(MAGIC)]) == MAGIC:
        raise CheckpointError("not a checkpoint (bad magic or truncated header)")
    unpacker = msgpack.Unpacker(
        _Inflating(bytes(blob[len(MAGIC) + _DIGEST:])), raw=False, strict_map_key=True,
        max_buffer_size=MAX_RAW_BYTES, max_str_len=1 << 20, max_array_len=1 << 24,
        max_map_len=1 << 16, max_ext_len=0, max_bin_len=MAX_RAW_BYTES,
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

    >>> detector_arrays_added_since(1)
    ('persist', 'first_ts', 'discrete', 'tail', 'ptail', 'mtail', 'visit')
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
