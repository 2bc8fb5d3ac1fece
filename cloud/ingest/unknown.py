"""Say loudly, but not endlessly, when messages come from stores or nodes we don't know.

A store that is not in the cloud's config is the commonest first-hour mistake, and each of
its messages is dead-lettered. One WARNING per message would drown the log (a store sends
several per second); none would leave the operator guessing. So: the first message of a
source is logged at once with the config key to add, then at most one summary line per
source per `interval_s` with the count since the last line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("cloud.ingest")

# Sources remembered at the most; past it the oldest quiet one is forgotten (it would be
# announced again, with its count, if it came back).
MAX_SOURCES = 10_000


@dataclass(slots=True)
class _Source:
    last_logged: float
    unlogged: int = 0


class UnknownSources:
    def __init__(
        self, *, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._sources: dict[tuple[str, str], _Source] = {}

    def note(self, reason: str, store: str, node: str, count: int = 1) -> None:
        """`count` messages of `store`/`node` were dead-lettered for `reason`."""
        key = (store, node if reason == "unknown_node" else "")
        now = self._clock()
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= MAX_SOURCES:
                del self._sources[next(iter(self._sources))]
            self._sources[key] = _Source(last_logged=now, unlogged=count - 1)
            log.warning("%s", _first_line(reason, store, node))
            return
        source.unlogged += count
        self._summarise_if_due(key, source, now)

    def flush_due(self) -> None:
        """Log the summaries whose minute is over (called at the end of each batch)."""
        now = self._clock()
        for key, source in self._sources.items():
            self._summarise_if_due(key, source, now)

    def _summarise_if_due(self, key: tuple[str, str], source: _Source, now: float) -> None:
        if source.unlogged and now - source.last_logged >= self.interval_s:
            store, node = key
            what = f"node {node!r} of store {store!r}" if node else f"store {store!r}"
            log.warning(
                "%d more message(s) from unregistered %s dead-lettered in the last %.0f s",
                source.unlogged,
                what,
                now - source.last_logged,
            )
            source.unlogged = 0
            source.last_logged = now


def _first_line(reason: str, store: str, node: str) -> str:
    if reason == "unknown_node":
        return (
            f"messages from node {node!r} of store {store!r} are dead-lettered (unknown_node):"
            f" add {node!r} to `nodes:` of store {store!r} under `stores:` in the cloud config,"
            " or register it with POST /api/v1/stores"
        )
    return (
        f"messages from store {store!r} are dead-lettered (unknown_store): add it under"
        f" `stores:` in the cloud config (- id: {store}, nodes: [{node}]), or register it"
        " with POST /api/v1/stores"
    )
