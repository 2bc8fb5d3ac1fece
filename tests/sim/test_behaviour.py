"""The behaviour model on a real simulator world, and the ground truth it writes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from simulators.llrp.world import World, WorldConfig
from simulators.scenario.behaviour import ShelfPeople
from simulators.scenario.model import Behaviour, Span
from simulators.scenario.truth import TruthWriter, replay

QUICK = Behaviour(browse_s=Span(low=0, high=0), picks=Span(low=3, high=3))


def _people(behaviour: Behaviour, seed: int = 3) -> ShelfPeople:
    world = World(WorldConfig(antennas=4, items_per_shelf=10, products_per_shelf=2, seed=seed))
    return ShelfPeople(world, behaviour, stock_per_shelf=10, rng=random.Random(seed))


async def test_shoppers_take_buy_misplace_and_staff_restock_and_tidy(tmp_path: Path) -> None:
    people = _people(QUICK.model_copy(update={"buy_p": 0.4, "misplace_p": 0.5, "tidy_p": 1.0}))
    world = people.world
    truth = TruthWriter(tmp_path / "truth.jsonl")
    truth.drain("s", world, people.reasons, 1000.0)  # the initial stock
    for _ in range(20):
        await people.shopper()
    c = people.counters
    assert c.picked == 60
    assert c.bought + c.put_back + c.misplaced == 60
    assert c.bought > 0
    assert c.misplaced > 0
    assert c.put_back > 0
    assert len(world.items) == 40 - c.bought
    misplaced = [e for e, a in world.items.items() if a != people.home[e]]
    assert misplaced
    truth.drain("s", world, people.reasons, 1000.0)
    people.staff_round()
    assert all(a == people.home[e] for e, a in world.items.items())  # tidy_p = 1
    on_shelf = [list(world.items.values()).count(a) for a in range(1, 5)]
    assert all(n >= 8 for n in on_shelf)  # refilled where under 80 % of 10
    assert c.restocked > 0
    truth.drain("s", world, people.reasons, 1000.0)
    truth.close()
    assert replay(truth.path) == {"s": world.truth()}  # the file replays to the world


async def test_shoppers_arrive_at_the_configured_rate() -> None:
    people = _people(QUICK.model_copy(update={"shoppers_per_minute": 6000}))
    task = asyncio.create_task(people.shoppers())
    await asyncio.sleep(0.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 10 <= people.counters.shoppers <= 120  # ~50 expected at 100 per second
