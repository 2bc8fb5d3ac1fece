"""The reader's model and firmware (from its GeneralDeviceCapabilities) are in the node's
first birth: the real edge runtime, a real Mosquitto, the LLRP driver and a simulated reader
that comes up a second after the node."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.config import create_drivers, load_edge_settings
from edge.runtime import EdgeRuntime
from protocols.messages import Birth
from simulators.llrp.reader import SimulatedReader
from simulators.llrp.world import World, WorldConfig
from tests.edge.helpers import Watcher, edge_config
from tests.servers import MosquittoBroker, free_port


async def test_first_birth_carries_the_reader_model_and_firmware(
    tmp_path: Path, mosquitto_broker: MosquittoBroker
) -> None:
    port = free_port()
    device = {
        "id": "reader-1",
        "kind": "rfid_reader",
        "driver": "llrp",
        "options": {"port": port, "antennas": {1: "shelf-1"}, "backoff_initial_s": 0.2},
    }
    path = edge_config(tmp_path, mosquitto_broker.port, [device])
    settings = load_edge_settings(path)
    runtime = EdgeRuntime(settings, create_drivers(settings), version="9.9.9", handle_signals=False)
    watcher = Watcher(mosquitto_broker.host, mosquitto_broker.port)
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.sleep(1.0)  # the node is up; its reader is not yet
        world = World(WorldConfig(antennas=1, items_per_shelf=2))
        reader = SimulatedReader(
            world, port=port, manufacturer=25882, model=2001002, firmware="5.14.0.240"
        )
        async with reader:
            birth = await asyncio.to_thread(watcher.wait_for, lambda m: isinstance(m, Birth))
            runtime.stop()
            assert await asyncio.wait_for(task, 20) == 0
    finally:
        runtime.stop()
        watcher.close()
    assert isinstance(birth, Birth)
    births = [m for _, m, _ in watcher.messages if isinstance(m, Birth)]
    assert births[0] is birth
    assert [(d.device, d.model, d.firmware) for d in birth.devices] == [
        ("reader-1", "Impinj model 2001002", "5.14.0.240")
    ]
