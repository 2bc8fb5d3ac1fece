"""The EPCIS eventID is `uuid5(EVENT_ID_NAMESPACE, name)`, computed without a UUID object."""

from __future__ import annotations

import uuid

import pytest

from cloud.epcis import EVENT_ID_NAMESPACE, _uuid5, event_id
from protocols.messages import RfidEvents


@pytest.mark.parametrize(
    "name",
    ["", "s/n/rfid/r/0123456789abcdef0123456789abcdef/0", "é/ü/∞", "x" * 1000],
)
def test_the_fast_uuid5_is_uuid5(name: str) -> None:
    assert _uuid5(name) == str(uuid.uuid5(EVENT_ID_NAMESPACE, name))


def test_event_ids_name_the_message_and_the_item() -> None:
    message = RfidEvents(store="s-1", node="pi-1", seq=1, reader="r-1", items=[], counts=[])
    first, second = event_id(message, 0), event_id(message, 1)
    name = f"s-1/pi-1/{message.stream}/{message.msg_id}/0"
    assert first == f"urn:uuid:{uuid.uuid5(EVENT_ID_NAMESPACE, name)}"
    assert first != second
    assert uuid.UUID(first.removeprefix("urn:uuid:")).version == 5
