"""The offer decisions of one ingest batch, made inside its transaction.

    BlePresence event ─► token → shopper ─► consent ─► arbitration ─► per matching campaign:
        fresh event? ─► window ─► stock ─► day cap ─► visit cap ─► zone cooldown ─► holdout
        ─► Offer (tx.publish to the shopper topic, webhook pending)

Every campaign decision is a row in `offers`: triggered, or suppressed with the first gate
that blocked it. Rows blocked at the consent gate are anonymous: no shopper, no token.

The batch is decided in three steps so that its cost does not grow with its events: load
what the batch needs (tokens, presence, stock, recent exposures: one query each), decide
every event in order in memory (later events see earlier decisions), write the rows (one
insert, one upsert). It runs in `before_commit`, so the stock gate sees the inventory the
same batch wrote, and the decisions commit or roll back with the presence messages: one
decision per presence event, exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.broker.policy import shopper_inbox
from cloud.domains import DomainTx
from cloud.offers import tables
from cloud.offers.arbitration import Placement, arbitrate
from cloud.offers.campaigns import CampaignSpec, as_utc, in_holdout
from cloud.offers.options import OffersOptions
from cloud.state import schema
from cloud.state.db import upsert
from protocols.codec import encode
from protocols.messages import BlePresence, Offer, OfferTrigger, PresenceEvent, utc_now
from protocols.topics import offers_topic

APP_PREFIX = "app:"
TRIGGERED, SUPPRESSED = "triggered", "suppressed"
CAMPAIGN_CACHE_S = 1.0
EXPOSURE_LOOKBACK = timedelta(hours=48)  # covers a local day and any visit

# The loads run in every ingest batch with presence events, on the offer's latency path, so
# the statements are built once with bound parameters: building a SQLAlchemy statement and
# its cache key per batch cost more than running it.
_tok, _shop, _pres, _inv, _off = (
    tables.shopper_tokens,
    tables.shoppers,
    tables.presence,
    schema.inventory,
    tables.offers,
)
_TOKENS = (
    select(
        _tok.c.token,
        _tok.c.valid_from,
        _tok.c.expires_at,
        _shop.c.shopper_id,
        _shop.c.segment,
        _shop.c.consent,
    )
    .select_from(_tok.join(_shop, _shop.c.shopper_id == _tok.c.shopper_id))
    .where(_tok.c.token.in_(bindparam("tokens", expanding=True)))
)
_VISITS = select(_pres).where(_pres.c.shopper_id.in_(bindparam("shoppers", expanding=True)))
_STOCKED = (
    select(_inv.c.store_id, _inv.c.gtin)
    .where(
        _inv.c.store_id.in_(bindparam("stores", expanding=True)),
        _inv.c.gtin.in_(bindparam("gtins", expanding=True)),
    )
    .group_by(_inv.c.store_id, _inv.c.gtin)
    .having(func.sum(_inv.c["count"]) > 0)
)
_EXPOSURES = select(
    _off.c.shopper_id,
    _off.c.campaign_id,
    _off.c.store_id,
    _off.c.zone,
    _off.c.local_day,
    _off.c.visit_id,
    _off.c.decided_at,
).where(
    _off.c.shopper_id.in_(bindparam("shoppers", expanding=True)),
    _off.c.counts_toward_caps.is_(True),
    _off.c.decided_at >= bindparam("since"),
)


@dataclass(frozen=True, slots=True)
class Campaign:
    campaign_id: str
    spec: CampaignSpec


@dataclass(frozen=True, slots=True)
class Shopper:
    shopper_id: str
    segment: str | None
    consent: bool


@dataclass(frozen=True, slots=True)
class Exposure:
    """An offer sent, or held out, that counts toward caps and cooldowns."""

    campaign_id: str
    store: str
    zone: str
    local_day: str | None
    visit_id: str | None
    at: datetime


@dataclass(slots=True)
class _Visit:
    placement: Placement | None
    visit_id: str
    dirty: bool = False


@dataclass(slots=True)
class _BatchState:
    tokens: dict[str, list[tuple[datetime, datetime, Shopper]]] = field(default_factory=dict)
    visits: dict[tuple[str, str], _Visit] = field(default_factory=dict)
    stock: set[tuple[str, str]] = field(default_factory=set)  # (store, gtin) on hand
    exposures: dict[str, list[Exposure]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


class CampaignCache:
    """Active campaigns, re-read at most once a second (API writes here invalidate it)."""

    def __init__(self) -> None:
        self._campaigns: list[Campaign] | None = None
        self._loaded_at = 0.0

    def invalidate(self) -> None:
        self._campaigns = None

    async def get(self, connection: AsyncConnection) -> list[Campaign]:
        now = time.monotonic()
        if self._campaigns is None or now - self._loaded_at > CAMPAIGN_CACHE_S:
            t = tables.campaigns
            rows = await connection.execute(
                select(t.c.campaign_id, t.c.definition).where(t.c.active.is_(True))
            )
            self._campaigns = [
                Campaign(row.campaign_id, CampaignSpec.model_validate(row.definition))
                for row in rows
            ]
            self._loaded_at = now
        return self._campaigns


class OfferEngine:
    def __init__(self, options: OffersOptions, campaigns: CampaignCache) -> None:
        self.options = options
        self.campaigns = campaigns
        self.webhooks = options.webhook.url is not None
        self.decisions: dict[tuple[str, str], int] = {}  # (status, reason) -> count
        self.arbitration: dict[str, int] = {}  # why -> count

    async def on_batch(self, tx: DomainTx, messages: Sequence[BlePresence]) -> None:
        events = [
            (message.store, event, event.beacon[len(APP_PREFIX) :])
            for message in messages
            for event in message.events
            # other beacons are fixed ones (assets, references), not shoppers
            if event.beacon.startswith(APP_PREFIX)
        ]
        if not events:
            return
        connection = tx.connection
        campaigns = await self.campaigns.get(connection)
        state = _BatchState()
        await self._load_tokens(connection, state, {token for _s, _e, token in events})
        shoppers = {s.shopper_id for rows in state.tokens.values() for *_, s in rows if s.consent}
        await self._load_visits(connection, state, shoppers)
        gtins = {g for c in campaigns for g in c.spec.gtins}
        await self._load_stock(connection, state, {store for store, *_ in events}, gtins)
        await self._load_exposures(connection, state, shoppers, min(e.at for _s, e, _t in events))
        for store, event, token in events:
            trigger = OfferTrigger(event.kind.value)
            matching = [c for c in campaigns if c.spec.applies(store, event.zone, trigger)]
            shopper = _shopper_at(state, token, event.at)
            if shopper is None or not shopper.consent:
                for campaign in matching:
                    self._block(tx, state, store, event, campaign, None, None, "consent")
                continue
            visit_id = self._arbitrate(state, store, shopper, token, event)
            if visit_id is None:
                continue
            for campaign in matching:
                if campaign.spec.segment is not None and campaign.spec.segment != shopper.segment:
                    continue  # targeting, not a gate: the campaign is not for this shopper
                self._decide(tx, state, store, event, campaign, shopper, token, visit_id)
        if state.rows:
            await connection.execute(tables.offers.insert(), state.rows)
        visits = [
            _presence_row(store, shopper_id, visit)
            for (store, shopper_id), visit in state.visits.items()
            if visit.dirty and visit.placement is not None
        ]
        if visits:
            await upsert(connection, tables.presence, visits, keys=("store_id", "shopper_id"))

    # ------------------------------------------------------------------ loading

    async def _load_tokens(
        self, connection: AsyncConnection, state: _BatchState, tokens: set[str]
    ) -> None:
        rows = await connection.execute(_TOKENS, {"tokens": sorted(tokens)})
        for row in rows:
            state.tokens.setdefault(row.token, []).append(
                (
                    as_utc(row.valid_from),
                    as_utc(row.expires_at),
                    Shopper(row.shopper_id, row.segment, bool(row.consent)),
                )
            )

    async def _load_visits(
        self, connection: AsyncConnection, state: _BatchState, shoppers: set[str]
    ) -> None:
        if not shoppers:
            return
        for row in await connection.execute(_VISITS, {"shoppers": sorted(shoppers)}):
            placement = Placement(
                row.zone,
                row.token,
                row.rssi,
                as_utc(row.zone_at) if row.zone_at else None,
                as_utc(row.last_seen_at),
            )
            state.visits[(row.store_id, row.shopper_id)] = _Visit(placement, row.visit_id)

    async def _load_stock(
        self, connection: AsyncConnection, state: _BatchState, stores: set[str], gtins: set[str]
    ) -> None:
        if not gtins:
            return
        rows = await connection.execute(
            _STOCKED, {"stores": sorted(stores), "gtins": sorted(gtins)}
        )
        state.stock = {(row.store_id, row.gtin) for row in rows}

    async def _load_exposures(
        self, connection: AsyncConnection, state: _BatchState, shoppers: set[str], since: datetime
    ) -> None:
        if not shoppers:
            return
        rows = await connection.execute(
            _EXPOSURES, {"shoppers": sorted(shoppers), "since": since - EXPOSURE_LOOKBACK}
        )
        for row in rows:
            state.exposures.setdefault(row.shopper_id, []).append(
                Exposure(
                    row.campaign_id,
                    row.store_id,
                    row.zone,
                    row.local_day,
                    row.visit_id,
                    as_utc(row.decided_at),
                )
            )

    # ------------------------------------------------------------------ deciding

    def _arbitrate(
        self, state: _BatchState, store: str, shopper: Shopper, token: str, event: PresenceEvent
    ) -> str | None:
        """Update where the shopper is; the visit id if the event stands, else None."""
        key = (store, shopper.shopper_id)
        visit = state.visits.get(key)
        if (
            visit is None
            or visit.placement is None
            or (
                (event.at - visit.placement.last_seen_at).total_seconds() > self.options.visit_gap_s
            )
        ):
            visit = state.visits[key] = _Visit(None, uuid.uuid4().hex)
        verdict = arbitrate(
            visit.placement,
            event.kind,
            event.zone,
            token,
            event.rssi,
            event.at,
            window_s=self.options.arbitration_window_s,
            switch_db=self.options.switch_db,
        )
        self.arbitration[verdict.why] = self.arbitration.get(verdict.why, 0) + 1
        visit.placement, visit.dirty = verdict.placement, True
        return visit.visit_id if verdict.fires else None

    def _decide(
        self,
        tx: DomainTx,
        state: _BatchState,
        store: str,
        event: PresenceEvent,
        campaign: Campaign,
        shopper: Shopper,
        token: str,
        visit_id: str,
    ) -> None:
        spec = campaign.spec
        local_day = spec.schedule.local(event.at).date().isoformat()
        seen = state.exposures.setdefault(shopper.shopper_id, [])
        mine = [x for x in seen if x.campaign_id == campaign.campaign_id]
        last_here = max(
            (x.at for x in seen if (x.store, x.zone) == (store, event.zone)), default=None
        )
        reason: str | None = None
        in_stock = [g for g in spec.gtins if (store, g) in state.stock]
        if (utc_now() - event.at).total_seconds() > self.options.max_event_age_s:
            reason = "stale"
        elif not spec.schedule.open_at(event.at):
            reason = "window"
        elif spec.gtins and not in_stock:
            reason = "stock"
        elif sum(1 for x in mine if x.local_day == local_day) >= spec.per_day_cap:
            reason = "day_cap"
        elif sum(1 for x in mine if x.visit_id == visit_id) >= spec.per_visit_cap:
            reason = "visit_cap"
        elif (
            spec.zone_cooldown_s > 0
            and last_here is not None
            and (event.at - last_here).total_seconds() < spec.zone_cooldown_s
        ):
            reason = "cooldown"
        elif in_holdout(campaign.campaign_id, shopper.shopper_id, spec.holdout_pct):
            reason = "holdout"
        extra = {"visit_id": visit_id, "local_day": local_day}
        if reason is not None:
            # The control group counts like an exposure, so caps treat both groups alike.
            counts = reason == "holdout"
            self._block(
                tx,
                state,
                store,
                event,
                campaign,
                shopper.shopper_id,
                token,
                reason,
                counts=counts,
                **extra,
            )
        else:
            self._trigger(tx, state, store, event, campaign, shopper, token, in_stock, extra)
        if reason is None or reason == "holdout":
            seen.append(
                Exposure(campaign.campaign_id, store, event.zone, local_day, visit_id, event.at)
            )

    def _trigger(
        self,
        tx: DomainTx,
        state: _BatchState,
        store: str,
        event: PresenceEvent,
        campaign: Campaign,
        shopper: Shopper,
        token: str,
        gtins: Sequence[str],
        extra: dict[str, Any],
    ) -> None:
        spec = campaign.spec
        offer_id = uuid.uuid4().hex
        offer = Offer(
            store=store,
            node=self.options.cloud_node,
            seq=0,
            shopper=shopper_inbox(shopper.shopper_id),
            offer_id=offer_id,
            campaign=campaign.campaign_id,
            zone=event.zone,
            trigger=OfferTrigger(event.kind.value),
            gtins=list(gtins),
            title=spec.title,
            body=spec.body,
            event_time=event.at,
            expires_at=event.at + timedelta(seconds=self.options.offer_ttl_s),
        )
        state.rows.append(
            _row(
                offer_id,
                campaign,
                store,
                event,
                shopper_id=shopper.shopper_id,
                token=token,
                status=TRIGGERED,
                counts_toward_caps=True,
                expires_at=offer.expires_at,
                webhook_state="pending" if self.webhooks else None,
                webhook_next_at=utc_now() if self.webhooks else None,
                payload=offer.model_dump(mode="json"),
                **extra,
            )
        )
        tx.publish(offers_topic(offer.shopper), encode(offer))
        self._count(TRIGGERED, "")
        tx.change("offer", store, _change(offer_id, store, campaign, event, TRIGGERED, None))

    def _block(
        self,
        tx: DomainTx,
        state: _BatchState,
        store: str,
        event: PresenceEvent,
        campaign: Campaign,
        shopper_id: str | None,
        token: str | None,
        reason: str,
        *,
        counts: bool = False,
        visit_id: str | None = None,
        local_day: str | None = None,
    ) -> None:
        offer_id = uuid.uuid4().hex
        state.rows.append(
            _row(
                offer_id,
                campaign,
                store,
                event,
                shopper_id=shopper_id,
                token=token,
                status=SUPPRESSED,
                reason=reason,
                counts_toward_caps=counts,
                visit_id=visit_id,
                local_day=local_day,
            )
        )
        self._count(SUPPRESSED, reason)
        tx.change("offer", store, _change(offer_id, store, campaign, event, SUPPRESSED, reason))

    def _count(self, status: str, reason: str) -> None:
        key = (status, reason)
        self.decisions[key] = self.decisions.get(key, 0) + 1


def _shopper_at(state: _BatchState, token: str, at: datetime) -> Shopper | None:
    """The shopper who held `token` at `at` (tokens are reused once they expire)."""
    valid = [(start, s) for start, end, s in state.tokens.get(token, ()) if start <= at < end]
    return max(valid, key=lambda item: item[0])[1] if valid else None


_ROW_DEFAULTS: dict[str, Any] = {
    "shopper_id": None,
    "token": None,
    "visit_id": None,
    "reason": None,
    "local_day": None,
    "expires_at": None,
    "delivered_at": None,
    "opened_at": None,
    "redeemed_at": None,
    "webhook_state": None,
    "webhook_attempts": 0,
    "webhook_next_at": None,
    "webhook_error": None,
    "payload": None,
}


def _row(
    offer_id: str, campaign: Campaign, store: str, event: PresenceEvent, **values: Any
) -> dict[str, Any]:
    # every row has every column: one executemany for the whole batch
    return {
        **_ROW_DEFAULTS,
        "offer_id": offer_id,
        "campaign_id": campaign.campaign_id,
        "store_id": store,
        "zone": event.zone,
        "trigger": event.kind.value,
        "decided_at": event.at,
        **values,
    }


def _presence_row(store: str, shopper_id: str, visit: _Visit) -> dict[str, Any]:
    placement = visit.placement
    assert placement is not None
    return {
        "store_id": store,
        "shopper_id": shopper_id,
        "token": placement.token,
        "zone": placement.zone,
        "rssi": placement.rssi,
        "zone_at": placement.zone_at,
        "visit_id": visit.visit_id,
        "last_seen_at": placement.last_seen_at,
    }


def _change(
    offer_id: str,
    store: str,
    campaign: Campaign,
    event: PresenceEvent,
    status: str,
    reason: str | None,
) -> dict[str, Any]:
    return {
        "offer_id": offer_id,
        "store": store,
        "campaign": campaign.campaign_id,
        "zone": event.zone,
        "status": status,
        "reason": reason,
    }
