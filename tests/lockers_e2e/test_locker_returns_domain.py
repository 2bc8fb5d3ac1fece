"""Locker returns in the cloud without an edge: the real state store (SQLite and
PostgreSQL), the real ingest applier and the API in-process (the `setup` of
test_orders_domain.py). The paths the end-to-end test does not take: compartment sizes,
a refused `locker.return`, an expired drop-off, a damaged item, the compartment kept from
pickup orders meanwhile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from cloud.lockers import tables
from cloud.lockers.config import LockersOptions
from protocols.messages import (
    AckStatus,
    Birth,
    CompartmentState,
    CompartmentStatus,
    ItemEvent,
    ItemEventKind,
    RfidEvents,
    StreamPosition,
)
from protocols.pickup import Grant, PickupKey, dropoff_code, key_check
from tests.cloud.cloudproc import SHOPPER_KEY, STAFF_KEY
from tests.cloud.conftest import database_url, postgres_server  # noqa: F401  (fixtures)
from tests.lockers_e2e import test_orders_domain
from tests.lockers_e2e.test_orders_domain import (
    BANK,
    GTIN,
    KEY_ENV,
    NODE,
    STORE,
    Setup,
)

# the fixtures: the domain on SQLite and PostgreSQL
setup = test_orders_domain.setup
C = CompartmentState
EPC_A, EPC_B = "3034257BF7194E4000000101", "3034257BF7194E4000000102"


async def collected_order(setup: Setup) -> tuple[str, str]:
    """A locker order of 2 units, picked up: (order id, the compartment it was in)."""
    order_id = await setup.ready_order()
    compartment = (await setup.order(order_id))["compartment"]
    await setup.events(compartment, ("collected", C.AVAILABLE))
    assert (await setup.order(order_id))["state"] == "collected"
    return order_id, str(compartment)


async def start(
    setup: Setup, order_id: str, *items: dict[str, str], expect: int = 201, **body: Any
) -> Any:
    return await setup.call(
        "POST",
        f"/api/v1/orders/{order_id}/locker-return",
        SHOPPER_KEY,
        expect=expect,
        json={"items": list(items), **body},
    )


def sized(setup: Setup, sizes: dict[str, str]) -> None:
    config = setup.domain.banks[(STORE, BANK)]
    setup.domain.banks[(STORE, BANK)] = config.model_copy(update={"compartment_sizes": sizes})


async def test_the_smallest_fitting_compartment_and_only_a_keyed_check_of_the_code(
    setup: Setup,
) -> None:
    order_id, _ = await collected_order(setup)
    sized(setup, {"0-01": "small", "0-02": "large"})
    started = await start(setup, order_id, {"epc": EPC_A}, size="medium")
    assert (started["compartment"], started["state"]) == ("0-02", "requested")
    command = setup.commands()[-1]
    assert command.name == "locker.return"
    assert set(command.args) == {"compartment", "order_ref", "order_seq", "expiry"}
    assert (command.args["compartment"], command.args["order_ref"]) == ("0-02", order_id)
    assert command.args["order_seq"] == started["id"]
    # what the edge derives from the command's grant is the code the shopper got
    expiry = command.args["expiry"]
    assert isinstance(expiry, str)
    grant = Grant.make(BANK, "0-02", started["id"], datetime.fromisoformat(expiry))
    key = PickupKey.from_env(KEY_ENV)
    assert dropoff_code(key, grant) == started["code"]
    async with setup.harness.engine.connect() as connection:
        row = (await connection.execute(select(tables.locker_returns))).one()
    assert row.key_check == key_check(key, grant)
    assert started["code"] not in str(row._asdict())
    shown = await setup.order(order_id)
    assert "code" not in shown["locker_returns"][0]
    assert shown["return_status"] == "requested"
    # the only large one is kept for this return: a large ask finds nothing, while the
    # pickup side does not assign it either
    other, _ = await collected_order(setup)
    refused = await start(setup, other, {"epc": EPC_B}, size="large", expect=409)
    assert refused["error"] == "no_compartment"
    small = await start(setup, other, {"epc": EPC_B})  # small fits 0-01
    assert small["compartment"] == "0-01"
    staged = await setup.staged_order()
    full = await setup.call("POST", f"/api/v1/orders/{staged}/assign", expect=409, json={})
    assert "no free compartment" in full["detail"]


async def test_a_refused_or_expired_return_gives_the_items_back(setup: Setup) -> None:
    order_id, _ = await collected_order(setup)
    first = await start(setup, order_id, {"epc": EPC_A})
    await setup.ack(setup.commands()[-1], AckStatus.FAILED, "compartment 0-01 is not empty")
    shown = await setup.order(order_id)
    assert shown["return_status"] == "failed"
    assert "not empty" in shown["locker_returns"][0]["reason"]
    assert shown["returns"] == []  # the shopper may try again
    second = await start(setup, order_id, {"epc": EPC_A})
    assert second["id"] != first["id"]
    await setup.ack(setup.commands()[-1], AckStatus.DONE)
    assert (await setup.order(order_id))["return_status"] == "return_pending"
    await setup.events(second["compartment"], ("return_expired", C.AVAILABLE))
    shown = await setup.order(order_id)
    assert (shown["return_status"], shown["returns"]) == ("expired", [])
    # the cloud's own sweep, for a node offline when the code expired; a drop-off it
    # reports later (made just before the expiry) wins, and its items are back
    third = await start(setup, order_id, {"epc": EPC_A, "condition": "damaged"})
    await setup.ack(setup.commands()[-1], AckStatus.DONE)
    expires_at = datetime.fromisoformat(third["expires_at"])
    await setup.domain.expire_due(expires_at - timedelta(microseconds=1))
    assert (await setup.order(order_id))["return_status"] == "return_pending"
    await setup.domain.expire_due(expires_at)  # the code stops at its expiry, so does this
    shown = await setup.order(order_id)
    assert (shown["return_status"], shown["returns"]) == ("expired", [])
    await setup.events(third["compartment"], ("returned_dropped", C.RETURN_DROPPED))
    shown = await setup.order(order_id)
    assert shown["return_status"] == "returned_in_locker"
    assert shown["locker_returns"][-1]["reason"] is None
    assert [(r["epc"], r["condition"], r["status"]) for r in shown["returns"]] == [
        (EPC_A, "damaged", "expected")
    ]


async def test_dropped_emptied_and_read_back_damaged_completes_and_holds_it_back(
    setup: Setup,
) -> None:
    order_id, _ = await collected_order(setup)
    started = await start(setup, order_id, {"epc": EPC_A, "condition": "damaged"}, {"epc": EPC_B})
    compartment = started["compartment"]
    over = await start(setup, order_id, {"epc": "3034257BF7194E4000000103"}, expect=409)
    assert "under way" in over["detail"]
    sent = setup.commands()[-1]
    await setup.ack(sent, AckStatus.DONE)
    # the node's next birth re-sends the pending return with the same grant (an edge that
    # lost its state takes it back), and releases nothing
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
                    CompartmentStatus(
                        compartment=c,
                        state=C.RETURN_PENDING if c == compartment else C.AVAILABLE,
                        order_ref=order_id if c == compartment else None,
                    )
                    for c in ("0-01", "0-02")
                ]
            },
        )
    )
    resent = setup.commands()[-1]
    assert resent.name == "locker.return"
    assert resent.correlation_id != sent.correlation_id
    assert resent.args == sent.args
    assert "locker.release" not in [c.name for c in setup.commands()]
    # the drop-off: the staff task appears
    await setup.events(compartment, ("returned_dropped", C.RETURN_DROPPED))
    tasks = await setup.call("GET", f"/api/v1/stores/{STORE}/lockers/returns", STAFF_KEY)
    assert [(t["state"], t["task"]) for t in tasks] == [
        ("returned_in_locker", f"empty compartment {BANK}/{compartment}")
    ]
    # read back in before staff emptied it: received, but the return waits for the empty
    await setup.feed(rfid(1, EPC_A))
    assert (await setup.order(order_id))["return_status"] == "returned_in_locker"
    await setup.events(compartment, ("return_emptied", C.AVAILABLE))
    shown = await setup.order(order_id)
    assert shown["return_status"] == "emptied"  # EPC_B not read yet
    await setup.feed(rfid(2, EPC_B))
    shown = await setup.order(order_id)
    assert shown["return_status"] == "return_completed"
    assert {r["epc"]: r["status"] for r in shown["returns"]} == {
        EPC_A: "damaged",
        EPC_B: "received",
    }
    done = await setup.call(
        "GET", f"/api/v1/stores/{STORE}/lockers/returns", params={"state": "return_completed"}
    )
    assert [(t["id"], t["task"]) for t in done] == [(started["id"], None)]


def rfid(seq: int, epc: str) -> RfidEvents:
    now = datetime.now(UTC)
    return RfidEvents(
        store=STORE,
        node=NODE,
        seq=seq,
        reader="returns-desk",
        event_time=now,
        items=[ItemEvent(kind=ItemEventKind.ARRIVED, epc=epc, gtin=GTIN, shelf="returns", at=now)],
    )


def test_compartment_sizes_are_checked_in_the_config() -> None:
    bank = {"store": STORE, "node": NODE, "bank": BANK, "codes_key_env": KEY_ENV}
    ok = LockersOptions(banks=[{**bank, "compartment_sizes": {"0-01": "large"}}])
    assert ok.banks[0].compartment_sizes == {"0-01": "large"}
    with pytest.raises(ValidationError, match="'small', 'medium' or 'large'"):
        LockersOptions(banks=[{**bank, "compartment_sizes": {"0-01": "huge"}}])
    with pytest.raises(ValidationError, match="compartment_sizes"):
        LockersOptions(banks=[{**bank, "compartment_sizes": {"0 01": "small"}}])


async def test_a_return_called_off_frees_the_compartment_and_a_late_drop_off_still_wins(
    setup: Setup,
) -> None:
    order_id, _ = await collected_order(setup)
    cancel = f"/api/v1/orders/{order_id}/locker-return/cancel"
    nothing = await setup.call("POST", cancel, SHOPPER_KEY, expect=409)
    assert "no locker return under way" in nothing["detail"]
    # called off before the edge even acked it (requested)
    first = await start(setup, order_id, {"epc": EPC_A})
    called_off = await setup.call("POST", cancel, SHOPPER_KEY)
    assert (called_off["id"], called_off["state"]) == (first["id"], "cancelled")
    assert called_off["reason"].startswith("called off by")
    release = setup.commands()[-1]
    assert release.name == "locker.release"
    assert (release.args["compartment"], release.args["order_ref"]) == (
        first["compartment"],
        order_id,
    )
    shown = await setup.order(order_id)
    assert (shown["return_status"], shown["returns"]) == ("cancelled", [])
    again = await setup.call("POST", cancel, SHOPPER_KEY, expect=409)
    assert "no locker return under way" in again["detail"]
    # called off while pending at the edge; the parcel went in before the release reached
    # it: the edge keeps it and reports the drop-off, which wins over the cancel
    second = await start(setup, order_id, {"epc": EPC_A})
    await setup.ack(setup.commands()[-1], AckStatus.DONE)
    assert (await setup.call("POST", cancel, STAFF_KEY))["state"] == "cancelled"
    assert (await setup.order(order_id))["returns"] == []
    await setup.events(second["compartment"], ("returned_dropped", C.RETURN_DROPPED))
    shown = await setup.order(order_id)
    assert shown["return_status"] == "returned_in_locker"
    assert [(r["epc"], r["status"]) for r in shown["returns"]] == [(EPC_A, "expected")]
    # a parcel in the compartment cannot be called off: staff empty it
    refused = await setup.call("POST", cancel, SHOPPER_KEY, expect=409)
    assert "staff empty it" in refused["detail"]
