"""Shelf presence: raw tag reads in, item events and per-(shelf, GTIN) counts out.

Pure logic, no I/O: the caller feeds reads with `observe()` and calls `tick()` about once
an epoch. The rules (BRIEF §4; parameters in `PresenceConfig`):

- **epoch**: reads are grouped into read cycles of `epoch_s` (≈ 1 s). A tag "is read in an
  epoch" however many times the reader saw it in that epoch.
- **arrival**: a tag read in ≥ `arrival_reads` epochs within `arrival_epochs` epochs by the
  same antenna; it lands on the strongest antenna read in that window. One stray read (a
  tag carried past a shelf) never makes an item arrive, and counting per antenna keeps
  cross-reads on a neighbour from placing a new item on the wrong shelf. The arrival is
  announced `settle_epochs` later, on the shelf it settled on by then: a shelf correction
  right after arrival (the first reads were a neighbour's cross-reads) is not a move.
- **which shelf**: a running mean RSSI over about the last `rssi_window` reads per
  (tag, antenna). The tag moves to another antenna only when that antenna has ≥
  `move_min_reads` reads and its mean beats the current antenna's by an offset that decays
  linearly from `move_offset_db` to 0 over `move_decay_s` since the last read on the
  current antenna (the EdgeX LLRP inventory rule). Also, when the current antenna has not
  read the tag for `stale_antenna_s` while another one does, the tag moves there (a mean
  from before the move would otherwise hold it). Antennas of the same shelf are one shelf.
- **departure**: no read in W consecutive epochs, W = clamp(max(ceil(ln(1/δ)/p̂),
  ceil(`gap_margin` * g)), 5, 60). p̂ is the tag's own per-epoch read rate since it arrived,
  with a weak prior (`prior_weight` epochs) at its antenna's current rate, so a tag that
  reads reliably departs fast and a weak one is not dropped by bad luck. g is the longest
  run of missed epochs the tag came back from, forgotten slowly (times `gap_decay` per epoch
  it is read): real tags fade for seconds at a time (behind metal, under other items), and
  a tag that did so once gets room to do it again.
- **read rates are learned online**, never assumed: each antenna keeps an exponentially
  weighted mean (`rate_alpha` per epoch) of the share of its items it read in an epoch;
  `prior_rate` is only where that mean starts before any read.
- **several readers, one item**: engines of one node share a claim table (EPC -> the
  engine that has the item on a shelf). A reader that hears another reader's item (a
  neighbouring fixture's cross-reads, an item carried past it) does not make it arrive a
  second time: it takes the item only as a move would, when its reads beat the holder's by
  the decaying offset or the holder has not read it for `stale_antenna_s`, and never while
  the holder's reader or antenna is down. The holder then departs it.
- **left the store**: departed and unseen for `left_store_s`; then the engine forgets it.
- **outage guard**: departures freeze on an antenna while it (or the whole reader) is
  reported down, and when an antenna that had ≥ `silent_shelf_min_items` items stops
  reading for `silent_shelf_epochs` epochs at once (a cable pulled, a reader stalled). After
  an outage the departure windows restart. A silent antenna that the reader says is fine
  stays frozen for at most `silent_shelf_max_s` (then the shelf really was emptied).

Hot path: `observe()` does a few dict lookups and float updates per read; per-tag state is
a `__slots__` object and per-(tag, antenna) state a three-item list allocated once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from sys import intern

from edge.rfid.epc import decode_epc
from protocols.messages import CountDelta, ItemEvent, ItemEventKind, ShelfCount

PENDING, PRESENT, GONE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class PresenceConfig:
    epoch_s: float = 1.0
    arrival_reads: int = 2
    arrival_epochs: int = 3
    settle_epochs: int = 2
    rssi_window: int = 20
    move_min_reads: int = 2
    move_offset_db: float = 6.0
    move_decay_s: float = 1.25
    stale_antenna_s: float = 10.0
    delta: float = 1e-3
    min_window: int = 5
    max_window: int = 60
    prior_rate: float = 0.5  # an antenna's read rate before it read anything (uninformed)
    prior_weight: float = 3.0
    rate_alpha: float = 0.05  # per epoch: the antenna's rate follows changes over ~20 s
    gap_margin: float = 1.5
    gap_decay: float = 0.99  # per epoch read: a fade is half forgotten after ~70 of them
    left_store_s: float = 600.0
    silent_shelf_min_items: int = 3
    silent_shelf_epochs: int = 2
    silent_shelf_max_s: float = 60.0
    max_tags: int = 200_000  # memory bound: beyond it, new EPCs are ignored and counted

    def __post_init__(self) -> None:
        if self.epoch_s <= 0:
            raise ValueError("epoch_s must be > 0")
        if not 0 < self.delta < 1:
            raise ValueError("delta must be in (0, 1)")
        if not 1 <= self.min_window <= self.max_window:
            raise ValueError("need 1 <= min_window <= max_window")
        if self.arrival_reads < 1 or self.arrival_epochs < self.arrival_reads:
            raise ValueError("need 1 <= arrival_reads <= arrival_epochs")
        if not 0 < self.prior_rate <= 1 or not 0 < self.rate_alpha <= 1:
            raise ValueError("need prior_rate and rate_alpha in (0, 1]")
        if self.gap_margin < 0 or not 0 <= self.gap_decay <= 1:
            raise ValueError("need gap_margin >= 0 and gap_decay in [0, 1]")


def departure_window(p_hat: float, config: PresenceConfig) -> int:
    """W = clamp(ceil(ln(1/δ) / p̂), min_window, max_window)."""
    if p_hat <= 0:
        return config.max_window
    w = math.ceil(math.log(1 / config.delta) / p_hat)
    return max(config.min_window, min(config.max_window, w))


class _Tag:
    __slots__ = (
        "antenna",
        "arrived_t",
        "epc",
        "first_epoch",
        "gone_t",
        "gtin",
        "hits",
        "last_epoch",
        "last_t",
        "long_gap",
        "present_since",
        "settle_epoch",
        "shelf",
        "state",
        "stats",
    )

    def __init__(self, epc: str, gtin: str | None, epoch: int) -> None:
        self.epc = epc
        self.gtin = gtin
        self.state = PENDING
        self.first_epoch = epoch
        self.present_since = epoch
        self.hits = 0
        self.last_epoch = -1
        self.long_gap = 0.0  # longest run of missed epochs it came back from (decaying)
        self.last_t = 0.0
        self.gone_t = 0.0
        self.antenna = 0
        self.arrived_t = 0.0
        self.settle_epoch = 0
        self.shelf: str | None = None  # the shelf announced to the outside; None until then
        # antenna -> [mean RSSI, reads (capped at the window), last read time,
        #             last epoch read, epochs read in the arrival window]
        self.stats: dict[int, list[float]] = {}


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class PresenceEngine:
    def __init__(self, shelves: Mapping[int, str], config: PresenceConfig | None = None) -> None:
        if not shelves:
            raise ValueError("the antenna -> shelf map is empty")
        self.config = config or PresenceConfig()
        self._shelf_of = dict(shelves)
        self._inv_epoch = 1.0 / self.config.epoch_s
        self._tags: dict[str, _Tag] = {}
        self._events: list[tuple[ItemEventKind, str, str | None, str | None, float, float]] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._deltas: dict[tuple[str, str], int] = {}
        self._items_on: dict[int, int] = dict.fromkeys(self._shelf_of, 0)
        self._last_read_epoch: dict[int, int] = dict.fromkeys(self._shelf_of, -1)
        self._antenna_down: set[int] = set()
        self._reader_down = False
        self._resume_epoch: dict[int, int] = dict.fromkeys(self._shelf_of, -1)
        self._silent_since: dict[int, float] = {}
        self._settling: list[_Tag] = []
        self._window_log = math.log(1 / self.config.delta)
        # online read rate per antenna: EWMA of the share of its items read in an epoch
        self._antenna_rate: dict[int, float] = dict.fromkeys(self._shelf_of, self.config.prior_rate)
        self._epoch_hits: dict[int, int] = dict.fromkeys(self._shelf_of, 0)
        self._hits_epoch = -1
        self.claims: dict[str, PresenceEngine] | None = None  # shared by a node's readers
        self.refused_claims = 0  # arrivals refused: another reader holds the item
        self.reads = 0
        self.unmapped_reads = 0
        self.dropped_new_tags = 0

    # ------------------------------------------------------------------ input

    def observe(self, epc: str, antenna: int, rssi: float, t: float) -> None:
        """One tag read: EPC (upper-case hex), antenna id, peak RSSI (dBm), time (s)."""
        self.reads += 1
        if antenna not in self._shelf_of:
            self.unmapped_reads += 1
            return
        epoch = int(t * self._inv_epoch)
        if epoch != self._hits_epoch:
            self._learn_rates(epoch)
        self._last_read_epoch[antenna] = epoch
        tag = self._tags.get(epc)
        if tag is None:
            if len(self._tags) >= self.config.max_tags:
                self.dropped_new_tags += 1
                return
            gtin = decode_epc(epc).gtin
            # a store has a few hundred GTINs over tens of thousands of tags: share them
            tag = self._tags[epc] = _Tag(epc, None if gtin is None else intern(gtin), epoch)
        stat = tag.stats.get(antenna)
        if stat is None:
            stat = tag.stats[antenna] = [rssi, 1.0, t, -1.0, 0.0]
        else:
            n = stat[1]
            if n < self.config.rssi_window:
                n += 1.0
                stat[1] = n
            stat[0] += (rssi - stat[0]) / n
            stat[2] = t
        tag.last_t = t
        present = tag.state == PRESENT
        if not present and epoch - tag.first_epoch >= self.config.arrival_epochs:
            # the arrival window ran out: start a new one at this read
            tag.first_epoch = epoch
            tag.hits = 0
            for other in tag.stats.values():
                other[4] = 0.0
        if epoch != tag.last_epoch:
            if present:
                self._epoch_hits[tag.antenna] += 1
                # missed epochs it came back from; an outage is not the tag's doing
                gap = epoch - 1 - max(tag.last_epoch, self._resume_epoch[tag.antenna])
                decayed = tag.long_gap * self.config.gap_decay
                tag.long_gap = gap if gap > decayed else decayed
            tag.last_epoch = epoch
            tag.hits += 1
        if present:
            if antenna != tag.antenna:
                self._consider_move(tag, antenna, stat, t)
        elif epoch != stat[3]:
            # arrival counts epochs per antenna, so two cross-reads on a neighbour in a row
            # rarely beat the item's own antenna to it
            stat[3] = epoch
            stat[4] += 1.0
            if stat[4] >= self.config.arrival_reads:
                self._arrive(tag, t)

    def _learn_rates(self, epoch: int) -> None:
        """The epoch of the last reads is over: fold the share of each antenna's items it
        read then into the antenna's rate. Epochs without any read (an outage, or a reader
        between reports) teach nothing; nor does an antenna reported down."""
        if self._hits_epoch >= 0 and not self._reader_down:
            alpha = self.config.rate_alpha
            rates = self._antenna_rate
            down = self._antenna_down
            for antenna, hits in self._epoch_hits.items():
                items = self._items_on[antenna]
                if items > 0 and antenna not in down:
                    share = hits / items if hits < items else 1.0
                    rates[antenna] += alpha * (share - rates[antenna])
        self._epoch_hits = dict.fromkeys(self._epoch_hits, 0)
        self._hits_epoch = epoch

    def set_reader_up(self, up: bool, t: float) -> None:
        """The reader connection went down / came back: freeze / restart departures."""
        if up and self._reader_down:
            epoch = int(t * self._inv_epoch)
            for antenna in self._resume_epoch:
                self._resume_epoch[antenna] = epoch
        self._reader_down = not up

    def set_antenna_up(self, antenna: int, up: bool, t: float) -> None:
        if up:
            if antenna in self._antenna_down:
                self._resume_epoch[antenna] = int(t * self._inv_epoch)
            self._antenna_down.discard(antenna)
        else:
            self._antenna_down.add(antenna)

    # ------------------------------------------------------------------ rules

    def _arrive(self, tag: _Tag, t: float) -> None:
        # the strongest antenna read in the arrival window: cross-reads come in weaker
        best = max((kv for kv in tag.stats.items() if kv[1][4] > 0), key=lambda kv: kv[1][0])[0]
        claims = self.claims
        if claims is not None:
            holder = claims.get(tag.epc)
            if holder is not None and holder is not self:
                if not holder.yields(tag.epc, tag.stats[best][0], t):
                    self.refused_claims += 1
                    tag.first_epoch = tag.last_epoch + 1  # a fresh arrival window from now
                    tag.hits = 0
                    for other in tag.stats.values():
                        other[4] = 0.0
                    return
                holder.release(tag.epc, t)
            claims[tag.epc] = self
        tag.state = PRESENT
        tag.present_since = tag.first_epoch
        tag.antenna = best
        tag.arrived_t = t
        self._items_on[best] += 1
        tag.settle_epoch = tag.last_epoch + self.config.settle_epochs
        self._settling.append(tag)

    def _announce(self, tag: _Tag) -> None:
        """The settling time is over: the arrival (on the shelf it settled on) goes out."""
        shelf = self._shelf_of[tag.antenna]
        tag.shelf = shelf
        self._count(shelf, tag.gtin, 1)
        rssi = tag.stats[tag.antenna][0] if tag.antenna in tag.stats else math.nan
        self._events.append((ItemEventKind.ARRIVED, tag.epc, shelf, None, tag.arrived_t, rssi))

    def _consider_move(self, tag: _Tag, antenna: int, stat: list[float], t: float) -> None:
        config = self.config
        current = tag.stats.get(tag.antenna)
        if tag.shelf is None:
            # settling: one read that beats the arrival antenna by the full offset re-places
            # it (the arrival came from a neighbour's cross-reads)
            if current is not None and stat[0] <= current[0] + config.move_offset_db:
                return
        elif stat[1] < config.move_min_reads:
            return
        elif current is not None:
            # The offset decays with the time since the current antenna last read the tag,
            # but an outage is no evidence that the tag left: count from when the reader or
            # antenna came back, or a first cross-read after a reboot would move it.
            resumed_at = self._resume_epoch.get(tag.antenna, -1) * self.config.epoch_s
            since = t - max(current[2], resumed_at)
            if since < config.stale_antenna_s:
                offset = config.move_offset_db * max(0.0, 1.0 - since / config.move_decay_s)
                if stat[0] <= current[0] + offset:
                    return
        old_antenna = tag.antenna
        self._items_on[old_antenna] -= 1
        self._items_on[antenna] += 1
        tag.antenna = antenna
        if tag.shelf is None:
            return  # still settling: a correction of where it arrived, not a move
        shelf = self._shelf_of[antenna]
        if shelf != tag.shelf:
            old = tag.shelf
            tag.shelf = shelf
            if old is not None:
                self._count(old, tag.gtin, -1)
            self._count(shelf, tag.gtin, 1)
            self._events.append((ItemEventKind.MOVED, tag.epc, shelf, old, t, stat[0]))

    def yields(self, epc: str, rssi: float, t: float) -> bool:
        """Whether another reader that hears this engine's item at `rssi` may take it: by
        the move rule, and never while this reader or the item's antenna is down."""
        tag = self._tags.get(epc)
        if tag is None or tag.state != PRESENT:
            return True
        if self._reader_down or tag.antenna in self._antenna_down:
            return False
        current = tag.stats.get(tag.antenna)
        if current is None:
            return True
        config = self.config
        resumed_at = self._resume_epoch.get(tag.antenna, -1) * config.epoch_s
        since = t - max(current[2], resumed_at)
        if since >= config.stale_antenna_s:
            return True
        offset = config.move_offset_db * max(0.0, 1.0 - since / config.move_decay_s)
        return rssi > current[0] + offset

    def release(self, epc: str, t: float) -> None:
        """Another reader of the node took the item: it departs from here."""
        tag = self._tags.get(epc)
        if tag is not None and tag.state == PRESENT:
            self._depart(tag, t)

    def _depart(self, tag: _Tag, t: float) -> None:
        if self.claims is not None and self.claims.get(tag.epc) is self:
            del self.claims[tag.epc]
        tag.state = GONE
        tag.gone_t = tag.last_t
        tag.hits = 0
        tag.stats.clear()
        self._items_on[tag.antenna] -= 1
        old = tag.shelf
        tag.shelf = None
        if old is not None:  # an arrival never announced departs silently
            self._count(old, tag.gtin, -1)
            self._events.append((ItemEventKind.DEPARTED, tag.epc, None, old, t, math.nan))

    def _count(self, shelf: str, gtin: str | None, delta: int) -> None:
        if gtin is None:
            return
        key = (shelf, gtin)
        self._counts[key] = self._counts.get(key, 0) + delta
        self._deltas[key] = self._deltas.get(key, 0) + delta

    def tick(self, t: float) -> None:
        """Apply the time-based rules (departures, silent shelves, left store) at time t."""
        config = self.config
        epoch = int(t * self._inv_epoch)
        frozen = self._frozen_antennas(epoch, t)
        if self._settling:
            waiting: list[_Tag] = []
            for tag in self._settling:
                if tag.state != PRESENT or tag.shelf is not None:
                    continue
                if epoch > tag.settle_epoch:
                    self._announce(tag)
                else:
                    waiting.append(tag)
            self._settling = waiting
        forget: list[str] = []
        for tag in self._tags.values():
            state = tag.state
            if state == PRESENT:
                antenna = tag.antenna
                if antenna in frozen:
                    continue
                missed = epoch - 1 - max(tag.last_epoch, self._resume_epoch[antenna])
                if missed < config.min_window:
                    continue
                p_hat = (tag.hits + self._antenna_rate[antenna] * config.prior_weight) / (
                    tag.last_epoch - tag.present_since + 1 + config.prior_weight
                )
                window = math.ceil(self._window_log / p_hat)
                if tag.long_gap:
                    window = max(window, math.ceil(config.gap_margin * tag.long_gap))
                window = max(config.min_window, min(config.max_window, window))
                if missed >= window:
                    self._depart(tag, t)
            elif state == GONE:
                if t - tag.last_t >= config.left_store_s:
                    forget.append(tag.epc)
                    self._events.append(
                        (ItemEventKind.LEFT_STORE, tag.epc, None, None, t, math.nan)
                    )
            elif epoch - tag.first_epoch >= config.arrival_epochs:
                # a stray read that never became an arrival; or a departed tag seen once
                if tag.gone_t:
                    tag.first_epoch = epoch
                    tag.hits = 0
                else:
                    forget.append(tag.epc)
        for epc in forget:
            del self._tags[epc]

    def _frozen_antennas(self, epoch: int, t: float) -> set[int]:
        config = self.config
        if self._reader_down:
            return set(self._shelf_of)
        frozen = set(self._antenna_down)
        for antenna, items in self._items_on.items():
            silent = epoch - 1 - self._last_read_epoch[antenna]
            if items >= config.silent_shelf_min_items and silent >= config.silent_shelf_epochs:
                since = self._silent_since.setdefault(antenna, t)
                if t - since < config.silent_shelf_max_s:
                    frozen.add(antenna)
            elif antenna in self._silent_since and silent < config.silent_shelf_epochs:
                del self._silent_since[antenna]
                self._resume_epoch[antenna] = max(
                    self._resume_epoch[antenna], self._last_read_epoch[antenna]
                )
        return frozen

    # ------------------------------------------------------------------ output

    def drain_events(self) -> list[ItemEvent]:
        events, self._events = self._events, []
        out: list[ItemEvent] = []
        for kind, epc, shelf, from_shelf, t, rssi in events:
            out.append(
                ItemEvent(
                    kind=kind,
                    epc=epc,
                    gtin=decode_epc(epc).gtin,
                    shelf=shelf,
                    from_shelf=from_shelf,
                    at=_utc(t),
                    rssi=None if math.isnan(rssi) else round(rssi, 1),
                )
            )
        return out

    def drain_counts(self) -> list[CountDelta]:
        deltas, self._deltas = self._deltas, {}
        return [
            CountDelta(shelf=shelf, gtin=gtin, delta=delta, count=self._counts[(shelf, gtin)])
            for (shelf, gtin), delta in sorted(deltas.items())
            if delta
        ]

    @property
    def pending_events(self) -> int:
        return len(self._events)

    def shelf_counts(self) -> list[ShelfCount]:
        return [
            ShelfCount(shelf=shelf, gtin=gtin, count=count)
            for (shelf, gtin), count in sorted(self._counts.items())
            if count > 0
        ]

    def items(self) -> dict[str, str]:
        """EPC -> shelf of every item on a shelf now."""
        return {
            tag.epc: tag.shelf
            for tag in self._tags.values()
            if tag.state == PRESENT and tag.shelf is not None
        }

    def read_rate(self, epc: str) -> float | None:
        """The engine's current estimate of a present tag's per-epoch read rate."""
        tag = self._tags.get(epc)
        if tag is None or tag.state != PRESENT:
            return None
        weight = self.config.prior_weight
        return (tag.hits + self._antenna_rate[tag.antenna] * weight) / (
            tag.last_epoch - tag.present_since + 1 + weight
        )

    def antenna_read_rate(self, antenna: int) -> float:
        """The antenna's learned read rate: the share of its items read per epoch."""
        return self._antenna_rate[antenna]

    def longest_gap(self, epc: str) -> float:
        """The longest run of missed epochs the tag came back from (decaying)."""
        tag = self._tags.get(epc)
        return tag.long_gap if tag is not None else 0.0

    @property
    def tracked(self) -> int:
        return len(self._tags)

    def observe_many(self, reads: Iterable[tuple[str, int, float, float]]) -> None:
        observe = self.observe
        for epc, antenna, rssi, t in reads:
            observe(epc, antenna, rssi, t)
