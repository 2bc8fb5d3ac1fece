"""Scripted people at a simulated locker bank: couriers load, shoppers collect and return,
vandals force.

Each step waits `step_s` (longer than one poll) so the edge sees every step on its own, as
it would with real people who take a second to reach in.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from simulators.locker.board import LatchedError, LockerBank
from simulators.locker.server import LockerSimulator


@dataclass(slots=True)
class Person:
    bank: LockerBank
    step_s: float = 0.6
    patience_s: float = 5.0  # how long they wait for a door to pop before giving up

    async def _wait_for_latch(self, board: int, lock: int) -> None:
        state = self.bank.lock(board, lock)
        deadline = asyncio.get_running_loop().time() + self.patience_s
        while not (state.door_open or state.latch_released):
            if asyncio.get_running_loop().time() > deadline:
                raise LatchedError(f"board {board} lock {lock} never unlocked")
            await asyncio.sleep(0.05)
        if not state.door_open:
            self.bank.open_door(board, lock)  # no spring: pull it open

    async def load(self, board: int, lock: int) -> None:
        """A courier (the door was unlocked for loading): parcel in, door shut."""
        await self._wait_for_latch(board, lock)
        await asyncio.sleep(self.step_s)
        self.bank.put_item(board, lock)
        await asyncio.sleep(self.step_s)
        self.bank.close_door(board, lock)

    async def collect(self, sim: LockerSimulator, board: int, lock: int, code: str) -> None:
        """A shopper types the code, takes the parcel, shuts the door."""
        sim.enter_code(code)
        await self._wait_for_latch(board, lock)
        await asyncio.sleep(self.step_s)
        self.bank.take_item(board, lock)
        await asyncio.sleep(self.step_s)
        self.bank.close_door(board, lock)

    async def drop_off(self, sim: LockerSimulator, board: int, lock: int, code: str) -> None:
        """A shopper returning an item: types the drop-off code, puts it in, shuts the door."""
        sim.enter_code(code)
        await self._wait_for_latch(board, lock)
        await asyncio.sleep(self.step_s)
        self.bank.put_item(board, lock)
        await asyncio.sleep(self.step_s)
        self.bank.close_door(board, lock)

    async def force(self, board: int, lock: int, *, leave_open_s: float = 0.0) -> None:
        """Someone pries a door open (and maybe leaves it hanging)."""
        self.bank.open_door(board, lock, force=True)
        await asyncio.sleep(leave_open_s)
        self.bank.close_door(board, lock)
