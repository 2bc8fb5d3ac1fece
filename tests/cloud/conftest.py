"""Fixtures for the cloud tests: a real PostgreSQL 15 next to SQLite, and cloud settings."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import IN_CI, free_port


@dataclass(frozen=True)
class PostgresServer:
    port: int
    socket_dir: str
    bin_dir: str
    as_user: list[str]

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        subprocess.run(
            [
                *self.as_user,
                f"{self.bin_dir}/createdb",
                "-h",
                self.socket_dir,
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


def _postgres_bin_dir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return str(Path(found[-1]).parent)
    message = "PostgreSQL is not installed (Debian package postgresql; scripts/bootstrap)"
    if IN_CI:
        pytest.fail(message + ": CI must have it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL per session (start-up costs seconds); each test gets its own database.

    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user in a
    temporary directory handed over to that user.
    """
    bin_dir = _postgres_bin_dir()
    workdir = tempfile.mkdtemp(prefix="storegate-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = f"{workdir}/data"
    port = free_port()
    subprocess.run(
        [*as_user, f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = subprocess.run(
        [
            *as_user,
            f"{bin_dir}/pg_ctl",
            "-D",
            data,
            "-l",
            f"{workdir}/log",
            "-w",
            "-o",
            options,
            "start",
        ],
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        log = Path(f"{workdir}/log")
        raise RuntimeError(
            f"PostgreSQL did not start: {started.stderr}"
            f" {log.read_text()[-2000:] if log.exists() else ''}"
        )
    try:
        yield PostgresServer(port, workdir, bin_dir, as_user)
    finally:
        subprocess.run(
            [*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each state-store test runs on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/state.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()
