"""Real broker processes for tests: Mosquitto and the embedded iotcore broker.

Both start on a free port and can be stopped, killed (SIGKILL) and restarted on the same
port mid-test, which is how the fault-injection tests take the broker away from a client.
With `CI=true` a missing server is a failure, not a skip (see `require_binary`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Protocol

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str, *, hint: str) -> str:
    """Path of `name`; skips the test locally, fails it in CI, when it is missing."""
    found = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / name).exists()), None
    )
    if found:
        return found
    message = f"{name} is not installed ({hint})"
    if IN_CI:
        pytest.fail(message + ": CI must have it", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def wait_port_closed(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} still open after {timeout}s")


class BrokerProcess(Protocol):
    """What the tests need from any broker: where it is and how to take it away."""

    name: str
    host: str
    port: int

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...
    def restart(self, down_for: float = 0.0) -> None: ...
    def is_running(self) -> bool: ...


class MosquittoBroker:
    """A real `mosquitto` process with its own config, on a free port."""

    name = "mosquitto"

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        port: int | None = None,
        extra_config: str = "",
        persistence: bool = False,
        allow_anonymous: bool = True,
    ) -> None:
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {workdir}/",
            "max_packet_size 1048576",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto would switch to its own user, which cannot read our
            # temporary directory. Tests run it as whoever runs the tests.
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n" + extra_config)
        self._process: subprocess.Popen[bytes] | None = None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.is_running():
            return
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)], stdout=log, stderr=log
        )
        log.close()
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.kill()
            raise RuntimeError(
                f"mosquitto did not start: {self.log_path.read_text()[-2000:]}"
            ) from None

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def _end(self, sig: int) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        wait_port_closed(self.port)


class EmbeddedBroker:
    """The embedded iotcore broker (rumqttd in a child process), on a free port."""

    name = "iotcore"

    def __init__(self, *, port: int | None = None) -> None:
        from iotcore import Broker  # the sim extra; imported here so collection never needs it

        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._broker = Broker(port=self.port, listen=self.host, max_payload_size=1024 * 1024)

    def is_running(self) -> bool:
        return bool(self._broker.is_running)

    def start(self) -> None:
        self._broker.start()

    def stop(self) -> None:
        self._broker.stop()
        wait_port_closed(self.port)

    def kill(self) -> None:
        process = self._broker._process  # iotcore offers terminate only; SIGKILL is the test
        if process is not None and process.poll() is None:
            process.kill()
        self.stop()

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


def mosquitto(workdir: Path | None = None, **kwargs: object) -> MosquittoBroker:
    binary = require_binary("mosquitto", hint="Debian package mosquitto; scripts/bootstrap")
    return MosquittoBroker(binary, workdir or Path(tempfile.mkdtemp(prefix="mosq-")), **kwargs)  # type: ignore[arg-type]
