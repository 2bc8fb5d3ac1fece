"""Issue #15: nothing on the wire lets anyone recover a pickup code, and the code the
cloud hands the shopper is the one the edge derives for itself.

Mosquitto (real), the cloud runtime and the edge runtime with `sim-cu16` (board and keypad
on real ptys). A collector subscribed to `#` keeps every byte anyone publishes; after two
orders went through assignment, loading and `locker.set_code`, neither code, nor its QR
payload, nor any scrypt or SHA-256 of a code is in any of them.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cloud.lockers.domain import _legacy_code_hash
from protocols.messages import CompartmentState
from protocols.pickup import Grant
from tests.lockers_e2e.rig import BANK, GTIN, SHOPPER_KEY, STORE, Rig, running_rig
from tests.mqtt_helpers import Collector
from tests.servers import MosquittoBroker

pytestmark = pytest.mark.timeout(90)

HOLD_S = 20  # long enough to load two compartments on a busy machine, short to wait out


async def staged_and_assigned(rig: Rig, compartment: str) -> str:
    created = await rig.call(
        "POST",
        f"/api/v1/stores/{STORE}/orders",
        SHOPPER_KEY,
        expect=201,
        json={"items": [{"gtin": GTIN, "quantity": 1}]},
    )
    order_id = str(created["order_id"])
    for state in ("picking", "staged"):
        await rig.call("POST", f"/api/v1/orders/{order_id}/state", json={"state": state})
    await rig.call(
        "POST",
        f"/api/v1/orders/{order_id}/assign",
        expect=202,
        json={"bank": BANK, "compartment": compartment},
    )
    return order_id


def secrets_of(code: str, qr: str, order: dict[str, Any]) -> list[bytes]:
    """Every form in which a code could leak: itself, its QR (and tag), and hashes of it."""
    grant = Grant.make(BANK, order["compartment"], 0, datetime.fromisoformat(order["hold_until"]))
    forms = [code.encode(), qr.encode(), qr.rsplit(":", 1)[1].encode()]
    for digest in (hashlib.sha256(code.encode()).digest(), hashlib.sha512(code.encode()).digest()):
        forms += [digest, digest.hex().encode()]
    # the scrypt hash the cloud used to send, for every order_seq this test can have used
    for seq in range(1, 20):
        scrypt = _legacy_code_hash(code, Grant(grant.bank, grant.compartment, seq, grant.expiry))
        forms += [scrypt.encode(), bytes.fromhex(scrypt)]
    return forms


async def test_no_code_on_the_wire_the_cloud_code_opens_and_expires_at_the_edge(
    tmp_path: Path, persistent_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    wire = Collector(persistent_broker.host, persistent_broker.port, ["#"])
    try:
        async with running_rig(
            tmp_path, persistent_broker, monkeypatch, hold_hours=HOLD_S / 3600
        ) as rig:
            orders = [await staged_and_assigned(rig, c) for c in ("0-01", "0-02")]
            for order_id in orders:
                await rig.wait_state(order_id, "assigned")  # locker.reserve acked
            for compartment in ("0-01", "0-02"):
                await rig.call(
                    "POST",
                    f"/api/v1/stores/{STORE}/lockers/{BANK}/{compartment}/open-for-loading",
                    expect=202,
                )
            await asyncio.gather(rig.person().load(0, 0), rig.person().load(0, 1))
            codes = []
            for order_id in orders:
                await rig.wait_state(order_id, "ready_for_pickup")  # set_code acked
                codes.append(
                    await rig.call("POST", f"/api/v1/orders/{order_id}/pickup-code", SHOPPER_KEY)
                )
            details = [await rig.order(order_id) for order_id in orders]

            # the shopper's code from the cloud API opens its compartment at the edge
            driver = rig.driver
            rig.driver.simulator.enter_code(codes[0]["code"])
            await rig.eventually(
                lambda: driver.compartments["0-01"].state,
                lambda s: s is CompartmentState.PICKUP_OPEN,
                "0-01 opened by the cloud's code",
            )
            # the other order's hold runs out; its code is refused at the locker
            hold_end = datetime.fromisoformat(details[1]["hold_until"])
            await rig.eventually(
                lambda: driver.compartments["0-02"].state,
                lambda s: s is CompartmentState.EXPIRED_HOLD,
                "0-02's hold expired at the edge",
            )
            assert datetime.now(hold_end.tzinfo) >= hold_end
            unlocks, wrong = driver.bank.lock(0, 1).unlocks, driver.counters.code_wrong
            driver.simulator.enter_code(codes[1]["code"])
            await rig.eventually(
                lambda: driver.counters.code_wrong, lambda n: n == wrong + 1, "code refused"
            )
            assert driver.bank.lock(0, 1).unlocks == unlocks
            assert driver.compartments["0-02"].state is CompartmentState.EXPIRED_HOLD
            await rig.wait_state(orders[1], "expired")
    finally:
        wire.close()

    published = []
    while not wire.messages.empty():
        message = wire.messages.get_nowait()
        published.append((message.topic, bytes(message.payload)))
    set_codes = [p for t, p in published if b"locker.set_code" in p and "/cmd" in t]
    assert len(set_codes) >= 2, [t for t, _ in published]
    for code, order in zip(codes, details, strict=True):
        for form in secrets_of(code["code"], code["qr"], order):
            leaks = [t for t, payload in published if form in payload]
            assert not leaks, f"{form!r} of order {order['order_id']} published on {leaks}"
    assert all(b"code_hash" not in payload for _, payload in published)
