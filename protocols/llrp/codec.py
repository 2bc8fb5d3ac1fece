"""LLRP binary codec: messages and parameters to and from bytes.

Decoded parameters are generic (`Param`: a type number, a dict of fields, an ordered list of
children) driven by the definitions in `protocols.llrp.spec`. Anything the codec does not
know (a vendor's parameter, a message type it has no definition for) is kept as raw bytes,
and children keep their wire order, so decoding then encoding gives back the same bytes.
Non-zero reserved bits are kept too, under `_reserved<n>` field names.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable, Iterator
from typing import Any

from protocols.llrp.spec import MESSAGE_NAMES, MESSAGES, PARAM_NAMES, PARAMS, TV_SIZES, Field

HEADER = struct.Struct(">HII")
HEADER_SIZE = HEADER.size  # 10 bytes: version + type, length, message id
LLRP_VERSION = 1

_INT_FORMATS = {
    "u8": struct.Struct(">B"),
    "u16": struct.Struct(">H"),
    "u32": struct.Struct(">I"),
    "u64": struct.Struct(">Q"),
    "s8": struct.Struct(">b"),
    "s16": struct.Struct(">h"),
    "s32": struct.Struct(">i"),
}
_U16 = _INT_FORMATS["u16"]
_ARRAY_ITEM = {"u8v": ("B", 1), "u16v": ("H", 2), "u32v": ("I", 4)}
# TV parameters whose only field is one integer called Value: decoded without the generic loop
_TV_SIMPLE = {
    t: _INT_FORMATS[d.fields[0][1]]
    for t, d in PARAMS.items()
    if d.tv and len(d.fields) == 1 and d.fields[0][0] == "Value"
}


class LLRPError(ValueError):
    """Bytes that are not valid LLRP; the message says what and where."""


class Param:
    """One decoded LLRP parameter (TLV or TV)."""

    __slots__ = ("children", "fields", "type")

    def __init__(
        self,
        type_: int,
        fields: dict[str, Any] | None = None,
        children: list[Param | RawParam] | None = None,
    ) -> None:
        self.type = type_
        self.fields: dict[str, Any] = fields if fields is not None else {}
        self.children: list[Param | RawParam] = children if children is not None else []

    @property
    def name(self) -> str:
        return PARAMS[self.type].name

    def child(self, name: str) -> Param | None:
        """The first child of that parameter name (e.g. "AntennaID"), or None."""
        type_ = PARAM_NAMES[name]
        for child in self.children:
            if child.type == type_ and isinstance(child, Param):
                return child
        return None

    def children_named(self, name: str) -> Iterator[Param]:
        type_ = PARAM_NAMES[name]
        return (c for c in self.children if c.type == type_ and isinstance(c, Param))

    def value(self, name: str, default: Any = None) -> Any:
        """The value of a single-field child (e.g. `value("PeakRSSI")`), or `default`."""
        child = self.child(name)
        if child is None:
            return default
        return next(iter(child.fields.values()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Param) and (self.type, self.fields, self.children) == (
            other.type,
            other.fields,
            other.children,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        name = PARAMS[self.type].name if self.type in PARAMS else str(self.type)
        return f"Param({name}, {self.fields!r}, {self.children!r})"


class RawParam:
    """A parameter the codec has no definition for: its complete bytes, header included."""

    __slots__ = ("data", "type")

    def __init__(self, type_: int, data: bytes) -> None:
        self.type = type_
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawParam) and (self.type, self.data) == (other.type, other.data)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RawParam({self.type}, {self.data.hex()})"


class Message(Param):
    """One LLRP message. `raw_body` holds the body of a message type the codec does not know."""

    __slots__ = ("id", "raw_body", "version")

    def __init__(
        self,
        type_: int,
        id_: int = 0,
        fields: dict[str, Any] | None = None,
        children: list[Param | RawParam] | None = None,
        *,
        version: int = LLRP_VERSION,
        raw_body: bytes | None = None,
    ) -> None:
        super().__init__(type_, fields, children)
        self.id = id_
        self.version = version
        self.raw_body = raw_body

    @property
    def name(self) -> str:
        definition = MESSAGES.get(self.type)
        return definition.name if definition else f"MESSAGE_{self.type}"

    @property
    def known(self) -> bool:
        return self.raw_body is None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Message)
            and super().__eq__(other)
            and (self.id, self.version, self.raw_body) == (other.id, other.version, other.raw_body)
        )

    def __repr__(self) -> str:
        return f"Message({self.name}, id={self.id}, {self.fields!r}, {self.children!r})"


# --------------------------------------------------------------------------- builders


def param(name: str, *children: Param | RawParam, **fields: Any) -> Param:
    """Build a parameter by name: `param("AntennaID", Value=1)`."""
    return Param(PARAM_NAMES[name], fields, list(children))


def message(name: str, id_: int = 0, *children: Param | RawParam, **fields: Any) -> Message:
    """Build a message by name: `message("START_ROSPEC", 7, ROSpecID=1)`."""
    return Message(MESSAGE_NAMES[name], id_, fields, list(children))


def status(code: int = 0, description: str = "") -> Param:
    return param("LLRPStatus", Status=code, ErrorDescription=description)


# --------------------------------------------------------------------------- decoding


def _decode_fields(
    fields: tuple[Field, ...], buf: bytes, pos: int, end: int, where: str
) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    acc = 0  # bit accumulator for packed bit fields
    nbits = 0
    bitcount = 0
    try:
        for index, (name, kind) in enumerate(fields):
            first = kind[0]
            if first in "br" and kind[1:].isdigit():
                width = int(kind[1:])
                while nbits < width:
                    if pos >= end:
                        raise LLRPError(f"{where}: truncated in bit field {name}")
                    acc = (acc << 8) | buf[pos]
                    pos += 1
                    nbits += 8
                nbits -= width
                value = acc >> nbits
                acc &= (1 << nbits) - 1
                if first == "b":
                    out[name] = bool(value) if width == 1 else value
                elif value:
                    out[f"_reserved{index}"] = value
                continue
            fmt = _INT_FORMATS.get(kind)
            if fmt is not None:
                if pos + fmt.size > end:
                    raise LLRPError(f"{where}: truncated in field {name}")
                out[name] = fmt.unpack_from(buf, pos)[0]
                pos += fmt.size
            elif kind in _ARRAY_ITEM:
                code, size = _ARRAY_ITEM[kind]
                count = _U16.unpack_from(buf, pos)[0]
                pos += 2
                if pos + count * size > end:
                    raise LLRPError(f"{where}: field {name} runs past the parameter")
                if kind == "u8v":
                    out[name] = bytes(buf[pos : pos + count])
                else:
                    out[name] = list(struct.unpack_from(f">{count}{code}", buf, pos))
                pos += count * size
            elif kind == "utf8v":
                count = _U16.unpack_from(buf, pos)[0]
                pos += 2
                if pos + count > end:
                    raise LLRPError(f"{where}: field {name} runs past the parameter")
                out[name] = bytes(buf[pos : pos + count]).decode("utf-8", "surrogateescape")
                pos += count
            elif kind == "bitcount":
                bitcount = _U16.unpack_from(buf, pos)[0]
                out[name] = bitcount
                pos += 2
            elif kind == "bitdata":
                size = (bitcount + 7) // 8
                if pos + size > end:
                    raise LLRPError(f"{where}: field {name} runs past the parameter")
                out[name] = bytes(buf[pos : pos + size])
                pos += size
            elif kind == "bytes12":
                if pos + 12 > end:
                    raise LLRPError(f"{where}: truncated in field {name}")
                out[name] = bytes(buf[pos : pos + 12])
                pos += 12
            elif kind == "rest":
                out[name] = bytes(buf[pos:end])
                pos = end
            else:  # pragma: no cover - a definition error, caught by the fixture tests
                raise AssertionError(f"unknown field kind {kind}")
    except struct.error as exc:
        raise LLRPError(f"{where}: truncated ({exc})") from None
    if nbits:
        raise AssertionError(f"{where}: bit fields do not fill whole bytes")
    if pos > end:
        raise LLRPError(f"{where}: fields run past the parameter")
    return out, pos


def decode_params(buf: bytes, pos: int, end: int, where: str) -> list[Param | RawParam]:
    """Decode the parameters in buf[pos:end], in wire order."""
    out: list[Param | RawParam] = []
    while pos < end:
        first = buf[pos]
        if first & 0x80:  # TV: 1 bit flag, 7-bit type, fixed-size value
            type_ = first & 0x7F
            size = TV_SIZES.get(type_)
            if size is None:
                raise LLRPError(f"{where}: unknown TV parameter type {type_} (its size is unknown)")
            stop = pos + 1 + size
            if stop > end:
                raise LLRPError(f"{where}: TV parameter {type_} runs past its container")
            simple = _TV_SIMPLE.get(type_)
            if simple is not None:  # the hot path of tag reports: one integer field
                out.append(Param(type_, {"Value": simple.unpack_from(buf, pos + 1)[0]}))
            else:
                fields, _ = _decode_fields(PARAMS[type_].fields, buf, pos + 1, stop, where)
                out.append(Param(type_, fields))
            pos = stop
            continue
        if pos + 4 > end:
            raise LLRPError(f"{where}: truncated parameter header at byte {pos}")
        head, length = struct.unpack_from(">HH", buf, pos)
        type_ = head & 0x3FF
        stop = pos + length
        if length < 4 or stop > end:
            raise LLRPError(f"{where}: parameter {type_} has bad length {length}")
        definition = PARAMS.get(type_)
        if definition is None or definition.tv or head >> 10:
            out.append(RawParam(type_, bytes(buf[pos:stop])))
        else:
            inner = f"{where}/{definition.name}"
            fields, body = _decode_fields(definition.fields, buf, pos + 4, stop, inner)
            out.append(Param(type_, fields, decode_params(buf, body, stop, inner)))
        pos = stop
    return out


def decode_body(type_: int, body: bytes, id_: int = 0, version: int = LLRP_VERSION) -> Message:
    """Decode a message body (the bytes after the 10-byte header)."""
    definition = MESSAGES.get(type_)
    if definition is None:
        return Message(type_, id_, version=version, raw_body=bytes(body))
    fields, pos = _decode_fields(definition.fields, body, 0, len(body), definition.name)
    children = decode_params(body, pos, len(body), definition.name)
    return Message(type_, id_, fields, children, version=version)


def parse_header(header: bytes | bytearray) -> tuple[int, int, int, int]:
    """(version, type, length, id) from the first 10 bytes of a message."""
    head, length, id_ = HEADER.unpack_from(header)
    return (head >> 10) & 0x7, head & 0x3FF, length, id_


def decode_message(data: bytes) -> Message:
    """Decode one complete message (header included)."""
    if len(data) < HEADER_SIZE:
        raise LLRPError(f"message shorter than the {HEADER_SIZE}-byte header")
    version, type_, length, id_ = parse_header(data)
    if length != len(data):
        raise LLRPError(f"header says {length} bytes, got {len(data)}")
    return decode_body(type_, data[HEADER_SIZE:], id_, version)


# --------------------------------------------------------------------------- encoding


def _encode_fields(fields: tuple[Field, ...], values: dict[str, Any], out: bytearray) -> None:
    acc = 0
    nbits = 0
    for index, (name, kind) in enumerate(fields):
        first = kind[0]
        if first in "br" and kind[1:].isdigit():
            width = int(kind[1:])
            bits = int(values.get(name, 0) if first == "b" else values.get(f"_reserved{index}", 0))
            acc = (acc << width) | (bits & ((1 << width) - 1))
            nbits += width
            while nbits >= 8:
                nbits -= 8
                out.append((acc >> nbits) & 0xFF)
            acc &= (1 << nbits) - 1
            continue
        value: Any = values.get(name)
        fmt = _INT_FORMATS.get(kind)
        if fmt is not None:
            out += fmt.pack(int(value or 0))
        elif kind in _ARRAY_ITEM:
            items = value if value is not None else []
            code, _ = _ARRAY_ITEM[kind]
            out += _U16.pack(len(items))
            out += bytes(items) if kind == "u8v" else struct.pack(f">{len(items)}{code}", *items)
        elif kind == "utf8v":
            raw = (value or "").encode("utf-8", "surrogateescape")
            out += _U16.pack(len(raw)) + raw
        elif kind == "bitcount":
            out += _U16.pack(int(value or 0))
        elif kind in ("bitdata", "rest"):
            out += value or b""
        elif kind == "bytes12":
            raw = value or bytes(12)
            if len(raw) != 12:
                raise LLRPError(f"field {name} must be 12 bytes, got {len(raw)}")
            out += raw


def encode_param(p: Param | RawParam, out: bytearray) -> None:
    if isinstance(p, RawParam):
        out += p.data
        return
    definition = PARAMS[p.type]
    if definition.tv:
        out.append(0x80 | p.type)
        _encode_fields(definition.fields, p.fields, out)
        return
    start = len(out)
    out += b"\0\0\0\0"
    _encode_fields(definition.fields, p.fields, out)
    for child in p.children:
        encode_param(child, out)
    struct.pack_into(">HH", out, start, p.type, len(out) - start)


def encode_message(m: Message) -> bytes:
    out = bytearray(HEADER_SIZE)
    if m.raw_body is not None:
        out += m.raw_body
    else:
        definition = MESSAGES[m.type]
        _encode_fields(definition.fields, m.fields, out)
        for child in m.children:
            encode_param(child, out)
    HEADER.pack_into(out, 0, ((m.version & 0x7) << 10) | m.type, len(out), m.id)
    return bytes(out)


def encode_body(m: Message) -> bytes:
    return encode_message(m)[HEADER_SIZE:]


# --------------------------------------------------------------------------- JSON view


def _field_view(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
        for k, v in values.items()
        if not k.startswith("_")
    }


def _children_view(
    children: Iterable[Param | RawParam], slots: Iterable[Any], slot_of: dict[int, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for slot in slots:
        if slot.repeated:
            out[slot.name] = []
    unknown: list[Any] = []
    for child in children:
        slot = slot_of.get(child.type)
        item = view(child)
        if slot is None:
            unknown.append(item)
        elif slot.repeated:
            out[slot.name].append(item)
        else:
            out[slot.name] = item
    for slot in slots:
        if slot.repeated and not out[slot.name]:
            out[slot.name] = None
    if unknown:
        out["Unknown"] = unknown
    return out


def view(p: Param | RawParam) -> Any:
    """A JSON-able view in the shape of the fixtures' JSON (absent children are left out,
    empty lists are None, bytes are base64)."""
    if isinstance(p, RawParam):
        return {"Type": p.type, "Raw": base64.b64encode(p.data).decode()}
    if isinstance(p, Message):
        if p.raw_body is not None:
            return {"Type": p.type, "Raw": base64.b64encode(p.raw_body).decode()}
        m = MESSAGES[p.type]
        return {**_field_view(p.fields), **_children_view(p.children, m.slots, m.slot_of)}
    d = PARAMS[p.type]
    if d.flatten:
        return next(iter(p.fields.values()), None)
    return {**_field_view(p.fields), **_children_view(p.children, d.slots, d.slot_of)}
