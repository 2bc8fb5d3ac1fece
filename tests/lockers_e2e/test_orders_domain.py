"""The lockers domain without an edge: real state store (SQLite and PostgreSQL), the real
ingest applier feeding it messages, and its API in-process (ASGI). Fast paths the end-to-end
tests cannot reach cheaply: refused and failed commands, expiry, queue bounds, KPIs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from cloud.api.app import create_app
from cloud.bus import LiveBus
from cloud.config import CloudSettings
from cloud.context import CloudContext
from cloud.domains import DomainContext, load_domains
from cloud.lockers import create_domain, kpis, orders, tables
from cloud.lockers.config import WebhookConfig
from cloud.lockers.domain import BankKeyChangedError, LockersDomain, _legacy_code_hash
from cloud.lockers.machine import ALLOWED, IllegalTransitionError, OrderState, check
from cloud.metrics import CloudMetrics
from protocols.codec import decode, encode, topic_for
from protocols.messages import (
    AckStatus,
    Birth,
    Command,
    CommandAck,
    CompartmentEvent,
    CompartmentState,
    CompartmentStatus,
    LockerEvents,
    Message,
    ShelfCount,
    StreamPosition,
    utc_now,
)
from protocols.pickup import Grant, PickupKey, keypad_code, qr_payload
from protocols.settings import ConfigError
from tests.cloud.cloudproc import OPS_KEY, SHOPPER_KEY, STAFF_KEY, cloud_config
from tests.cloud.conftest import database_url, postgres_server  # noqa: F401  (fixtures)
from tests.cloud.harness import StateHarness
from tests.lockers_e2e.webhook_server import WebhookServer

STORE, NODE, BANK = "store-042", "pi-1", "bank-1"
KEY_ENV = "STOREGATE_TEST_LOCKER_KEY_UNIT"
GTIN = "09506000134352"
STOCK = 100  # on the shelves (birth), so orders can reserve
S = OrderState


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Setup:
    harness: StateHarness
    domain: LockersDomain
    http: httpx.AsyncClient
    published: list[tuple[str, bytes]]
    locker_seq: int = 0

    async def call(
        self, method: str, path: str, key: str = STAFF_KEY, expect: int = 200, **kw: Any
    ) -> Any:
        response = await self.http.request(method, path, headers=bearer(key), **kw)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        return response.json()

    async def feed(self, *messages: Message) -> None:
        """Through the real applier; commands the domain queued are 'published' here."""
        outcome = await self.harness.feed(*messages)
        assert outcome.dead_lettered == 0
        self.published += [(topic_for(c), encode(c)) for c in outcome.commands]

    def commands(self) -> list[Command]:
        found = []
        for topic, payload in self.published:
            message = decode(payload, topic=topic)
            if isinstance(message, Command):
                found.append(message)
        return found

    async def ack(self, command: Command, status: AckStatus, reason: str | None = None) -> None:
        await self.feed(
            CommandAck(
                store=STORE,
                node=NODE,
                seq=command.seq,
                correlation_id=command.correlation_id,
                command=command.name,
                status=status,
                reason=reason,
            )
        )

    async def events(self, compartment: str, *causes: tuple[str, CompartmentState]) -> None:
        batch = []
        for cause, state in causes:
            self.locker_seq += 1
            batch.append(
                LockerEvents(
                    store=STORE,
                    node=NODE,
                    seq=self.locker_seq,
                    bank=BANK,
                    events=[
                        CompartmentEvent(
                            compartment=compartment, state=state, cause=cause, at=utc_now()
                        )
                    ],
                )
            )
        await self.feed(*batch)

    async def order(self, order_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.call("GET", f"/api/v1/orders/{order_id}", SHOPPER_KEY)
        return body

    async def staged_order(self) -> str:
        created = await self.call(
            "POST",
            f"/api/v1/stores/{STORE}/orders",
            SHOPPER_KEY,
            expect=201,
            json={"items": [{"gtin": GTIN, "quantity": 2}]},
        )
        for state in ("picking", "staged"):
            await self.call(
                "POST", f"/api/v1/orders/{created['order_id']}/state", json={"state": state}
            )
        return str(created["order_id"])

    async def ready_order(self) -> str:
        order_id = await self.staged_order()
        await self.call("POST", f"/api/v1/orders/{order_id}/assign", expect=202, json={})
        await self.ack(self.commands()[-1], AckStatus.DONE)
        order = await self.order(order_id)
        await self.events(order["compartment"], ("loaded", CompartmentState.AWAITING_PICKUP))
        await self.ack(self.commands()[-1], AckStatus.DONE)
        assert (await self.order(order_id))["state"] == "ready_for_pickup"
        return order_id


def lockers_config(**extra: Any) -> dict[str, Any]:
    return {
        "banks": [{"store": STORE, "node": NODE, "bank": BANK, "codes_key_env": KEY_ENV}],
        "hold_hours": 2,
        "expiry_check_s": 3600,
        **extra,
    }


@pytest.fixture
async def setup(
    database_url: str,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Setup]:
    monkeypatch.setenv(KEY_ENV, secrets.token_hex(32))
    config = cloud_config(1883, tmp_path, stores={STORE: [NODE]})
    config["domains"] = {"lockers": lockers_config()}
    settings = CloudSettings(**config)
    domain = create_domain(settings, settings.domains["lockers"])
    harness = StateHarness(database_url, {STORE: [NODE]}, domains=[domain])
    await harness.start()
    published: list[tuple[str, bytes]] = []
    bus, metrics = LiveBus(), CloudMetrics()
    await domain.start(
        DomainContext(settings, harness.engine, bus, metrics, lambda t, p: published.append((t, p)))
    )
    context = CloudContext(settings, harness.engine, harness.registry, bus, metrics, lambda: True)
    app = create_app(context, routers=[domain.router()])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as http:
        s = Setup(harness, domain, http, published)
        await s.feed(
            Birth(
                store=STORE,
                node=NODE,
                seq=0,
                bd_seq=1,
                version="1",
                shelves=[ShelfCount(shelf="shelf-1", gtin=GTIN, count=STOCK)],
                compartments={
                    BANK: [
                        CompartmentStatus(compartment=c, state=CompartmentState.AVAILABLE)
                        for c in ("0-01", "0-02")
                    ]
                },
            )
        )
        yield s
    await domain.stop()
    await harness.close()


def test_the_state_machine_allows_exactly_its_table() -> None:
    for current in S:
        for target in S:
            if target in ALLOWED[current]:
                check("o1", current, target)
            else:
                with pytest.raises(IllegalTransitionError, match=f"is {current}"):
                    check("o1", current, target)
    assert ALLOWED[S.COLLECTED] == ALLOWED[S.CANCELLED] == frozenset()


async def test_illegal_moves_are_409_with_the_reason(setup: Setup) -> None:
    created = await setup.call(
        "POST",
        f"/api/v1/stores/{STORE}/orders",
        SHOPPER_KEY,
        expect=201,
        json={"items": [{"gtin": GTIN}]},
    )
    order_id = created["order_id"]
    path = f"/api/v1/orders/{order_id}/state"
    refused = await setup.call("POST", path, expect=409, json={"state": "staged"})
    assert refused["error"] == "illegal_transition"
    assert "is created; it cannot become staged" in refused["detail"]
    await setup.call("POST", path, json={"state": "cancelled", "reason": "shopper changed mind"})
    final = await setup.call("POST", path, expect=409, json={"state": "picking"})
    assert "nothing (final state)" in final["detail"]
    # roles: the online channel cannot move orders, staff of another store cannot see them
    await setup.call("POST", path, SHOPPER_KEY, expect=403, json={"state": "picking"})
    await setup.call(
        "POST",
        "/api/v1/stores/nowhere/orders",
        SHOPPER_KEY,
        expect=404,
        json={"items": [{"gtin": GTIN}]},
    )
    order = await setup.order(order_id)
    assert [(t["from"], t["to"]) for t in order["transitions"]] == [
        (None, "created"),
        ("created", "cancelled"),
    ]


async def test_a_refused_reservation_is_an_exception_and_staff_can_retry(setup: Setup) -> None:
    order_id = await setup.staged_order()
    first = await setup.call("POST", f"/api/v1/orders/{order_id}/assign", expect=202, json={})
    reserve = setup.commands()[-1]
    assert (reserve.name, reserve.target, reserve.args["compartment"]) == (
        "locker.reserve",
        BANK,
        first["compartment"],
    )
    assert reserve.args["order_ref"] == order_id
    twice = await setup.call("POST", f"/api/v1/orders/{order_id}/assign", expect=409, json={})
    assert "waiting for the edge" in twice["detail"]
    await setup.ack(reserve, AckStatus.FAILED, "compartment 0-01 is out_of_service")
    order = await setup.order(order_id)
    assert order["state"] == "exception"
    assert "out_of_service" in order["reason"]
    assert order["compartment"] is None
    sent = await setup.call("GET", f"/api/v1/stores/{STORE}/lockers/commands")
    assert sent[0]["status"] == "failed"
    assert "out_of_service" in sent[0]["reason"]

    await setup.call("POST", f"/api/v1/orders/{order_id}/state", json={"state": "staged"})
    await setup.call(
        "POST", f"/api/v1/orders/{order_id}/assign", expect=202, json={"compartment": "0-02"}
    )
    await setup.ack(setup.commands()[-1], AckStatus.DONE)
    assert (await setup.order(order_id))["state"] == "assigned"
    # the parcel goes in: the cloud names the grant; neither the code nor a hash of it
    await setup.events("0-02", ("loaded", CompartmentState.AWAITING_PICKUP))
    set_code = setup.commands()[-1]
    assert set_code.name == "locker.set_code"
    assert set(set_code.args) == {"compartment", "order_seq", "expiry"}
    await setup.ack(set_code, AckStatus.DONE)
    assert (await setup.order(order_id))["state"] == "ready_for_pickup"
    code = await setup.call("POST", f"/api/v1/orders/{order_id}/pickup-code", SHOPPER_KEY)
    # what the edge derives from the command's grant with its copy of the key is the code
    # the shopper got: cloud and edge agree through protocols.pickup
    order_seq, expiry = set_code.args["order_seq"], set_code.args["expiry"]
    assert isinstance(order_seq, int)
    assert isinstance(expiry, str)
    grant = Grant.make(BANK, "0-02", order_seq, datetime.fromisoformat(expiry))
    key = PickupKey.from_env(KEY_ENV)
    assert keypad_code(key, grant) == code["code"]
    assert qr_payload(key, grant) == code["qr"]
    async with setup.harness.engine.connect() as connection:
        stored = (await connection.execute(select(tables.orders))).one()
    row = str(stored._asdict())
    assert code["code"] not in row
    assert _legacy_code_hash(code["code"], grant) not in row  # no crackable hash either

    # an order assigned before the keyed check (scrypt hash stored) still gets its code,
    # and a key changed since assignment is noticed
    def with_check(value: str) -> Any:
        return SimpleNamespace(**(stored._asdict() | {"code_hash": value}))

    assert (
        setup.domain.pickup_code(with_check(_legacy_code_hash(code["code"], grant)))[0]
        == (code["code"])
    )
    with pytest.raises(BankKeyChangedError, match="changed since the order was assigned"):
        setup.domain.pickup_code(with_check("0" * 64))


async def test_replayed_events_move_orders_but_not_the_mirror(setup: Setup) -> None:
    order_id = await setup.ready_order()
    compartment = (await setup.order(order_id))["compartment"]
    # a reconnect: the birth already shows the compartment free; the collected event that
    # happened during the outage is replayed after it (not live)
    setup.locker_seq += 1
    await setup.feed(
        Birth(
            store=STORE,
            node=NODE,
            seq=1,
            bd_seq=2,
            version="1",
            streams=[StreamPosition(stream=f"locker/{BANK}", seq=setup.locker_seq)],
            compartments={
                BANK: [
                    CompartmentStatus(compartment=c, state=CompartmentState.AVAILABLE)
                    for c in ("0-01", "0-02")
                ]
            },
        )
    )
    setup.locker_seq -= 1
    # (the edge's own view was pickup_open -> available; say pickup_open to prove the
    # replayed event does not write the mirror)
    await setup.events(compartment, ("collected", CompartmentState.PICKUP_OPEN))
    assert (await setup.order(order_id))["state"] == "collected"
    mirror = await setup.call("GET", f"/api/v1/stores/{STORE}/lockers")
    assert {c["compartment"]: c["state"] for c in mirror}[compartment] == "available"


async def test_a_pickup_reported_after_the_cloud_expired_the_order_wins(setup: Setup) -> None:
    order_id = await setup.ready_order()
    compartment = (await setup.order(order_id))["compartment"]
    assert await setup.domain.expire_due(utc_now() + timedelta(hours=3)) == 1
    await setup.events(compartment, ("collected", CompartmentState.AVAILABLE))
    order = await setup.order(order_id)
    assert order["state"] == "collected"
    moves = {(t["from"], t["to"], t["cause"]) for t in order["transitions"]}
    assert ("ready_for_pickup", "expired", "hold_over") in moves
    assert ("expired", "collected", "collected") in moves


async def test_hold_over_expires_then_emptied_returns_to_stock(setup: Setup) -> None:
    order_id = await setup.ready_order()
    compartment = (await setup.order(order_id))["compartment"]
    assert await setup.domain.expire_due(utc_now()) == 0
    assert await setup.domain.expire_due(utc_now() + timedelta(hours=3)) == 1
    expired = await setup.order(order_id)
    assert expired["state"] == "expired"
    assert expired["transitions"][-1]["at"] == expired["hold_until"]  # when the hold ended
    # the edge's own hold_expired arrives later: no double transition, no failure
    await setup.events(compartment, ("hold_expired", CompartmentState.EXPIRED_HOLD))
    await setup.events(compartment, ("emptied", CompartmentState.AVAILABLE))
    order = await setup.order(order_id)
    assert order["state"] == "returned_to_stock"
    causes = [(t["to"], t["cause"]) for t in order["transitions"]]
    assert ("expired", "hold_over") in causes
    assert ("returned_to_stock", "emptied") in causes
    assert [to for to, _ in causes].count("expired") == 1
    later = (utc_now() + timedelta(hours=3)).isoformat()
    stats = await setup.call(
        "GET", f"/api/v1/stores/{STORE}/lockers/kpis", OPS_KEY, params={"until": later}
    )
    assert (stats["collected"], stats["expired"], stats["pickup_rate"]) == (0, 1, 0.0)


async def test_webhook_queue_is_bounded_and_failures_are_visible(setup: Setup) -> None:
    webhook = WebhookServer(fail_next=10**6)  # the shop's backend is down for good
    await webhook.start()
    setup.domain.notifier.webhook = WebhookConfig.model_validate(
        {"url": webhook.url, "max_attempts": 2, "backoff_base_s": 0.05, "queue_size": 2}
    )
    setup.domain.notifier.start(setup.harness.engine)
    try:
        ids = [await setup.staged_order() for _ in range(3)]
        async with setup.domain.transaction() as tx:
            for order_id in ids:  # three notifications in one go: one more than the queue
                order = await orders.load(tx, order_id)
                assert order is not None
                await orders.move(tx, setup.domain.notifier, order, S.CANCELLED, "test", utc_now())
        dropped = await setup.call("GET", f"/api/v1/orders/{ids[0]}/notifications")
        assert dropped[0]["status"] == "dropped"
        assert "queue full" in dropped[0]["last_error"]
        for order_id in ids[1:]:
            for _ in range(100):
                rows = await setup.call("GET", f"/api/v1/orders/{order_id}/notifications")
                if rows[0]["status"] == "failed":
                    break
                await asyncio.sleep(0.05)
            assert rows[0]["status"] == "failed"
            assert (rows[0]["attempts"], rows[0]["last_error"]) == (2, "HTTP 503")
        assert len(webhook.received) == 4  # two orders x two attempts, the dropped one never
    finally:
        await webhook.close()


async def test_kpis_from_transitions(setup: Setup) -> None:
    t0 = datetime(2026, 11, 20, 8, 0, tzinfo=utc_now().tzinfo)

    def at(seconds: int) -> datetime:
        return t0 + timedelta(seconds=seconds)

    steps = {
        "a": [("created", 0), ("assigned", 30), ("ready_for_pickup", 60), ("collected", 360)],
        "b": [("created", 0), ("assigned", 30), ("ready_for_pickup", 120), ("expired", 3600)],
    }
    async with setup.harness.engine.begin() as connection:
        for order_id, moves in steps.items():
            for state, seconds in moves:
                await connection.execute(
                    insert(tables.transitions).values(
                        order_id=order_id, store_id=STORE, to_state=state, cause="t", at=at(seconds)
                    )
                )
        await connection.execute(
            insert(tables.alarms).values(
                store_id=STORE, bank=BANK, compartment="0-01", kind="door_ajar", at=at(100)
            )
        )
        result = await kpis.compute(connection, STORE, t0, at(7200))
    assert result["order_to_ready_s"] == {"count": 2, "avg": 90.0, "p50": 90.0, "max": 120.0}
    assert result["dwell_s"] == {"count": 1, "avg": 300.0, "p50": 300.0, "max": 300.0}
    assert (result["collected"], result["expired"], result["pickup_rate"]) == (1, 1, 0.5)
    # a held 330 s; b from 30 s to the end of the period (expired parcels still hold)
    assert result["utilisation"] == round((330 + 7170) / (2 * 7200), 6)
    assert result["door_alarms"] == {"forced_open": 0, "door_ajar": 1, "code_burst_alarm": 0}


def test_config_errors_name_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    config = cloud_config(1883, tmp_path, stores={STORE: [NODE]})
    config["domains"] = {"lockers": lockers_config()}
    with pytest.raises(ConfigError, match=f"domains.lockers: environment variable {KEY_ENV}"):
        load_domains(CloudSettings(**config))
    config["domains"] = {"lockers": {"bankz": []}}
    with pytest.raises(ConfigError, match=r"domains\.lockers: bankz: Extra inputs"):
        load_domains(CloudSettings(**config))
