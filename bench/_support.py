"""What several benchmarks share: a free port and a throw-away Mosquitto."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """A real Mosquitto on a free port, for a benchmark's run (the Debian package)."""

    def __init__(self, workdir: Path, *, extra: Sequence[str] = ()) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed (Debian package mosquitto)")
        self.port = free_port()
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "log_dest none"]
        lines += extra
        if os.geteuid() == 0:
            lines.append("user root")  # it cannot read our temp dir as its own user
        config = workdir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("mosquitto did not start")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the broker has used so far."""
        import psutil

        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)


class Postgres:
    """A real PostgreSQL (the Debian package) in a temp dir, on a free port, in its default
    configuration (fsync on); as root it runs as the `postgres` user, which it requires."""

    def __init__(self) -> None:
        import glob
        import tempfile

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
        self.bin_dir = str(Path(found[-1]).parent)
        self.dir = Path(tempfile.mkdtemp(prefix="storegate-bench-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        data = str(self.dir / "data")
        subprocess.run(
            [*self.as_user, f"{self.bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        subprocess.run(
            [
                *self.as_user,
                f"{self.bin_dir}/pg_ctl",
                "-D",
                data,
                "-l",
                f"{self.dir}/log",
                "-w",
                "-o",
                options,
                "start",
            ],
            check=True,
            capture_output=True,
        )
        self.data = data

    def create_database(self, name: str) -> str:
        subprocess.run(
            [
                *self.as_user,
                f"{self.bin_dir}/createdb",
                "-h",
                str(self.dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                name,
            ],
            check=True,
            capture_output=True,
        )
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def cpu_s(self) -> float:
        """CPU seconds (user + system) of the server so far: the postmaster and every process
        it runs now (backends, WAL writer, checkpointer). A backend that has exited is not
        counted, so measure over a window in which the clients keep their connections."""
        import psutil

        pid = int((Path(self.data) / "postmaster.pid").read_text().split()[0])
        server = psutil.Process(pid)
        total = 0.0
        for process in [server, *server.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, f"{self.bin_dir}/pg_ctl", "-D", self.data, "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


class CloudProcess:
    """`python -m storegate cloud -c cloud.yaml` in `workdir`, as an operator starts it;
    ready when `/readyz` answers 200 (the broker connected)."""

    def __init__(self, workdir: Path, config: dict[str, Any], *, timeout_s: float = 60) -> None:
        import sys

        import httpx
        import yaml

        root = Path(__file__).resolve().parent.parent
        self.api_port = int(config["api"]["port"])
        (workdir / "cloud.yaml").write_text(yaml.safe_dump(config))
        self.log_path = workdir / "cloud.log"
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "storegate",
                "cloud",
                "-c",
                "cloud.yaml",
                "--log-level",
                "warning",
            ],
            cwd=workdir,
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"cloud did not start: {self.log_path.read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
