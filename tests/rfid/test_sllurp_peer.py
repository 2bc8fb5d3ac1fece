"""A third-party LLRP client (sllurp, GPL: test-only) against our simulated reader."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from simulators.llrp.reader import SimulatedReader
from simulators.llrp.world import World, WorldConfig


async def test_sllurp_connects_and_receives_tag_reports() -> None:
    from sllurp.llrp import LLRPReaderClient, LLRPReaderConfig

    world = World(WorldConfig(antennas=2, items_per_shelf=5, read_rate=1.0, cross_read_rate=0.0))
    async with SimulatedReader(world, cycle_s=0.25) as sim:
        tags: list[dict[str, Any]] = []
        config = LLRPReaderConfig(
            {
                "antennas": [1, 2],
                "report_every_n_tags": 1,
                "tag_content_selector": {"EnableAntennaID": True, "EnablePeakRSSI": True},
            }
        )
        client = LLRPReaderClient("127.0.0.1", sim.port, config, timeout=5.0)
        client.add_tag_report_callback(lambda _reader, reports: tags.extend(reports))
        await asyncio.to_thread(client.connect)
        try:
            deadline = time.monotonic() + 20
            while len({t["EPC-96"] for t in tags}) < 10 and time.monotonic() < deadline:  # noqa: ASYNC110 (sllurp calls back on its own thread)
                await asyncio.sleep(0.1)
        finally:
            await asyncio.to_thread(client.disconnect, 2)
            await asyncio.to_thread(client.join, 5)
    seen = {bytes(t["EPC-96"]).decode().upper(): t for t in tags}
    assert set(seen) == set(world.items)
    for epc, report in seen.items():
        assert report["AntennaID"] == world.items[epc]
        assert -127 <= report["PeakRSSI"] <= 0
