"""Locker returns at the edge: the drop-off code opens an empty compartment, a parcel shut
in is reported `returned_dropped` and spends the code, an empty close keeps the return
pending, the expiry frees the compartment, and all of it survives a restart.

The real locker driver against the CU16 simulator over real ptys (board bus and keypad);
the pure state machine for the expiry boundary.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.locker.compartment import Compartment, TransitionRefusedError
from edge.locker.driver import LockerDriver
from protocols.messages import Command, CompartmentState, utc_now
from protocols.pickup import Grant, PickupKey, dropoff_code, keypad_code
from simulators.locker.board import LockerBank
from simulators.locker.server import LockerSimulator
from tests.locker.conftest import KEY_ENV, RecordingContext, cu16_driver, running, wait_until
from tests.locker.test_driver import command, state_of

S = CompartmentState
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def key() -> PickupKey:
    return PickupKey.from_env(KEY_ENV)


def return_command(cid: str, seq: int, expiry: datetime, order_ref: str = "order-1") -> Command:
    return command(
        "locker.return",
        compartment=cid,
        order_ref=order_ref,
        order_seq=seq,
        expiry=expiry.isoformat(),
    )


async def start_return(driver: LockerDriver, cid: str, seq: int, hold: timedelta) -> Grant:
    expiry = utc_now() + hold
    outcome = await driver.handle_command(return_command(cid, seq, expiry))
    assert outcome.ok, outcome.reason
    assert state_of(driver, cid) is S.RETURN_PENDING
    grant = driver.grant_for(cid)
    assert grant is not None
    return grant


async def type_on_keypad(sim: LockerSimulator, code: str, done: Callable[[], bool]) -> None:
    """Type `code` on the keypad pty until `done`: a line typed before a freshly started
    driver has opened the keypad line is lost, as on a real serial line."""
    for _ in range(10):
        sim.enter_code(code)
        with contextlib.suppress(AssertionError):
            await wait_until(done, within=1.0)
            return
    raise AssertionError(f"{code} typed 10 times; never {done}")


def test_the_drop_off_code_is_its_own_derivation() -> None:
    grant = Grant.make("bank-1", "0-01", 7, T0)
    assert dropoff_code(key(), grant) != keypad_code(key(), grant)
    assert dropoff_code(key(), grant) == dropoff_code(key(), grant)
    assert len(dropoff_code(key(), grant, 6)) == 6


def test_a_pending_return_ends_exactly_at_its_expiry() -> None:
    c = Compartment(id="0-01", board=0, lock=0)
    c.observe(False, False, T0)
    until = T0 + timedelta(minutes=10)
    assert c.start_return("order-1", until, T0).cause == "return_reserved"
    assert c.tick(until - timedelta(microseconds=1)) == []
    assert c.state is S.RETURN_PENDING
    (event,) = c.tick(until)
    assert (event.cause, c.state, c.order_ref) == ("return_expired", S.AVAILABLE, None)


def test_a_return_needs_an_empty_available_compartment() -> None:
    c = Compartment(id="0-01", board=0, lock=0)
    c.observe(False, True, T0)  # something is in it
    with pytest.raises(TransitionRefusedError, match="not empty"):
        c.start_return("order-1", T0 + timedelta(hours=1), T0)
    c.observe(False, False, T0)
    c.reserve("order-2", T0 + timedelta(hours=1), T0)
    with pytest.raises(TransitionRefusedError, match="reserved; a return needs available"):
        c.start_return("order-1", T0 + timedelta(hours=1), T0)


async def test_drop_off_opens_empty_close_stays_pending_parcel_in_spends_the_code(
    tmp_path: Path,
) -> None:
    bank = LockerBank(1, 4)
    sim = LockerSimulator(bank)
    await sim.start_pty()
    ctx = RecordingContext()
    driver = cu16_driver(
        f"pty://{sim.serial_path}",
        keypad=f"pty://{sim.keypad_path}",
        state_path=str(tmp_path / "locker.sqlite3"),
    )
    try:
        async with running(driver, ctx):
            grant = await start_return(driver, "0-02", seq=3, hold=timedelta(hours=1))
            code = dropoff_code(key(), grant)
            # the pickup derivation of the same grant is not the drop-off code
            assert not await driver.enter_code(keypad_code(key(), grant))
            assert bank.lock(0, 1).unlocks == 0
            sim.enter_code(code)  # typed on the keypad pty
            await wait_until(lambda: state_of(driver, "0-02") is S.RETURN_OPEN, what="opened")
            await wait_until(lambda: driver.compartments["0-02"].door_open, what="door open")
            bank.close_door(0, 1)  # changed their mind: nothing in
            await wait_until(lambda: state_of(driver, "0-02") is S.RETURN_PENDING)
            assert driver.grant_for("0-02") == grant  # the code still opens it
            sim.enter_code(code)
            await wait_until(lambda: driver.compartments["0-02"].door_open, what="reopened")
            bank.put_item(0, 1)
            await wait_until(lambda: driver.compartments["0-02"].occupied, what="item sensed")
            bank.close_door(0, 1)
            await wait_until(lambda: state_of(driver, "0-02") is S.RETURN_DROPPED, what="dropped")
            assert driver.compartments["0-02"].status().order_ref == "order-1"
            unlocks = bank.lock(0, 1).unlocks
            assert not await driver.enter_code(code)  # single use: spent by the drop-off
            # a re-sent locker.return with the same grant does not revive it
            again = await driver.handle_command(return_command("0-02", 3, grant.expiry))
            assert not again.ok
            assert "already used" in (again.reason or "")
            assert bank.lock(0, 1).unlocks == unlocks
            # staff empty it: the compartment is free again
            assert (await driver.handle_command(command("locker.open", compartment="0-02"))).ok
            await wait_until(lambda: driver.compartments["0-02"].door_open, what="staff open")
            bank.take_item(0, 1)
            await wait_until(lambda: not driver.compartments["0-02"].occupied)
            bank.close_door(0, 1)
            await wait_until(lambda: state_of(driver, "0-02") is S.AVAILABLE, what="emptied")
            assert driver.compartments["0-02"].order_ref is None
    finally:
        await sim.close()
    causes = ctx.causes("0-02")
    assert causes.count("dropoff_code_ok") == 2
    for cause in ("return_reserved", "return_closed_empty", "returned_dropped", "return_emptied"):
        assert cause in causes, causes
    assert causes.index("returned_dropped") < causes.index("return_emptied")
    assert "forced_open" not in causes
    assert driver.counters.dropoff_ok == 2
    assert driver.counters.code_wrong == 2  # the pickup derivation, then the spent code


async def test_a_return_survives_a_restart_and_a_spent_code_stays_spent(tmp_path: Path) -> None:
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
            pending = await start_return(first, "0-01", seq=11, hold=timedelta(hours=1))
            spent = await start_return(first, "0-03", seq=12, hold=timedelta(hours=1))
            assert await first.enter_code(dropoff_code(key(), spent))
            await wait_until(lambda: first.compartments["0-03"].door_open)
            bank.put_item(0, 2)
            await wait_until(lambda: first.compartments["0-03"].occupied)
            bank.close_door(0, 2)
            await wait_until(lambda: state_of(first, "0-03") is S.RETURN_DROPPED)

        ctx = RecordingContext()
        second = driver()  # what a new process builds from the same config
        async with running(second, ctx):
            assert state_of(second, "0-01") is S.RETURN_PENDING
            assert second.grant_for("0-01") == pending
            assert state_of(second, "0-03") is S.RETURN_DROPPED
            assert second.compartments["0-03"].order_ref == "order-1"
            resent = await second.handle_command(return_command("0-03", 12, spent.expiry))
            assert not resent.ok
            assert not await second.enter_code(dropoff_code(key(), spent))
            opened = lambda: state_of(second, "0-01") is S.RETURN_OPEN  # noqa: E731
            await type_on_keypad(sim, dropoff_code(key(), pending), opened)
            await wait_until(lambda: bank.lock(0, 0).door_open)
        assert "dropoff_code_ok" in ctx.causes("0-01")
    finally:
        await sim.close()
    with sqlite3.connect(state) as db:
        dump = "\n".join(db.iterdump())
    assert dropoff_code(key(), pending) not in dump  # grants on disk, never a code


async def test_a_restart_while_the_drop_off_door_was_open_settles_from_the_sensors(
    tmp_path: Path,
) -> None:
    """Opened with the code, then the edge went down while the shopper put the parcel in
    and shut the door: the first poll after the restart reports the drop-off."""
    bank = LockerBank(1, 4)
    sim = LockerSimulator(bank)
    await sim.start_pty()
    state = str(tmp_path / "locker.sqlite3")
    try:
        first = cu16_driver(f"pty://{sim.serial_path}", state_path=state)
        async with running(first, RecordingContext()):
            grant = await start_return(first, "0-04", seq=5, hold=timedelta(hours=1))
            assert await first.enter_code(dropoff_code(key(), grant))
            await wait_until(lambda: bank.lock(0, 3).door_open)
        bank.put_item(0, 3)
        bank.close_door(0, 3)
        ctx = RecordingContext()
        second = cu16_driver(f"pty://{sim.serial_path}", state_path=state)
        async with running(second, ctx):
            await wait_until(lambda: state_of(second, "0-04") is S.RETURN_DROPPED)
            assert second.grant_for("0-04") is None
            assert not await second.enter_code(dropoff_code(key(), grant))
        assert ctx.causes("0-04") == ["returned_dropped"]
    finally:
        await sim.close()


async def test_an_expired_drop_off_code_opens_nothing(tmp_path: Path) -> None:
    bank = LockerBank(1, 4)
    sim = LockerSimulator(bank)
    await sim.start_pty()
    ctx = RecordingContext()
    driver = cu16_driver(f"pty://{sim.serial_path}")
    try:
        async with running(driver, ctx):
            grant = await start_return(driver, "0-01", seq=8, hold=timedelta(seconds=2))
            await wait_until(lambda: state_of(driver, "0-01") is S.AVAILABLE, what="expired")
            assert utc_now() >= grant.expiry
            assert not await driver.enter_code(dropoff_code(key(), grant))
            assert bank.lock(0, 0).unlocks == 0
            assert driver.grant_for("0-01") is None
    finally:
        await sim.close()
    assert ctx.causes("0-01") == ["return_reserved", "return_expired"]


async def test_a_called_off_return_frees_the_compartment_and_its_code_opens_nothing(
    tmp_path: Path,
) -> None:
    bank = LockerBank(1, 4)
    sim = LockerSimulator(bank)
    await sim.start_pty()
    ctx = RecordingContext()
    driver = cu16_driver(f"pty://{sim.serial_path}")
    try:
        async with running(driver, ctx):
            grant = await start_return(driver, "0-03", seq=9, hold=timedelta(hours=1))
            # another order's release is not this return's
            other = command("locker.release", compartment="0-03", order_ref="order-2")
            assert (await driver.handle_command(other)).ok
            assert state_of(driver, "0-03") is S.RETURN_PENDING
            release = command("locker.release", compartment="0-03", order_ref="order-1")
            assert (await driver.handle_command(release)).ok
            assert state_of(driver, "0-03") is S.AVAILABLE
            assert driver.grant_for("0-03") is None
            assert not await driver.enter_code(dropoff_code(key(), grant))
            assert bank.lock(0, 2).unlocks == 0
    finally:
        await sim.close()
    assert ctx.causes("0-03") == ["return_reserved", "released"]
