"""A batch with one poison message in the middle: how much slower than a clean batch.

One batch of `n` valid rfid messages (the ingestor's default `batch_max` is 500) is applied
with the real state applier on SQLite, the real spool as history, and:

- nothing wrong (the reference);
- one message whose seq is past 2**63 - 1: the codec refuses it now (`invalid`); it used to
  pass the codec and fail the transaction (SQLite: OverflowError; PostgreSQL: taken for an
  outage and retried forever);
- one message that fails inside the transaction (here a domain hook raising on it, as a
  store refusing its data would): isolated by splitting the batch around it, against the
  baseline of the old isolation, which re-applied the batch one message at a time;
- the same failure raised at the end of the batch (in the domain's end-of-batch hook),
  where it no longer says which message caused it: isolated by bisection.

Run alone: `python -m bench.poison [--messages 500] [--rounds 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.runner import Benchmark, Result, Row
from cloud.config import IngestSettings
from cloud.domains import Domain, DomainTx
from cloud.ingest.apply import BatchOutcome, Incoming, StateApplier
from cloud.ingest.history import SpoolHistory
from cloud.ingest.registry import Registry
from cloud.metrics import CloudMetrics
from cloud.state.db import create_engine, migrate
from cloud.timeseries import Spool
from protocols.codec import encode, topic_for
from protocols.messages import CountDelta, Message, RfidEvents

STORE, NODE = "store-1", "pi-1"
POISON_SEQ_OFFSET = 10**9  # seqs of messages the failing domain refuses


class RefuseMarked(Domain):
    """Fails on the marked message, inside the batch's transaction: at once, or at the
    end of the batch (`at_commit`)."""

    name = "refuse_marked"

    def __init__(self, *, at_commit: bool) -> None:
        self.at_commit = at_commit
        self._seen = False

    async def on_message(self, tx: DomainTx, message: Message, *, live: bool) -> None:
        if message.seq >= POISON_SEQ_OFFSET:
            if not self.at_commit:
                raise ValueError(f"refused seq {message.seq}")
            self._seen = True

    async def before_commit(self, tx: DomainTx) -> None:
        seen, self._seen = self._seen, False
        if seen:
            raise ValueError("refused a message of this batch")


class OneByOneApplier(StateApplier):
    """The isolation this replaced: after a failed batch, every message on its own."""

    async def apply(self, batch: Sequence[Incoming]) -> BatchOutcome:
        try:
            return await self._apply_committed(batch)
        except Exception:
            if len(batch) == 1:
                return BatchOutcome(dead_lettered=1)
        outcome = BatchOutcome()
        for item in batch:
            single = await self.apply([item])
            outcome.applied += single.applied
            outcome.dead_lettered += single.dead_lettered
        return outcome


def _message(seq: int, reader: str) -> tuple[str, bytes]:
    message = RfidEvents(
        store=STORE,
        node=NODE,
        seq=seq,
        reader=reader,
        counts=[CountDelta(shelf="aisle1-shelf1", gtin="80614141123458", delta=1, count=seq)],
    )
    return topic_for(message), encode(message)


def _batch(n: int, reader: str, poison: str | None) -> list[Incoming]:
    items = [_message(seq, reader) for seq in range(1, n + 1)]
    if poison == "out_of_range":
        topic, payload = _message(1, reader)
        data = json.loads(payload)
        data["seq"] = 2**63
        items.insert(n // 2, (topic, json.dumps(data).encode()))
    elif poison in ("refused", "refused_at_commit"):
        items.insert(n // 2, _message(POISON_SEQ_OFFSET + n // 2, reader))
    return [Incoming(topic, payload, mid + 1, 1) for mid, (topic, payload) in enumerate(items)]


async def _measure(
    workdir: Path, n: int, rounds: int, poison: str | None, one_by_one: bool
) -> tuple[float, BatchOutcome]:
    """Median seconds to apply the batch, each round on a fresh stream."""
    name = f"{poison or 'clean'}-{'old' if one_by_one else 'new'}"
    engine = create_engine(f"sqlite+aiosqlite:///{workdir}/{name}.db")
    spool = Spool(workdir / f"{name}-spool.db", capacity_bytes=1024**3)
    await migrate(engine)
    registry = Registry()
    await registry.register(engine, STORE, [NODE])
    cls = OneByOneApplier if one_by_one else StateApplier
    applier = cls(
        engine,
        registry,
        SpoolHistory(spool),
        CloudMetrics(),
        IngestSettings(),
        domains=[RefuseMarked(at_commit=poison == "refused_at_commit")],
    )
    times = []
    outcome = BatchOutcome()
    try:
        for round_ in range(-1, rounds):  # round -1 warms up, and is not counted
            batch = _batch(n, f"reader-{round_ + 1}", poison)
            started = time.perf_counter()
            outcome = await applier.apply(batch)
            if round_ >= 0:
                times.append(time.perf_counter() - started)
            assert outcome.applied == n, outcome
    finally:
        await engine.dispose()
        spool.close()
    return statistics.median(times), outcome


async def _run(n: int, rounds: int) -> Result:
    # Each isolated message is logged with its traceback; a benchmark makes hundreds.
    logging.getLogger("cloud.ingest.apply").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="bench-poison-") as tmp:
        workdir = Path(tmp)
        clean, _ = await _measure(workdir, n, rounds, None, one_by_one=False)
        invalid, _ = await _measure(workdir, n, rounds, "out_of_range", one_by_one=False)
        split, _ = await _measure(workdir, n, rounds, "refused", one_by_one=False)
        bisected, _ = await _measure(workdir, n, rounds, "refused_at_commit", one_by_one=False)
        replayed, _ = await _measure(workdir, n, rounds, "refused", one_by_one=True)
    rows = [
        Row(f"batch of {n}, clean", clean * 1000, "ms"),
        Row(
            f"batch of {n} + a seq past 2**63-1 (refused at decode)",
            invalid * 1000,
            "ms",
            baseline=clean * 1000,
            baseline_name="clean batch",
            target="<= 1.5x",
            passed=invalid <= 1.5 * clean,
        ),
        Row(
            f"batch of {n} + a message failing its transaction, split around it",
            split * 1000,
            "ms",
            baseline=replayed * 1000,
            baseline_name="one at a time",
            target="<= 0.5x",
            passed=split <= 0.5 * replayed,
        ),
        Row(
            f"batch of {n} + a message failing at the end of its batch, bisected",
            bisected * 1000,
            "ms",
            baseline=replayed * 1000,
            baseline_name="one at a time",
            target="<= 0.5x",
            passed=bisected <= 0.5 * replayed,
        ),
    ]
    return Result(
        rows,
        notes=[
            f"SQLite, median of {rounds} rounds; clean batch {clean * 1000:.0f} ms; split"
            f" {split / clean:.1f}x clean, bisected {bisected / clean:.1f}x clean, one at a"
            f" time {replayed / clean:.1f}x clean"
        ],
    )


def run(quick: bool) -> Result:
    return asyncio.run(_run(500, 3 if quick else 7))


BENCHMARK = Benchmark(name="poison", title="Ingest: a batch with one poison message", run=run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(_run(args.messages, args.rounds))
    for row in result.rows:
        ratio = f"  ({row.ratio:.2f}x {row.baseline_name})" if row.ratio is not None else ""
        print(f"{row.metric}: {row.value:.1f} {row.unit}{ratio}")
    for note in result.notes:
        print(note)


if __name__ == "__main__":
    main()
