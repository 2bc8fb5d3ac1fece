"""Fuzz the ingest path on a real PostgreSQL: 100,000 payloads, a good stream through them.

Each payload goes through the real decode and apply path (the state applier with the built-in
domains, in batches as the consumer hands them over); the broker is left out to keep it fast
(test_poison_broker.py has the broker and the consumer). Every fuzzed payload carries a tag
at its start, so its dead letter (whose excerpt is the payload's start) can be traced back
to it and to what was expected of it:

- numbers at and one past the contract's bounds (2**63 - 1, -2**63, 2**64, 10**40, ...):
  valid inside, dead-lettered as `invalid` outside;
- NUL in strings: refused by the codec where the field is an id, by PostgreSQL where the
  text goes to a column (`data_error`), or stored (JSON columns escape it);
- bytes that are not UTF-8, JSON nested 100,000 deep, 1 MB payloads, truncated JSON,
  values of the wrong type, wrong versions and types;
- hypothesis-built variations of valid messages (fields replaced, dropped, added).

None may crash the applier or end as `internal_error`; a payload is dead-lettered at most
once; the good stream is applied exactly once and in order, to its last message.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.config import CloudSettings
from cloud.domains import load_domains
from cloud.ingest.apply import Incoming
from cloud.state import schema
from cloud.timeseries import message_lines
from protocols.codec import DecodeErrorReason, encode, topic_for
from protocols.messages import Message
from tests.cloud.conftest import PostgresServer
from tests.cloud.harness import StateHarness
from tests.cloud.streams import NODE, STORE, rfid
from tests.samples import all_samples
from tests.test_codec_bounds import BOUNDS

GOOD_NODE, GOOD_READER = "pi-good", "reader-g"
NUL_NODE = "pi-nul"
GOOD_STREAM = f"rfid/{GOOD_READER}"
TOTAL = int(os.environ.get("FUZZ_TOTAL", 100_000))  # fewer for a quick local run
BATCH = 250
DECODE_REASONS = frozenset(reason.value for reason in DecodeErrorReason)
NOT_DEAD = "not dead-lettered"
STORE_REFUSED = "data_error"  # the ingestor's reason when the database refuses the data


class TracingHistory:
    """The history stand-in: the real line encoder runs (it must not fail on any message
    the codec accepts), and what is kept is which message was applied, in order."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, str, int]] = []

    def lines(self, message: Message) -> list[str]:
        message_lines(message)
        return [f"{message.node}|{message.stream}|{message.seq}"]

    async def append(self, points: Sequence[str]) -> None:
        for point in points:
            node, stream, seq = point.split("|")
            self.applied.append((node, stream, int(seq)))


@dataclass(slots=True)
class Case:
    topic: str
    payload: bytes
    expect: frozenset[str]  # dead-letter reasons allowed, and/or NOT_DEAD


_TAG = re.compile(r'^(?:\{"_tag":"|#)(t\d+)')
SAMPLES = [m for m in all_samples() if not m.channel.from_cloud]
SAMPLE_JSON = [(topic_for(m), m.type, encode(m)) for m in SAMPLES]


def _tagged(tag: str, data: dict[str, Any]) -> bytes:
    tagged = {"_tag": tag, **data}
    tagged["_tag"] = tag  # first, and not replaced by a generated field of that name
    return json.dumps(tagged, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    node: Any = data
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _string_paths(node: Any, path: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _string_paths(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _string_paths(value, f"{path}.{index}")
    elif isinstance(node, str):
        yield path


def _all_paths(node: Any, path: str = "") -> Iterator[str]:
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _all_paths(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _all_paths(value, f"{path}.{index}")


SAMPLE_BY_TYPE = {type_name: (topic, payload) for topic, type_name, payload in SAMPLE_JSON}
STRING_PATHS = {t: list(_string_paths(json.loads(p))) for t, (_topic, p) in SAMPLE_BY_TYPE.items()}
ALL_PATHS = {t: list(_all_paths(json.loads(p))) for t, (_topic, p) in SAMPLE_BY_TYPE.items()}
EDGES = (2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, 2**31 - 1, 2**31, 10**40, -1, 0)
WRONG_VALUES: tuple[Any, ...] = ("12", "x", [1], {"a": 1}, True, None, 1.5, 1e308, "", [])
MEGABYTE = b"x" * (1024 * 1024)
DEEP = b"[" * 100_000 + b"]" * 100_000


def _bound_case(tag: str, rng: random.Random) -> Case:
    type_name, path, low, high = rng.choice(BOUNDS)
    if type_name not in SAMPLE_BY_TYPE:  # the cloud's own messages are not ingested
        type_name, path, low, high = "rfid.events", "counts.0.count", 0, 2**31 - 1
    value = rng.choice((low, high, low - 1, high + 1, *EDGES))
    topic, payload = SAMPLE_BY_TYPE[type_name]
    data = json.loads(payload)
    _set(data, path, value)
    inside = low <= value <= high
    return Case(topic, _tagged(tag, data), frozenset({NOT_DEAD} if inside else {"invalid"}))


def _nul_case(tag: str, rng: random.Random) -> Case:
    type_name = rng.choice(list(SAMPLE_BY_TYPE))
    topic, payload = SAMPLE_BY_TYPE[type_name]
    data = json.loads(payload)
    path = rng.choice(STRING_PATHS[type_name])
    if path in ("store", "node", "stream", "type"):
        path = "msg_id"  # those decide the topic check; NUL there is a plain mismatch
    _set(data, path, rng.choice(["\x00", "a\x00b", "0.1\x00"]))
    return Case(topic, _tagged(tag, data), frozenset({NOT_DEAD, "invalid", STORE_REFUSED}))


def _bad_version_of_birth(tag: str, _rng: random.Random) -> Case:
    # A birth is valid but for the NUL in its version, which goes to a VARCHAR column.
    topic, payload = SAMPLE_BY_TYPE["birth"]
    data = json.loads(payload)
    data["version"] = "1.0\x00"
    # On a node of its own, with a new seq and connect counter: neither a duplicate nor a
    # stale birth (the other cases' births may carry bd_seq 2**63 - 1), so it is stored.
    data["node"] = NUL_NODE
    data["seq"] = data["bd_seq"] = int(tag[1:])
    topic = topic.replace(f"/{NODE}/", f"/{NUL_NODE}/")
    return Case(topic, _tagged(tag, data), frozenset({STORE_REFUSED}))


def _wrong_type_case(tag: str, rng: random.Random) -> Case:
    type_name = rng.choice(list(SAMPLE_BY_TYPE))
    topic, payload = SAMPLE_BY_TYPE[type_name]
    data = json.loads(payload)
    path = rng.choice(ALL_PATHS[type_name])
    _set(data, path, rng.choice(WRONG_VALUES))
    # lax validation takes "12" for 12; whatever it refuses, it says why
    return Case(topic, _tagged(tag, data), frozenset({NOT_DEAD, *DECODE_REASONS}))


def _not_utf8_case(tag: str, rng: random.Random) -> Case:
    topic = rng.choice(SAMPLE_JSON)[0]
    if rng.random() < 0.5:
        payload = f"#{tag}#".encode() + b"\xff\xfe" + rng.randbytes(rng.randrange(0, 300))
    else:  # JSON whose string is not UTF-8
        payload = b'{"_tag":"' + tag.encode() + b'","v":1,"type":"rfid.events","store":"\xc3\x28"}'
    return Case(topic, payload, frozenset({"not_json"}))


def _deep_case(tag: str, rng: random.Random) -> Case:
    topic, payload = SAMPLE_BY_TYPE[rng.choice(list(SAMPLE_BY_TYPE))]
    body = payload[1:]  # '"v":1,...}' of a valid message, with a deeply nested extra field
    return Case(
        topic,
        b'{"_tag":"' + tag.encode() + b'","deep":' + DEEP + b"," + body,
        frozenset({"not_json", "too_large"}),
    )


def _huge_case(tag: str, _rng: random.Random) -> Case:
    topic = SAMPLE_JSON[0][0]
    return Case(
        topic,
        b'{"_tag":"' + tag.encode() + b'","pad":"' + MEGABYTE + b'"}',
        frozenset({"too_large"}),
    )


def _garbled_case(tag: str, rng: random.Random) -> Case:
    topic, _type, payload = rng.choice(SAMPLE_JSON)
    data = json.loads(payload)
    tagged = _tagged(tag, data)
    kind = rng.randrange(5)
    if kind == 0:  # truncated
        cut = rng.randrange(len(tag) + 11, len(tagged) - 1)  # after the tag's closing quote
        return Case(topic, tagged[:cut], frozenset({"not_json"}))
    if kind == 1:
        data["v"] = rng.choice([0, 2, "1", 1.5, None, 2**64])
        return Case(topic, _tagged(tag, data), frozenset({"unsupported_version", "invalid"}))
    if kind == 2:
        data["type"] = rng.choice(["rfid.eventz", "", 42, None, "\x00"])
        return Case(topic, _tagged(tag, data), frozenset({"unknown_type", "invalid"}))
    if kind == 3:
        del data[rng.choice(["store", "node", "seq", "type", "v"])]
        return Case(topic, _tagged(tag, data), frozenset({"invalid"}))
    # a number no float holds, where an integer belongs
    payload = re.sub(rb'"seq":\d+', b'"seq":1e400', _tagged(tag, data), count=1)
    return Case(topic, payload, frozenset({"not_json", "invalid"}))


GENERATORS: list[tuple[float, Callable[[str, random.Random], Case]]] = [
    (0.40, _bound_case),
    (0.003, _bad_version_of_birth),
    (0.02, _nul_case),
    (0.22, _wrong_type_case),
    (0.08, _not_utf8_case),
    (0.0005, _deep_case),
    (0.0005, _huge_case),
    (0.276, _garbled_case),
]


def fuzz_cases(count: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    weights = [weight for weight, _ in GENERATORS]
    makers = [maker for _, maker in GENERATORS]
    chosen = rng.choices(makers, weights, k=count)
    # every kind at least once, however few payloads
    chosen[: len(makers)] = makers
    return [maker(f"t{index}", rng) for index, maker in enumerate(chosen)]


def good_message(seq: int) -> tuple[str, bytes]:
    message = rfid(seq, {("shelf-g", "00614141000099"): seq}, node=GOOD_NODE)
    message = message.model_copy(update={"reader": GOOD_READER, "stream": GOOD_STREAM})
    return topic_for(message), encode(message)


NODES = [NODE, GOOD_NODE, NUL_NODE]


class Run:
    """The state applier on its own PostgreSQL database, fed batch by batch."""

    def __init__(self, url: str) -> None:
        cloud = CloudSettings.model_validate(
            {"database_url": url, "stores": [{"id": STORE, "nodes": NODES}]}
        )
        self.harness = StateHarness(
            url, {STORE: NODES}, domains=load_domains(cloud), resync_min_interval_s=0
        )
        self.history = TracingHistory()
        self.harness.applier.history = self.history
        self.mid = 0
        self.good_sent = 0
        self.outcomes: dict[str, int] = {"applied": 0, "duplicates": 0, "dead_lettered": 0}

    async def start(self) -> None:
        await self.harness.start()

    async def feed(self, items: Sequence[tuple[str, bytes]]) -> None:
        batch = []
        for topic, payload in items:
            self.mid += 1
            batch.append(Incoming(topic, payload, self.mid % 65535 + 1, 1))
        outcome = await self.harness.applier.apply(batch)
        self.outcomes["applied"] += outcome.applied
        self.outcomes["duplicates"] += outcome.duplicates
        self.outcomes["dead_lettered"] += outcome.dead_lettered

    async def feed_cases(self, cases: Sequence[Case], good_every: int) -> None:
        """`cases` in batches, a message of the good stream after every `good_every`."""
        pending: list[tuple[str, bytes]] = []
        for index, case in enumerate(cases):
            pending.append((case.topic, case.payload))
            if index % good_every == good_every - 1:
                self.good_sent += 1
                pending.append(good_message(self.good_sent))
            if len(pending) >= BATCH:
                await self.feed(pending)
                pending = []
        self.good_sent += 1
        pending.append(good_message(self.good_sent))  # the stream goes on after everything
        await self.feed(pending)

    async def dead_letters(self) -> dict[str, str]:
        """tag -> reason; fails on a payload dead-lettered twice or without a reason."""
        found: dict[str, str] = {}
        t = schema.dead_letters
        async with self.harness.engine.connect() as connection:
            rows = (await connection.execute(t.select().order_by(t.c.id))).all()
        for row in rows:
            assert row.reason, row
            assert row.detail, row
            assert len(row.payload_excerpt.encode()) <= 1024
            match = _TAG.match(row.payload_excerpt)
            assert match is not None, f"untagged dead letter: {row.payload_excerpt[:80]!r}"
            assert match.group(1) not in found, f"dead-lettered twice: {match.group(1)}"
            found[match.group(1)] = row.reason
        return found

    def check_good_stream(self) -> None:
        good = [seq for node, _stream, seq in self.history.applied if node == GOOD_NODE]
        assert good == list(range(1, self.good_sent + 1)), "good stream not applied once in order"


def check(cases: Sequence[Case], dead: dict[str, str], first_tag: int = 0) -> None:
    for index, case in enumerate(cases):
        tag = f"t{first_tag + index}"
        outcome = dead.get(tag, NOT_DEAD)
        assert outcome in case.expect, (tag, outcome, sorted(case.expect), case.payload[:300])


async def test_100k_fuzzed_payloads_on_postgresql(postgres_server: PostgresServer) -> None:
    cases = fuzz_cases(TOTAL, seed=20261205)
    run = Run(postgres_server.create_database())
    await run.start()
    try:
        async with asyncio.timeout(120):
            await run.feed_cases(cases, good_every=20)
        dead = await run.dead_letters()
    finally:
        await run.harness.close()
    check(cases, dead)
    reasons = sorted(set(dead.values()))
    assert "internal_error" not in reasons
    assert {"invalid", "not_json", "too_large", STORE_REFUSED} <= set(reasons), reasons
    run.check_good_stream()
    total = TOTAL + run.good_sent
    assert sum(run.outcomes.values()) == total, run.outcomes  # every payload accounted for
    assert run.outcomes["dead_lettered"] == len(dead)


# --------------------------------------------------------------------------- hypothesis

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["2026-11-23T10:00:00Z", "00614141000012", "reader-1", "\x00", "\ud800"]),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


Path = tuple[str | int, ...]


def _paths(node: Any, path: Path = ()) -> Iterator[Path]:
    """Every place in a JSON document, as keys and indexes (keys may hold dots)."""
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


@st.composite
def _variations(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid message with a few fields replaced, dropped, or added."""
    type_name = draw(st.sampled_from(sorted(SAMPLE_BY_TYPE)))
    topic, payload = SAMPLE_BY_TYPE[type_name]
    data = json.loads(payload)
    for _ in range(draw(st.integers(1, 3))):
        *parents, last = draw(st.sampled_from(list(_paths(data))))
        parent: Any = data
        for key in parents:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            parent[last] = draw(_json_values)
        elif action == "drop":
            del parent[last]
        else:
            data[draw(st.text(min_size=1, max_size=8))] = draw(_json_values)
    return topic, data


def test_hypothesis_variations_of_valid_messages(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    with asyncio.Runner() as runner:
        run = Run(url)
        runner.run(run.start())
        cases: list[Case] = []

        @settings(
            max_examples=150,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(_variations(), min_size=1, max_size=20))
        def feed_variations(variations: list[tuple[str, dict[str, Any]]]) -> None:
            batch = []
            for topic, data in variations:
                tag = f"t{len(cases)}"
                payload = _tagged(tag, data)
                cases.append(Case(topic, payload, frozenset({NOT_DEAD, *DECODE_REASONS})))
                batch.append((topic, payload))
            run.good_sent += 1
            batch.append(good_message(run.good_sent))  # the stream goes on after each
            runner.run(run.feed(batch))

        try:
            feed_variations()
            dead = runner.run(run.dead_letters())
        finally:
            runner.run(run.harness.close())
    check(cases, dead)
    assert "internal_error" not in dead.values()
    run.check_good_stream()
    assert sum(run.outcomes.values()) == len(cases) + run.good_sent


def test_deep_nesting_is_refused_as_not_json_and_shallow_nesting_ignored() -> None:
    from protocols.codec import DecodeError, decode

    topic, payload = SAMPLE_BY_TYPE["rfid.events"]

    def nested(depth: int) -> bytes:
        return b'{"deep":' + b"[" * depth + b"]" * depth + b"," + payload[1:]

    assert decode(nested(100), topic=topic).type == "rfid.events"  # an unknown field
    for depth in (1_000, 100_000):
        with pytest.raises(DecodeError, match="recursion limit") as caught:
            decode(nested(depth), topic=topic)
        assert caught.value.reason is DecodeErrorReason.NOT_JSON
