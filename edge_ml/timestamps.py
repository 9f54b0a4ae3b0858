"""Timestamps as text to epoch seconds: the one parser of every timestamp edge-ml reads.

Two policies, one parser. Files and the command line (``replay``, ``train``, ``--since``) are
lenient: epoch seconds written as a number, or ISO 8601 with blanks around it, a naive time
taken as UTC. An MQTT payload is strict (``strict=True``): ISO 8601 exactly as sent, with a time
zone, because a gateway's local clock cannot be guessed and a reading an hour off would be
scored as such; its numeric timestamps arrive as numbers, not text, and are the decoder's.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

import numpy as np

# How much of a bad timestamp the strict parser quotes in its error (it is stored with the
# reject).
SHOWN_CHARS = 40


def parse_timestamp(text: str, *, strict: bool = False) -> float:
    """Epoch seconds from a number or an ISO 8601 / ``YYYY-MM-DD HH:MM:SS`` text (UTC if naive).

    Parameters
    ----------
    text : str
        The timestamp.
    strict : bool
        Only ISO 8601 with a time zone, as given (no blanks around it, no epoch number as text);
        the ``ValueError`` then says why in the words stored with a payload's reject.

    Raises ValueError (with the message of ``float``/``datetime.fromisoformat`` when lenient).

    Examples
    --------
    >>> parse_timestamp("1700000000.5"), parse_timestamp(" 2023-11-14 22:13:20 ")
    (1700000000.5, 1700000000.0)
    >>> parse_timestamp("2023-11-14T22:13:20Z", strict=True)
    1700000000.0
    >>> parse_timestamp("2023-11-14T22:13:20", strict=True)
    Traceback (most recent call last):
    ValueError: ISO timestamp without a time zone
    """
    if strict:
        return _strict(text)
    try:
        return float(text)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _strict(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not ISO 8601: {text[:SHOWN_CHARS]!r}") from exc
    if parsed.tzinfo is None:
        raise ValueError("ISO timestamp without a time zone")
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"out of range: {text[:SHOWN_CHARS]!r}") from exc


def parse_timestamps(stamps: list[str]) -> np.ndarray:
    """:func:`parse_timestamp` (lenient) over a list of texts, vectorised when the texts allow.

    Epoch numbers convert in one NumPy call; ISO texts of one fixed length (one format) parse as
    ``datetime64[us]``, checked against :func:`parse_timestamp` at the first, middle and last
    row; anything else goes text by text. Raises ValueError for a text that is neither.
    """
    try:
        return np.array(stamps, dtype=np.float64)
    except ValueError:
        pass
    n = len(stamps)
    length = len(stamps[0])
    if set(map(len, stamps)) == {length} and stamps[0] == stamps[0].strip():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy warns on offsets it would convert
                micros = np.array(stamps, dtype="datetime64[us]").astype(np.int64)
        except (ValueError, TypeError, DeprecationWarning, UserWarning):
            micros = None
        if micros is not None:
            ts = micros / 1e6
            if all(ts[i] == parse_timestamp(stamps[i]) for i in {0, n // 2, n - 1}):
                return ts
    return np.array([parse_timestamp(s) for s in stamps], dtype=np.float64)
