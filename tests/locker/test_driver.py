"""The locker driver against the byte-level simulator over a real pty (and TCP).

No broker and no runtime: the driver runs alone with a recording DriverContext, which is
also the "no uplink at all" case — every pickup here is verified offline.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.locker.audit import AuditLog
from edge.locker.driver import LockerDriver
from protocols import cu16
from protocols.messages import Command, CompartmentFlag, CompartmentState, DriverState, utc_now
from protocols.pickup import PickupKey, keypad_code, qr_payload
from simulators.drivers.cu16 import SimLockerDriver
from simulators.locker.board import LockerBank
from simulators.locker.people import Person
from simulators.locker.server import LockerSimulator
from tests.locker.conftest import (
    KEY_ENV,
    RecordingContext,
    cu16_driver,
    running,
    sim_driver,
    wait_until,
)

S = CompartmentState


def command(name: str, **args: Any) -> Command:
    return Command(
        store="store-1",
        node="node-1",
        seq=1,
        name=name,
        correlation_id="corr-0001",
        expires_at=utc_now() + timedelta(minutes=1),
        target="bank-1",
        args=args,
    )


def state_of(driver: LockerDriver, cid: str) -> CompartmentState:
    return driver.compartments[cid].state


async def load(driver: LockerDriver, bank: LockerBank, cid: str, lock: int, seq: int = 7) -> None:
    """A courier: reserve, open for loading, put the parcel in, shut the door."""
    expiry = (utc_now() + timedelta(hours=2)).isoformat()
    ok = await driver.handle_command(
        command(
            "locker.reserve",
            compartment=cid,
            order_ref=f"order-{seq}",
            expiry=expiry,
            order_seq=seq,
        )
    )
    assert ok.ok, ok.reason
    ok = await driver.handle_command(command("locker.open_for_loading", compartment=cid))
    assert ok.ok, ok.reason
    await wait_until(lambda: driver.compartments[cid].door_open, what="door sprung open")
    bank.put_item(0, lock)
    await wait_until(lambda: driver.compartments[cid].occupied, what="item sensed")
    bank.close_door(0, lock)
    await wait_until(lambda: state_of(driver, cid) is S.AWAITING_PICKUP, what="awaiting pickup")


async def test_bopis_pickup_end_to_end_over_a_real_pty_offline(tmp_path: Path) -> None:
    ctx = RecordingContext()
    driver = sim_driver(audit_path=str(tmp_path / "audit.jsonl"))
    async with running(driver, ctx):
        assert driver.simulator.serial_path.startswith("/dev/pts/")
        bank = driver.bank
        await load(driver, bank, "0-02", 1)
        grant = driver.grant_for("0-02")
        assert grant is not None
        code = keypad_code(PickupKey.from_env(KEY_ENV), grant)
        driver.simulator.enter_code(code)  # typed on the keypad line (a second pty)
        await wait_until(lambda: driver.compartments["0-02"].door_open, what="pickup door open")
        bank.take_item(0, 1)
        bank.close_door(0, 1)
        await wait_until(lambda: state_of(driver, "0-02") is S.AVAILABLE, what="collected")
        assert not await driver.enter_code(code)  # single use: spent, and the order is gone

    transitions = [(e.previous, e.state, e.cause) for e in ctx.events("0-02")]
    assert transitions == [
        (S.AVAILABLE, S.RESERVED, "reserved"),
        (S.RESERVED, S.LOADING, "open_for_loading"),
        (S.LOADING, S.LOADING, "door_opened"),
        (S.LOADING, S.LOADING, "item_placed"),
        (S.LOADING, S.AWAITING_PICKUP, "loaded"),
        (S.AWAITING_PICKUP, S.PICKUP_OPEN, "code_ok"),
        (S.PICKUP_OPEN, S.PICKUP_OPEN, "door_opened"),
        (S.PICKUP_OPEN, S.PICKUP_OPEN, "item_removed"),
        (S.PICKUP_OPEN, S.AVAILABLE, "collected"),
    ]
    assert all(not e.flags for e in ctx.events())
    assert {m.type for m in ctx.messages} == {"locker.events"}
    assert all(m.stream == "locker/bank-1" for m in ctx.messages)
    assert ctx.events() == sorted(ctx.events(), key=lambda e: e.at)
    # the audit log recorded all of it, chained, without the code
    audit = AuditLog(tmp_path / "audit.jsonl")
    assert audit.verify().ok
    text = (tmp_path / "audit.jsonl").read_text()
    assert code not in text
    assert '"outcome":"ok"' in text
    assert driver.counters.code_ok == 1
    snapshot = {s.compartment: s for s in driver.snapshot().compartments}
    assert snapshot["0-02"].state is S.AVAILABLE
    assert len(snapshot) == 4


async def test_code_is_single_use_and_qr_path_works() -> None:
    ctx = RecordingContext()
    driver = sim_driver()
    async with running(driver, ctx):
        key = PickupKey.from_env(KEY_ENV)
        await load(driver, driver.bank, "0-01", 0, seq=1)
        grant = driver.grant_for("0-01")
        assert grant is not None
        # QR path
        assert await driver.enter_code(qr_payload(key, grant))
        await wait_until(lambda: driver.compartments["0-01"].door_open)
        driver.bank.close_door(0, 0)  # item left in: back to awaiting, code already spent
        await wait_until(lambda: state_of(driver, "0-01") is S.AWAITING_PICKUP)
        assert not await driver.enter_code(keypad_code(key, grant))
    assert [e.cause for e in ctx.events("0-01")].count("qr_ok") == 1


async def test_five_wrong_codes_back_off_and_raise_an_alarm() -> None:
    ctx = RecordingContext()
    driver = sim_driver(backoff_base_s=1.0, backoff_free_failures=3, alarm_failures=5)
    async with running(driver, ctx):
        await load(driver, driver.bank, "0-04", 3)
        grant = driver.grant_for("0-04")
        assert grant is not None
        good = keypad_code(PickupKey.from_env(KEY_ENV), grant)
        wrong = f"{(int(good) + 1) % 10**8:08d}"
        for _ in range(4):
            assert not await driver.enter_code(wrong)
        # 4th failure: locked for 1 s; even the right code is refused meanwhile
        assert not await driver.enter_code(good)
        assert driver.counters.code_refused == 1
        await asyncio.sleep(1.1)
        assert not await driver.enter_code(wrong)  # 5th wrong code within the window: alarm
        assert driver.counters.code_alarms == 1
        assert "code_burst_alarm" in ctx.causes("0-04")
        assert not await driver.enter_code(good)  # now locked for 2 s
        await asyncio.sleep(2.1)
        assert await driver.enter_code(good)
        await wait_until(lambda: state_of(driver, "0-04") is S.PICKUP_OPEN)


async def test_forced_door_raises_forced_open_and_ajar() -> None:
    ctx = RecordingContext()
    driver = sim_driver(door_ajar_s=0.5)
    async with running(driver, ctx):
        driver.bank.open_door(0, 2, force=True)
        await wait_until(lambda: "forced_open" in ctx.causes("0-03"))
        await wait_until(lambda: "door_ajar" in ctx.causes("0-03"))
        forced = ctx.events("0-03")[0]
        assert CompartmentFlag.FORCED_OPEN in forced.flags
        assert forced.door_open
        ok = await driver.handle_command(command("locker.open", compartment="0-03"))
        assert ok.ok
        assert CompartmentFlag.FORCED_OPEN not in driver.compartments["0-03"].flags


async def test_board_silence_is_a_fault_and_recovery_clears_it() -> None:
    ctx = RecordingContext()
    driver = sim_driver()
    async with running(driver, ctx):
        driver.bank.faults(0).silent = True
        await wait_until(lambda: CompartmentFlag.FAULT in driver.compartments["0-01"].flags)
        assert ctx.states[-1][0] is DriverState.DEGRADED
        assert "board(s) 0" in (ctx.states[-1][1] or "")
        refused = await driver.handle_command(
            command(
                "locker.reserve",
                compartment="0-01",
                order_ref="o",
                expiry=(utc_now() + timedelta(hours=1)).isoformat(),
            )
        )
        assert not refused.ok
        assert "fault" in (refused.reason or "")
        driver.bank.faults(0).silent = False
        await wait_until(lambda: not driver.compartments["0-01"].flags)
        assert ctx.states[-1] == (DriverState.RUNNING, None)
    assert ctx.causes("0-01") == ["board_silent", "board_answering"]
    assert driver.counters.board_faults == 1


async def test_garbage_and_bad_checksums_never_crash_the_driver() -> None:
    ctx = RecordingContext()
    driver = sim_driver()
    async with running(driver, ctx):
        faults = driver.bank.faults(0)
        faults.bad_checksum = 3
        faults.garbage = 3
        for _ in range(5):
            driver.simulator.inject_bytes(b"\x02\x02\xff\x35garbage\x03")
        polls = driver.counters.polls
        await wait_until(lambda: driver.counters.polls > polls + 5)
        assert driver.metrics()["frame_errors"] >= 3
        # still fully working: a staff open goes through and is seen
        assert (await driver.handle_command(command("locker.open", compartment="0-01"))).ok
        await wait_until(lambda: driver.compartments["0-01"].door_open)
    assert "forced_open" not in ctx.causes("0-01")


async def test_slow_board_is_retried_not_dropped() -> None:
    ctx = RecordingContext()
    driver = sim_driver(request_timeout_s=0.3, retries=2)
    async with running(driver, ctx):
        driver.bank.faults(0).delay_s = 0.15  # busy, but inside the timeout
        polls = driver.counters.polls
        await wait_until(lambda: driver.counters.polls > polls + 3)
        assert not driver.compartments["0-01"].flags
        assert driver.metrics()["poll_latency_max_ms"] >= 150


async def test_cu16_driver_over_tcp_bridge_with_other_polarity_and_quiet_unlock() -> None:
    bank = LockerBank([0, 1], 4, polarity=cu16.LockPolarity.LOCKED_IS_ONE, unlock_answers=False)
    sim = LockerSimulator(bank)
    port = await sim.start_tcp()
    ctx = RecordingContext()
    driver = cu16_driver(
        f"tcp://127.0.0.1:{port}", boards=[0, 1], polarity="locked_is_1", unlock_answers=False
    )
    try:
        async with running(driver, ctx):
            assert len(driver.compartments) == 8
            assert not any(c.door_open for c in driver.compartments.values())
            assert (await driver.handle_command(command("locker.open", compartment="1-03"))).ok
            await wait_until(lambda: driver.compartments["1-03"].door_open)
            assert bank.lock(1, 2).unlocks == 1
            bank.close_door(1, 2)
            await wait_until(lambda: not driver.compartments["1-03"].door_open)
    finally:
        await sim.close()
    assert ctx.causes("1-03") == ["staff_open", "door_opened", "door_closed"]


async def test_cu16_driver_survives_the_line_going_away() -> None:
    bank = LockerBank(1, 4)
    sim = LockerSimulator(bank)
    port = await sim.start_tcp()
    ctx = RecordingContext()
    driver = cu16_driver(f"tcp://127.0.0.1:{port}")
    async with running(driver, ctx):
        await sim.close()  # the bridge disappears: new connections are refused
        await wait_until(
            lambda: CompartmentFlag.FAULT in driver.compartments["0-01"].flags, within=10
        )
        assert any(s is DriverState.DEGRADED for s, _ in ctx.states)
        port2 = await sim.start_tcp(port=port)
        assert port2 == port
        await wait_until(lambda: not driver.compartments["0-01"].flags, within=15)
    await sim.close()


async def test_bad_commands_are_rejected_with_a_reason() -> None:
    ctx = RecordingContext()
    driver: SimLockerDriver = sim_driver()
    async with running(driver, ctx):
        outcome = await driver.handle_command(command("locker.reserve", compartment="9-99"))
        assert not outcome.ok
        assert "no compartment" in (outcome.reason or "")
        outcome = await driver.handle_command(
            command("locker.reserve", compartment="0-01", bogus=1)
        )
        assert not outcome.ok
        assert "bad arguments" in (outcome.reason or "")
        outcome = await driver.handle_command(
            command("locker.open_for_loading", compartment="0-01")
        )
        assert not outcome.ok
        assert "available" in (outcome.reason or "")
        outcome = await driver.handle_command(command("locker.out_of_service", compartment="0-01"))
        assert outcome.ok
        assert state_of(driver, "0-01") is S.OUT_OF_SERVICE


async def test_scripted_people_cycle_a_compartment_twice() -> None:
    """Two orders through one compartment, driven by scripted people; the second order's
    code works and the first one's does not."""
    ctx = RecordingContext()
    driver = sim_driver()
    person = Person(driver.bank, step_s=0.5)
    key = PickupKey.from_env(KEY_ENV)
    async with running(driver, ctx):
        codes = []
        for seq in (1, 2):
            expiry = (utc_now() + timedelta(hours=1)).isoformat()
            args = {"compartment": "0-01", "order_ref": f"o-{seq}", "expiry": expiry}
            assert (await driver.handle_command(command("locker.reserve", **args))).ok
            assert (
                await driver.handle_command(
                    command("locker.set_code", compartment="0-01", order_seq=seq)
                )
            ).ok
            assert (
                await driver.handle_command(command("locker.open_for_loading", compartment="0-01"))
            ).ok
            await person.load(0, 0)
            await wait_until(lambda: state_of(driver, "0-01") is S.AWAITING_PICKUP)
            grant = driver.grant_for("0-01")
            assert grant is not None
            codes.append(keypad_code(key, grant))
            if seq == 2:
                assert not await driver.enter_code(codes[0])  # the old order's code
            await person.collect(driver.simulator, 0, 0, codes[-1])
            await wait_until(lambda: state_of(driver, "0-01") is S.AVAILABLE)
    collected = [e for e in ctx.events("0-01") if e.cause == "collected"]
    assert [e.previous for e in collected] == [S.PICKUP_OPEN, S.PICKUP_OPEN]
    assert driver.counters.code_wrong == 1


async def test_fake_qr_scans_cannot_reset_the_keypad_counter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue #15: 1,024 QR scans naming made-up compartments used to evict the keypad's
    failure counter, so 20 wrong codes raised no alarm and the right code then opened."""
    ctx = RecordingContext()
    driver = sim_driver()  # defaults: 3 free failures, 2 s doubling, alarm at 5
    async with running(driver, ctx):
        key = PickupKey.from_env(KEY_ENV)
        await load(driver, driver.bank, "0-04", 3)
        grant = driver.grant_for("0-04")
        assert grant is not None
        good = keypad_code(key, grant)
        wrong = f"{(int(good) + 1) % 10**8:08d}"
        expiry = int(grant.expiry.timestamp())
        fake = 0
        for _ in range(10):  # 2 wrong codes, then 1,024 scans to flush them: 20 wrong codes
            for _ in range(2):
                assert not await driver.enter_code(wrong)
            for _ in range(1024):
                fake += 1
                scan = f"SGP1:bank-1:x-{fake}:1:{expiry}:{'A' * 26}"
                assert not await driver.enter_code(scan)
        bursts = [r.getMessage() for r in caplog.records if "burst of wrong" in r.getMessage()]
        # one alarm per input for the burst, not one per 5 codes
        assert sum(m.endswith(" at keypad") for m in bursts) == 1, bursts
        assert "code_burst_alarm" in ctx.causes("0-04")
        assert not await driver.enter_code(good)  # the lockout holds
        assert state_of(driver, "0-04") is S.AWAITING_PICKUP
        # The scanner has its own counter: locked out and alarmed too, by its own failures.
        assert sum(m.endswith(" at scanner") for m in bursts) == 1, bursts
        assert driver.counters.code_refused > 0


async def test_a_qr_for_a_door_that_does_not_exist_leaves_the_keypad_alone() -> None:
    ctx = RecordingContext()
    driver = sim_driver()
    async with running(driver, ctx):
        await load(driver, driver.bank, "0-02", 1)
        grant = driver.grant_for("0-02")
        assert grant is not None
        expiry = int(grant.expiry.timestamp())
        for n in range(50):
            assert not await driver.enter_code(f"SGP1:bank-1:nope-{n}:1:{expiry}:{'A' * 26}")
        assert driver.counters.code_refused > 0  # the scanner is locked out
        assert await driver.enter_code(keypad_code(PickupKey.from_env(KEY_ENV), grant))
