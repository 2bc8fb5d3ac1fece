"""A DriverContext that does what the runtime does with a message: wrap it in the envelope,
validate it, encode it to the bytes that would be published."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from edge.drivers.base import Priority
from protocols.codec import encode
from protocols.messages import BlePresence, DriverState, Message, PresenceEvent

M = TypeVar("M", bound=Message)


class RecordingContext:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.payloads: list[bytes] = []
        self.priorities: list[Priority] = []
        self.states: list[tuple[DriverState, str | None]] = []
        self._seq: dict[str, int] = {}

    @property
    def store(self) -> str:
        return "store-1"

    @property
    def node(self) -> str:
        return "node-1"

    def emit(
        self, message_type: type[M], /, *, priority: Priority = Priority.EVENT, **fields: Any
    ) -> M:
        probe = message_type.model_validate(
            {"store": self.store, "node": self.node, "seq": 0, **fields}
        )
        seq = self._seq.get(probe.stream, 0) + 1
        self._seq[probe.stream] = seq
        message = message_type.model_validate(
            {"store": self.store, "node": self.node, "seq": seq, **fields}
        )
        self.messages.append(message)
        self.payloads.append(encode(message))
        self.priorities.append(priority)
        return message

    def set_state(self, state: DriverState, error: str | None = None) -> None:
        self.states.append((state, error))

    @property
    def state(self) -> DriverState | None:
        return self.states[-1][0] if self.states else None

    def events(self) -> list[PresenceEvent]:
        return [e for m in self.messages if isinstance(m, BlePresence) for e in m.events]


@pytest.fixture
def ctx() -> RecordingContext:
    return RecordingContext()
