"""The runtime in-process (its async API), against a real Mosquitto: clean shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.config import create_drivers, load_edge_settings
from edge.outbox import Outbox
from edge.runtime import EdgeRuntime
from protocols.messages import Birth, Death, NodeState, Status
from tests.edge.helpers import Watcher, edge_config, sim_device, stream_messages
from tests.servers import MosquittoBroker


async def test_clean_shutdown_flushes_then_says_death_and_offline(
    tmp_path: Path, mosquitto_broker: MosquittoBroker
) -> None:
    path = edge_config(tmp_path, mosquitto_broker.port, [sim_device(rate_hz=50)])
    settings = load_edge_settings(path)
    runtime = EdgeRuntime(
        settings, create_drivers(settings), version="9.9.9", config_path=path, handle_signals=False
    )
    watcher = Watcher(mosquitto_broker.host, mosquitto_broker.port)
    task = asyncio.create_task(runtime.run())
    birth = await asyncio.to_thread(watcher.wait_for, lambda m: isinstance(m, Birth))
    assert isinstance(birth, Birth)
    assert birth.version == "9.9.9"
    assert [(d.device, d.state.value) for d in birth.devices] == [("reader-1", "running")]
    await asyncio.sleep(1)
    runtime.stop()
    assert await asyncio.wait_for(task, 20) == 0
    death = await asyncio.to_thread(watcher.wait_for, lambda m: isinstance(m, Death))
    offline = await asyncio.to_thread(
        watcher.wait_for, lambda m: isinstance(m, Status) and m.state is NodeState.OFFLINE
    )
    assert isinstance(death, Death)
    assert isinstance(offline, Status)
    assert (death.bd_seq, offline.bd_seq, offline.reason) == (
        birth.bd_seq,
        birth.bd_seq,
        "shutdown",
    )
    watcher.close()
    # everything emitted was sent and PUBACKed before the goodbye
    events = stream_messages(watcher, "rfid/reader-1")
    assert events
    kinds = [m.type for _, m, _ in watcher.messages]
    assert kinds.index("death") > max(i for i, k in enumerate(kinds) if k == "rfid.events")
    reopened = Outbox(settings.outbox.path, max_bytes=1 << 20, max_age_s=60)
    position = reopened.stream_positions()["rfid/reader-1"]
    assert position == max(m.seq for m in events)
    assert {m.seq for m in events} == set(range(1, position + 1))
    # no cloud confirmed anything: the outbox keeps every message for the next start
    assert reopened.depth == position
    reopened.close()
