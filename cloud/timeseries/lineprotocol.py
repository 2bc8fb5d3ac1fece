"""InfluxDB line protocol: encode a `Point`, and parse the lines we wrote back.

Written by hand rather than with `influxdb_client.Point` because (1) this sits on the
ingest hot path and a direct f-string encoder is several times faster than the library's
generic one, (2) the SQL fallback sink must parse lines, so encoder and parser have to agree
on exactly one escaping scheme, which is easiest to guarantee when both live here, and (3)
it keeps `schema.py` importable without the InfluxDB client. A test checks our output
against `influxdb_client.Point` for the same input.

Escaping (InfluxDB line protocol reference, and what InfluxDB's own parser undoes):
- measurement: `,` and space are escaped;
- tag keys, tag values, field keys: `,`, `=` and space are escaped;
- string field values: double-quoted, `\\` and `"` escaped.
A backslash or a newline in a name or tag value has no unambiguous encoding (InfluxDB does
not unescape `\\\\` there), so such points are refused (`LineProtocolError`); our tags
are contract identifiers, which never hold one. Newlines in string field values are
replaced by a space; tags with an empty value are left out (the protocol forbids them), and
non-finite floats (NaN, inf) are left out (InfluxDB rejects them).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

FieldValue = float | int | bool | str

_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": " ", "\r": " "})


class LineProtocolError(ValueError):
    """A point that cannot be encoded, or a line that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Point:
    """One time-series point: a series (measurement + tags) and its field values at `time_ns`."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int

    def to_line(self) -> str:
        return encode(self)


def field_value(value: FieldValue) -> str | None:
    """A field value as line protocol; None for NaN and infinities (left out)."""
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return float_field(value)
    return string_field(value)


def _checked(text: str, what: str, measurement: str) -> str:
    if "\\" in text or "\n" in text or "\r" in text:
        raise LineProtocolError(
            f"{what} {text!r} of {measurement!r} holds a backslash or newline, "
            "which line protocol cannot carry unambiguously"
        )
    return text


# The series text (measurement and sorted, escaped tags) and the escaped field keys repeat
# for almost every line (a store has a few thousand series), so they are built once and
# cached: this is the ingest hot path, and escaping each name on every line cost ~10 µs a
# point. The caches are bounded; a miss only costs the escaping again.
@functools.lru_cache(maxsize=65_536)
def _series(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    if not measurement:
        raise LineProtocolError("a point needs a measurement")
    parts = [_checked(measurement, "measurement", measurement).translate(_MEASUREMENT_ESCAPES)]
    for key, value in tags:
        if value:
            key_text = _checked(key, "tag key", measurement).translate(_KEY_ESCAPES)
            value_text = _checked(value, "tag value", measurement).translate(_KEY_ESCAPES)
            parts.append(f",{key_text}={value_text}")
    return "".join(parts)


@functools.lru_cache(maxsize=65_536)
def series_text(measurement: str, *tag_pairs: str) -> str:
    """`measurement,k1=v1,...` escaped, from tags given flat (k1, v1, k2, v2, ...) with keys
    already in sorted order; empty values are left out. Cached: flat string arguments hash
    much faster than the sorted tag tuples `encode` has to build."""
    return _series(measurement, tuple(zip(tag_pairs[::2], tag_pairs[1::2], strict=True)))


def string_field(value: str) -> str:
    """A string field value, quoted and escaped."""
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def float_field(value: float) -> str | None:
    """A float field value; None for NaN and infinities, which InfluxDB rejects."""
    return repr(value) if math.isfinite(value) else None


@functools.lru_cache(maxsize=4_096)
def _field_key(key: str, measurement: str) -> str:
    return _checked(key, "field key", measurement).translate(_KEY_ESCAPES)


def encode(point: Point) -> str:
    """One line of line protocol, with a nanosecond timestamp."""
    measurement = point.measurement
    # sorted tags: InfluxDB's fastest path, and stable lines
    series = _series(measurement, tuple(sorted(point.tags.items())))
    fields = []
    for key, raw in point.fields.items():
        encoded = field_value(raw)
        if encoded is not None:
            fields.append(f"{_field_key(key, measurement)}={encoded}")
    if not fields:
        raise LineProtocolError(f"point {measurement!r} has no encodable field")
    return f"{series} {','.join(fields)} {point.time_ns}"


# --------------------------------------------------------------------------- parsing


def _scan(text: str, start: int, stops: str) -> int:
    """Index of the first unescaped character of `stops` at or after `start` (or the end)."""
    # str.find, or a regular expression where there are escapes, not a loop over
    # characters: the pump parses every spooled line back, and that loop was its largest
    # cost (a tenth of the cloud's CPU at 1,000 stores).
    if start >= len(text):
        return start
    if "\\" not in text:
        end = len(text)
        for stop in stops:
            found = text.find(stop, start, end)
            if found != -1:
                end = found
        return end
    match = _scanner(stops).match(text, start)
    assert match is not None  # the pattern matches the empty string
    return match.end()


@functools.lru_cache(maxsize=16)
def _scanner(stops: str) -> re.Pattern[str]:
    """Escape pairs (a backslash and any character), a lone backslash at the very end, or
    any other character not in `stops`, as many as there are."""
    return re.compile(rf"(?:\\.|\\\Z|[^\\{re.escape(stops)}])*", re.DOTALL)


def _unescape_name(text: str) -> str:
    # Measurement, tag and field keys, tag values: only `\,`, `\=` and `\ ` are escapes.
    return text.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")


def _unescape_string(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _parse_scalar(raw: str, line: str) -> FieldValue:
    if raw in {"t", "T", "true", "True", "TRUE"}:
        return True
    if raw in {"f", "F", "false", "False", "FALSE"}:
        return False
    try:
        if raw.endswith(("i", "u")):
            return int(raw[:-1])
        return float(raw)
    except ValueError:
        raise LineProtocolError(f"bad field value {raw!r} in {line[:200]!r}") from None


def _parse_fields(text: str, start: int, line: str) -> tuple[dict[str, FieldValue], int]:
    """Fields from `start`; returns them and the index of the space before the timestamp."""
    fields: dict[str, FieldValue] = {}
    i = start
    while True:
        eq = _scan(text, i, "=, ")
        if eq >= len(text) or text[eq] != "=" or eq == i:
            raise LineProtocolError(f"bad field at {i} in {line[:200]!r}")
        key = _unescape_name(text[i:eq])
        i = eq + 1
        if i < len(text) and text[i] == '"':
            end = _scan(text, i + 1, '"')
            if end >= len(text):
                raise LineProtocolError(f"unterminated string field in {line[:200]!r}")
            fields[key] = _unescape_string(text[i + 1 : end])
            i = end + 1
        else:
            end = _scan(text, i, ", ")
            fields[key] = _parse_scalar(text[i:end], line)
            i = end
        if i >= len(text) or text[i] == " ":
            return fields, i
        i += 1  # the comma before the next field


def parse(line: str) -> Point:
    """Parse one line (nanosecond timestamp required: the lines we write always have one)."""
    text = line.rstrip("\r\n")
    series_end = _scan(text, 0, " ")
    if series_end >= len(text):
        raise LineProtocolError(f"expected 'series fields time', got {line[:200]!r}")
    parts: list[str] = []
    i = 0
    while i <= series_end:
        comma = _scan(text[:series_end], i, ",")
        parts.append(text[i:comma])
        i = comma + 1
    measurement = _unescape_name(parts[0])
    if not measurement:
        raise LineProtocolError(f"missing measurement in {line[:200]!r}")
    tags: dict[str, str] = {}
    for pair in parts[1:]:
        eq = _scan(pair, 0, "=")
        key, value = pair[:eq], pair[eq + 1 :]
        if eq >= len(pair) or not key or not value:
            raise LineProtocolError(f"bad tag {pair!r} in {line[:200]!r}")
        tags[_unescape_name(key)] = _unescape_name(value)
    fields, end = _parse_fields(text, series_end + 1, line)
    time_text = text[end + 1 :]
    if end >= len(text) or not time_text.lstrip("-").isdigit():
        raise LineProtocolError(f"bad or missing timestamp in {line[:200]!r}")
    return Point(measurement, tags, fields, int(time_text))
