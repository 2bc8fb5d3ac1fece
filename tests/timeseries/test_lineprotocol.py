from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point as LibraryPoint

from cloud.timeseries.lineprotocol import LineProtocolError, Point, _scan, encode, parse

TRICKY = ["plain", "with space", "com,ma", "eq=ual", 'quo"te', "ü-unicode", "trail "]


@pytest.mark.parametrize("text", TRICKY)
def test_escaping_matches_influxdb_client(text: str) -> None:
    """Our hand-written encoder and the library's Point agree byte for byte."""
    point = Point(text, {"tag " + text: text}, {"field " + text: text, "n": 3}, 1_700_000_000_123)
    ours = encode(point)
    library = (
        LibraryPoint(text)
        .tag("tag " + text, text)
        .field("field " + text, text)
        .field("n", 3)
        .time(1_700_000_000_123)
        .to_line_protocol()
    )
    assert ours == library


def test_known_escapes() -> None:
    line = encode(
        Point(
            "my meas,x",
            {"b": "v 1", "a": "k=v,w"},
            {"s": 'say "hi"\\ now\nnext', "f": 1.5, "i": -2, "t": True},
            42,
        )
    )
    assert line == (
        'my\\ meas\\,x,a=k\\=v\\,w,b=v\\ 1 s="say \\"hi\\"\\\\ now next",f=1.5,i=-2i,t=true 42'
    )


@pytest.mark.parametrize("bad", ["back\\slash", "new\nline"])
def test_names_that_line_protocol_cannot_carry_are_refused(bad: str) -> None:
    for point in (
        Point(bad, {}, {"f": 1}, 1),
        Point("m", {"t": bad}, {"f": 1}, 1),
        Point("m", {bad: "v"}, {"f": 1}, 1),
        Point("m", {}, {bad: 1}, 1),
    ):
        with pytest.raises(LineProtocolError, match="backslash or newline"):
            encode(point)


def test_empty_tags_and_non_finite_floats_are_left_out() -> None:
    line = encode(
        Point("m", {"empty": "", "t": "x"}, {"nan": math.nan, "inf": math.inf, "ok": 1.0}, 1)
    )
    assert line == "m,t=x ok=1.0 1"


def test_a_point_without_fields_is_refused() -> None:
    with pytest.raises(LineProtocolError, match="no encodable field"):
        encode(Point("m", {}, {"nan": math.nan}, 1))
    with pytest.raises(LineProtocolError, match="measurement"):
        encode(Point("", {}, {"f": 1}, 1))


@pytest.mark.parametrize(
    "line",
    ["m", "m f=1", "m,t f=1 1", "m f=abc 1", 'm s="open 1', "m f=1 notatime"],
)
def test_parse_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(LineProtocolError):
        parse(line)


_name = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"),
    min_size=1,
    max_size=20,
)
_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
_field = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    _text,
)


@given(
    measurement=_name,
    tags=st.dictionaries(_name, _name, max_size=4),
    fields=st.dictionaries(_name, _field, min_size=1, max_size=4),
    time_ns=st.integers(0, 2**62),
)
def test_encode_parse_roundtrip(
    measurement: str, tags: dict[str, str], fields: dict[str, object], time_ns: int
) -> None:
    point = Point(measurement, tags, fields, time_ns)  # type: ignore[arg-type]
    assert parse(encode(point)) == point


def _scan_reference(text: str, start: int, stops: str) -> int:
    """The scan as a loop over characters: a backslash escapes the next one."""
    i = start
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 2
            continue
        if text[i] in stops:
            return i
        i += 1
    return i


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(alphabet='ab\\ ,="\n', max_size=16),
    start=st.integers(0, 18),
    stops=st.sampled_from([" ", ",", "=", "=, ", ", ", '"']),
)
def test_scan_finds_the_first_unescaped_stop(text: str, start: int, stops: str) -> None:
    assert _scan(text, start, stops) == _scan_reference(text, start, stops)
