"""Business domains plugged into the cloud: inventory alerts, lockers, offers, catalogue,
dashboard, EPCIS events.

The ingestor owns delivery (dedup, ordering, ack after commit) and the core live state
(nodes, inventory). A domain adds behaviour on top without touching that machinery:

- `on_message` runs for every admitted message INSIDE the batch transaction, so a domain's
  writes commit (or roll back) together with the message and are never applied twice;
- `before_commit` runs once per batch after the core state is written (the batch's
  inventory changes are visible), still inside the transaction;
- changes, commands and outbound publishes queued on the `DomainTx` are released only
  after the commit (SSE, edge commands, shopper offers);
- `router()` adds API endpoints under `/api/v1/`; `start`/`stop` run background work
  (expiry timers, webhook delivery) with a `DomainContext`.

A domain's tables live on `cloud.state.schema.metadata` and get their own alembic revision
(a branch from the core revisions; the cloud upgrades to all heads). Its configuration is
the `domains.<name>` section of the cloud config, validated by the domain itself.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.bus import Change, LiveBus
from protocols.messages import Command, Message

if TYPE_CHECKING:
    from fastapi import APIRouter

    from cloud.config import CloudSettings
    from cloud.metrics import CloudMetrics

# Modules that provide a domain (`create_domain(settings, options) -> Domain`), in the
# order their hooks run. A module that does not exist (yet) is skipped; an import error
# inside one that exists is a real error and propagates.
BUILTIN_DOMAINS = (
    "cloud.inventory",
    "cloud.lockers",
    "cloud.offers",
    "cloud.catalogue",
    "cloud.dashboard",
    "cloud.epcis",
)


@dataclass(slots=True)
class DomainTx:
    """One batch transaction, as a domain sees it."""

    connection: AsyncConnection
    changes: list[Change] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    publishes: list[tuple[str, bytes]] = field(default_factory=list)
    # store -> [{"shelf", "gtin", "count"}] written by this batch (set before before_commit)
    inventory_changes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # (kind, key) -> (store, data): live changes of which only the batch's last counts
    latest: dict[tuple[str, Hashable], tuple[str | None, Callable[[], dict[str, Any]]]] = field(
        default_factory=dict
    )
    # A domain's own working state for this batch, under its name: writes it gathers over
    # the batch's messages and issues once in `before_commit` (a statement per message was
    # a database round trip per message). Gone with the batch, so a retried batch starts
    # clean.
    scratch: dict[str, Any] = field(default_factory=dict)

    def change(self, kind: str, store: str | None, data: dict[str, Any]) -> None:
        """A live change for SSE subscribers, sent after the commit."""
        self.changes.append(Change(kind, store, data))

    def change_latest(
        self, kind: str, store: str | None, key: Hashable, data: Callable[[], dict[str, Any]]
    ) -> None:
        """A live change that supersedes the batch's earlier one of the same kind and key
        (a node's heartbeat, say): subscribers get the newest state once per batch, and
        `data` is only called for that one."""
        self.latest[(kind, key)] = (store, data)

    def collect_latest(self) -> None:
        """Turn the superseding changes into changes (the batch calls it after the hooks)."""
        self.changes += [
            Change(kind, store, data()) for (kind, _), (store, data) in self.latest.items()
        ]
        self.latest.clear()

    def command(self, command: Command) -> None:
        """A command to an edge node, published after the commit."""
        self.commands.append(command)

    def publish(self, topic: str, payload: bytes) -> None:
        """Any other QoS 1 publish (e.g. a shopper offer), after the commit."""
        self.publishes.append((topic, payload))


@dataclass(slots=True)
class DomainContext:
    """What a domain's background work and API handlers get from the running cloud."""

    settings: CloudSettings
    engine: AsyncEngine
    bus: LiveBus
    metrics: CloudMetrics
    publish: Callable[[str, bytes], None]  # QoS 1, thread-safe; fire after your own commit


class Domain:
    """Base class: every hook is optional (a no-op by default)."""

    name: str

    async def on_message(self, tx: DomainTx, message: Message, *, live: bool) -> None:
        """`live` is False for events already covered by the node's latest birth snapshot
        (history only: do not re-apply them to live state)."""

    async def before_commit(self, tx: DomainTx) -> None:
        """Once per batch, after the core state is written."""

    def router(self) -> APIRouter | None:
        return None

    async def start(self, context: DomainContext) -> None:
        """Start background work. Called once the database is migrated."""

    async def stop(self) -> None:
        """Stop background work; must return promptly."""


DomainFactory = Callable[["CloudSettings", dict[str, Any]], Domain]


def load_domains(settings: CloudSettings) -> list[Domain]:
    domains = []
    for module_name in BUILTIN_DOMAINS:
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        factory: DomainFactory = module.create_domain
        name = module_name.rsplit(".", 1)[1]
        try:
            domains.append(factory(settings, dict(settings.domains.get(name, {}))))
        except ValueError as exc:
            from protocols.settings import ConfigError

            raise ConfigError(f"invalid config: domains.{name}: {exc}") from None
    return domains
