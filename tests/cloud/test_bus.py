"""The live-changes bus: bounded per subscriber, drop-oldest, counted."""

from __future__ import annotations

from cloud.bus import Change, LiveBus


async def test_slow_subscriber_loses_the_oldest_and_counts_it() -> None:
    bus = LiveBus(queue_size=3)
    slow, fast = bus.subscribe(), bus.subscribe()
    for i in range(5):
        bus.publish(Change("inventory", "s1", {"i": i}))
        if i < 3:
            assert (await fast.get()).data == {"i": i}
    assert slow.dropped == 2
    assert bus.dropped_total == 2
    assert [(await slow.get()).data["i"] for _ in range(3)] == [2, 3, 4]
    slow.close()
    assert bus.subscribers == 1
