"""Hostile payloads at the decoder: it never raises, and each message is readings or one reject.

Properties checked with hypothesis over arbitrary bytes, deep JSON, huge numbers, NaN/inf,
wrong types, big payloads and unicode topic names.
"""

from __future__ import annotations

import json
import math

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_ml.decode import decode_batch

MAX_PAYLOAD = 65536

topics = st.one_of(
    st.just("sensors/t"),
    st.text(min_size=0, max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40).map(
        lambda s: f"sensors/{s}"
    ),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.binary(max_size=20),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10)),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


def _json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


def _msgpack_bytes(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


payloads = st.one_of(
    st.binary(max_size=512),
    json_values.map(_json_bytes),
    st.dictionaries(st.text(max_size=10), scalars, max_size=6).map(_msgpack_bytes),
    st.dictionaries(st.text(max_size=10), json_values, max_size=6).map(_json_bytes),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).encode()),
    st.integers(min_value=-(10**400), max_value=10**400).map(lambda i: str(i).encode()),
    st.integers(min_value=1, max_value=3000).map(lambda d: b"{" + b'"a":[' * d),
    st.integers(min_value=1, max_value=3000).map(
        lambda d: ('{"value": ' + "[" * d + "1" + "]" * d + "}").encode()
    ),
    st.fixed_dictionaries(
        {"v": st.one_of(st.just(1), scalars), "dev": scalars, "seq": scalars,
         "ts": scalars, "m": st.dictionaries(st.text(max_size=8), scalars, max_size=5)}
    ).map(_msgpack_bytes),
)


def _check(messages: list[tuple[str, bytes, float]]) -> None:
    out = decode_batch(messages, MAX_PAYLOAD)
    assert len(out.streams) == len(out.ts) == len(out.values)
    assert all(math.isfinite(v) for v in out.values)
    assert all(math.isfinite(t) for t in out.ts)
    # Decoding one at a time: each message gives readings or exactly one reject, never both.
    total_readings = 0
    for message in messages:
        one = decode_batch([message], MAX_PAYLOAD)
        assert (len(one) > 0) != (len(one.rejects) == 1), (message, one)
        assert len(one.rejects) <= 1
        total_readings += len(one)
    assert total_readings == len(out)
    assert len(out.rejects) == sum(
        1 for m in messages if len(decode_batch([m], MAX_PAYLOAD)) == 0
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(topics, payloads, st.floats(0, 2e9)), min_size=1, max_size=8))
def test_decode_batch_never_raises_and_accounts_for_every_message(
    messages: list[tuple[str, bytes, float]],
) -> None:
    _check(messages)


def test_one_megabyte_payloads_are_rejected_as_oversized() -> None:
    big = b"1" * (1 << 20)
    out = decode_batch([("sensors/t", big, 1.0), ("sensors/t", b"{" * (1 << 20), 1.0)],
                       MAX_PAYLOAD)
    assert len(out) == 0
    assert [r.reason for r in out.rejects] == ["oversized", "oversized"]
    # Even when the limit allows it, a megabyte of nesting is one reject, not a crash.
    out = decode_batch([("sensors/t", b"[" * (1 << 20), 1.0),
                        ("sensors/t", b'{"a":' * 200_000, 1.0)], 16 * 1024 * 1024)
    assert len(out) == 0 and len(out.rejects) == 2


def test_extreme_numbers() -> None:
    cases = [b"1e309", b"-1e309", b"nan", b"NaN", b"inf", b"-Infinity",
             b'{"value": 1e309}', b'{"value": NaN}', b'{"value": Infinity}',
             b"1" + b"0" * 5000, b'{"value": 1' + b"0" * 400 + b"}",
             b'{"value": 1' + b"0" * 5000 + b"}", b'{"ts": 1' + b"0" * 400 + b', "a": 1}',
             _msgpack_bytes({"value": 2**64 - 1}), _msgpack_bytes({"value": float("nan")})]
    for payload in cases:
        out = decode_batch([("sensors/t", payload, 1.0)], MAX_PAYLOAD)
        assert (len(out) == 1) != (len(out.rejects) == 1), payload
        assert all(math.isfinite(v) for v in out.values)


def test_unicode_topics() -> None:
    for topic in ("sensors/température", "sensors/温度/1", "sensors/\u200b", "sensors/\x00x",
                  "sensors/" + "é" * 300, "sensors/\ud800"):
        out = decode_batch([(topic, b"1.5", 1.0)], MAX_PAYLOAD)
        assert len(out) + len(out.rejects) == 1


# -- the bulk paths (bare numbers, flat maps of numbers) against the general one ------------
number_payloads = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).encode()),
    st.integers(min_value=-(10**30), max_value=10**30).map(lambda i: str(i).encode()),
    st.sampled_from([b" 2.5\n", b"+.5", b"1_000", b"-0", b"1e309", b"", b"  ", b"1.5x",
                     b"Infinity", b"nan", b"\x31", b"0x10", b"1" + b"0" * 400]),
)
number_fields = st.one_of(st.floats(allow_nan=False), st.integers(-(2**70), 2**70),
                          st.just(1e308))
flat_maps = st.one_of(
    st.dictionaries(st.sampled_from(["value", "current", "flow", "pressure", "a/b", "#", ""]),
                    number_fields, max_size=5),
    st.dictionaries(st.sampled_from(["value", "current", "flow", "ts"]),
                    st.one_of(number_fields, st.none(), st.booleans(), st.text(max_size=5),
                              st.just("2023-11-14T22:13:20Z"), st.just(2e10),
                              st.lists(st.integers(), max_size=2)),
                    max_size=4),
    st.fixed_dictionaries(
        {"ts": st.sampled_from([1.7e9, 1_700_000_000, 2e10, -1.0, 1.7e12, 10**400, True, None,
                                "2023-11-14T22:13:20Z", "soon"]),
         "current": number_fields, "flow": number_fields}),
).map(_json_bytes)


def _general(messages: list[tuple[str, bytes, float]]) -> object:
    """decode_batch with the bulk paths turned off: the reference they must agree with."""
    import edge_ml.decode as decode

    flat, numbers = decode._flat_map, decode._bare_numbers
    decode._flat_map, decode._bare_numbers = (lambda *a: False), (lambda *a: None)
    try:
        return decode_batch(messages, MAX_PAYLOAD)
    finally:
        decode._flat_map, decode._bare_numbers = flat, numbers


def _same(a: object, b: object) -> None:
    for name in ("streams", "ts", "values", "rejects", "frames", "devices"):
        assert getattr(a, name) == getattr(b, name), name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["sensors/a", "sensors/b", "s/\x00", "x" * 200]),
                          st.one_of(number_payloads, flat_maps, payloads), st.floats(0, 2e9)),
                min_size=1, max_size=12))
def test_the_bulk_paths_decode_as_the_general_path(
    messages: list[tuple[str, bytes, float]],
) -> None:
    _same(decode_batch(messages, MAX_PAYLOAD), _general(messages))
    numbers_only = [(t, p, ts) for t, p, ts in messages if p[:1] != b"{"]
    if numbers_only:
        _same(decode_batch(numbers_only, MAX_PAYLOAD), _general(numbers_only))
