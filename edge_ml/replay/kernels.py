"""Replay's CSV rows as bytes: parse ``timestamp,value[,...]`` lines, write the scored rows.

The Python paths of :mod:`edge_ml.replay.reader` and :mod:`edge_ml.replay.writer` cost more than
the model itself (splitting, ``float()`` and ``repr()`` of every field, ~3 us a row). These two
kernels do the common case in one pass over the bytes, and give up (the caller then uses the
Python path) on anything else, so the two paths never disagree:

- :func:`parse_rows` reads lines whose timestamp is ``YYYY-MM-DD HH:MM:SS`` (or with ``T``),
  years 1900-2200, or a plain decimal number, and whose values are plain decimals
  (``-?digits(.digits)?``) of at most 15 significant digits. Such a decimal ``M * 10**E`` with
  ``|E| <= 22`` converts exactly as ``float()`` does (one correctly rounded IEEE multiply or
  divide of two exact doubles: Clinger's fast path). Lines end with ``\\n`` or ``\\r\\n``;
  blank lines are skipped. Anything else (quotes, spaces, exponents, NaN, dates out of range,
  a lone ``\\r``, a wrong field count) is refused.
- :func:`format_rows` writes ``timestamp,value,anomaly_score,alert,alert_open,explanation\\r\\n``
  (with ``,device_score`` before the line end for a device's file)
  as ``csv.writer`` does with ``repr`` of floats. A decimal of at most 15 significant digits
  is the shortest string that round-trips its double (two such decimals never share a double:
  ``DBL_DIG`` is 15), so ``repr`` prints exactly its digits, trailing zeros dropped,
  positional for decimal exponents -4 < e <= 16 and ``d.ddde-XX`` / ``e+XX`` outside, as
  CPython's ``float_repr`` does. The score is ``repr(round(score, 6))``: ``rint(score *
  1e6)`` (NumPy's round) over ``10**6``, the same kind of decimal. The explanation is copied
  from a small table of texts that need no quotes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Imported for its side effect, before the first @njit below: it points Numba's on-disk cache at
# the folder fingerprinted over every kernel source, this file included.
import edge_ml.kernels  # noqa: F401

OK = 0
NEED_MORE = 1  # the buffer ended inside the chunk: read more (not at end of file)
REFUSED = 2  # a line the fast path does not take: use the Python reader from this chunk on

MAX_DIGITS = 15
NO_FIELD_YET = -2
MAX_EXP10 = 22
# 1e0 .. 1e22 are exact doubles.
POW10 = np.array([10.0**k for k in range(MAX_EXP10 + 1)], dtype=np.float64)
MIN_YEAR = 1900
MAX_YEAR = 2200
# Widest value text format_rows writes: sign, 15 digits, "0." and 4 zeros, or "e-XX".
MAX_VALUE_TEXT = 24
MAX_SCORE_TEXT = 10
# Bytes of a row besides its timestamp and explanation: both texts, five commas, the alert and
# alert_open digits, CR LF; and a device's file's device_score with its comma.
ROW_EXTRA = MAX_VALUE_TEXT + MAX_SCORE_TEXT + 9 + MAX_SCORE_TEXT + 1

_NL = 10
_CR = 13
_COMMA = 44
_MINUS = 45
_DOT = 46
_ZERO = 48
_NINE = 57
_COLON = 58
_SPACE = 32
_T = 84


@njit(cache=True)
def _decimal(data, i, out):
    """Parse the plain decimal at ``data[i:]`` into ``out = [negative, mantissa, exponent]``.

    The field ends at a comma, CR, LF or the end of ``data``; returns that offset, or -1 for
    anything but ``-?digits(.digits)?`` with at most ``MAX_DIGITS`` significant digits and a
    decimal exponent within ``MAX_EXP10``, or ``NO_FIELD_YET`` when ``data`` ends where more
    digits must follow (``-`` or ``12.``).
    """
    size = data.shape[0]
    negative = 0
    if i < size and data[i] == _MINUS:
        negative = 1
        i += 1
    mantissa = 0
    digits = 0  # significant digits so far (leading zeros are not)
    fraction = -1  # digits after the point; -1 before the point
    start = i
    while i < size:
        c = np.int64(data[i])  # as Numba types it; NumPy would keep uint8 and wrap
        if _ZERO <= c <= _NINE:
            if mantissa != 0 or c != _ZERO:
                digits += 1
            mantissa = mantissa * 10 + (c - _ZERO)
            fraction += fraction >= 0
        elif c == _DOT and fraction < 0 and i > start:
            fraction = 0
        elif c in (_COMMA, _NL, _CR):
            break
        else:
            return -1
        i += 1
        if digits > MAX_DIGITS:
            return -1
    if i == start or data[i - 1] == _DOT:  # no digits yet, or none after the point
        return NO_FIELD_YET if i == size else -1
    if fraction > MAX_EXP10:
        return -1
    out[0] = negative
    out[1] = mantissa
    out[2] = -fraction if fraction > 0 else 0
    return i


@njit(cache=True)
def _decimal_value(negative, mantissa, exponent):
    """The double nearest ``(-1)**negative * mantissa * 10**exponent`` (|exponent| <= 22)."""
    if exponent >= 0:
        value = float(mantissa) * POW10[exponent]
    else:
        value = float(mantissa) / POW10[-exponent]
    return -value if negative else value


@njit(cache=True)
def _two(data, i):
    """Two ASCII digits at ``data[i]`` as a number, or -1."""
    a = np.int64(data[i]) - _ZERO
    b = np.int64(data[i + 1]) - _ZERO
    if a < 0 or a > 9 or b < 0 or b > 9:
        return -1
    return a * 10 + b


@njit(cache=True)
def _iso_seconds(data, i):
    """Epoch seconds of ``YYYY-MM-DD HH:MM:SS`` (or ``T``) at ``data[i:i + 19]``, or -2**62."""
    bad = -(1 << 62)
    if (data[i + 4] != _MINUS or data[i + 7] != _MINUS or data[i + 13] != _COLON
            or data[i + 16] != _COLON or (data[i + 10] != _SPACE and data[i + 10] != _T)):
        return bad
    hi = _two(data, i)
    lo = _two(data, i + 2)
    month = _two(data, i + 5)
    day = _two(data, i + 8)
    hour = _two(data, i + 11)
    minute = _two(data, i + 14)
    second = _two(data, i + 17)
    if hi < 0 or lo < 0 or month < 1 or month > 12 or day < 1 or hour < 0 or hour > 23:
        return bad
    if minute < 0 or minute > 59 or second < 0 or second > 59:
        return bad
    year = hi * 100 + lo
    if year < MIN_YEAR or year > MAX_YEAR:
        return bad
    leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
    if month == 2:
        last = 29 if leap else 28
    elif month == 4 or month == 6 or month == 9 or month == 11:
        last = 30
    else:
        last = 31
    if day > last:
        return bad
    # Days from 1970-01-01 (H. Hinnant's days_from_civil).
    y = year - 1 if month <= 2 else year
    era = y // 400
    yoe = y - era * 400
    mp = month - 3 if month > 2 else month + 9
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second


@njit(cache=True, nogil=True)
def parse_rows(data, start, max_lines, at_eof, ts, values, first):
    """Parse up to ``max_lines`` lines of ``data`` from byte ``start``.

    Parameters
    ----------
    data : uint8[:]
        The file's bytes from some line start on.
    start : int
        Offset of the first line.
    max_lines : int
        Lines (blank ones included) in a chunk.
    at_eof : bool
        ``data`` ends where the file ends (a last line needs no newline).
    ts : float64[max_lines]
        Out: each row's timestamp, epoch seconds.
    values : float64[max_lines, columns]
        Out: each row's values.
    first : int64[max_lines, 5]
        Out: per row, the line's start and the end of its timestamp, then the first value as
        ``negative, mantissa, exponent`` (for :func:`format_rows`).

    Returns
    -------
    (status, end, lines, rows)
        ``OK``, ``NEED_MORE`` or ``REFUSED``; with ``OK``, the offset after the last line read,
        the lines read and the rows (non-blank lines) filled.
    """
    n_cols = values.shape[1]
    size = data.shape[0]
    decimal = np.zeros(3, dtype=np.int64)
    pos = start
    lines = 0
    rows = 0
    while lines < max_lines and pos < size:
        line = pos
        if pos + 20 >= size and not at_eof:  # maybe not a whole line: read more first
            return NEED_MORE, line, lines, rows
        # A blank line, LF or CR LF.
        if data[pos] == _NL or (data[pos] == _CR and pos + 1 < size and data[pos + 1] == _NL):
            lines += 1
            pos += 1 if data[pos] == _NL else 2
            continue
        # Timestamp, up to the first comma.
        if pos + 19 < size and data[pos + 19] == _COMMA and data[pos + 4] == _MINUS:
            seconds = _iso_seconds(data, pos)
            if seconds == -(1 << 62):
                return REFUSED, line, lines, rows
            # What datetime64[us] / 1e6 gives: exact below 2**53 microseconds.
            ts[rows] = float(seconds * 1000000) / 1e6
            pos += 19
        else:
            pos = _decimal(data, pos, decimal)
            if pos < 0 or pos == size or data[pos] != _COMMA:
                if pos in (size, NO_FIELD_YET) and not at_eof:
                    return NEED_MORE, line, lines, rows
                return REFUSED, line, lines, rows
            ts[rows] = _decimal_value(decimal[0], decimal[1], decimal[2])
        first[rows, 0] = line
        first[rows, 1] = pos
        # Values: exactly n_cols fields, the last one up to the line's end.
        for c in range(n_cols):
            pos = _decimal(data, pos + 1, decimal)
            if pos < 0:
                if pos == NO_FIELD_YET and not at_eof:
                    return NEED_MORE, line, lines, rows
                return REFUSED, line, lines, rows
            if pos == size:
                if not at_eof:
                    return NEED_MORE, line, lines, rows
                if c < n_cols - 1:
                    return REFUSED, line, lines, rows
            elif (data[pos] == _COMMA) != (c < n_cols - 1):
                return REFUSED, line, lines, rows
            values[rows, c] = _decimal_value(decimal[0], decimal[1], decimal[2])
            if c == 0:
                first[rows, 2] = decimal[0]
                first[rows, 3] = decimal[1]
                first[rows, 4] = decimal[2]
        # The line's end: LF, CR LF, or the end of the file.
        if pos < size:
            if data[pos] == _CR:
                if pos + 1 == size and not at_eof:
                    return NEED_MORE, line, lines, rows
                if pos + 1 == size or data[pos + 1] != _NL:
                    return REFUSED, line, lines, rows
                pos += 1
            pos += 1
        lines += 1
        rows += 1
    if lines < max_lines and not at_eof:
        return NEED_MORE, pos, lines, rows
    return OK, pos, lines, rows


@njit(cache=True, inline="always")
def _digits_back(out, end, mantissa, count):
    """Write the last ``count`` digits of ``mantissa`` into ``out[end - count:end]``; returns
    ``mantissa`` without them."""
    for i in range(end - 1, end - 1 - count, -1):
        out[i] = _ZERO + mantissa % 10
        mantissa //= 10
    return mantissa


@njit(cache=True, inline="always")
def _write_repr(out, pos, negative, mantissa, exponent):
    """``repr()`` of the double nearest ``(-1)**negative * mantissa * 10**exponent`` at
    ``out[pos:]`` (``mantissa`` of at most 15 significant digits); returns the new end."""
    if negative:
        out[pos] = _MINUS
        pos += 1
    if mantissa == 0:
        out[pos] = _ZERO
        out[pos + 1] = _DOT
        out[pos + 2] = _ZERO
        return pos + 3
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    n = 1  # digits
    bound = 10
    while bound <= mantissa:
        bound *= 10
        n += 1
    # The value is 0.d1d2...dn * 10**point.
    point = n + exponent
    if 0 < point <= 16:
        if point >= n:  # an integer: digits, zeros, ".0"
            _digits_back(out, pos + n, mantissa, n)
            for i in range(pos + n, pos + point):
                out[i] = _ZERO
            out[pos + point] = _DOT
            out[pos + point + 1] = _ZERO
            return pos + point + 2
        # d.ddd: the fraction's digits, the point, the integer's digits
        rest = _digits_back(out, pos + n + 1, mantissa, n - point)
        out[pos + point] = _DOT
        _digits_back(out, pos + point, rest, point)
        return pos + n + 1
    if -4 < point <= 0:  # 0.000ddd
        out[pos] = _ZERO
        out[pos + 1] = _DOT
        for i in range(pos + 2, pos + 2 - point):
            out[i] = _ZERO
        end = pos + 2 - point + n
        _digits_back(out, end, mantissa, n)
        return end
    # d.ddde-XX / d.ddde+XX
    if n > 1:
        first = _digits_back(out, pos + n + 1, mantissa, n - 1)
        out[pos + 1] = _DOT
        end = pos + n + 1
    else:
        first = mantissa
        end = pos + 1
    out[pos] = _ZERO + first
    e = point - 1
    out[end] = 101  # "e"
    out[end + 1] = _MINUS if e < 0 else 43  # "-" / "+"
    e = abs(e)
    end += 2
    if e >= 100:
        out[end] = _ZERO + e // 100
        end += 1
    out[end] = _ZERO + (e // 10) % 10
    out[end + 1] = _ZERO + e % 10
    return end + 2


@njit(cache=True, nogil=True)
def format_rows(data, first, score, alert, alert_open, why, why_text, why_end, out,
                device_score=None):
    """Write the output rows of a parsed chunk into ``out``; the bytes written, or -1.

    Row ``r`` is its timestamp text (``data[first[r, 0]:first[r, 1]]``), the repr of its first
    value, the repr of ``round(score[r], 6)``, ``alert[r]`` and ``alert_open[r]`` as 1/0 and
    explanation ``why[r]`` of a small table (text ``k`` is ``why_text[why_end[k-1]:why_end[k]]``
    bytes, needing no quotes), then (a device's file, ``device_score`` given) the repr of
    ``round(device_score[r], 6)``; ``\\r\\n``-terminated. -1 when a score is not in [0, 1]
    (the caller writes that chunk with ``repr`` itself). ``out`` needs ``sum(timestamp
    lengths) + sum(explanation lengths) + rows * ROW_EXTRA`` bytes.
    """
    pos = 0
    for r in range(score.shape[0]):
        rounded = np.rint(score[r] * 1e6)  # NumPy's round(x, 6) before its division
        if not (0.0 <= rounded <= 1e6):
            return -1
        if device_score is not None and not (0.0 <= np.rint(device_score[r] * 1e6) <= 1e6):
            return -1
        for i in range(first[r, 0], first[r, 1]):
            out[pos] = data[i]
            pos += 1
        out[pos] = _COMMA
        pos = _write_repr(out, pos + 1, first[r, 2], first[r, 3], first[r, 4])
        out[pos] = _COMMA
        pos = _write_repr(out, pos + 1, math.copysign(1.0, rounded) < 0, np.int64(rounded), -6)
        out[pos] = _COMMA
        out[pos + 1] = _ZERO + 1 if alert[r] else _ZERO
        out[pos + 2] = _COMMA
        out[pos + 3] = _ZERO + 1 if alert_open[r] else _ZERO
        out[pos + 4] = _COMMA
        pos += 5
        k = why[r]
        for i in range(why_end[k - 1] if k > 0 else 0, why_end[k]):
            out[pos] = why_text[i]
            pos += 1
        if device_score is not None:
            extra = np.rint(device_score[r] * 1e6)
            out[pos] = _COMMA
            pos = _write_repr(out, pos + 1, math.copysign(1.0, extra) < 0, np.int64(extra), -6)
        out[pos] = _CR
        out[pos + 1] = _NL
        pos += 2
    return pos
