"""sd_notify against real unix datagram sockets, with the daemon as a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from edge.systemd import notify, watchdog_interval
from tests.conftest import REPO_ROOT
from tests.edge.helpers import EdgeProcess, edge_config, sim_device
from tests.servers import MosquittoBroker, require_binary


def _receive_until(sock: socket.socket, wanted: str, timeout: float = 20) -> list[str]:
    received: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            received.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if wanted in received:
            return received
    raise AssertionError(f"no {wanted!r}; got {received}")


def test_notify_on_a_filesystem_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert notify("READY=1", environ={"NOTIFY_SOCKET": str(path)})
        assert sock.recv(100) == b"READY=1"
    assert not notify("READY=1", environ={})  # not under systemd: a no-op
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None


def test_daemon_notifies_ready_watchdog_and_stopping_on_an_abstract_socket(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, edge_processes: list[EdgeProcess]
) -> None:
    name = f"storegate-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        config = edge_config(tmp_path, mosquitto_broker.port, [sim_device(rate_hz=1)])
        edge = EdgeProcess(config, env={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "400000"})
        edge_processes.append(edge)
        edge.start()
        assert "READY=1" in _receive_until(sock, "READY=1")
        pings = _receive_until(sock, "WATCHDOG=1")
        time.sleep(1)
        assert edge.running()
        edge.signal(15)
        after = _receive_until(sock, "STOPPING=1")
        assert "WATCHDOG=1" in pings + after
        assert edge.wait() == 0


def test_the_unit_file_verifies(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", hint="Debian package systemd")
    unit = (REPO_ROOT / "deploy" / "systemd" / "storegate-edge.service").read_text()
    for required in ("Type=notify", "WatchdogSec=30", "Restart=always", "ProtectSystem=strict"):
        assert required in unit
    # verify checks ExecStart exists: point it at this interpreter for the check
    path = tmp_path / "storegate-edge.service"
    path.write_text(unit.replace("/opt/storegate/venv/bin/storegate", sys.executable))
    result = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "storegate-edge.service" not in result.stderr, result.stderr
