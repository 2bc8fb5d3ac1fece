"""An edge that cannot reach its broker says so at once, with the reason and the next try;
one whose session another client takes over says who to blame."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from edge.uplink import SESSION_TAKEN_OVER, Uplink, Will
from protocols.mqtt import MqttSettings
from tests.edge.helpers import EdgeProcess, edge_config, sim_device
from tests.servers import free_port, mosquitto


def test_a_daemon_without_a_broker_warns_on_every_failed_connect(
    tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    port = free_port()  # nothing listens here yet
    config = edge_config(
        tmp_path, port, [sim_device()], mqtt={"reconnect_min_s": 1, "reconnect_max_s": 4}
    )
    edge = EdgeProcess(config)
    edge_processes.append(edge)
    edge.start()
    pattern = re.compile(
        rf"WARNING .*cannot connect to mqtt://127\.0\.0\.1:{port} \(MQTT 5\): Connection"
        r" refused; next attempt in (\d+) s"
    )
    deadline = time.monotonic() + 15
    waits: list[int] = []
    while time.monotonic() < deadline and len(waits) < 3:
        time.sleep(0.3)
        waits = [int(m.group(1)) for m in pattern.finditer(edge.log_path.read_text())]
    assert waits[:3] == [3, 4, 4], edge.log_path.read_text()[-2000:]
    stamps = [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in edge.log_path.read_text().splitlines()
        if "cannot connect" in line
    ][:3]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # What it announced is what it did (paho's first gap is min + 2 x min).
    assert all(abs(gap - wait) < 0.5 for gap, wait in zip(gaps, waits, strict=False)), gaps
    # Then the broker appears: the edge connects by itself.
    (tmp_path / "broker").mkdir()
    broker = mosquitto(tmp_path / "broker", port=port)
    broker.start()
    try:
        deadline = time.monotonic() + 15
        while "connected (session present" not in edge.log_path.read_text():
            assert time.monotonic() < deadline, edge.log_path.read_text()[-2000:]
            time.sleep(0.2)
    finally:
        edge.stop()
        broker.kill()


async def _takeover_broker(server_ready: asyncio.Future[int]) -> None:
    """A broker at the protocol level that does what EMQX does when a second client
    connects with the same id: CONNACK, then DISCONNECT with reason 0x8E (Session taken
    over) to the first. (Mosquitto 2.0 and the embedded broker just close the socket.)"""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)  # CONNECT
        writer.write(bytes([0x20, 0x03, 0x00, 0x00, 0x00]))  # CONNACK, MQTT 5, no props
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(bytes([0xE0, 0x02, SESSION_TAKEN_OVER, 0x00]))  # DISCONNECT 0x8E
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    server_ready.set_result(server.sockets[0].getsockname()[1])
    async with server:
        await asyncio.sleep(30)


async def test_a_session_taken_over_is_an_error_that_names_the_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    broker = asyncio.create_task(_takeover_broker(ready))
    port = await ready
    settings = MqttSettings(host="127.0.0.1", port=port, protocol="5", reconnect_min_s=30)
    uplink = Uplink(
        settings,
        "storegate-edge-store-042-pi-front",
        inflight=8,
        will=lambda: Will("storegate/v1/store-042/pi-front/status", b"{}"),
        on_connected=lambda _present: None,
        on_disconnected=lambda: None,
        on_message=lambda _t, _p: None,
    )
    try:
        with caplog.at_level(logging.ERROR, logger="edge.uplink"):
            uplink.start()
            await asyncio.wait_for(uplink.taken_over.wait(), 10)
    finally:
        await uplink.stop()
        broker.cancel()
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "'storegate-edge-store-042-pi-front'" in line
    assert "took the session over" in line
