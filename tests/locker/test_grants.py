"""Which code opens which door, and for how long; and what survives an edge restart.

The real locker driver against the CU16 simulator over real ptys (board bus and keypad).
Codes are derived from the grant (`protocols.pickup`); the driver holds no code and no
hash of one, only the grant, in memory and in its state file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from edge.config import create_drivers
from edge.locker.driver import LockerDriver
from protocols.messages import CompartmentState, utc_now
from protocols.pickup import Grant, PickupKey, keypad_code, qr_payload
from simulators.locker.board import LockerBank
from simulators.locker.server import LockerSimulator
from tests.edge.helpers import edge_config
from tests.locker.conftest import (
    KEY_ENV,
    RecordingContext,
    cu16_driver,
    running,
    sim_driver,
    wait_until,
)
from tests.locker.test_driver import command, load, state_of

S = CompartmentState


def key() -> PickupKey:
    return PickupKey.from_env(KEY_ENV)


async def reserve_and_load(
    driver: LockerDriver, bank: LockerBank, cid: str, lock: int, seq: int, hold: timedelta
) -> Grant:
    expiry = (utc_now() + hold).isoformat()
    args = {"compartment": cid, "order_ref": f"order-{seq}", "expiry": expiry}
    assert (await driver.handle_command(command("locker.reserve", **args))).ok
    assert (await driver.handle_command(command("locker.open_for_loading", compartment=cid))).ok
    await wait_until(lambda: driver.compartments[cid].door_open, what="door sprung open")
    bank.put_item(0, lock)
    await wait_until(lambda: driver.compartments[cid].occupied, what="item sensed")
    bank.close_door(0, lock)
    await wait_until(lambda: state_of(driver, cid) is S.AWAITING_PICKUP, what="loaded")
    # what the cloud sends once the parcel is in: the grant, no code, no hash
    outcome = await driver.handle_command(
        command("locker.set_code", compartment=cid, order_seq=seq, expiry=expiry)
    )
    assert outcome.ok, outcome.reason
    grant = driver.grant_for(cid)
    assert grant is not None
    return grant


async def test_an_expired_holds_code_is_refused_though_the_compartment_has_a_later_hold() -> None:
    ctx = RecordingContext()
    driver = sim_driver()
    async with running(driver, ctx):
        bank = driver.bank
        first = await reserve_and_load(driver, bank, "0-01", 0, seq=1, hold=timedelta(seconds=3))
        old_code, old_qr = keypad_code(key(), first), qr_payload(key(), first)
        await wait_until(lambda: state_of(driver, "0-01") is S.EXPIRED_HOLD, what="H1 expired")
        assert not await driver.enter_code(old_code)  # expired, same hold
        # staff empties it, and the compartment takes a later hold H2
        assert (await driver.handle_command(command("locker.open", compartment="0-01"))).ok
        await wait_until(lambda: driver.compartments["0-01"].door_open)
        bank.take_item(0, 0)
        bank.close_door(0, 0)
        await wait_until(lambda: state_of(driver, "0-01") is S.AVAILABLE, what="emptied")
        second = await reserve_and_load(driver, bank, "0-01", 0, seq=2, hold=timedelta(hours=1))
        unlocks = bank.lock(0, 0).unlocks
        for entry in (old_code, old_qr):
            assert not await driver.enter_code(entry)
        assert bank.lock(0, 0).unlocks == unlocks  # H1's code and QR moved nothing
        assert state_of(driver, "0-01") is S.AWAITING_PICKUP
        assert await driver.enter_code(keypad_code(key(), second))  # H2's code works
        await wait_until(lambda: state_of(driver, "0-01") is S.PICKUP_OPEN)
    assert driver.counters.code_wrong == 3
    assert driver.counters.code_ok == 1


async def test_a_grant_shorter_than_the_hold_stops_opening_at_its_own_expiry() -> None:
    """The grant's expiry is checked itself, not only through the hold's state."""
    ctx = RecordingContext()
    driver = sim_driver()
    async with running(driver, ctx):
        await load(driver, driver.bank, "0-02", 1, seq=5)  # a hold of 2 h
        soon = (utc_now() + timedelta(seconds=1)).replace(microsecond=0)
        outcome = await driver.handle_command(
            command("locker.set_code", compartment="0-02", order_seq=5, expiry=soon.isoformat())
        )
        assert outcome.ok, outcome.reason
        grant = driver.grant_for("0-02")
        assert grant is not None
        await asyncio.sleep(max(0.0, (soon - utc_now()).total_seconds()) + 0.05)
        assert not await driver.enter_code(keypad_code(key(), grant))
        assert state_of(driver, "0-02") is S.AWAITING_PICKUP  # the hold itself still runs


async def test_a_code_for_one_compartment_never_opens_another() -> None:
    ctx = RecordingContext()
    driver = sim_driver(backoff_free_failures=10)
    async with running(driver, ctx):
        bank = driver.bank
        hold = timedelta(hours=1)
        one = await reserve_and_load(driver, bank, "0-01", 0, seq=11, hold=hold)
        two = await reserve_and_load(driver, bank, "0-02", 1, seq=12, hold=hold)
        # 0-01's order, re-pointed at 0-02: a valid-looking grant no compartment holds
        moved = Grant("bank-1", "0-02", one.order_seq, one.expiry)
        forged_qr = qr_payload(key(), one).replace(":0-01:", ":0-02:")  # the tag is 0-01's
        for entry in (keypad_code(key(), moved), qr_payload(key(), moved), forged_qr):
            assert not await driver.enter_code(entry)
        assert bank.lock(0, 1).unlocks == 1  # only the loading unlock
        assert await driver.enter_code(keypad_code(key(), one))
        await wait_until(lambda: state_of(driver, "0-01") is S.PICKUP_OPEN)
        assert state_of(driver, "0-02") is S.AWAITING_PICKUP
        assert bank.lock(0, 1).unlocks == 1
        assert driver.grant_for("0-02") == two


async def test_an_older_clouds_code_hash_is_ignored_and_a_keyless_bank_refuses_codes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = RecordingContext()
    driver = sim_driver()
    async with running(driver, ctx):
        await load(driver, driver.bank, "0-03", 2, seq=9)
        outcome = await driver.handle_command(
            command("locker.set_code", compartment="0-03", order_seq=9, code_hash="ab" * 32)
        )
        assert outcome.ok, outcome.reason
        grant = driver.grant_for("0-03")
        assert grant is not None
        assert await driver.enter_code(keypad_code(key(), grant))  # derived, hash unused
    # a real bank with no key configured cannot check codes: it says so, changes nothing
    bank = LockerBank(1, 4)
    sim = LockerSimulator(bank)
    port = await sim.start_tcp()
    keyless = cu16_driver(f"tcp://127.0.0.1:{port}", codes_key_env=None)
    try:
        async with running(keyless, RecordingContext()):
            expiry = (utc_now() + timedelta(hours=1)).isoformat()
            outcome = await keyless.handle_command(
                command(
                    "locker.reserve",
                    compartment="0-01",
                    order_ref="o-1",
                    expiry=expiry,
                    order_seq=1,
                )
            )
            assert not outcome.ok
            assert "no pickup code key" in (outcome.reason or "")
            assert state_of(keyless, "0-01") is S.AVAILABLE
    finally:
        await sim.close()


async def test_holds_and_grants_survive_a_restart_and_spent_codes_stay_spent(
    tmp_path: Path,
) -> None:
    """Issue #15/#17: the edge restarts mid-hold; the code still opens, once."""
    bank = LockerBank(1, 4)
    sim = LockerSimulator(bank)
    await sim.start_pty()
    state = tmp_path / "locker.sqlite3"

    def driver() -> LockerDriver:
        return cu16_driver(
            f"pty://{sim.serial_path}", keypad=f"pty://{sim.keypad_path}", state_path=str(state)
        )

    try:
        first = driver()
        async with running(first, RecordingContext()):
            one = await reserve_and_load(first, bank, "0-01", 0, seq=21, hold=timedelta(hours=1))
            two = await reserve_and_load(first, bank, "0-02", 1, seq=22, hold=timedelta(hours=1))
            expiry = (utc_now() + timedelta(hours=1)).isoformat()
            args = {"compartment": "0-03", "order_ref": "order-23", "expiry": expiry}
            assert (await first.handle_command(command("locker.reserve", **args))).ok
            assert (
                await first.handle_command(command("locker.out_of_service", compartment="0-04"))
            ).ok
            # 0-02's code is used before the restart; the shopper leaves the parcel in
            assert await first.enter_code(keypad_code(key(), two))
            await wait_until(lambda: first.compartments["0-02"].door_open)
            bank.close_door(0, 1)
            await wait_until(lambda: state_of(first, "0-02") is S.AWAITING_PICKUP)

        ctx = RecordingContext()
        second = driver()  # a new process would build exactly this from the same config
        async with running(second, ctx):
            assert state_of(second, "0-01") is S.AWAITING_PICKUP
            assert second.compartments["0-01"].order_ref == "order-21"
            assert second.grant_for("0-01") == one
            assert state_of(second, "0-03") is S.RESERVED
            assert state_of(second, "0-04") is S.OUT_OF_SERVICE
            assert second.grant_for("0-02") is None
            assert not await second.enter_code(keypad_code(key(), two))  # spent stays spent
            # even when the cloud sends the same grant again (a retried set_code)
            again = command(
                "locker.set_code", compartment="0-02", order_seq=22, expiry=two.expiry.isoformat()
            )
            assert (await second.handle_command(again)).ok
            assert second.grant_for("0-02") == two
            assert not await second.enter_code(keypad_code(key(), two))
            sim.enter_code(keypad_code(key(), one))  # typed on the keypad pty
            await wait_until(lambda: state_of(second, "0-01") is S.PICKUP_OPEN, what="opened")
            await wait_until(lambda: bank.lock(0, 0).door_open)
        assert "code_ok" in ctx.causes("0-01")
        assert "forced_open" not in [e.cause for e in ctx.events()]
    finally:
        await sim.close()
    # the file holds grants, never a code
    with sqlite3.connect(state) as db:
        dump = "\n".join(db.iterdump())
    assert keypad_code(key(), one) not in dump
    assert "order-21" in dump


async def test_a_restart_mid_loading_settles_from_the_sensors(tmp_path: Path) -> None:
    """Unlocked for loading, then the edge went down while the courier loaded: the first
    poll after the restart sees the door shut on a parcel and reports it loaded."""
    bank = LockerBank(1, 4)
    sim = LockerSimulator(bank)
    await sim.start_pty()
    state = str(tmp_path / "locker.sqlite3")
    try:
        first = cu16_driver(f"pty://{sim.serial_path}", state_path=state)
        async with running(first, RecordingContext()):
            expiry = (utc_now() + timedelta(hours=1)).isoformat()
            args = {"compartment": "0-01", "order_ref": "order-1", "expiry": expiry}
            assert (await first.handle_command(command("locker.reserve", **args))).ok
            assert (
                await first.handle_command(command("locker.open_for_loading", compartment="0-01"))
            ).ok
        bank.put_item(0, 0)  # the courier, while the edge is down
        bank.close_door(0, 0)
        ctx = RecordingContext()
        async with running(cu16_driver(f"pty://{sim.serial_path}", state_path=state), ctx):
            await wait_until(lambda: "loaded" in ctx.causes("0-01"), what="loaded")
    finally:
        await sim.close()


def test_a_real_config_keeps_locker_state_beside_the_outbox(tmp_path: Path) -> None:
    from edge.config import load_edge_settings

    device = {
        "id": "bank-1",
        "kind": "locker_bank",
        "driver": "cu16",
        "options": {"transport": "serial:///dev/null", "codes_key_env": KEY_ENV},
    }
    settings = load_edge_settings(edge_config(tmp_path, 1883, [device]))
    driver = create_drivers(settings)["bank-1"]
    assert isinstance(driver, LockerDriver)
    expected = settings.outbox.path.parent / "locker-bank-1.sqlite3"
    assert not expected.exists()  # creating drivers (a config check) writes nothing
    asyncio.run(driver.handle_command(command("locker.out_of_service", compartment="0-01")))
    assert expected.exists()


async def test_a_state_file_that_cannot_be_written_is_said_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edge.locker.reservations import ReservationStore

    path = tmp_path / "locker.sqlite3"
    driver = sim_driver(state_path=str(path))
    async with running(driver, RecordingContext()):
        store = driver._store
        assert store is not None
        store.close()  # every write now fails, as on a broken disk
        expiry = (utc_now() + timedelta(hours=1)).isoformat()
        args = {"compartment": "0-01", "order_ref": "order-1", "expiry": expiry, "order_seq": 1}
        assert (await driver.handle_command(command("locker.reserve", **args))).ok
        assert driver.metrics()["state_save_errors"] >= 1
        assert sum("cannot save its state" in r.getMessage() for r in caplog.records) == 1
        await asyncio.sleep(0.5)  # polls retry, without a log line each
        assert sum("cannot save its state" in r.getMessage() for r in caplog.records) == 1
        driver._store = ReservationStore(path, "bank-1")  # the disk is back
        await wait_until(lambda: any("saved again" in r.getMessage() for r in caplog.records))
    saved = ReservationStore(path, "bank-1").load()
    assert saved["0-01"].order_ref == "order-1"
    assert saved["0-01"].grant == driver.grant_for("0-01")
