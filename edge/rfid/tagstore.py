"""The presence engine's per-tag state as columns: one typed array per field, a slot per tag.

A store holds 20,000-50,000 tagged items and the edge runs on a Raspberry Pi. One Python
object per tag (with a dict of per-antenna lists) cost about 1.5 KB a tag; here a tag is a
slot number into `array`s of machine numbers (about 70 bytes), its EPC as bytes (the object
the first read brought, shared with the index and the node's claim table) and an index entry.
Epoch numbers are 32-bit, counted from the engine's first epoch (`PresenceEngine` keeps
the origin): at 1 s epochs that is 68 years of uptime, and 4 bytes less per column a tag.

Per-(tag, antenna) statistics live in a second set of columns, a pool of "stat" slots; a
tag's stats form a singly linked list (`first_stat` -> `stat_next` -> ... -> -1). Most tags
are read by one antenna, boundary items by two, so the list is one or two long.

Slots of forgotten tags and of cleared stats go to free lists and are reused: the columns
grow to the largest number of tags tracked at once and never shrink (the engine bounds that
number with `PresenceConfig.max_tags`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

NO_SLOT = -1
FREE = -1  # `state` of a slot on the free list (the engine's states are 0, 1, 2)


class TagStore:
    """Columns of per-tag and per-(tag, antenna) state; the engine reads and writes the
    arrays directly (its hot path binds them once), this class allocates and frees slots."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}  # EPC -> slot
        self.epc: list[bytes | None] = []
        # per tag
        self.state = array("b")
        self.announced = array("b")  # the arrival went out: the tag is on shelf_of[antenna]
        self.gtin = array("i")  # index into the engine's GTIN table, -1: none
        self.antenna = array("i")
        self.first_epoch = array("i")
        self.present_since = array("i")
        self.hits = array("i")
        self.last_epoch = array("i")
        self.settle_epoch = array("i")  # announce at (arriving); candidate since (in transit)
        self.transit = array("i")  # in transit: the antenna it may settle on; NO_SLOT: not
        self.long_gap = array("f")  # longest run of missed epochs it came back from
        self.last_t = array("d")
        self.departed = array("b")  # it was on a shelf once: a read again is not a stray one
        self.arrived_t = array("d")
        self.first_stat = array("i")
        # per (tag, antenna)
        self.stat_antenna = array("i")
        self.stat_next = array("i")
        self.stat_rssi = array("f")  # running mean RSSI (dBm: float32 is finer than any reader)
        self.stat_reads = array("h")  # reads, capped at the RSSI window (<= 10,000)
        self.stat_last_t = array("d")  # last read time
        self.stat_epoch = array("i")  # last epoch read (arrival counting)
        self.stat_window = array("h")  # epochs read in the current arrival window (<= 1,000)
        self._free_tags: list[int] = []
        self._free_stats: list[int] = []

    def __len__(self) -> int:
        return len(self.index)

    @property
    def capacity(self) -> int:
        """Tag slots allocated (in use + free)."""
        return len(self.state)

    @property
    def stat_capacity(self) -> int:
        return len(self.stat_antenna)

    def add(self, epc: bytes, gtin: int, epoch: int, state: int) -> int:
        """A new tag's slot, its fields at their starting values."""
        if self._free_tags:
            slot = self._free_tags.pop()
            self.epc[slot] = epc
            self.state[slot] = state
            self.announced[slot] = 0
            self.gtin[slot] = gtin
            self.antenna[slot] = 0
            self.first_epoch[slot] = epoch
            self.present_since[slot] = epoch
            self.hits[slot] = 0
            self.last_epoch[slot] = -1
            self.settle_epoch[slot] = 0
            self.transit[slot] = NO_SLOT
            self.long_gap[slot] = 0.0
            self.last_t[slot] = 0.0
            self.departed[slot] = 0
            self.arrived_t[slot] = 0.0
            self.first_stat[slot] = NO_SLOT
        else:
            slot = len(self.state)
            self.epc.append(epc)
            self.state.append(state)
            self.announced.append(0)
            self.gtin.append(gtin)
            self.antenna.append(0)
            self.first_epoch.append(epoch)
            self.present_since.append(epoch)
            self.hits.append(0)
            self.last_epoch.append(-1)
            self.settle_epoch.append(0)
            self.transit.append(NO_SLOT)
            self.long_gap.append(0.0)
            self.last_t.append(0.0)
            self.departed.append(0)
            self.arrived_t.append(0.0)
            self.first_stat.append(NO_SLOT)
        self.index[epc] = slot
        return slot

    def remove(self, slot: int) -> None:
        """Forget the tag: its stats and its slot go to the free lists."""
        epc = self.epc[slot]
        if epc is None:
            raise KeyError(f"tag slot {slot} is free")
        self.clear_stats(slot)
        del self.index[epc]
        self.epc[slot] = None
        self.state[slot] = FREE
        self._free_tags.append(slot)

    def find_stat(self, slot: int, antenna: int) -> int:
        """The stat slot of (tag, antenna), NO_SLOT when that antenna has not read it."""
        sid = self.first_stat[slot]
        stat_antenna = self.stat_antenna
        stat_next = self.stat_next
        while sid >= 0 and stat_antenna[sid] != antenna:
            sid = stat_next[sid]
        return sid

    def add_stat(self, slot: int, antenna: int, rssi: float, t: float) -> int:
        """A first read of the tag by `antenna`: a stat slot at the head of its list."""
        head = self.first_stat[slot]
        if self._free_stats:
            sid = self._free_stats.pop()
            self.stat_antenna[sid] = antenna
            self.stat_next[sid] = head
            self.stat_rssi[sid] = rssi
            self.stat_reads[sid] = 1
            self.stat_last_t[sid] = t
            self.stat_epoch[sid] = -1
            self.stat_window[sid] = 0
        else:
            sid = len(self.stat_antenna)
            self.stat_antenna.append(antenna)
            self.stat_next.append(head)
            self.stat_rssi.append(rssi)
            self.stat_reads.append(1)
            self.stat_last_t.append(t)
            self.stat_epoch.append(-1)
            self.stat_window.append(0)
        self.first_stat[slot] = sid
        return sid

    def stats(self, slot: int) -> Iterator[int]:
        """The tag's stat slots (newest antenna first)."""
        sid = self.first_stat[slot]
        stat_next = self.stat_next
        while sid >= 0:
            yield sid
            sid = stat_next[sid]

    def clear_stats(self, slot: int) -> None:
        sid = self.first_stat[slot]
        free = self._free_stats
        stat_next = self.stat_next
        while sid >= 0:
            free.append(sid)
            sid = stat_next[sid]
        self.first_stat[slot] = NO_SLOT

    def reset_windows(self, slot: int) -> None:
        """A new arrival window: no antenna has read the tag in it yet."""
        sid = self.first_stat[slot]
        stat_window = self.stat_window
        stat_next = self.stat_next
        while sid >= 0:
            stat_window[sid] = 0
            sid = stat_next[sid]
