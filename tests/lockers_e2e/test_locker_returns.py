"""A return into a locker compartment, end to end over the real broker: the cloud, the edge
runtime driving a simulated CU16 bank on ptys (board and keypad), and an RFID node.

order collected -> locker return (compartment + drop-off code, once) -> return_pending at
the edge -> edge restart -> the code still opens -> parcel in, door shut -> returned in the
locker + staff task -> staff empty it -> the compartment is free -> the EPC read back in at
the returns desk -> the item is back in stock (+1) and the order shows the return complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from protocols.messages import CompartmentState, ItemEventKind
from tests.lockers_e2e.rfid_node import RfidNode
from tests.lockers_e2e.rig import BANK, GTIN, SHOPPER_KEY, STAFF_KEY, STORE, Rig, running_rig
from tests.lockers_e2e.test_orders_e2e import placed_when_stocked, to_ready, wait_on_shelf
from tests.servers import MosquittoBroker

pytestmark = pytest.mark.timeout(180)

S = CompartmentState
ARRIVED, DEPARTED = ItemEventKind.ARRIVED, ItemEventKind.DEPARTED
EPC_1, EPC_2 = "3034257BF7194E4000000011", "3034257BF7194E4000000012"


async def counted(rig: Rig) -> int:
    rows = await rig.call("GET", f"/api/v1/stores/{STORE}/inventory", params={"gtin": GTIN})
    return sum(int(row["count"]) for row in rows)


async def return_status(rig: Rig, order_id: str, status: str) -> dict[str, Any]:
    shown: dict[str, Any] = await rig.eventually(
        lambda: rig.order(order_id),
        lambda o: o["return_status"] == status,
        f"the order's return {status}",
    )
    return shown


async def test_locker_return_drop_off_staff_empty_and_read_back_into_stock(
    tmp_path: Path, persistent_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_rig(tmp_path, persistent_broker, monkeypatch, reserve_stock=True) as rig:
        rfid = RfidNode(persistent_broker.host, persistent_broker.port, STORE)
        try:
            await rfid.birth({})
            await rfid.items(ARRIVED, GTIN, "shelf-1", EPC_1, EPC_2)
            order_id = (await placed_when_stocked(rig, "ret-1"))["order_id"]
            picks = await rig.call("GET", f"/api/v1/orders/{order_id}/pick-list")
            (taken,) = picks["lines"][0]["locations"][0]["epcs"]
            pickup_code = await to_ready(rig, order_id, lock=1)
            await rfid.items(DEPARTED, GTIN, "shelf-1", taken)  # picked off the shelf
            await wait_on_shelf(rig, order_id, 1)
            await rig.person().collect(rig.driver.simulator, 0, 1, pickup_code)
            await rig.wait_state(order_id, "collected")
            before = await counted(rig)
            assert before == 1

            # a return of an order that was not collected, or of an EPC twice: refused
            path = f"/api/v1/orders/{order_id}/locker-return"
            twice = {"items": [{"epc": taken}, {"epc": taken}]}
            await rig.call("POST", path, SHOPPER_KEY, expect=422, json=twice)
            started = await rig.call(
                "POST", path, SHOPPER_KEY, expect=201, json={"items": [{"epc": taken}]}
            )
            assert (started["state"], started["bank"]) == ("requested", BANK)
            compartment = started["compartment"]
            assert compartment == "0-01"  # the first free one (0-02 is as good, comes later)
            code = started["code"]
            assert len(code) == 8
            assert code.isdigit()
            again = await rig.call(
                "POST", path, SHOPPER_KEY, expect=409, json={"items": [{"epc": EPC_2}]}
            )
            assert "under way" in again["detail"]
            shown = await return_status(rig, order_id, "return_pending")
            assert shown["state"] == "collected"
            assert "code" not in shown["locker_returns"][0]  # shown once, at the start
            assert shown["returns"][0]["method"] == "locker"
            assert rig.driver.compartments[compartment].state is S.RETURN_PENDING
            assert rig.driver.compartments[compartment].order_ref == order_id

            # the edge restarts between the return command and the drop-off; its birth
            # does not release the drop-off, and the code still opens
            await rig.restart_edge()
            assert rig.driver.compartments[compartment].state is S.RETURN_PENDING
            await rig.person().drop_off(rig.driver.simulator, 0, 0, code)
            shown = await return_status(rig, order_id, "returned_in_locker")
            assert shown["locker_returns"][0]["dropped_at"] is not None
            # the first, and the birth's re-send (which the edge that kept it just confirms)
            sent = await rig.eventually(
                lambda: rig.call("GET", f"/api/v1/stores/{STORE}/lockers/commands"),
                lambda rows: (
                    [c["status"] for c in rows if c["name"] == "locker.return"] == ["done"] * 2
                ),
                "both locker.return commands acked",
            )
            assert not [c for c in sent if c["name"] == "locker.release"]

            # the staff task, then staff empty the compartment
            tasks = await rig.call(
                "GET",
                f"/api/v1/stores/{STORE}/lockers/returns",
                STAFF_KEY,
                params={"state": "returned_in_locker"},
            )
            assert [t["task"] for t in tasks] == [f"empty compartment {BANK}/{compartment}"]
            await rig.call(
                "POST", f"/api/v1/stores/{STORE}/lockers/{BANK}/{compartment}/open", expect=202
            )
            seen = rig.driver.compartments[compartment]
            await rig.eventually(lambda: seen.door_open, bool, "the edge saw the door open")
            rig.driver.bank.take_item(0, 0)
            await rig.eventually(lambda: not seen.occupied, bool, "the edge saw it emptied")
            rig.driver.bank.close_door(0, 0)
            shown = await return_status(rig, order_id, "emptied")
            assert shown["returns"][0]["status"] == "expected"  # not read back in yet
            assert rig.driver.compartments[compartment].state is S.AVAILABLE
            assert await counted(rig) == before

            # the returns desk's reader reads it back in: stock +1, the return complete
            await rfid.items(ARRIVED, GTIN, "returns-desk", taken)
            shown = await return_status(rig, order_id, "return_completed")
            assert shown["returns"][0]["status"] == "received"
            assert shown["locker_returns"][0]["completed_at"] is not None
            assert await counted(rig) == before + 1
            compartments = await rig.call("GET", f"/api/v1/stores/{STORE}/lockers")
            assert {(c["compartment"], c["state"]) for c in compartments} >= {
                (compartment, "available")
            }
        finally:
            rfid.close()
