"""Real servers for the time-series tests: VictoriaMetrics, InfluxDB 1.6, PostgreSQL.

Each runs on free ports with every directory in a temp dir, and can be stopped and
restarted on the same port and data (the outage tests take the server away mid-run).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.servers import free_port, wait_for_port, wait_port_closed


class _Process:
    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self.host = "127.0.0.1"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.is_running():
            return
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=log)
        try:
            wait_for_port(self.port, timeout=30)
            self._wait_ready()
        except (TimeoutError, OSError, httpx.HTTPError):
            self.kill()
            raise RuntimeError(
                f"{self.name} did not start: {self.log_path.read_text()[-2000:]}"
            ) from None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=1).is_success:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready at {self.url}{self.ready_path}")
            time.sleep(0.1)

    ready_path = "/health"

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        wait_port_closed(self.port)


class VictoriaMetrics(_Process):
    """`victoria-metrics` single node; accepts line protocol on `/api/v2/write`."""

    name = "victoria-metrics"

    def __init__(self, binary: str, workdir: Path) -> None:
        super().__init__(workdir)
        self.binary = binary
        self.data = workdir / "vm-data"

    def command(self) -> list[str]:
        return [
            self.binary,
            f"-storageDataPath={self.data}",
            f"-httpListenAddr={self.host}:{self.port}",
            # One sample per series and millisecond: a rewritten point replaces itself, as
            # it does in InfluxDB, so tests can count points exactly.
            "-dedup.minScrapeInterval=1ms",
            "-search.latencyOffset=0s",
            "-loggerLevel=ERROR",
        ]

    def flush(self) -> None:
        """Make everything ingested so far searchable."""
        httpx.get(self.url + "/internal/force_flush", timeout=10).raise_for_status()

    def export(self, match: str) -> list[dict[str, object]]:
        """Every series matching `match` (a PromQL series selector), with all its samples."""
        self.flush()
        params = {"match[]": match, "start": "0"}
        response = httpx.get(f"{self.url}/api/v1/export", params=params, timeout=30)
        response.raise_for_status()
        return [json.loads(line) for line in response.text.splitlines() if line]


class Influxd(_Process):
    """InfluxDB 1.6 (`influxd run`) with a temp config: real InfluxQL for the reader."""

    name = "influxd"
    ready_path = "/ping"

    def __init__(self, binary: str, workdir: Path, *, auth: bool = False) -> None:
        super().__init__(workdir)
        self.binary = binary
        self.rpc_port = free_port()
        self.config_path = workdir / "influxdb.conf"
        self.config_path.write_text(
            f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{workdir}/meta"
[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  auth-enabled = {"true" if auth else "false"}
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""
        )

    def command(self) -> list[str]:
        return [self.binary, "run", "-config", str(self.config_path)]

    def post(self, path: str, data: bytes = b"", **params: str) -> bytes:
        response = httpx.post(f"{self.url}{path}", params=params, content=data, timeout=30)
        response.raise_for_status()
        return response.content

    def create_database(self, name: str) -> None:
        self.post("/query", q=f'CREATE DATABASE "{name}"')

    def write(self, database: str, lines: list[str]) -> None:
        """InfluxDB 1.x `/write`, nanosecond precision."""
        self.post("/write", "\n".join(lines).encode(), db=database, precision="ns")


class Postgres:
    """A throwaway PostgreSQL cluster on a free port (for the SQL history sink and reader).

    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user, with its
    data directory in a temp dir owned by that user. Started and stopped with `pg_ctl`:
    a Popen of `runuser ... postgres` would not pass our signals on to the server.
    """

    name = "postgresql"

    def __init__(self, bin_dir: str, workdir: Path) -> None:
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.data = workdir / "data"
        self.port = free_port()
        self.log_path = workdir / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(workdir, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*self._as_user, *args], capture_output=True, check=False, timeout=120
        )

    def start(self) -> None:
        initdb = self._pg(
            f"{self.bin_dir}/initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync",
        )  # fmt: skip
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        started = initdb.returncode == 0 and self._pg(
            f"{self.bin_dir}/pg_ctl", "-D", str(self.data), "-l", str(self.log_path),
            "-o", options, "-w", "-t", "60", "start",
        ).returncode == 0  # fmt: skip
        if not started:
            log = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"postgres did not start: {initdb.stderr.decode()[-1000:]} {log}")
        self._started = True
        wait_for_port(self.port, timeout=30)

    def kill(self) -> None:
        if self._started:
            self._started = False
            self._pg(
                f"{self.bin_dir}/pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"
            )


def postgres_bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return str(Path(found[-1]).parent) if found else None
