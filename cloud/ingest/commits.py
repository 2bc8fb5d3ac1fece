"""Commit marks for the edge: per node and stream, the seq up to which everything is committed.

The edge keeps each message in its outbox until the cloud has committed it, not merely until
the broker has it (a broker that restarts without its persistence, or PUBACKs with nobody
subscribed, would otherwise lose what the edge deleted). After each commit the ingestor
notes the streams' new `hw` here; every `commit_interval_ms` one retained `Committed`
message per node that had commits is published on `storegate/v1/{store}/{node}/committed`.
Cheap on the hot path: a dict update per touched stream per batch, one publish per node
per interval, however many messages.

The latest mark of a stream is kept, not the highest: a node whose counters were reset
(new SD card) starts again at 1, and the cloud's position follows it down at its birth.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocols.messages import CommitMark, Committed

NodeKey = tuple[str, str]


class CommitMarks:
    """Marks waiting to be published, and the latest of every stream seen since start (a
    retained message must carry all of a node's streams, not only the ones that moved)."""

    def __init__(self) -> None:
        self._latest: dict[NodeKey, dict[str, int]] = {}
        self._changed: set[NodeKey] = set()
        self._published: dict[NodeKey, int] = {}

    def note(self, committed: Mapping[tuple[str, str, str], int]) -> None:
        """After a commit: the `hw` of every stream the batch touched."""
        for (store, node, stream), hw in committed.items():
            self._latest.setdefault((store, node), {})[stream] = hw
            self._changed.add((store, node))

    def resend_all(self) -> None:
        """Publish every node's marks again (after a reconnect: the broker may have lost its
        retained messages)."""
        self._changed.update(self._latest)

    @property
    def pending(self) -> int:
        return len(self._changed)

    def take(self) -> list[Committed]:
        """The messages to publish now, one per node with news; clears the news."""
        messages = []
        for key in sorted(self._changed):
            store, node = key
            seq = self._published.get(key, 0) + 1
            self._published[key] = seq
            marks = self._latest[key]
            messages.append(
                Committed(
                    store=store,
                    node=node,
                    seq=seq,
                    streams=[CommitMark(stream=s, seq=marks[s]) for s in sorted(marks)],
                )
            )
        self._changed.clear()
        return messages
