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
- **in transit**: a tag its own antenna has read a full `rssi_window` times is seen leaving
  its shelf when its antenna goes quiet while another one reads it by the move rule (two
  reads beating its own by the decaying offset, or it unread for `stale_antenna_s`), or
  once louder than its own antenna's mean by the full `move_offset_db` while that antenna
  did not read it in the epoch (held up close: no shelf neighbour reads a tag louder than
  its own antenna does). It stays counted on its shelf; it moves to the other antenna only
  once it settles there as an arrival does (read there in `arrival_reads` epochs and still
  read `settle_epochs` after), and a read by its own antenna as loud as on the shelf (not
  louder by the full offset: carried past it) ends the transit. A tag in transit that falls
  silent everywhere departs after min(`transit_window`, W) epochs: it was seen moving, so
  silence means it was carried out of reach, whereas a tag silent in place (a fade) keeps
  W. Tags not yet read a full window by their antenna are still corrected at once.
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

Hot path: `observe_bytes()` does one dict lookup (EPC -> slot) and a few array updates per
read. Per-tag state is a slot in `edge.rfid.tagstore.TagStore`'s typed arrays (about 70 bytes
a tag plus its EPC and index entry), so a 50,000-item store fits a Raspberry Pi. EPCs are
kept as bytes (what LLRP carries; 45 bytes of object against 73 for the hex string) and
turned into upper-case hex only in what goes out (events, `items()`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from edge.rfid.epc import gtin_of
from edge.rfid.tagstore import NO_SLOT, TagStore
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
    transit_window: int = 5  # silent epochs after which a tag in transit departs
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
        if not 1 <= self.transit_window <= self.max_window:
            raise ValueError("need 1 <= transit_window <= max_window")
        if self.arrival_reads < 1 or self.arrival_epochs < self.arrival_reads:
            raise ValueError("need 1 <= arrival_reads <= arrival_epochs")
        # the tag store keeps these counts in 16-bit columns
        if self.arrival_epochs > 1_000 or not 1 <= self.rssi_window <= 10_000:
            raise ValueError("need arrival_epochs <= 1000 and 1 <= rssi_window <= 10000")
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


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _item_event(
    kind: ItemEventKind,
    epc: bytes,
    shelf: str | None,
    from_shelf: str | None,
    t: float,
    rssi: float,
    gtin: str | None,
) -> ItemEvent:
    return ItemEvent(
        kind=kind,
        epc=epc.hex().upper(),
        gtin=gtin,
        shelf=shelf,
        from_shelf=from_shelf,
        at=_utc(t),
        rssi=None if math.isnan(rssi) else round(rssi, 1),
    )


class PresenceEngine:
    def __init__(self, shelves: Mapping[int, str], config: PresenceConfig | None = None) -> None:
        if not shelves:
            raise ValueError("the antenna -> shelf map is empty")
        self.config = config or PresenceConfig()
        self._shelf_of = dict(shelves)
        self._inv_epoch = 1.0 / self.config.epoch_s
        # epochs are counted from the first one the engine saw (32-bit columns, see tagstore)
        self._origin: int | None = None
        self._tags = TagStore()
        # a store has a few hundred GTINs over tens of thousands of tags: a tag keeps an index
        self._gtins: list[str] = []
        self._gtin_ids: dict[str, int] = {}
        self._events: list[
            tuple[ItemEventKind, bytes, str | None, str | None, float, float, str | None]
        ] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._deltas: dict[tuple[str, str], int] = {}
        self._items_on: dict[int, int] = dict.fromkeys(self._shelf_of, 0)
        self._last_read_epoch: dict[int, int] = dict.fromkeys(self._shelf_of, -1)
        self._antenna_down: set[int] = set()
        self._reader_down = False
        self._resume_epoch: dict[int, int] = dict.fromkeys(self._shelf_of, -1)
        self._silent_since: dict[int, float] = {}
        self._settling: list[int] = []  # slots of arrived tags not yet announced
        self._window_log = math.log(1 / self.config.delta)
        # online read rate per antenna: EWMA of the share of its items read in an epoch
        self._antenna_rate: dict[int, float] = dict.fromkeys(self._shelf_of, self.config.prior_rate)
        self._epoch_hits: dict[int, int] = dict.fromkeys(self._shelf_of, 0)
        self._hits_epoch = -1
        self.claims: dict[bytes, PresenceEngine] | None = None  # shared by a node's readers
        self.refused_claims = 0  # arrivals refused: another reader holds the item
        self.reads = 0
        self.unmapped_reads = 0
        self.dropped_new_tags = 0

    # ------------------------------------------------------------------ input

    def _gtin_id(self, epc: bytes) -> int:
        gtin = gtin_of(epc.hex().upper())
        if gtin is None:
            return -1
        gid = self._gtin_ids.get(gtin)
        if gid is None:
            gid = self._gtin_ids[gtin] = len(self._gtins)
            self._gtins.append(gtin)
        return gid

    def _gtin(self, slot: int) -> str | None:
        gid = self._tags.gtin[slot]
        return self._gtins[gid] if gid >= 0 else None

    def observe(self, epc: str, antenna: int, rssi: float, t: float) -> None:
        """One tag read: EPC (hex), antenna id, peak RSSI (dBm), time (s)."""
        self.observe_bytes(bytes.fromhex(epc), antenna, rssi, t)

    def observe_bytes(self, epc: bytes, antenna: int, rssi: float, t: float) -> None:
        """One tag read, the EPC as the reader sent it (the LLRP driver's path)."""
        self.reads += 1
        if antenna not in self._shelf_of:
            self.unmapped_reads += 1
            return
        epoch = int(t * self._inv_epoch)  # self._epoch(t), inlined: once per read
        if self._origin is None:
            self._origin = epoch
        epoch -= self._origin
        if epoch != self._hits_epoch:
            self._learn_rates(epoch)
        self._last_read_epoch[antenna] = epoch
        tags = self._tags
        slot = tags.index.get(epc)
        if slot is None:
            if len(tags.index) >= self.config.max_tags:
                self.dropped_new_tags += 1
                return
            slot = tags.add(epc, self._gtin_id(epc), epoch, PENDING)
        sid = tags.first_stat[slot]
        stat_antenna = tags.stat_antenna
        while sid >= 0 and stat_antenna[sid] != antenna:
            sid = tags.stat_next[sid]
        if sid < 0:
            sid = tags.add_stat(slot, antenna, rssi, t)
        else:
            n = tags.stat_reads[sid]
            if n < self.config.rssi_window:
                n += 1
                tags.stat_reads[sid] = n
            tags.stat_rssi[sid] += (rssi - tags.stat_rssi[sid]) / n
            tags.stat_last_t[sid] = t
        tags.last_t[slot] = t
        present = tags.state[slot] == PRESENT
        if not present and epoch - tags.first_epoch[slot] >= self.config.arrival_epochs:
            # the arrival window ran out: start a new one at this read
            tags.first_epoch[slot] = epoch
            tags.hits[slot] = 0
            tags.reset_windows(slot)
        last_epoch = tags.last_epoch[slot]
        if epoch != last_epoch:
            if present:
                current = tags.antenna[slot]
                self._epoch_hits[current] += 1
                # missed epochs it came back from; an outage is not the tag's doing
                gap = epoch - 1 - max(last_epoch, self._resume_epoch[current])
                decayed = tags.long_gap[slot] * self.config.gap_decay
                tags.long_gap[slot] = gap if gap > decayed else decayed
            tags.last_epoch[slot] = epoch
            tags.hits[slot] += 1
        if present:
            if antenna != tags.antenna[slot]:
                self._consider_move(slot, antenna, sid, rssi, epoch, t)
            elif (
                tags.transit[slot] != NO_SLOT
                and rssi <= tags.stat_rssi[sid] + self.config.move_offset_db
            ):
                # its own antenna reads it as it reads it on the shelf: back, or never left
                # (louder by the full offset: carried past its own shelf, still in transit)
                tags.transit[slot] = NO_SLOT
        elif epoch != tags.stat_epoch[sid]:
            # arrival counts epochs per antenna, so two cross-reads on a neighbour in a row
            # rarely beat the item's own antenna to it
            tags.stat_epoch[sid] = epoch
            tags.stat_window[sid] += 1
            if tags.stat_window[sid] >= self.config.arrival_reads:
                self._arrive(slot, t)

    def _epoch(self, t: float) -> int:
        """The epoch of time t, counted from the engine's first."""
        epoch = int(t * self._inv_epoch)
        if self._origin is None:
            self._origin = epoch
        return epoch - self._origin

    def _epoch_start(self, epoch: int) -> float:
        """When `epoch` (counted from the engine's first) began."""
        return (epoch + (self._origin or 0)) * self.config.epoch_s

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
            epoch = self._epoch(t)
            for antenna in self._resume_epoch:
                self._resume_epoch[antenna] = epoch
        self._reader_down = not up

    def set_antenna_up(self, antenna: int, up: bool, t: float) -> None:
        if up:
            if antenna in self._antenna_down:
                self._resume_epoch[antenna] = self._epoch(t)
            self._antenna_down.discard(antenna)
        else:
            self._antenna_down.add(antenna)

    # ------------------------------------------------------------------ rules

    def _arrive(self, slot: int, t: float) -> None:
        tags = self._tags
        # the strongest antenna read in the arrival window: cross-reads come in weaker (on a
        # tie the antenna that read it first, the list's last: stats are newest first)
        best_sid = NO_SLOT
        for sid in tags.stats(slot):
            if tags.stat_window[sid] > 0 and (
                best_sid < 0 or tags.stat_rssi[sid] >= tags.stat_rssi[best_sid]
            ):
                best_sid = sid
        best = tags.stat_antenna[best_sid]
        claims = self.claims
        if claims is not None:
            epc = tags.epc[slot]
            assert epc is not None
            holder = claims.get(epc)
            if holder is not None and holder is not self:
                if not holder.yields(epc, tags.stat_rssi[best_sid], t):
                    self.refused_claims += 1
                    tags.first_epoch[slot] = tags.last_epoch[slot] + 1  # a fresh window from now
                    tags.hits[slot] = 0
                    tags.reset_windows(slot)
                    return
                holder.release(epc, t)
            claims[epc] = self
        tags.state[slot] = PRESENT
        tags.present_since[slot] = tags.first_epoch[slot]
        tags.antenna[slot] = best
        tags.arrived_t[slot] = t
        tags.transit[slot] = NO_SLOT
        self._items_on[best] += 1
        tags.settle_epoch[slot] = tags.last_epoch[slot] + self.config.settle_epochs
        self._settling.append(slot)

    def _announce(self, slot: int) -> None:
        """The settling time is over: the arrival (on the shelf it settled on) goes out."""
        tags = self._tags
        antenna = tags.antenna[slot]
        shelf = self._shelf_of[antenna]
        tags.announced[slot] = 1
        gtin = self._gtin(slot)
        self._count(shelf, gtin, 1)
        sid = tags.find_stat(slot, antenna)
        rssi = tags.stat_rssi[sid] if sid >= 0 else math.nan
        epc = tags.epc[slot]
        assert epc is not None
        self._events.append(
            (ItemEventKind.ARRIVED, epc, shelf, None, tags.arrived_t[slot], rssi, gtin)
        )

    def _consider_move(
        self, slot: int, antenna: int, sid: int, read_rssi: float, epoch: int, t: float
    ) -> None:
        config = self.config
        tags = self._tags
        rssi = tags.stat_rssi[sid]
        if not tags.announced[slot]:
            # settling: one read that beats the arrival antenna by the full offset re-places
            # it (the arrival came from a neighbour's cross-reads)
            current = tags.find_stat(slot, tags.antenna[slot])
            if current < 0 or rssi > tags.stat_rssi[current] + config.move_offset_db:
                self._move(slot, antenna, rssi, t)
            return
        if tags.transit[slot] == antenna:
            # in transit toward this antenna: it lands there as an arrival does, read in
            # arrival_reads epochs and still read settle_epochs after it got there
            if epoch != tags.stat_epoch[sid]:
                tags.stat_epoch[sid] = epoch
                tags.stat_window[sid] += 1
            if (
                tags.stat_window[sid] >= config.arrival_reads
                and epoch - tags.settle_epoch[slot] >= config.settle_epochs
            ):
                self._move(slot, antenna, rssi, t)
            return
        current = tags.find_stat(slot, tags.antenna[slot])
        if tags.stat_reads[sid] >= config.move_min_reads and self._beats_current(slot, sid, t):
            if current < 0 or tags.stat_reads[current] < config.rssi_window:
                # its antenna has not read it a full RSSI window yet: no settled place to
                # leave, a correction of where it arrived
                self._move(slot, antenna, rssi, t)
                return
            # The move rule holds: its own antenna has gone quiet while this one reads it.
        elif (
            current < 0
            or tags.stat_reads[current] < config.rssi_window
            or read_rssi <= tags.stat_rssi[current] + config.move_offset_db
            or int(tags.stat_last_t[current] * self._inv_epoch) - (self._origin or 0) >= epoch
        ):
            return
        # (Or one read louder than its own antenna's by the full offset while that antenna
        # has not read it this epoch: held up close, as no shelf neighbour reads it.)
        # It is off its shelf, but one antenna on a walk is no new shelf: in transit (still
        # counted where it was) until it settles here, or its own antenna reads it again.
        tags.transit[slot] = antenna
        tags.settle_epoch[slot] = epoch
        tags.stat_epoch[sid] = epoch
        tags.stat_window[sid] = 1

    def _beats_current(self, slot: int, sid: int, t: float) -> bool:
        """The move rule: the reads of stat `sid` beat the tag's current antenna by the
        offset, decayed with the time since that antenna last read it, or that antenna has
        not read it for `stale_antenna_s`."""
        config = self.config
        tags = self._tags
        current = tags.find_stat(slot, tags.antenna[slot])
        if current < 0:
            return True
        # The offset decays with the time since the current antenna last read the tag, but
        # an outage is no evidence that the tag left: count from when the reader or antenna
        # came back, or a first cross-read after a reboot would move it.
        resumed_at = self._epoch_start(self._resume_epoch.get(tags.antenna[slot], -1))
        since = t - max(tags.stat_last_t[current], resumed_at)
        if since >= config.stale_antenna_s:
            return True
        offset = config.move_offset_db * max(0.0, 1.0 - since / config.move_decay_s)
        return tags.stat_rssi[sid] > tags.stat_rssi[current] + offset

    def _move(self, slot: int, antenna: int, rssi: float, t: float) -> None:
        tags = self._tags
        tags.transit[slot] = NO_SLOT
        old_antenna = tags.antenna[slot]
        self._items_on[old_antenna] -= 1
        self._items_on[antenna] += 1
        tags.antenna[slot] = antenna
        if not tags.announced[slot]:
            return  # still settling: a correction of where it arrived, not a move
        shelf = self._shelf_of[antenna]
        old = self._shelf_of[old_antenna]
        if shelf != old:
            gtin = self._gtin(slot)
            self._count(old, gtin, -1)
            self._count(shelf, gtin, 1)
            epc = tags.epc[slot]
            assert epc is not None
            self._events.append((ItemEventKind.MOVED, epc, shelf, old, t, rssi, gtin))

    def yields(self, epc: bytes, rssi: float, t: float) -> bool:
        """Whether another reader that hears this engine's item at `rssi` may take it: by
        the move rule, and never while this reader or the item's antenna is down."""
        tags = self._tags
        slot = tags.index.get(epc)
        if slot is None or tags.state[slot] != PRESENT:
            return True
        antenna = tags.antenna[slot]
        if self._reader_down or antenna in self._antenna_down:
            return False
        current = tags.find_stat(slot, antenna)
        if current < 0:
            return True
        config = self.config
        resumed_at = self._epoch_start(self._resume_epoch.get(antenna, -1))
        since = t - max(tags.stat_last_t[current], resumed_at)
        if since >= config.stale_antenna_s:
            return True
        offset = config.move_offset_db * max(0.0, 1.0 - since / config.move_decay_s)
        return rssi > tags.stat_rssi[current] + offset

    def release(self, epc: bytes, t: float) -> None:
        """Another reader of the node took the item: it departs from here."""
        slot = self._tags.index.get(epc)
        if slot is not None and self._tags.state[slot] == PRESENT:
            self._depart(slot, t)

    def _depart(self, slot: int, t: float) -> None:
        tags = self._tags
        epc = tags.epc[slot]
        assert epc is not None
        if self.claims is not None and self.claims.get(epc) is self:
            del self.claims[epc]
        tags.state[slot] = GONE
        tags.departed[slot] = 1
        tags.hits[slot] = 0
        tags.clear_stats(slot)
        antenna = tags.antenna[slot]
        self._items_on[antenna] -= 1
        if tags.announced[slot]:  # an arrival never announced departs silently
            tags.announced[slot] = 0
            old = self._shelf_of[antenna]
            gtin = self._gtin(slot)
            self._count(old, gtin, -1)
            self._events.append((ItemEventKind.DEPARTED, epc, None, old, t, math.nan, gtin))

    def _count(self, shelf: str, gtin: str | None, delta: int) -> None:
        if gtin is None:
            return
        key = (shelf, gtin)
        self._counts[key] = self._counts.get(key, 0) + delta
        self._deltas[key] = self._deltas.get(key, 0) + delta

    def tick(self, t: float) -> None:
        """Apply the time-based rules (departures, silent shelves, left store) at time t."""
        config = self.config
        tags = self._tags
        epoch = self._epoch(t)
        frozen = self._frozen_antennas(epoch, t)
        if self._settling:
            waiting: list[int] = []
            for slot in self._settling:
                if tags.state[slot] != PRESENT or tags.announced[slot]:
                    continue
                if epoch > tags.settle_epoch[slot]:
                    self._announce(slot)
                else:
                    waiting.append(slot)
            self._settling = waiting
        forget: list[int] = []
        resume = self._resume_epoch
        rates = self._antenna_rate
        min_window = config.min_window
        max_window = config.max_window
        transit_window = config.transit_window
        shortest = min(min_window, transit_window)
        transits = tags.transit
        prior_weight = config.prior_weight
        window_log = self._window_log
        antennas = tags.antenna
        last_epochs = tags.last_epoch
        for slot, state in enumerate(tags.state):
            if state == PRESENT:
                antenna = antennas[slot]
                if antenna in frozen:
                    continue
                last_epoch = last_epochs[slot]
                missed = epoch - 1 - max(last_epoch, resume[antenna])
                if missed < shortest:
                    continue
                if transits[slot] != NO_SLOT and missed >= transit_window:
                    # seen leaving its shelf, then silent everywhere: carried out of reach
                    self._depart(slot, t)
                    continue
                if missed < min_window:
                    continue
                p_hat = (tags.hits[slot] + rates[antenna] * prior_weight) / (
                    last_epoch - tags.present_since[slot] + 1 + prior_weight
                )
                window = math.ceil(window_log / p_hat)
                long_gap = tags.long_gap[slot]
                if long_gap:
                    window = max(window, math.ceil(config.gap_margin * long_gap))
                window = max(min_window, min(max_window, window))
                if missed >= window:
                    self._depart(slot, t)
            elif state == GONE:
                if t - tags.last_t[slot] >= config.left_store_s:
                    forget.append(slot)
                    epc = tags.epc[slot]
                    assert epc is not None
                    self._events.append(
                        (ItemEventKind.LEFT_STORE, epc, None, None, t, math.nan, self._gtin(slot))
                    )
            elif state == PENDING and epoch - tags.first_epoch[slot] >= config.arrival_epochs:
                # a stray read that never became an arrival; or a departed tag seen once
                if tags.departed[slot]:
                    tags.first_epoch[slot] = epoch
                    tags.hits[slot] = 0
                else:
                    forget.append(slot)
        for slot in forget:
            tags.remove(slot)

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
        return [_item_event(*row) for row in events]

    def drain_event_chunks(self, size: int) -> Iterator[list[ItemEvent]]:
        """The events since the last drain (taken now, as `drain_events` does) as message
        models, `size` at a time, built as the caller asks for them: the arrival flood of a
        whole store is thousands of events, and as one list of models it was the daemon's
        largest transient allocation (about 0.6 KB an event)."""
        if size < 1:
            raise ValueError(f"chunk size {size}: at least 1")
        events, self._events = self._events, []
        return (
            [_item_event(*row) for row in events[start : start + size]]
            for start in range(0, len(events), size)
        )

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
        tags = self._tags
        shelf_of = self._shelf_of
        out: dict[str, str] = {}
        for slot, (state, announced) in enumerate(zip(tags.state, tags.announced, strict=True)):
            if state == PRESENT and announced:
                epc = tags.epc[slot]
                assert epc is not None
                out[epc.hex().upper()] = shelf_of[tags.antenna[slot]]
        return out

    @property
    def items_present(self) -> int:
        """How many items are on a shelf now (`len(items())` without building it)."""
        tags = self._tags
        return sum(
            1
            for state, announced in zip(tags.state, tags.announced, strict=True)
            if state == PRESENT and announced
        )

    def read_rate(self, epc: str) -> float | None:
        """The engine's current estimate of a present tag's per-epoch read rate."""
        tags = self._tags
        slot = tags.index.get(bytes.fromhex(epc))
        if slot is None or tags.state[slot] != PRESENT:
            return None
        weight = self.config.prior_weight
        return (tags.hits[slot] + self._antenna_rate[tags.antenna[slot]] * weight) / (
            tags.last_epoch[slot] - tags.present_since[slot] + 1 + weight
        )

    def antenna_read_rate(self, antenna: int) -> float:
        """The antenna's learned read rate: the share of its items read per epoch."""
        return self._antenna_rate[antenna]

    def longest_gap(self, epc: str) -> float:
        """The longest run of missed epochs the tag came back from (decaying)."""
        slot = self._tags.index.get(bytes.fromhex(epc))
        return self._tags.long_gap[slot] if slot is not None else 0.0

    @property
    def tracked(self) -> int:
        return len(self._tags)

    def observe_many(self, reads: Iterable[tuple[str, int, float, float]]) -> None:
        observe = self.observe
        for epc, antenna, rssi, t in reads:
            observe(epc, antenna, rssi, t)
