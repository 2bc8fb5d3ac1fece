"""The presence engine's column store: slots and stat lists are reused, and a tag costs a few
hundred bytes (a per-tag object with a dict of lists cost about 1 KB)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from edge.rfid.presence import PresenceConfig, PresenceEngine
from edge.rfid.tagstore import FREE, NO_SLOT, TagStore
from simulators.llrp.world import sgtin96


def test_a_forgotten_tag_slot_is_reused_with_fresh_fields() -> None:
    store = TagStore()
    a = store.add(b"A", 3, 10, 1)
    store.last_epoch[a] = 42
    store.announced[a] = 1
    store.add_stat(a, 1, -50.0, 1.0)
    b = store.add(b"B", -1, 11, 0)
    store.remove(a)
    assert store.state[a] == FREE
    assert b"A" not in store.index
    c = store.add(b"C", 7, 20, 0)
    assert c == a
    assert store.capacity == 2
    assert len(store) == 2
    assert store.index == {b"B": b, b"C": c}
    assert (store.last_epoch[c], store.announced[c], store.gtin[c]) == (-1, 0, 7)
    assert (store.first_epoch[c], store.first_stat[c]) == (20, NO_SLOT)
    store.remove(b)
    with pytest.raises(KeyError):
        store.remove(b)


def test_stats_are_a_list_per_tag_and_their_slots_are_reused() -> None:
    store = TagStore()
    slot = store.add(b"A", -1, 0, 0)
    other = store.add(b"B", -1, 0, 0)
    sids = {antenna: store.add_stat(slot, antenna, -40.0 - antenna, 1.0) for antenna in (1, 2, 3)}
    b1 = store.add_stat(other, 1, -70.0, 1.0)
    assert {antenna: store.find_stat(slot, antenna) for antenna in (1, 2, 3)} == sids
    assert store.find_stat(slot, 4) == NO_SLOT
    assert store.find_stat(other, 1) == b1
    assert store.find_stat(other, 2) == NO_SLOT
    assert sorted(store.stats(slot)) == sorted(sids.values())
    store.stat_window[sids[2]] = 2
    store.reset_windows(slot)
    assert [store.stat_window[s] for s in store.stats(slot)] == [0, 0, 0]
    store.clear_stats(slot)
    assert list(store.stats(slot)) == []
    assert store.find_stat(slot, 1) == NO_SLOT
    assert store.find_stat(other, 1) == b1  # another tag's list is untouched
    again = store.add_stat(slot, 9, -45.0, 2.0)
    assert again in sids.values()
    assert store.stat_capacity == 4
    assert (store.stat_reads[again], store.stat_epoch[again], store.stat_window[again]) == (
        1,
        -1,
        0,
    )


def test_churn_through_the_engine_reuses_slots() -> None:
    """Tags that arrive, leave the store and are forgotten free their slots: 10 rounds of
    100 new tags never need more than two rounds' worth of slots."""
    e = PresenceEngine({1: "s1"}, PresenceConfig(left_store_s=5.0, silent_shelf_min_items=1_000))
    t = 0
    for round_ in range(10):
        epcs = [sgtin96(812345, round_ * 1000 + i) for i in range(100)]
        for _ in range(3):
            for epc in epcs:
                e.observe(epc, 1, -50.0, t + 0.5)
            t += 1
            e.tick(float(t))
        # unread: they depart (the whole shelf at once: no outage guard here), then leave
        # the store and are forgotten
        for _ in range(40):
            t += 1
            e.tick(float(t))
        assert e.items() == {}
    assert e.tracked == 0
    assert e._tags.capacity <= 200


def test_a_tag_costs_a_few_hundred_bytes() -> None:
    """5,000 items on two antennas, claims shared: the engine holds under 400 bytes a tag
    beyond the EPC strings the reads brought (it was about 1,050 with a `__slots__` object
    per tag and a dict of lists per (tag, antenna))."""
    tags = 5_000
    epcs = [sgtin96(812345 + i % 40, 1000 + i) for i in range(tags)]
    e = PresenceEngine({1: "s1", 2: "s2"})
    e.claims = {}
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for second in range(1, 6):
            for i, epc in enumerate(epcs):
                e.observe(epc, 1 + i % 2, -50.0, second + 0.5)
            e.tick(second + 1.0)
        e.drain_events()
        e.drain_counts()
        gc.collect()
        per_tag = (tracemalloc.get_traced_memory()[0] - before) / tags
    finally:
        tracemalloc.stop()
    assert len(e.items()) == tags
    assert per_tag < 400, f"{per_tag:.0f} bytes a tag"
