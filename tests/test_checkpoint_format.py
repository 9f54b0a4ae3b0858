"""The checkpoint blob (edge_ml.checkpoint_format): round trip, corrupt or foreign blobs refused."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
from pipeline_helpers import make_pipeline, readings

from edge_ml import checkpoint_format
from edge_ml.checkpoint_format import MAGIC, SCHEMA_VERSION, decode, encode
from edge_ml.errors import CheckpointError
from edge_ml.state import compatibility, export_state


def test_round_trip_keeps_every_array() -> None:
    p = make_pipeline()
    p.process_readings(*readings(600))
    document = export_state(p)
    back = decode(encode(document).blob, compatibility(p))
    assert back["header"]["readings_total"] == 600
    assert back["state"]["names"] == document["state"]["names"]
    for part in ("stats", "features", "detector", "alerts", "drift"):
        for key, array in document["state"][part].items():
            restored = back["state"][part][key]
            assert restored.dtype == array.dtype and restored.shape == array.shape
            np.testing.assert_array_equal(restored, array)


def _blob() -> bytes:
    p = make_pipeline()
    p.process_readings(*readings(300))
    return encode(export_state(p)).blob


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda b: b[: len(b) // 2], "checksum"),
        (lambda b: b[:20], "truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "checksum"),
        (lambda b: b"NOTACKPT" + b[8:], "magic"),
        (lambda b: b"", "magic"),
    ],
)
def test_corrupt_or_truncated_blobs_are_refused(mangle, reason) -> None:
    with pytest.raises(CheckpointError, match=reason):
        decode(mangle(_blob()))


def _signed(raw: bytes) -> bytes:
    import hashlib

    body = zlib.compress(raw)
    return MAGIC + hashlib.sha256(body).digest() + body


def test_wrong_schema_and_garbage_bodies_are_refused() -> None:
    wrong = msgpack.packb({"header": {"schema_version": SCHEMA_VERSION + 1}, "state": {}})
    with pytest.raises(CheckpointError, match="schema version"):
        decode(_signed(wrong))
    for version in (0, "3", None):
        foreign = msgpack.packb({"header": {"schema_version": version}, "state": {}})
        with pytest.raises(CheckpointError, match="schema version"):
            decode(_signed(foreign))
    for version in (1, 2):  # older layouts are read (edge_ml.state upgrades them)
        old = msgpack.packb({"header": {"schema_version": version}, "state": {}})
        assert decode(_signed(old))["header"]["schema_version"] == version
    with pytest.raises(CheckpointError, match="cannot decode"):
        decode(_signed(b"\xc1\xc1\xc1"))
    with pytest.raises(CheckpointError, match="header/state"):
        decode(_signed(msgpack.packb([1, 2, 3])))
    bad_array = msgpack.packb({"header": {"schema_version": SCHEMA_VERSION},
                               "state": {"a": {"nd": 1, "dtype": "|O", "shape": [1],
                                               "data": b"12345678"}}})
    with pytest.raises(CheckpointError, match="not allowed"):
        decode(_signed(bad_array))
    short = msgpack.packb({"header": {"schema_version": SCHEMA_VERSION},
                           "state": {"a": {"nd": 1, "dtype": "<f8", "shape": [4],
                                           "data": b"1234"}}})
    with pytest.raises(CheckpointError, match="bytes"):
        decode(_signed(short))


def test_params_mismatch_is_refused_with_the_difference() -> None:
    blob = _blob()
    other = make_pipeline(n_trees=7)
    with pytest.raises(CheckpointError, match="n_trees: checkpoint 5, config 7"):
        decode(blob, compatibility(other))


# -- the stream-axis-last layout, made in slices ----------------------------------------------
def _reference_pieces(obj: Any, packer: msgpack.Packer) -> Iterator[bytes]:
    """The schema-5 encoder as it shipped (756e723): one whole transposed copy per array."""
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        shape = list(array.shape)
        rows_last = array.ndim >= 2
        if rows_last:
            array = np.ascontiguousarray(np.moveaxis(array, 0, -1))
        yield packer.pack_map_header(4)
        yield packer.pack("nd") + packer.pack(2 if rows_last else 1)
        yield packer.pack("dtype") + packer.pack(array.dtype.str)
        yield packer.pack("shape") + packer.pack(shape)
        yield packer.pack("data") + b"\xc6" + struct.pack(">I", array.nbytes)
        yield array.tobytes()
    elif isinstance(obj, dict):
        yield packer.pack_map_header(len(obj))
        for key, value in obj.items():
            yield packer.pack(key)
            yield from _reference_pieces(value, packer)
    elif isinstance(obj, list | tuple):
        yield packer.pack_array_header(len(obj))
        for value in obj:
            yield from _reference_pieces(value, packer)
    else:
        yield packer.pack(obj.item() if isinstance(obj, np.generic) else obj)


def _reference_blob(document: dict[str, Any]) -> bytes:
    import hashlib

    raw = b"".join(_reference_pieces(document, msgpack.Packer(use_bin_type=True)))
    body = zlib.compress(raw, checkpoint_format.ZLIB_LEVEL)
    return MAGIC + hashlib.sha256(body).digest() + body


def _realistic_document() -> dict[str, Any]:
    p = make_pipeline()
    p.process_readings(*readings(4000, streams=7))
    document = export_state(p)
    document["state"]["extra"] = {  # shapes and dtypes the pipeline does not have (yet)
        "fortran": np.asfortranarray(np.arange(60, dtype=">i4").reshape(5, 3, 4)),
        "flags": np.arange(21).reshape(7, 3) % 2 == 0,
        "one_stream": np.linspace(0, 1, 12).reshape(1, 3, 4),
        "empty": np.zeros((0, 4)),
    }
    return document


@pytest.mark.parametrize("slice_bytes", [1, 100, 4096, checkpoint_format.LAYOUT_SLICE_BYTES])
def test_layout_slices_write_the_blob_the_whole_copy_wrote(monkeypatch, slice_bytes) -> None:
    document = _realistic_document()
    assert document["state"]["detector"]["forest.mass_deltas"].ndim == 4
    monkeypatch.setattr(checkpoint_format, "LAYOUT_SLICE_BYTES", slice_bytes)
    assert encode(document).blob == _reference_blob(document)


def test_encoding_a_big_array_makes_no_whole_transposed_copy() -> None:
    streams, cells = 4000, 8000  # 32 MB of uint8, like the forest's masses at 10,000 streams
    array = (np.arange(streams * cells, dtype=np.uint32) % 7).astype(np.uint8)
    document = {"header": {"schema_version": SCHEMA_VERSION},
                "state": {"masses": array.reshape(streams, cells)}}
    tracemalloc.start()  # NumPy reports its buffers to tracemalloc
    try:
        blob = encode(document).blob
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * checkpoint_format.LAYOUT_SLICE_BYTES < array.nbytes / 2
    np.testing.assert_array_equal(decode(blob)["state"]["masses"], document["state"]["masses"])


# -- decoding in bounded slices ---------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4000, 8000), (4_000_000,)], ids=["nd2", "nd1"])
def test_decoding_a_big_array_makes_no_whole_copy(shape: tuple[int, ...]) -> None:
    # 32 MB either way: the forest's masses at 10,000 streams (stored stream axis last), and a
    # flat array stored as it is.
    dtype = np.uint8 if len(shape) == 2 else np.float64
    array = (np.arange(int(np.prod(shape)), dtype=np.int64) % 251).astype(dtype).reshape(shape)
    blob = encode({"header": {"schema_version": SCHEMA_VERSION},
                   "state": {"big": array}}).blob
    tracemalloc.start()
    try:
        back = decode(blob)["state"]["big"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < array.nbytes + 3 * checkpoint_format.LAYOUT_SLICE_BYTES
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def _arrays(obj: Any) -> Iterator[np.ndarray]:
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _arrays(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _arrays(value)


@pytest.mark.parametrize("slice_bytes", [1, 100, 4096, checkpoint_format.LAYOUT_SLICE_BYTES])
def test_decoded_arrays_are_the_encoded_ones_writable_and_c_ordered(
        monkeypatch, slice_bytes) -> None:
    document = _realistic_document()
    blob = encode(document).blob
    monkeypatch.setattr(checkpoint_format, "LAYOUT_SLICE_BYTES", slice_bytes)
    back = decode(blob)
    assert back["header"] == document["header"]
    assert back["state"]["names"] == document["state"]["names"]
    for want, have in zip(_arrays(document), _arrays(back), strict=True):
        assert have.dtype == want.dtype and have.shape == want.shape
        np.testing.assert_array_equal(have, want)
        assert have.flags.writeable and have.flags.c_contiguous
    for array in _arrays(decode(_reference_blob(document))):  # as schema 5 first wrote them
        assert array.flags.writeable and array.flags.c_contiguous


def test_array_maps_in_another_order_and_old_layouts_still_decode() -> None:
    masses = np.arange(24, dtype="<u2").reshape(2, 3, 4)
    stored_last = np.ascontiguousarray(np.moveaxis(masses, 0, -1))
    state = {
        "shuffled": {"data": stored_last.tobytes(), "shape": [2, 3, 4], "dtype": "<u2", "nd": 2},
        "schema_4": {"nd": 1, "dtype": "<u2", "shape": [2, 3, 4], "data": masses.tobytes()},
        "not_an_array": {"nd": 3, "dtype": "<u2", "shape": [1], "data": b"12"},
    }
    back = decode(_signed(msgpack.packb({"header": {"schema_version": 4}, "state": state})))
    np.testing.assert_array_equal(back["state"]["shuffled"], masses)
    np.testing.assert_array_equal(back["state"]["schema_4"], masses)
    assert back["state"]["not_an_array"] == state["not_an_array"]


def test_read_names_reads_the_names_and_refuses_a_cut_blob() -> None:
    document = _realistic_document()
    blob = encode(document).blob
    assert checkpoint_format.read_names(blob) == document["state"]["names"]
    with pytest.raises(CheckpointError, match="stream names"):
        checkpoint_format.read_names(blob[:60])


def _signed_body(body: bytes) -> bytes:
    import hashlib

    return MAGIC + hashlib.sha256(body).digest() + body


def test_bodies_cut_short_padded_or_too_big_are_refused(monkeypatch) -> None:
    raw = msgpack.packb({"header": {"schema_version": SCHEMA_VERSION},
                         "state": {"a": {"nd": 1, "dtype": "<f8", "shape": [1000],
                                         "data": bytes(8000)}}})
    body = zlib.compress(raw)
    with pytest.raises(CheckpointError, match="truncated compressed body"):
        decode(_signed_body(body[:-4]))  # the whole document, not the end of the zlib stream
    with pytest.raises(CheckpointError, match="truncated compressed body"):
        decode(_signed_body(body[:len(body) // 2]))
    with pytest.raises(CheckpointError, match="cannot decode"):
        decode(_signed(raw + b"\x00"))
    with pytest.raises(CheckpointError, match="cannot decode"):
        decode(_signed(raw[:-1]))
    with pytest.raises(CheckpointError, match="cannot decompress"):
        decode(_signed_body(body[:-1] + bytes([body[-1] ^ 1])))  # its adler32
    monkeypatch.setattr(checkpoint_format, "MAX_RAW_BYTES", len(raw) - 1)
    with pytest.raises(CheckpointError, match="decompresses beyond"):
        decode(_signed(raw))
    monkeypatch.setattr(checkpoint_format, "MAX_RAW_BYTES", len(raw))
    assert decode(_signed(raw))["state"]["a"].shape == (1000,)


def _nested(depth: int) -> list[Any]:
    nested: list[Any] = []
    for _ in range(depth):
        nested = [nested]
    return nested


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"a": {"nd": 2, "dtype": "<f8", "shape": [2, 3], "data": bytes(47)}}, "has 47 bytes"),
        ({"a": {"nd": 1, "dtype": "<U2", "shape": [1], "data": bytes(8)}}, "not allowed"),
        ({"a": {"nd": 1, "dtype": "nonsense", "shape": [1], "data": bytes(8)}}, "malformed"),
        ({"a": {"nd": 1, "dtype": "<f8", "shape": [-1], "data": b""}}, "malformed"),
        ({"a": {"nd": 1, "dtype": "<f8", "shape": [1], "data": "12345678"}}, "malformed"),
        ({"a": {"nd": 2, "dtype": "<f8", "shape": 7, "data": bytes(8)}}, "malformed"),
        ({"s": "x" * ((1 << 20) + 1)}, "max_str_len"),
        ({"m": {str(i): i for i in range((1 << 16) + 1)}}, "max_map_len"),
        ({1: 2}, "map key"),
        ({"e": msgpack.ExtType(1, b"x")}, "max_ext_len"),
        ({"deep": _nested(200)}, "nested deeper"),
    ],
)
def test_malformed_arrays_and_msgpack_beyond_its_limits_are_refused(state, reason) -> None:
    raw = msgpack.packb({"header": {"schema_version": SCHEMA_VERSION}, "state": state})
    with pytest.raises(CheckpointError, match=reason):
        decode(_signed(raw))


def _decodes(blob: bytes) -> bool:
    """Whether ``blob`` decodes; False when it is refused (any other exception propagates)."""
    try:
        return isinstance(decode(blob), dict)
    except CheckpointError:
        return False


def test_mangled_bodies_raise_checkpoint_error_and_nothing_else() -> None:
    # Signed again after each change: the checksum passes, so zlib, msgpack and the array
    # checks have to catch everything themselves.
    rng = np.random.default_rng(7)
    document = _realistic_document()
    document["header"]["created_at"] = 0.0  # the same bytes, so the same flips, every run
    body = encode(document).blob[len(MAGIC) + 32:]
    raw = zlib.decompress(body)
    for cut in rng.integers(0, len(body), 60):
        with pytest.raises(CheckpointError):
            decode(_signed_body(body[:cut]))
    for cut in rng.integers(0, len(raw), 60):
        with pytest.raises(CheckpointError):
            decode(_signed(raw[:cut]))
    flips = []
    for data, sign in ((body, _signed_body), (raw, _signed)):
        decoded = 0
        for at in rng.integers(0, len(data), 300):
            flipped = bytearray(data)
            flipped[at] ^= int(rng.integers(1, 256))
            decoded += _decodes(sign(bytes(flipped)))
        flips.append(decoded)
    # zlib's adler32 catches nearly every flip of the compressed body (the one of these 300
    # that decodes inflates to the very same bytes); a flip inside an array's values or a
    # name is a valid document.
    assert flips[0] < 5 and 0 < flips[1] < 300
