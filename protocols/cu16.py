"""Kerong CU16-style locker board frames (RS-485, 19200 8N1). Stdlib only.

Shared by the edge driver (host side) and the board simulator (board side), so both speak
exactly the same bytes.

Frames::

    host -> board   02 ADDR CMD 03 SUM                     (5 bytes)
    board -> host   02 ADDR 35 L1-8 L9-16 IR1-8 IR9-16 03 SUM   (9 bytes)

`SUM` is the low byte of the sum of every earlier byte of the frame. `ADDR` is
`(board << 4) | lock`. `0x31` unlocks one lock, `0x30` reads the state of a whole board
(lock nibble 0). In the data bytes bit 0 of the first byte is lock 1 (index 0), bit 7 of
the second byte is lock 16. `IR` bits are the item (infrared) sensors, 1 = item present.

Two things the published sources disagree on are configuration, not code:
- what a lock bit of 1 means (`LockPolarity`): the latch/door is open, or it is locked;
- whether the board answers an unlock (some answer with a state frame, some stay quiet).

`FrameParser` is a streaming parser for either direction: it finds frames in a byte stream,
skips garbage up to the next `02`, and counts every rejected frame by kind instead of
raising, so a noisy bus never crashes its reader.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from enum import StrEnum

STX = 0x02
ETX = 0x03
CMD_READ_STATE = 0x30
CMD_UNLOCK = 0x31
REPLY_STATE = 0x35

BAUDRATE = 19200
MAX_BOARDS = 16
LOCKS_PER_BOARD = 16

_COMMAND_LENGTH = 5
_REPLY_LENGTH = 9
_FRAME_LENGTHS = {CMD_READ_STATE: _COMMAND_LENGTH, CMD_UNLOCK: _COMMAND_LENGTH}
_FRAME_LENGTHS[REPLY_STATE] = _REPLY_LENGTH
# A garbage run longer than this is dropped even without a following STX, so a babbling
# bus cannot grow the buffer without bound.
_MAX_BUFFER = 256


class LockPolarity(StrEnum):
    """What a 1 in the lock bytes means."""

    OPEN_IS_ONE = "open_is_1"
    LOCKED_IS_ONE = "locked_is_1"


def checksum(data: bytes | bytearray) -> int:
    return sum(data) & 0xFF


def address(board: int, lock: int = 0) -> int:
    if not 0 <= board < MAX_BOARDS:
        raise ValueError(f"board {board} out of range 0..{MAX_BOARDS - 1}")
    if not 0 <= lock < LOCKS_PER_BOARD:
        raise ValueError(f"lock {lock} out of range 0..{LOCKS_PER_BOARD - 1}")
    return (board << 4) | lock


def _frame(body: bytes) -> bytes:
    framed = bytes([STX]) + body + bytes([ETX])
    return framed + bytes([checksum(framed)])


def encode_unlock(board: int, lock: int) -> bytes:
    """Unlock one lock. Lock 0 of board 0 is `02 00 31 03 36`."""
    return _frame(bytes([address(board, lock), CMD_UNLOCK]))


def encode_read_state(board: int) -> bytes:
    return _frame(bytes([address(board, 0), CMD_READ_STATE]))


def encode_state_reply(
    board: int, open_locks: int, items: int, polarity: LockPolarity = LockPolarity.OPEN_IS_ONE
) -> bytes:
    """A board's state reply. `open_locks` and `items` are 16-bit masks, bit i = lock i."""
    lock_bits = open_locks if polarity is LockPolarity.OPEN_IS_ONE else ~open_locks & 0xFFFF
    body = bytes([address(board, 0), REPLY_STATE])
    body += (lock_bits & 0xFFFF).to_bytes(2, "little") + (items & 0xFFFF).to_bytes(2, "little")
    return _frame(body)


@dataclass(frozen=True, slots=True)
class CommandFrame:
    """Host -> board: read state or unlock."""

    board: int
    lock: int
    command: int


@dataclass(frozen=True, slots=True)
class StateReply:
    """Board -> host. `lock_bits` are raw; use `open_mask(polarity)` for meaning."""

    board: int
    lock_bits: int
    item_bits: int

    def open_mask(self, polarity: LockPolarity) -> int:
        if polarity is LockPolarity.OPEN_IS_ONE:
            return self.lock_bits
        return ~self.lock_bits & 0xFFFF

    def is_open(self, lock: int, polarity: LockPolarity) -> bool:
        return bool(self.open_mask(polarity) >> lock & 1)

    def has_item(self, lock: int) -> bool:
        return bool(self.item_bits >> lock & 1)


Frame = CommandFrame | StateReply


class FrameErrorKind(StrEnum):
    GARBAGE = "garbage"  # bytes before a start byte
    UNKNOWN_COMMAND = "unknown_command"
    BAD_FRAMING = "bad_framing"  # no ETX where it must be
    BAD_CHECKSUM = "bad_checksum"
    OVERFLOW = "overflow"  # buffer limit reached without a frame


@dataclass(frozen=True, slots=True)
class FrameError:
    kind: FrameErrorKind
    data: bytes  # the rejected bytes (at most a frame's worth), for diagnostics

    def __str__(self) -> str:
        return f"{self.kind}: {self.data.hex(' ')}"


class FrameParser:
    """Incremental frame parser. `feed()` returns the complete frames found so far; rejected
    bytes are counted in `errors` (per kind) and the last few kept in `recent_errors`."""

    def __init__(self, *, keep_errors: int = 16) -> None:
        self._buffer = bytearray()
        self.errors: Counter[FrameErrorKind] = Counter()
        self.recent_errors: deque[FrameError] = deque(maxlen=keep_errors)
        self.frames = 0
        # After a rejected frame, the bytes up to the next STX are its remains, not a
        # separate garbage error: one bad frame counts once.
        self._after_reject = False

    def reset(self) -> None:
        """Drop a partial frame (e.g. after a timeout: the rest of it is not coming)."""
        self._buffer.clear()

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def _reject(self, kind: FrameErrorKind, data: bytes | bytearray) -> None:
        if kind is FrameErrorKind.GARBAGE and self._after_reject:
            self._after_reject = False
            return
        self._after_reject = kind is not FrameErrorKind.GARBAGE
        self.errors[kind] += 1
        self.recent_errors.append(FrameError(kind, bytes(data[:_REPLY_LENGTH])))

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buffer
        buf += data
        frames: list[Frame] = []
        while buf:
            start = buf.find(STX)
            if start < 0:
                self._reject(FrameErrorKind.GARBAGE, buf)
                buf.clear()
                break
            if start > 0:
                self._reject(FrameErrorKind.GARBAGE, buf[:start])
                del buf[:start]
            if len(buf) < 3:
                break
            length = _FRAME_LENGTHS.get(buf[2])
            if length is None:
                # Not a frame start after all: skip this STX and look for the next one.
                self._reject(FrameErrorKind.UNKNOWN_COMMAND, buf[:3])
                del buf[:1]
                continue
            if len(buf) < length:
                if len(buf) > _MAX_BUFFER:
                    self._reject(FrameErrorKind.OVERFLOW, buf)
                    buf.clear()
                break
            candidate = bytes(buf[:length])
            if candidate[-2] != ETX:
                self._reject(FrameErrorKind.BAD_FRAMING, candidate)
                del buf[:1]
                continue
            if checksum(candidate[:-1]) != candidate[-1]:
                self._reject(FrameErrorKind.BAD_CHECKSUM, candidate)
                del buf[:1]
                continue
            del buf[:length]
            self._after_reject = False
            frames.append(_decode(candidate))
            self.frames += 1
        return frames


def _decode(frame: bytes) -> Frame:
    board, lock = frame[1] >> 4, frame[1] & 0x0F
    if frame[2] == REPLY_STATE:
        return StateReply(
            board=board,
            lock_bits=int.from_bytes(frame[3:5], "little"),
            item_bits=int.from_bytes(frame[5:7], "little"),
        )
    return CommandFrame(board=board, lock=lock, command=frame[2])
