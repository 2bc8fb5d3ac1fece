"""The domain seam: domain hooks run inside the batch transaction (cloud/domains.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cloud.domains import Domain, DomainTx
from protocols.messages import Command, Message, RfidEvents, utc_now
from tests.cloud.harness import StateHarness
from tests.cloud.streams import GTIN, NODE, STORE, rfid

SHELF = "aisle3-shelf2"
seen = sa.Table(
    "test_domain_seen",
    sa.MetaData(),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("live", sa.Boolean, nullable=False),
)


class Recorder(Domain):
    name = "recorder"

    def __init__(self, *, fail_on_seq: int | None = None) -> None:
        self.fail_on_seq = fail_on_seq
        self.inventory_seen: list[dict[str, list[dict[str, object]]]] = []

    async def on_message(self, tx: DomainTx, message: Message, *, live: bool) -> None:
        if isinstance(message, RfidEvents):
            await tx.connection.execute(seen.insert().values(seq=message.seq, live=live))
            if message.seq == self.fail_on_seq:
                raise RuntimeError("domain failure")
            tx.change("recorder", message.store, {"seq": message.seq})

    async def before_commit(self, tx: DomainTx) -> None:
        self.inventory_seen.append(dict(tx.inventory_changes))
        tx.command(
            Command(
                store=STORE,
                node=NODE,
                seq=0,
                name="recorder.ping",
                correlation_id="recorder0001",
                expires_at=utc_now() + timedelta(seconds=30),
            )
        )


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[StateHarness]:
    recorder = Recorder(fail_on_seq=3)
    h = StateHarness(database_url, {STORE: [NODE]}, domains=[recorder])
    await h.start()
    async with h.engine.begin() as connection:
        await connection.run_sync(seen.metadata.create_all)
    yield h
    async with h.engine.begin() as connection:
        await connection.run_sync(seen.metadata.drop_all)
    await h.close()


async def test_domain_writes_commit_with_the_batch_and_queue_after_commit(
    harness: StateHarness,
) -> None:
    outcome = await harness.feed(rfid(1, {(SHELF, GTIN): 5}), rfid(2, {(SHELF, GTIN): 6}))
    assert [row.seq for row in await harness.rows(seen)] == [1, 2]
    assert [c.data["seq"] for c in outcome.changes if c.kind == "recorder"] == [1, 2]
    assert [c.name for c in outcome.commands] == ["recorder.ping"]
    recorder = harness.applier.domains[0]
    assert isinstance(recorder, Recorder)
    assert recorder.inventory_seen[-1][STORE] == [{"shelf": SHELF, "gtin": GTIN, "count": 6}]
    # a duplicate is not shown to the domain again
    await harness.feed(rfid(2, {(SHELF, GTIN): 6}))
    assert [row.seq for row in await harness.rows(seen)] == [1, 2]


async def test_a_failing_domain_rolls_back_only_its_message(harness: StateHarness) -> None:
    outcome = await harness.feed(rfid(1, {(SHELF, GTIN): 1}), rfid(3, {(SHELF, GTIN): 3}))
    # the batch is isolated: seq 1 applies, seq 3 is dead-lettered with everything it wrote
    assert [row.seq for row in await harness.rows(seen)] == [1]
    assert outcome.dead_lettered == 1
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 1}


def test_the_example_config_loads_every_domain() -> None:
    from cloud.config import load_cloud_settings
    from cloud.domains import BUILTIN_DOMAINS, load_domains
    from tests.conftest import REPO_ROOT

    settings = load_cloud_settings(REPO_ROOT / "examples" / "cloud.yaml")
    names = {domain.name for domain in load_domains(settings)}
    assert names == {module.rsplit(".", 1)[1] for module in BUILTIN_DOMAINS}


async def test_a_backlog_of_heartbeats_shows_each_node_once_with_its_newest(
    database_url: str,
) -> None:
    from cloud.dashboard import DashboardDomain, DashboardOptions
    from protocols.messages import Health
    from tests.samples import all_samples

    sample = next(m for m in all_samples() if isinstance(m, Health))
    assert (sample.store, sample.node) == (STORE, NODE)

    def heartbeat(seq: int, uptime_s: float) -> Health:
        return sample.model_copy(update={"seq": seq, "uptime_s": uptime_s})

    h = StateHarness(database_url, {STORE: [NODE]}, domains=[DashboardDomain(DashboardOptions())])
    await h.start()
    try:
        outcome = await h.feed(heartbeat(1, 10.0), heartbeat(2, 20.0), heartbeat(3, 30.0))
        shown = [c for c in outcome.changes if c.kind == "node_health"]
        assert [(c.store, c.data["node"], c.data["uptime_s"]) for c in shown] == [
            (STORE, NODE, 30.0)
        ]
        assert (await h.node(STORE, NODE)).health["uptime_s"] == 30.0
        outcome = await h.feed(heartbeat(4, 40.0))  # the next batch shows its own
        assert [c.data["uptime_s"] for c in outcome.changes if c.kind == "node_health"] == [40.0]
    finally:
        await h.close()
