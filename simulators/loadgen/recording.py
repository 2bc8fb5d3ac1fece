"""The recording file, and the templates a replay renders each message from.

A recording is JSON lines: a header, the birth parts the edge sent when asked to resync
after its warm-up (its full snapshot: every shelf count), then every message it published
after that birth, with its arrival time in seconds from the birth. Payloads are kept as the
edge encoded them (parsed JSON), so the file can be read and diffed.

A replay sends each recorded message as many stores. What must differ per store and per
send is cut out of the payload once, into slots of a `Template`: the store id (also inside
other strings, e.g. a locker order reference), `seq`, `msg_id`, `bd_seq`, `snapshot_id` and
every timestamp (kept as its offset from the message's arrival, so a replayed message's
times are as far apart, and as far from its sending, as the edge's were). Rendering is then
a join of the literal chunks and the slot values: no JSON encoding per send.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "storegate-loadgen/1"
# Replayed store ids are `<prefix>-0001`...; the recorded store's id is chosen so that it
# cannot occur in a payload by accident (every occurrence is the store's own id).
RECORDED_STORE = "loadgen-recorded-store"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
_SLOT = re.compile(r'"@@slot(\d+)@@"')


class RecordingError(ValueError):
    """The recording cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    t: float  # arrival, seconds after the birth
    payload: dict[str, Any]

    @property
    def stream(self) -> str:
        return str(self.payload["stream"])

    @property
    def type(self) -> str:
        return str(self.payload["type"])


@dataclass(frozen=True, slots=True)
class Recording:
    store: str
    node: str
    duration_s: float  # the loop: the steady part's length
    births: list[dict[str, Any]]  # the parts of one birth, in order
    messages: list[RecordedMessage]  # sorted by t, 0 <= t < duration_s
    about: dict[str, Any] = field(default_factory=dict)  # scenario and counts, for reports

    @property
    def streams(self) -> list[str]:
        """Every outbox stream of the node: the birth's and the ones the traffic uses."""
        seen = {str(p["stream"]) for p in self.births[0].get("streams", [])}
        seen.update(m.stream for m in self.messages if m.stream != "health")
        return sorted(seen)

    @property
    def rate(self) -> float:
        """Messages per second of one store at the recorded rate."""
        return len(self.messages) / self.duration_s

    def save(self, path: Path) -> None:
        header = {
            "kind": "header",
            "format": FORMAT,
            "store": self.store,
            "node": self.node,
            "duration_s": self.duration_s,
            "about": self.about,
        }
        lines = [header]
        lines += [{"kind": "birth", "payload": part} for part in self.births]
        lines += [
            {"kind": "message", "t": round(m.t, 6), "payload": m.payload} for m in self.messages
        ]
        path.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))


def load_recording(path: Path) -> Recording:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror}") from None
    header: dict[str, Any] | None = None
    births: list[dict[str, Any]] = []
    messages: list[RecordedMessage] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
            kind = entry["kind"]
            if kind == "header":
                header = entry
            elif kind == "birth":
                births.append(entry["payload"])
            elif kind == "message":
                messages.append(RecordedMessage(float(entry["t"]), entry["payload"]))
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise RecordingError(f"{path}:{number}: not a recording line ({exc})") from None
    if header is None or header.get("format") != FORMAT:
        raise RecordingError(f"{path}: no {FORMAT} header")
    if not births:
        raise RecordingError(f"{path}: no birth")
    if not messages:
        raise RecordingError(f"{path}: no traffic after the birth")
    messages.sort(key=lambda m: m.t)
    return Recording(
        store=str(header["store"]),
        node=str(header["node"]),
        duration_s=float(header["duration_s"]),
        births=births,
        messages=messages,
        about=dict(header.get("about", {})),
    )


# --------------------------------------------------------------------------- templates


@dataclass(slots=True)
class Context:
    """What a rendering fills in: this store, this send."""

    store: str
    seq: int = 0
    msg_id: str = ""
    bd_seq: int = 0
    sent_at: float = 0.0  # epoch seconds of this send
    snapshot_tag: str = ""  # makes a recorded snapshot id unique per store and loop


def format_time(epoch: float, _cache: dict[int, str] = {}) -> str:  # noqa: B006 (a cache)
    """`2026-12-05T09:30:00.125000Z`, as the edge's pydantic writes it; the second's prefix
    is cached (a replay formats thousands of timestamps a second)."""
    second = int(epoch // 1)
    prefix = _cache.get(second)
    if prefix is None:
        if len(_cache) > 4096:
            _cache.clear()
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _cache[second] = prefix
    micros = min(999_999, round((epoch - second) * 1e6))
    return f"{prefix}.{micros:06d}Z"


@dataclass(frozen=True, slots=True)
class Template:
    chunks: tuple[str, ...]  # literal JSON text, one more than slots
    slots: tuple[tuple[str, Any], ...]  # (kind, recorded argument)

    def render(self, ctx: Context) -> bytes:
        out = [self.chunks[0]]
        for (kind, arg), chunk in zip(self.slots, self.chunks[1:], strict=True):
            if kind == "time":
                out.append(f'"{format_time(ctx.sent_at + arg)}"')
            elif kind == "seq":
                out.append(str(ctx.seq))
            elif kind == "msg_id":
                out.append(f'"{ctx.msg_id}"')
            elif kind == "store":
                out.append(f'"{ctx.store}"')
            elif kind == "store_in":
                out.append(json.dumps(arg.replace(RECORDED_STORE, ctx.store)))
            elif kind == "bd_seq":
                out.append(str(ctx.bd_seq))
            else:  # snapshot_id
                out.append(f'"{arg[:40]}-{ctx.snapshot_tag}"')
            out.append(chunk)
        return "".join(out).encode()


def compile_template(payload: dict[str, Any], recorded_at: float) -> Template:
    """The payload with its per-store, per-send values cut out; `recorded_at` is the epoch
    time the message was sent (its `sent_time`), the reference of every timestamp offset."""
    slots: list[tuple[str, Any]] = []

    def slot(kind: str, arg: Any = None) -> str:
        slots.append((kind, arg))
        return f"@@slot{len(slots) - 1}@@"

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            if TIMESTAMP.match(value):
                return slot("time", parse_time(value) - recorded_at)
            if RECORDED_STORE in value:
                return slot("store_in", value)
        return value

    body: dict[str, Any] = {}
    for key, value in payload.items():
        if key == "seq":
            body[key] = slot("seq")
        elif key == "msg_id":
            body[key] = slot("msg_id")
        elif key == "bd_seq":
            body[key] = slot("bd_seq")
        elif key == "store":
            body[key] = slot("store")
        elif key == "snapshot_id" and value is not None:
            body[key] = slot("snapshot_id", str(value))
        else:
            body[key] = walk(value)
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    parts = _SLOT.split(text)
    chunks = tuple(parts[0::2])
    order = [int(n) for n in parts[1::2]]
    if order != list(range(len(slots))):
        raise RecordingError("a payload holds text that looks like a template slot")
    return Template(chunks, tuple(slots))


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def sent_time(payload: dict[str, Any]) -> float:
    return parse_time(str(payload["sent_time"]))


def events_in(payload: dict[str, Any]) -> int:
    """Events a message carries (item events, count deltas, locker and presence events)."""
    lists = ("items", "counts", "events")
    return sum(len(v) for k in lists if isinstance(v := payload.get(k), list))


def iter_types(messages: Iterable[RecordedMessage]) -> Iterator[tuple[str, int]]:
    counts: dict[str, int] = {}
    for message in messages:
        counts[message.type] = counts.get(message.type, 0) + 1
    yield from sorted(counts.items())


def render_traffic(
    recording: Recording, stores: list[str], count: int, *, start: float
) -> list[tuple[str, bytes]]:
    """`count` messages of `stores` as a replay sends them, without a broker: every store's
    birth (positions 0), then the looped traffic of all stores in time order (store k from
    phase k/len(stores) of the loop), seqs gap-free per stream. For benchmarks that queue
    the traffic before they consume it."""
    prefix = "storegate/v1"
    templates = [compile_template(m.payload, sent_time(m.payload)) for m in recording.messages]
    streams = {s: 0 for s in recording.streams}
    out: list[tuple[str, bytes]] = []
    seqs: list[dict[str, int]] = []
    for number, store in enumerate(stores):
        seqs.append({**streams, "health": 0})
        birth = {
            **recording.births[0],
            "store": store,
            "msg_id": f"birth{number:08d}",
            "seq": 1,
            "bd_seq": 1,
            "streams": [{"stream": s, "seq": 0, "kept_from": 1} for s in sorted(streams)],
            "shelves": [s for part in recording.births for s in part.get("shelves", [])],
            "event_time": format_time(start),
            "sent_time": format_time(start),
            "part": 1,
            "parts": 1,
        }
        birth.pop("snapshot_id", None)
        text = json.dumps(birth, separators=(",", ":")).replace(RECORDED_STORE, store)
        out.append((f"{prefix}/{store}/{recording.node}/birth", text.encode()))
    length = recording.duration_s
    timeline = sorted(
        (loop * length + m.t - length * k / len(stores), k, i)
        for loop in range(1 + count // max(1, len(recording.messages) * len(stores)) + 1)
        for k in range(len(stores))
        for i, m in enumerate(recording.messages)
        if loop * length + m.t - length * k / len(stores) >= 0
    )
    ctx = Context(store="")
    for sequence, (t, k, i) in enumerate(timeline):
        if len(out) >= count:
            break
        message = recording.messages[i]
        stream = message.stream
        seqs[k][stream] += 1
        ctx.store, ctx.seq, ctx.bd_seq = stores[k], seqs[k][stream], 1
        ctx.msg_id, ctx.sent_at = f"m{sequence:010d}", start + t
        ctx.snapshot_tag = f"{k}l{int(t // length)}"
        topic = f"{prefix}/{stores[k]}/{recording.node}/{stream}"
        out.append((topic, templates[i].render(ctx)))
    return out
