"""Orders end to end over the real broker: the online channel's intake, the RFID node's
shelves, the cloud, and the edge runtime driving a simulated CU16 bank on ptys.

- online order -> reservation -> pick list -> staged with the scanned EPC -> locker ready ->
  collected (the EPC sold) -> return read back in (no longer sold) -> stock back;
- expiry at the edge -> emptied -> returned to stock -> stock back;
- cancel -> the compartment is free (or, parcel in, no longer opens) at the edge;
- edge restart mid-hold: the code still opens; a hold the edge lost and one it should not
  have converge from the cloud's birth re-send.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from protocols.messages import CompartmentState, ItemEventKind, utc_now
from tests.lockers_e2e.rfid_node import RfidNode
from tests.lockers_e2e.rig import BANK, GTIN, SHOPPER_KEY, STORE, Rig, running_rig
from tests.servers import MosquittoBroker

pytestmark = pytest.mark.timeout(120)

S = CompartmentState
ARRIVED, DEPARTED = ItemEventKind.ARRIVED, ItemEventKind.DEPARTED
EPC_1, EPC_2, EPC_3 = (f"3034257BF7194E400000000{n}" for n in (1, 2, 3))
# the inventory domain's default safety stock: one unit per GTIN is never sold online


async def place(rig: Rig, external_id: str, quantity: int = 1, expect: int = 201) -> Any:
    body = {
        "external_id": external_id,
        "store": STORE,
        "lines": [{"gtin": GTIN, "quantity": quantity}],
        "method": "locker",
        "shopper": "app-token-1",
    }
    return await rig.call("POST", "/api/v1/orders", SHOPPER_KEY, expect=expect, json=body)


async def placed_when_stocked(rig: Rig, external_id: str, quantity: int = 1) -> Any:
    """The order, once the RFID node's counts have reached the cloud (a retry is the same
    request: the same order, never a second one)."""

    async def attempt() -> Any:
        return await rig.http.post(
            "/api/v1/orders",
            headers={"Authorization": f"Bearer {SHOPPER_KEY}"},
            json={
                "external_id": external_id,
                "store": STORE,
                "lines": [{"gtin": GTIN, "quantity": quantity}],
            },
        )

    response = await rig.eventually(attempt, lambda r: r.status_code in (200, 201), "stock")
    return response.json()


async def units_sold(rig: Rig) -> int:
    suggestions = await rig.call("GET", f"/api/v1/stores/{STORE}/reorder-suggestions")
    rows = [i for i in suggestions["items"] if i["gtin"] == GTIN]
    return int(rows[0]["reasoning"]["units_sold"]) if rows else 0


async def wait_on_shelf(rig: Rig, order_id: str, units: int) -> None:
    """Until the cloud counts `units` of the order's GTIN on shelf-1 (RFID is asynchronous)."""

    async def on_shelf() -> int:
        picks = await rig.call("GET", f"/api/v1/orders/{order_id}/pick-list")
        shelves = {loc["shelf"]: loc["on_shelf"] for loc in picks["lines"][0]["locations"]}
        return int(shelves.get("shelf-1", 0))

    await rig.eventually(on_shelf, lambda n: n == units, f"{units} on shelf-1")


async def to_ready(rig: Rig, order_id: str, lock: int, epcs: list[str] | None = None) -> str:
    """Pick, stage into compartment 0-0<lock+1> (with the scanned `epcs`), load, wait for
    ready: the pickup code."""
    compartment = f"0-{lock + 1:02d}"
    await rig.call("POST", f"/api/v1/orders/{order_id}/pick")
    body: dict[str, Any] = {"method": "locker", "bank": BANK, "compartment": compartment}
    if epcs is not None:
        body["epcs"] = epcs
    staged = await rig.call("POST", f"/api/v1/orders/{order_id}/stage", json=body)
    assert (staged["status"], staged["compartment"]) == ("staged", compartment)
    await rig.wait_state(order_id, "assigned")
    await rig.call(
        "POST",
        f"/api/v1/stores/{STORE}/lockers/{BANK}/{compartment}/open-for-loading",
        expect=202,
    )
    await rig.person().load(0, lock)
    ready = await rig.wait_state(order_id, "ready_for_pickup")
    assert ready["status"] == "ready"
    code = await rig.call("POST", f"/api/v1/orders/{order_id}/pickup-code", SHOPPER_KEY)
    return str(code["code"])


async def test_online_order_to_collection_and_a_return_back_to_stock(
    tmp_path: Path, persistent_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_rig(tmp_path, persistent_broker, monkeypatch, reserve_stock=True) as rig:
        rfid = RfidNode(persistent_broker.host, persistent_broker.port, STORE)
        try:
            await rfid.birth({})
            await rfid.items(ARRIVED, GTIN, "shelf-1", EPC_1, EPC_2, EPC_3)
            order = await placed_when_stocked(rig, "web-1")
            order_id = order["order_id"]
            assert order["status"] == "reserved"
            # 3 on hand - 1 safety stock - 1 reserved: one left
            assert (await place(rig, "web-2", quantity=2, expect=409))["error"] == (
                "insufficient_stock"
            )
            picks = await rig.call("GET", f"/api/v1/orders/{order_id}/pick-list")
            assert picks["lines"][0]["locations"][0]["shelf"] == "shelf-1"
            (taken,) = picks["lines"][0]["locations"][0]["epcs"]
            code = await to_ready(rig, order_id, lock=0, epcs=[taken])
            await rfid.items(DEPARTED, GTIN, "shelf-1", taken)  # picked off the shelf
            await wait_on_shelf(rig, order_id, 2)
            await rig.person().collect(rig.driver.simulator, 0, 0, code)
            collected = await rig.wait_state(order_id, "collected")
            assert collected["status"] == "collected"
            # the locker's pickup sold the scanned EPC (the reorder demand counts it)
            assert [e["epc"] for e in collected["picked"]["epcs"]] == [taken]
            assert await units_sold(rig) == 1

            await rig.call(
                "POST",
                f"/api/v1/orders/{order_id}/returns",
                SHOPPER_KEY,
                expect=201,
                json={"method": "counter", "items": [{"epc": taken}]},
            )
            assert (await place(rig, "web-3", quantity=2, expect=409))["error"] == (
                "insufficient_stock"
            )
            await rfid.items(ARRIVED, GTIN, "counter", taken)  # the counter's reader
            shown = await rig.eventually(
                lambda: rig.order(order_id),
                lambda o: o["returns"] and o["returns"][0]["status"] == "received",
                "the return read back in",
            )
            assert shown["returns"][0]["gtin"] == GTIN
            assert await units_sold(rig) == 0  # the store's again, no longer sold
            # back in stock: both units can be sold again
            # back in stock: 3 on hand again, 2 can be sold
            assert (await placed_when_stocked(rig, "web-4", quantity=2))["status"] == "reserved"
        finally:
            rfid.close()


async def test_expiry_at_the_edge_returns_the_goods_to_stock(
    tmp_path: Path, persistent_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_s = 8.0  # from the reservation of the compartment; loading takes ~2 s
    async with running_rig(
        tmp_path, persistent_broker, monkeypatch, reserve_stock=True, hold_hours=hold_s / 3600
    ) as rig:
        rfid = RfidNode(persistent_broker.host, persistent_broker.port, STORE)
        try:
            await rfid.birth({})
            await rfid.items(ARRIVED, GTIN, "shelf-1", EPC_1, EPC_2)
            order_id = (await placed_when_stocked(rig, "exp-1"))["order_id"]
            await to_ready(rig, order_id, lock=1)
            await rfid.items(DEPARTED, GTIN, "shelf-1", EPC_1)
            await wait_on_shelf(rig, order_id, 1)
            assert (await place(rig, "exp-2", expect=409))["error"] == "insufficient_stock"
            expired = await rig.wait_state(order_id, "expired")  # the edge's hold_expired
            assert expired["status"] == "expired"
            assert rig.driver.compartments["0-02"].state is S.EXPIRED_HOLD
            # staff take the parcel out and put it back on the shelf
            await rig.call("POST", f"/api/v1/stores/{STORE}/lockers/{BANK}/0-02/open", expect=202)
            # each step seen by the edge's poll before the next, as with a real person
            seen = rig.driver.compartments["0-02"]
            await rig.eventually(lambda: seen.door_open, bool, "the edge saw the door open")
            rig.driver.bank.take_item(0, 1)
            await rig.eventually(lambda: not seen.occupied, bool, "the edge saw it emptied")
            rig.driver.bank.close_door(0, 1)
            done = await rig.wait_state(order_id, "returned_to_stock")
            assert done["compartment"] == "0-02"
            assert rig.driver.compartments["0-02"].state.value == "available"
            await rfid.items(ARRIVED, GTIN, "shelf-1", EPC_1)
            assert (await placed_when_stocked(rig, "exp-3"))["status"] == "reserved"
        finally:
            rfid.close()


async def test_cancel_frees_the_compartment_at_the_edge(
    tmp_path: Path, persistent_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_rig(tmp_path, persistent_broker, monkeypatch) as rig:
        loaded = (await place(rig, "cx-1"))["order_id"]
        code = await to_ready(rig, loaded, lock=0)
        waiting = (await place(rig, "cx-2"))["order_id"]
        await rig.call("POST", f"/api/v1/orders/{waiting}/pick")
        await rig.call(
            "POST",
            f"/api/v1/orders/{waiting}/stage",
            json={"bank": BANK, "compartment": "0-02"},
        )
        await rig.wait_state(waiting, "assigned")
        assert rig.driver.compartments["0-02"].order_ref == waiting

        for order_id in (waiting, loaded):
            cancelled = await rig.call(
                "POST", f"/api/v1/orders/{order_id}/cancel", SHOPPER_KEY, json={}
            )
            assert cancelled["status"] == "cancelled"
        # empty: free again; parcel in: no hold, no code, staff empty it
        await rig.eventually(
            lambda: rig.driver.compartments["0-02"].state, lambda s: s is S.AVAILABLE, "0-02 free"
        )
        assert rig.driver.compartments["0-02"].order_ref is None
        await rig.eventually(
            lambda: rig.driver.compartments["0-01"].state,
            lambda s: s is S.EXPIRED_HOLD,
            "0-01 released",
        )
        assert rig.driver.grant_for("0-01") is None
        rig.driver.simulator.enter_code(code)
        await rig.eventually(
            lambda: rig.driver.counters.code_wrong, lambda n: n == 1, "the code refused"
        )
        assert not rig.driver.bank.lock(0, 0).latch_released
        sent = await rig.call("GET", f"/api/v1/stores/{STORE}/lockers/commands")
        releases = [c for c in sent if c["name"] == "locker.release"]
        assert sorted((c["order_id"], c["status"]) for c in releases) == sorted(
            [(loaded, "done"), (waiting, "done")]
        )
        # a compartment freed this way takes the next order
        again = (await place(rig, "cx-3"))["order_id"]
        await rig.call("POST", f"/api/v1/orders/{again}/pick")
        await rig.call(
            "POST", f"/api/v1/orders/{again}/stage", json={"bank": BANK, "compartment": "0-02"}
        )
        await rig.wait_state(again, "assigned")


async def test_edge_restart_mid_hold_and_birth_resend_converge(
    tmp_path: Path, persistent_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_rig(tmp_path, persistent_broker, monkeypatch) as rig:
        kept = (await place(rig, "rs-1"))["order_id"]
        kept_code = await to_ready(rig, kept, lock=0)
        # the shopper asks for more time: a new hold end, so a new code; the old one is void
        extended = await rig.call(
            "POST", f"/api/v1/orders/{kept}/extend", SHOPPER_KEY, json={"hours": 1}
        )
        await rig.eventually(
            lambda: rig.driver.compartments["0-01"].hold_until,
            lambda until: (
                until is not None and until.isoformat().startswith(extended["hold_until"][:19])
            ),
            "the edge moved the hold's end",
        )
        old_code = kept_code
        kept_code = (await rig.call("POST", f"/api/v1/orders/{kept}/pickup-code", SHOPPER_KEY))[
            "code"
        ]
        assert kept_code != old_code
        lost = (await place(rig, "rs-2"))["order_id"]
        lost_code = await to_ready(rig, lost, lock=1)
        hold_until = (utc_now() + timedelta(hours=1)).isoformat()

        def lose_one_hold_and_gain_a_stale_one() -> None:
            # a restored backup: 0-02's hold is gone, 0-03 holds an order the cloud never
            # put there
            with sqlite3.connect(rig.edge_state) as db:
                db.execute("DELETE FROM compartments WHERE compartment = '0-02'")
                db.execute(
                    "INSERT OR REPLACE INTO compartments VALUES"
                    " (?, '0-03', 'reserved', 'ghost-order', ?, NULL, 0, NULL, NULL)",
                    (BANK, hold_until),
                )

        await rig.restart_edge(lose_one_hold_and_gain_a_stale_one)
        await rig.eventually(
            lambda: (
                rig.driver.compartments["0-02"].order_ref,
                rig.driver.compartments["0-03"].state,
            ),
            lambda v: v == (lost, S.AVAILABLE),
            "the edge converged on the cloud's view",
        )
        assert rig.driver.compartments["0-02"].state is S.AWAITING_PICKUP
        # both codes open: the kept hold survived the restart, the lost one was re-sent
        for order_id, code, lock in ((kept, kept_code, 0), (lost, lost_code, 1)):
            await rig.person().collect(rig.driver.simulator, 0, lock, code)
            assert (await rig.wait_state(order_id, "collected"))["status"] == "collected"
