"""The physical side of a CU16 locker bank: latches, doors, item sensors, and faults.

No I/O here: `LockerBank.handle(frame)` takes one decoded host frame and returns the reply
bytes (or None). The pty and TCP servers in `simulators.locker.server` move the bytes.

Each lock has a latch (released by an unlock until the door has opened and shut again), a
door sensor and an item (IR) sensor. The lock bit a board reports is the door feedback:
"open" while the door is open. With `spring_doors` the door pops open on unlock, as on most
parcel lockers; otherwise a person has to pull it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols import cu16


class LatchedError(RuntimeError):
    """A person tried to open a door whose latch is engaged (use force=True to break in)."""


@dataclass(slots=True)
class Lock:
    latch_released: bool = False
    door_open: bool = False
    item: bool = False
    unlocks: int = 0


@dataclass(slots=True)
class BoardFaults:
    """Faults on demand. Counters are 'the next N replies'; flags stay until cleared."""

    silent: bool = False  # the board answers nothing (unplugged, dead, wrong address)
    bad_checksum: int = 0  # the next N replies carry a wrong checksum
    garbage: int = 0  # the next N replies are preceded by line noise
    delay_s: float = 0.0  # a busy/slow board: every reply comes this late


@dataclass(slots=True)
class Board:
    locks: list[Lock]
    faults: BoardFaults = field(default_factory=BoardFaults)

    def open_mask(self) -> int:
        return sum(1 << i for i, lock in enumerate(self.locks) if lock.door_open)

    def item_mask(self) -> int:
        return sum(1 << i for i, lock in enumerate(self.locks) if lock.item)


NOISE = bytes([0xFF, 0x00, 0x35, 0x02, 0x99, 0x03])  # includes a false STX on purpose


class LockerBank:
    def __init__(
        self,
        boards: int | list[int] = 1,
        locks_per_board: int = cu16.LOCKS_PER_BOARD,
        *,
        polarity: cu16.LockPolarity = cu16.LockPolarity.OPEN_IS_ONE,
        unlock_answers: bool = True,
        spring_doors: bool = True,
    ) -> None:
        addresses = list(range(boards)) if isinstance(boards, int) else list(boards)
        self.boards = {b: Board([Lock() for _ in range(locks_per_board)]) for b in addresses}
        self.polarity = polarity
        self.unlock_answers = unlock_answers
        self.spring_doors = spring_doors
        self.requests = 0

    # ------------------------------------------------------------------ the protocol side

    def handle(self, frame: cu16.Frame) -> bytes | None:
        """The board's answer to one host frame, before fault injection (see `reply_for`)."""
        if not isinstance(frame, cu16.CommandFrame):
            return None  # another board's reply echoed on the bus: not for us
        board = self.boards.get(frame.board)
        if board is None:
            return None  # no board at that address: silence, as on a real bus
        self.requests += 1
        if frame.command == cu16.CMD_UNLOCK:
            if frame.lock >= len(board.locks):
                return None
            lock = board.locks[frame.lock]
            lock.latch_released = True
            lock.unlocks += 1
            if self.spring_doors:
                lock.door_open = True
            if not self.unlock_answers:
                return None
        return self._state(frame.board, board)

    def _state(self, address: int, board: Board) -> bytes:
        return cu16.encode_state_reply(address, board.open_mask(), board.item_mask(), self.polarity)

    def reply_for(self, frame: cu16.Frame) -> tuple[bytes | None, float]:
        """The bytes to send back and how long to wait first, with faults applied."""
        board_address = frame.board
        reply = self.handle(frame)
        board = self.boards.get(board_address)
        if reply is None or board is None:
            return None, 0.0
        faults = board.faults
        if faults.silent:
            return None, 0.0
        if faults.bad_checksum:
            faults.bad_checksum -= 1
            reply = reply[:-1] + bytes([(reply[-1] + 1) & 0xFF])
        if faults.garbage:
            faults.garbage -= 1
            reply = NOISE + reply
        return reply, faults.delay_s

    # ------------------------------------------------------------------ the people side

    def lock(self, board: int, lock: int) -> Lock:
        return self.boards[board].locks[lock]

    def open_door(self, board: int, lock: int, *, force: bool = False) -> None:
        state = self.lock(board, lock)
        if not (state.latch_released or force):
            raise LatchedError(f"board {board} lock {lock} is latched")
        state.door_open = True

    def close_door(self, board: int, lock: int) -> None:
        state = self.lock(board, lock)
        state.door_open = False
        state.latch_released = False  # the latch catches the door as it shuts

    def put_item(self, board: int, lock: int) -> None:
        self._reach_in(board, lock).item = True

    def take_item(self, board: int, lock: int) -> None:
        self._reach_in(board, lock).item = False

    def _reach_in(self, board: int, lock: int) -> Lock:
        state = self.lock(board, lock)
        if not state.door_open:
            raise LatchedError(f"board {board} lock {lock}: the door is shut")
        return state

    def faults(self, board: int) -> BoardFaults:
        return self.boards[board].faults
