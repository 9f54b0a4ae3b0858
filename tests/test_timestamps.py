"""The one timestamp parser (edge_ml.timestamps): lenient for files and the CLI, strict for
payloads, and the vectorised list form giving what the scalar one gives."""

from __future__ import annotations

import doctest
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge_ml import timestamps
from edge_ml.timestamps import parse_timestamp, parse_timestamps

WHEN = 1700000000.0  # 2023-11-14 22:13:20 UTC


def test_examples_in_the_docstrings_run() -> None:
    assert doctest.testmod(timestamps).failed == 0


@pytest.mark.parametrize("text", [
    "1700000000", "1700000000.0", " 1700000000 ", "1.7e9", "2023-11-14 22:13:20",
    "2023-11-14T22:13:20", " 2023-11-14T22:13:20Z ", "2023-11-14T23:13:20+01:00",
    "2023-11-14T22:13:20.000000",
])
def test_lenient_reads_numbers_iso_and_naive_as_utc(text: str) -> None:
    assert parse_timestamp(text) == WHEN


def test_lenient_errors_are_python_s_own() -> None:
    with pytest.raises(ValueError, match=r"Invalid isoformat string: 'yesterday'"):
        parse_timestamp("yesterday")


@pytest.mark.parametrize("text", ["2023-11-14T22:13:20Z", "2023-11-14T22:13:20+00:00",
                                  "2023-11-14 23:13:20+01:00"])
def test_strict_reads_iso_with_a_zone(text: str) -> None:
    assert parse_timestamp(text, strict=True) == WHEN


@pytest.mark.parametrize(("text", "message"), [
    ("2023-11-14T22:13:20", "ISO timestamp without a time zone"),
    ("1700000000", "not ISO 8601: '1700000000'"),  # epoch seconds come as numbers, not text
    (" 2023-11-14T22:13:20Z", "not ISO 8601: ' 2023-11-14T22:13:20Z'"),
    ("yesterday" * 10, "not ISO 8601: 'yesterdayyesterdayyesterdayyesterdayyest'"),
])
def test_strict_says_why_in_the_words_a_reject_keeps(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_timestamp(text, strict=True)
    assert str(caught.value) == message


def test_the_list_form_gives_what_the_scalar_form_gives() -> None:
    rng = random.Random(3)
    start = datetime(2000, 1, 1, tzinfo=UTC)
    formats = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%SZ",
               "%Y-%m-%dT%H:%M:%S+02:00", "%s"]
    for _ in range(200):
        mixed = rng.random() < 0.3
        fmt = rng.choice(formats)
        stamps = []
        for _ in range(rng.randint(1, 30)):
            when = start + timedelta(seconds=rng.randint(0, 10**9),
                                     microseconds=rng.randint(0, 999_999))
            stamps.append(when.strftime(rng.choice(formats) if mixed else fmt))
        want = np.array([parse_timestamp(s) for s in stamps])
        np.testing.assert_array_equal(parse_timestamps(stamps), want, err_msg=str(stamps))
    with pytest.raises(ValueError):
        parse_timestamps(["2024-01-01 00:00:00", "yesterday"])
