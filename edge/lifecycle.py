"""The node's lifecycle messages: status, birth, death (Sparkplug-style, in JSON).

These are published directly, never through the outbox: a stale birth or status replayed
after an outage would be worse than none. Their seqs still come from the outbox's stream
table so they keep increasing across restarts.

A birth is built in one synchronous step (no await): the `streams` positions and the
drivers' snapshots are read at the same instant, so every event with a seq at or below the
birth's position for its stream is already reflected in the birth's snapshot. The birth also
says, per stream, what the outbox still holds: from `kept_from` up, except the `dropped`
runs. The cloud waits for those to be resent and steps over the rest (dropped here, and
counted).

A birth whose shelves do not fit one payload goes in numbered parts (one seq each, one
snapshot id): each holds the devices, stream positions and a share of the shelves; the
compartments and zones go in the first. The cloud replaces the node's state once all parts
are in (docs/mqtt-contract.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from edge.outbox import Holding, Outbox
from edge.supervisor import DriverSupervisor
from protocols.codec import MAX_PAYLOAD_BYTES, encode, topic_for
from protocols.messages import (
    INT64_MAX,
    Birth,
    CompartmentStatus,
    Death,
    NodeState,
    SeqRange,
    ShelfCount,
    Status,
    StreamPosition,
    ZoneOccupancy,
    new_message_id,
)
from protocols.sizing import SIZE_MARGIN_BYTES, WORST_CASE_SEQ, entry_size, plan_parts
from protocols.topics import LIFECYCLE_STREAMS, Channel, NodeTopic

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self, store: str, node: str, version: str, outbox: Outbox) -> None:
        self.store = store
        self.node = node
        self.version = version
        self._outbox = outbox

    def topic(self, channel: Channel) -> str:
        return str(NodeTopic(self.store, self.node, channel))

    def status(self, state: NodeState, bd_seq: int, reason: str | None = None) -> Status:
        return Status(
            store=self.store,
            node=self.node,
            seq=self._outbox.next_seq(Channel.STATUS.value),
            state=state,
            bd_seq=bd_seq,
            version=self.version,
            reason=reason,
        )

    def will(self, bd_seq: int) -> tuple[str, bytes]:
        """The Last Will: retained offline status for the connection about to be made."""
        message = self.status(NodeState.OFFLINE, bd_seq, reason="connection lost")
        return topic_for(message), encode(message)

    def birth(self, bd_seq: int, drivers: Iterable[DriverSupervisor]) -> list[Birth]:
        """The birth, in as many parts as its shelves need to stay under the payload limit."""
        supervisors = list(drivers)
        shelves: list[ShelfCount] = []
        compartments: dict[str, list[CompartmentStatus]] = {}
        zones: list[ZoneOccupancy] = []
        held = self._outbox.holdings()  # what the outbox resends: the cloud waits for it
        for supervisor in supervisors:
            try:
                snapshot = supervisor.driver.snapshot()
            except Exception:  # snapshot() must not raise; if it does, the birth still goes
                log.exception("%s: snapshot() failed", supervisor.config.id)
                continue
            shelves.extend(snapshot.shelves)
            if snapshot.compartments:
                compartments[supervisor.config.id] = list(snapshot.compartments)
            zones.extend(snapshot.zones)
        head = Birth(
            store=self.store,
            node=self.node,
            seq=WORST_CASE_SEQ,  # measured with the longest seq; the real ones follow
            bd_seq=bd_seq,
            version=self.version,
            devices=[supervisor.info() for supervisor in supervisors],
            streams=[
                _stream_position(stream, seq, held.get(stream))
                for stream, seq in self._outbox.stream_positions().items()
                if _is_outbox_stream(stream)
            ],
            compartments=compartments,
            zones=zones,
            part=WORST_CASE_SEQ,
            parts=WORST_CASE_SEQ,
            snapshot_id=new_message_id(),
        )
        head_bytes = len(encode(head, max_bytes=INT64_MAX))
        if head_bytes + SIZE_MARGIN_BYTES > MAX_PAYLOAD_BYTES:
            # Documented limit (docs/edge.md): the device list and stream positions always
            # go; the snapshots are left out and the drivers' own snapshot messages on their
            # streams rebuild the state.
            log.error("birth over %d bytes: sending it without snapshots", MAX_PAYLOAD_BYTES)
            head = head.model_copy(update={"compartments": {}, "zones": []})
            shelves = []
            head_bytes = len(encode(head, max_bytes=INT64_MAX))
        # The first part carries the head; the others an envelope with shelves only. The
        # budget of every part is the one of the first (the larger envelope): simpler, and
        # a few parts more at most.
        sizes = [entry_size(shelf) for shelf in shelves]
        plan = plan_parts(
            sizes, MAX_PAYLOAD_BYTES - SIZE_MARGIN_BYTES - head_bytes, len(sizes) or 1
        )
        parts = len(plan)
        births: list[Birth] = []
        for number, part in enumerate(plan, 1):
            fields: dict[str, object] = {
                "msg_id": new_message_id(),
                "seq": self._outbox.next_seq(Channel.BIRTH.value),
                "shelves": shelves[part.start : part.stop],
                "part": number,
                "parts": parts,
                "snapshot_id": head.snapshot_id if parts > 1 else None,
            }
            if number > 1:
                fields.update(compartments={}, zones=[])
            births.append(head.model_copy(update=fields))
        return births

    def death(self, bd_seq: int, reason: str = "shutdown") -> Death:
        return Death(
            store=self.store,
            node=self.node,
            seq=self._outbox.next_seq(Channel.DEATH.value),
            bd_seq=bd_seq,
            reason=reason,
        )


def _stream_position(stream: str, seq: int, held: Holding | None) -> StreamPosition:
    if held is None:  # holds nothing: everything up to seq was confirmed or dropped
        return StreamPosition(stream=stream, seq=seq, kept_from=seq + 1)
    return StreamPosition(
        stream=stream,
        seq=seq,
        kept_from=held.kept_from,
        dropped=[SeqRange(first=first, last=last) for first, last in held.dropped],
    )


def _is_outbox_stream(stream: str) -> bool:
    return stream not in LIFECYCLE_STREAMS
