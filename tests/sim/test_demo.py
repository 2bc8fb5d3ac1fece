"""`storegate demo` as a user runs it: a subprocess on free ports, checked through the API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import REPO_ROOT
from tests.servers import free_port, wait_for_port, wait_port_closed

DEMO = (sys.executable, "-m", "storegate", "demo")
DEMO_KEY = "ops-demo-key"
STORES = {"store-042", "store-007", "store-101"}


def _start_demo(*args: str) -> tuple[subprocess.Popen[str], int, int]:
    mqtt_port, http_port = free_port(), free_port()
    process = subprocess.Popen(
        [*DEMO, "--port", str(mqtt_port), "--http-port", str(http_port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        cwd=REPO_ROOT,
    )
    return process, mqtt_port, http_port


def _get(http_port: int, path: str) -> Any:
    response = httpx.get(
        f"http://127.0.0.1:{http_port}{path}", headers={"X-API-Key": DEMO_KEY}, timeout=5
    )
    response.raise_for_status()
    return response.json()


def _wait_until_stores_are_live(process: subprocess.Popen[str], http_port: int) -> None:
    """Every store listed, its node online, its shelves holding items: as the cloud sees it."""
    deadline = time.monotonic() + 90
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            stores = {s["id"] for s in _get(http_port, "/api/v1/stores")}
            seen = {
                store: (
                    [n["status"] for n in _get(http_port, f"/api/v1/stores/{store}/nodes")],
                    sum(i["count"] for i in _get(http_port, f"/api/v1/stores/{store}/inventory")),
                )
                for store in stores
            }
        except httpx.HTTPError:
            seen = {}
        if set(seen) == STORES and all(
            statuses == ["online"] and items > 0 for statuses, items in seen.values()
        ):
            return
        time.sleep(1)
    raise AssertionError(f"stores not all live within 90 s: {seen}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait()


def test_demo_runs_three_stores_into_the_cloud_and_stops_by_itself() -> None:
    process, mqtt_port, http_port = _start_demo("--duration", "30")
    try:
        wait_for_port(http_port, timeout=60)
        _wait_until_stores_are_live(process, http_port)
        assert httpx.get(f"http://127.0.0.1:{http_port}/", timeout=5).status_code == 200
        # A newcomer's mistake: `storegate sim` (the demo's stores by default) beside it.
        # It must stop with the reason, not take the demo's sessions over in a loop.
        started = time.monotonic()
        sim = subprocess.run(
            [
                sys.executable,
                "-m",
                "storegate",
                "sim",
                "--port",
                str(mqtt_port),
                "--duration",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
            cwd=REPO_ROOT,
        )
        assert sim.returncode == 1, sim.stdout + sim.stderr
        said = " ".join((sim.stdout + sim.stderr).split())
        assert "store-042/pi-front" in said
        assert "a client with the same client id is connected" in said
        assert "storegate demo" in said
        assert time.monotonic() - started < 15  # the demo's traffic proves it is live
        output, _ = process.communicate(timeout=120)
    finally:
        _stop(process)
    assert process.returncode == 0, output
    assert "demo stopped cleanly" in output
    assert "disconnected from the broker" not in output  # the sim took nothing over
    assert f"http://127.0.0.1:{http_port}/" in output
    assert DEMO_KEY in output
    wait_port_closed(mqtt_port, timeout=5)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_stops_everything_cleanly(sig: signal.Signals) -> None:
    process, mqtt_port, http_port = _start_demo()
    try:
        wait_for_port(http_port, timeout=60)
        _wait_until_stores_are_live(process, http_port)
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "the embedded broker runs in a child process"
        process.send_signal(sig)
        output, _ = process.communicate(timeout=30)
    finally:
        _stop(process)
    assert process.returncode == 0, output
    assert "demo stopped cleanly" in output
    for child in children:  # no orphan left behind: the broker process is gone
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    for port in (mqtt_port, http_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
