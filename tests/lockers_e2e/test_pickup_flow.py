"""BOPIS end to end: cloud API -> Mosquitto -> edge runtime -> CU16 simulator on a pty, and
back. Couriers and shoppers are scripted people acting on the simulated bank; codes reach
the edge only as bytes typed on the keypad pty."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest

from cloud.bus import Change
from protocols.codec import encode
from protocols.messages import CompartmentState, OrderUpdate
from protocols.topics import orders_topic
from tests.edge.helpers import Watcher
from tests.lockers_e2e.rig import BANK, GTIN, SHOPPER_KEY, STORE, running_rig
from tests.lockers_e2e.webhook_server import WebhookServer
from tests.servers import MosquittoBroker

pytestmark = pytest.mark.timeout(120)

HAPPY_PATH = ["created", "picking", "staged", "assigned", "ready_for_pickup", "collected"]


def drain(subscription: object) -> list[Change]:
    queue = subscription._queue  # type: ignore[attr-defined]
    changes = []
    while not queue.empty():
        changes.append(queue.get_nowait())
    return changes


async def test_order_to_collection_with_webhook_retry(
    tmp_path: Path, persistent_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    webhook = WebhookServer(fail_next=1)  # the shop's backend is down for the first call
    await webhook.start()
    try:
        async with running_rig(
            tmp_path, persistent_broker, monkeypatch, webhook_url=webhook.url
        ) as rig:
            live = rig.cloud.bus.subscribe()
            app = Watcher(
                persistent_broker.host,
                persistent_broker.port,
                topic=orders_topic("app-token-1"),
            )
            # bad requests and illegal moves are refused with reasons
            await rig.call(
                "POST",
                f"/api/v1/stores/{STORE}/orders",
                SHOPPER_KEY,
                expect=422,
                json={"items": [{"gtin": "123"}]},
            )
            created = await rig.call(
                "POST",
                f"/api/v1/stores/{STORE}/orders",
                SHOPPER_KEY,
                expect=201,
                json={"items": [{"gtin": GTIN}]},
            )
            refused = await rig.call(
                "POST",
                f"/api/v1/orders/{created['order_id']}/assign",
                expect=409,
                json={},
            )
            assert "is created; it cannot become assigned" in refused["detail"]
            await rig.call(
                "POST", f"/api/v1/orders/{created['order_id']}/pickup-code", SHOPPER_KEY, expect=409
            )

            order_id, code = await rig.ready_order(lock=0)
            assert len(code) == 8
            assert code.isdigit()
            again = await rig.call(
                "POST", f"/api/v1/orders/{order_id}/pickup-code", SHOPPER_KEY, expect=409
            )
            assert "already issued" in again["detail"]
            assignments = await rig.call("GET", f"/api/v1/stores/{STORE}/lockers/assignments")
            assert assignments == []  # loaded: nothing left to load
            # the webhook: first attempt 503, the retry delivered, same delivery id
            notes = await rig.eventually(
                lambda: rig.call("GET", f"/api/v1/orders/{order_id}/notifications"),
                lambda rows: rows and rows[0]["status"] == "delivered",
                "webhook delivered",
            )
            assert notes[0]["attempts"] == 2
            assert notes[0]["state"] == "ready_for_pickup"
            first, second = webhook.received[:2]
            assert (first.status, second.status) == (503, 204)
            assert first.delivery == second.delivery == str(notes[0]["id"])
            assert second.body["order_id"] == order_id
            assert second.body["compartment"] == "0-01"

            await rig.person().collect(rig.driver.simulator, 0, 0, code)
            order = await rig.wait_state(order_id, "collected")
            steps = order["transitions"]
            assert [s["to"] for s in steps] == HAPPY_PATH
            times = [datetime.fromisoformat(s["at"]) for s in steps]
            assert times == sorted(times)
            # the compartment is free again, and the code cannot be used twice
            assert rig.driver.compartments["0-01"].state is CompartmentState.AVAILABLE
            rig.driver.simulator.enter_code(code)
            await rig.eventually(
                lambda: rig.driver.counters.code_wrong, lambda n: n == 1, "reused code refused"
            )
            latch = rig.driver.bank.lock(0, 0)
            assert not (latch.door_open)
            assert not (latch.latch_released)

            # the shopper's app heard about it on its own topic (never the code)
            await asyncio.to_thread(
                app.wait_for,
                lambda m: isinstance(m, OrderUpdate) and m.state == "collected",
            )
            app.close()
            updates = [m for m in app.of_type("order.update") if isinstance(m, OrderUpdate)]
            assert [m.state for m in updates] == ["ready_for_pickup", "collected"]
            assert {m.order_id for m in updates} == {order_id}
            assert all(code not in encode(m).decode() for m in updates)

            changes = drain(live)
            order_states = [c.data["state"] for c in changes if c.kind == "order"]
            assert [s for s in HAPPY_PATH if s in order_states] == HAPPY_PATH
            compartment_states = {
                c.data["state"]
                for c in changes
                if c.kind == "compartment" and c.data["compartment"] == "0-01"
            }
            assert {"reserved", "loading", "awaiting_pickup", "pickup_open"} <= compartment_states

            kpis = await rig.call(
                "GET",
                f"/api/v1/stores/{STORE}/lockers/kpis",
                params={"since": steps[0]["at"], "until": datetime.now().astimezone().isoformat()},
            )
            assert kpis["collected"] == 1
            assert kpis["pickup_rate"] == 1.0
            assert kpis["order_to_ready_s"]["count"] == 1
            assert kpis["dwell_s"]["count"] == 1
            assert kpis["dwell_s"]["avg"] > 0
            # one of four compartments, held for part of the period
            assert 0 < kpis["utilisation"] < 0.25
            assert kpis["compartments"] == 4
    finally:
        await webhook.close()


async def test_pickup_works_with_the_uplink_down(
    tmp_path: Path, persistent_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_rig(tmp_path, persistent_broker, monkeypatch) as rig:
        order_id, code = await rig.ready_order(lock=1)
        persistent_broker.stop()  # the store loses its uplink
        await rig.person().collect(rig.driver.simulator, 0, 1, code)
        # the edge verified the code on its own and the shopper has the parcel
        assert rig.driver.counters.code_ok == 1
        await rig.eventually(
            lambda: rig.driver.compartments["0-02"].state,
            lambda state: state is CompartmentState.AVAILABLE,
            "the edge saw the door shut on an empty compartment",
        )
        assert not rig.driver.bank.lock(0, 1).item
        offline = await rig.order(order_id)
        assert offline["state"] == "ready_for_pickup"  # the cloud cannot know yet
        collected_at_edge = datetime.now().astimezone()
        persistent_broker.start()
        order = await rig.wait_state(order_id, "collected")
        collected = datetime.fromisoformat(order["transitions"][-1]["at"])
        # the transition carries the moment at the locker, not the moment of delivery
        assert collected <= collected_at_edge
        compartments = await rig.call("GET", f"/api/v1/stores/{STORE}/lockers")
        assert {c["compartment"]: c["state"] for c in compartments}["0-02"] == "available"


async def test_code_burst_and_forced_door_raise_alarms_in_the_cloud(
    tmp_path: Path, persistent_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"backoff_base_s": 1.0, "alarm_failures": 5}
    async with running_rig(tmp_path, persistent_broker, monkeypatch, locker_options=options) as rig:
        order_id, code = await rig.ready_order(lock=0)
        wrong = str((int(code) + 1) % 10**8).zfill(8)
        driver = rig.driver
        for attempt in range(1, 6):
            if attempt == 5:
                await asyncio.sleep(1.3)  # the 4th failure locked the keypad for 1 s
            driver.simulator.enter_code(wrong)

            def reached(n: int, target: int = attempt) -> bool:
                return n >= target

            await rig.eventually(lambda: driver.counters.code_wrong, reached, "wrong code seen")
            assert driver.counters.code_wrong == attempt
        # the 5th failure locked the keypad for 2 s: even the right code is refused now
        driver.simulator.enter_code(code)
        await rig.eventually(lambda: driver.counters.code_refused, lambda n: n == 1, "refused")
        assert not driver.bank.lock(0, 0).door_open
        alarms = await rig.eventually(
            lambda: rig.call("GET", f"/api/v1/stores/{STORE}/lockers/alarms"),
            lambda rows: any(r["kind"] == "code_burst_alarm" for r in rows),
            "code burst alarm in the cloud",
        )
        burst = [r for r in alarms if r["kind"] == "code_burst_alarm"]
        assert burst[0]["compartment"] == "0-01"
        assert burst[0]["order_id"] == order_id
        # after the lock-out the right code still works
        await asyncio.sleep(2.2)
        await rig.person().collect(driver.simulator, 0, 0, code)
        await rig.wait_state(order_id, "collected")

        # someone pries an empty compartment open
        await rig.person().force(0, 3, leave_open_s=0.8)
        alarms = await rig.eventually(
            lambda: rig.call("GET", f"/api/v1/stores/{STORE}/lockers/alarms"),
            lambda rows: any(r["kind"] == "forced_open" for r in rows),
            "forced-open alarm in the cloud",
        )
        forced = [r for r in alarms if r["kind"] == "forced_open"]
        assert (forced[0]["bank"], forced[0]["compartment"]) == (BANK, "0-04")
        compartments = await rig.call("GET", f"/api/v1/stores/{STORE}/lockers")
        assert "forced_open" in {c["compartment"]: c for c in compartments}["0-04"]["flags"]
        kpis = await rig.call("GET", f"/api/v1/stores/{STORE}/lockers/kpis")
        assert kpis["door_alarms"]["forced_open"] == 1
        assert kpis["door_alarms"]["code_burst_alarm"] >= 1
