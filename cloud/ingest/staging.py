"""Parts of split snapshots (births, rfid snapshots), held until all are in.

A snapshot replaces state; half of one would wipe the shelves the missing parts hold. So
the parts of a snapshot (`part`/`parts`, one `snapshot_id`) are staged here and the state
is replaced only with all of them, in one transaction.

Bounded, with a stated policy:
- at most `MAX_PARTS` parts per snapshot (50,000 items take ~10): more is refused;
- at most `per_node` snapshots staged per node: a new one evicts the node's oldest (a newer
  snapshot supersedes it anyway), counted and logged;
- a snapshot not complete `timeout_s` after its first part expires: dropped, counted,
  logged, and the ingestor asks the node to resync (a whole new birth, not the missing
  part: the node keeps no old snapshot to answer from).

Staging is in memory and idempotent per part, so a batch that rolls back and is redelivered
stages the same parts again; entries leave only after the batch that completed or expired
them committed (`discard`). A restart of the ingestor loses staged parts already acked: the
snapshot then never completes on its own, and the node's next snapshot or a resync repairs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from protocols.messages import Birth, RfidSnapshot

log = logging.getLogger(__name__)

MAX_PARTS = 1_000
"""Parts one snapshot may have: 1,000 x 256 KiB, some 5 million shelf rows."""

SnapshotPart = Birth | RfidSnapshot
SnapshotKey = tuple[str, str, str, str]  # store, node, stream, snapshot_id


@dataclass(slots=True)
class _Staged:
    parts: int
    first_at: float
    received: dict[int, SnapshotPart] = field(default_factory=dict)

    def missing(self) -> list[int]:
        return [n for n in range(1, self.parts + 1) if n not in self.received]


class PartError(ValueError):
    """A part that cannot belong to any snapshot (the reason says why)."""


class SnapshotStaging:
    def __init__(self, timeout_s: float, per_node: int = 4) -> None:
        self.timeout_s = timeout_s
        self.per_node = per_node
        self._staged: dict[SnapshotKey, _Staged] = {}
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._staged)

    def waits_for(self, message: SnapshotPart) -> bool:
        """Whether `message` is a part of a snapshot being staged that has not come yet."""
        if message.parts == 1 or message.snapshot_id is None:
            return False
        staged = self._staged.get(
            (message.store, message.node, message.stream, message.snapshot_id)
        )
        return staged is not None and message.part not in staged.received

    def add(self, message: SnapshotPart, now: float | None = None) -> list[SnapshotPart] | None:
        """Stage `message`; all parts of its snapshot in order once it completes them."""
        if message.parts == 1:
            return [message]
        if message.snapshot_id is None:
            raise PartError(f"part {message.part} of {message.parts} without a snapshot_id")
        if message.parts > MAX_PARTS:
            raise PartError(f"{message.parts} parts, more than the {MAX_PARTS} allowed")
        if message.part > message.parts:
            raise PartError(f"part {message.part} of only {message.parts}")
        now = time.monotonic() if now is None else now
        key = (message.store, message.node, message.stream, message.snapshot_id)
        staged = self._staged.get(key)
        if staged is None:
            self._make_room(message.store, message.node)
            staged = self._staged[key] = _Staged(message.parts, now)
        elif staged.parts != message.parts:
            raise PartError(
                f"part {message.part} says {message.parts} parts, earlier ones {staged.parts}"
            )
        staged.received[message.part] = message
        if len(staged.received) < staged.parts:
            return None
        return [staged.received[n] for n in range(1, staged.parts + 1)]

    def expired_for(
        self, store: str, node: str, now: float | None = None
    ) -> list[tuple[SnapshotKey, list[int]]]:
        """The node's staged snapshots past their time, with their missing parts."""
        if not self._staged:
            return []  # asked for every message; almost always nothing is staged
        now = time.monotonic() if now is None else now
        return [
            (key, staged.missing())
            for key, staged in self._staged.items()
            if key[:2] == (store, node) and now - staged.first_at >= self.timeout_s
        ]

    def discard(self, key: SnapshotKey, *, expired: bool = False) -> None:
        if self._staged.pop(key, None) is not None and expired:
            self.expired += 1

    def _make_room(self, store: str, node: str) -> None:
        mine = [(s.first_at, k) for k, s in self._staged.items() if k[:2] == (store, node)]
        for _, key in sorted(mine)[: max(0, len(mine) - self.per_node + 1)]:
            staged = self._staged.pop(key)
            self.evicted += 1
            log.warning(
                "%s/%s: dropped staged snapshot %s of %s (parts %s missing): more than %d "
                "snapshots of the node staged at once",
                store,
                node,
                key[3],
                key[2],
                staged.missing(),
                self.per_node,
            )
