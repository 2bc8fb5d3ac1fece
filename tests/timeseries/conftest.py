from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import IN_CI, require_binary
from tests.timeseries.tsservers import Influxd, Postgres, VictoriaMetrics, postgres_bin_dir


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A real VictoriaMetrics on a free port; the test may stop and restart it."""
    binary = require_binary("victoria-metrics", hint="Debian package victoria-metrics")
    server = VictoriaMetrics(binary, tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[Influxd]:
    """A real InfluxDB 1.6 on free ports (HTTP and the RPC bind address), data in tmp."""
    binary = require_binary("influxd", hint="Debian package influxdb")
    server = Influxd(binary, tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def influxd_with_auth(tmp_path: Path) -> Iterator[Influxd]:
    """InfluxDB 1.6 with `auth-enabled`: every request needs a user (create the first)."""
    binary = require_binary("influxd", hint="Debian package influxdb")
    server = Influxd(binary, tmp_path, auth=True)
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL for the session (initdb costs seconds); tests use own tables."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        message = "PostgreSQL is not installed (Debian package postgresql)"
        if IN_CI:
            pytest.fail(message + ": CI must have it", pytrace=False)
        pytest.skip(message)
    server = Postgres(bin_dir, Path(tempfile.mkdtemp(prefix="ts-pg-")))
    server.start()
    yield server
    server.kill()
