"""The CU16 frame codec: golden bytes, checksums, polarity, and a parser that resyncs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import cu16
from protocols.cu16 import CommandFrame, FrameErrorKind, FrameParser, LockPolarity, StateReply


def test_golden_unlock_lock0_board0() -> None:
    assert cu16.encode_unlock(0, 0) == bytes.fromhex("0200310336")


def test_address_packs_board_and_lock() -> None:
    assert cu16.encode_unlock(1, 5) == bytes(
        [0x02, 0x15, 0x31, 0x03, (0x02 + 0x15 + 0x31 + 0x03) & 0xFF]
    )
    assert cu16.encode_read_state(2) == bytes([0x02, 0x20, 0x30, 0x03, 0x55])


def test_checksum_is_low_byte_of_sum() -> None:
    assert cu16.checksum(bytes([0xFF, 0xFF, 0x03])) == 0x01


def test_state_reply_layout_and_roundtrip() -> None:
    frame = cu16.encode_state_reply(3, open_locks=0b1000_0000_0000_0001, items=0x0102)
    assert len(frame) == 9
    assert frame[:3] == bytes([0x02, 0x30, 0x35])
    assert frame[3:7] == bytes([0x01, 0x80, 0x02, 0x01])  # L1-8, L9-16, IR1-8, IR9-16
    assert frame[7] == 0x03
    assert frame[8] == sum(frame[:8]) & 0xFF
    (reply,) = FrameParser().feed(frame)
    assert reply == StateReply(board=3, lock_bits=0x8001, item_bits=0x0102)
    assert reply.is_open(0, LockPolarity.OPEN_IS_ONE)
    assert reply.is_open(15, LockPolarity.OPEN_IS_ONE)
    assert not reply.is_open(1, LockPolarity.OPEN_IS_ONE)
    assert reply.has_item(1)
    assert reply.has_item(8)
    assert not reply.has_item(0)


def test_locked_is_one_polarity_inverts_the_lock_bits() -> None:
    frame = cu16.encode_state_reply(
        0, open_locks=0b0101, items=0, polarity=LockPolarity.LOCKED_IS_ONE
    )
    assert frame[3:5] == bytes([0xFA, 0xFF])  # 1 = locked: the two open locks read 0
    (reply,) = FrameParser().feed(frame)
    assert isinstance(reply, StateReply)
    assert reply.is_open(0, LockPolarity.LOCKED_IS_ONE)
    assert not reply.is_open(1, LockPolarity.LOCKED_IS_ONE)
    # Read with the wrong polarity, the same bytes mean the opposite: why it is configuration.
    assert not reply.is_open(0, LockPolarity.OPEN_IS_ONE)


def test_parser_decodes_host_commands_for_the_simulator() -> None:
    frames = FrameParser().feed(cu16.encode_unlock(0, 7) + cu16.encode_read_state(1))
    assert frames == [CommandFrame(0, 7, cu16.CMD_UNLOCK), CommandFrame(1, 0, cu16.CMD_READ_STATE)]


def test_parser_resyncs_on_garbage_and_counts_it() -> None:
    good = cu16.encode_state_reply(0, 1, 2)
    parser = FrameParser()
    frames = parser.feed(b"\xff\x13\x37" + good + b"\x00\x02\x99" + good)
    assert frames == [StateReply(0, 1, 2), StateReply(0, 1, 2)]
    assert parser.errors[FrameErrorKind.GARBAGE] >= 1
    assert parser.errors[FrameErrorKind.UNKNOWN_COMMAND] == 1  # the false STX before 0x99


def test_bad_checksum_is_rejected_typed_and_the_next_frame_still_parses() -> None:
    good = cu16.encode_state_reply(0, 1, 0)
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    parser = FrameParser()
    assert parser.feed(bad + good) == [StateReply(0, 1, 0)]
    assert parser.errors[FrameErrorKind.BAD_CHECKSUM] == 1
    assert parser.recent_errors[-1].kind is FrameErrorKind.BAD_CHECKSUM
    assert "bad_checksum" in str(parser.recent_errors[-1])


def test_bad_framing_missing_etx() -> None:
    parser = FrameParser()
    assert parser.feed(bytes([0x02, 0x00, 0x31, 0x04, 0x37])) == []
    assert parser.errors[FrameErrorKind.BAD_FRAMING] == 1


def test_byte_by_byte_feeding_assembles_frames() -> None:
    stream = cu16.encode_state_reply(1, 0xFFFF, 0) + cu16.encode_unlock(0, 0)
    parser = FrameParser()
    frames = [f for b in stream for f in parser.feed(bytes([b]))]
    assert frames == [StateReply(1, 0xFFFF, 0), CommandFrame(0, 0, cu16.CMD_UNLOCK)]


def test_reset_drops_a_partial_frame() -> None:
    parser = FrameParser()
    parser.feed(cu16.encode_state_reply(0, 0, 0)[:5])
    parser.reset()
    assert parser.feed(cu16.encode_unlock(0, 1)) == [CommandFrame(0, 1, cu16.CMD_UNLOCK)]


@pytest.mark.parametrize(("board", "lock"), [(16, 0), (0, 16), (-1, 0)])
def test_out_of_range_addresses_are_rejected(board: int, lock: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        cu16.address(board, lock)


@settings(max_examples=300, deadline=None)
@given(noise=st.lists(st.binary(max_size=40), max_size=8), board=st.integers(0, 15))
def test_fuzzed_noise_never_raises_and_never_hides_a_clean_frame(
    noise: list[bytes], board: int
) -> None:
    parser = FrameParser()
    good = cu16.encode_state_reply(board, 0x1234, 0x4321)
    for chunk in noise:
        parser.feed(chunk)
    parser.reset()  # what the bus master does after a timeout
    assert parser.feed(good) == [StateReply(board, 0x1234, 0x4321)]
