"""Packaging promises: the edge install stays small, and the CLI works from the start."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib

import pytest

from tests.conftest import REPO_ROOT
from tests.servers import free_port, wait_for_port

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]

# distribution name -> the top-level modules it installs (and the ones it pulls in)
IMPORT_NAMES = {
    "paho-mqtt": ["paho"],
    "fastapi": ["fastapi", "starlette"],
    "uvicorn": ["uvicorn"],
    "sse-starlette": ["sse_starlette"],
    "sqlalchemy": ["sqlalchemy"],
    "aiosqlite": ["aiosqlite"],
    "asyncpg": ["asyncpg"],
    "alembic": ["alembic"],
    "influxdb-client": ["influxdb_client"],
    "prometheus-client": ["prometheus_client"],
    "httpx": ["httpx"],
    "psutil": ["psutil"],
    "iotcore": ["iotcore"],
}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;]", requirement, maxsplit=1)[0].strip().lower()


def cloud_only_modules() -> set[str]:
    edge = {_name(r) for r in EXTRAS["edge"] + PYPROJECT["project"]["dependencies"]}
    cloud_only = {_name(r) for r in EXTRAS["cloud"] + EXTRAS["sim"]} - edge - {"storegate"}
    missing = cloud_only - IMPORT_NAMES.keys()
    assert not missing, f"add the import names of {missing} to IMPORT_NAMES"
    return {module for dist in cloud_only for module in IMPORT_NAMES[dist]} | {"cloud"}


def test_edge_and_protocols_never_import_cloud_dependencies() -> None:
    blocked = sorted(cloud_only_modules())
    script = textwrap.dedent(
        f"""
        import importlib, importlib.abc, pkgutil, sys
        BLOCKED = set({blocked!r})
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"edge install has no {{name}}")
        sys.meta_path.insert(0, Block())
        for package in ("protocols", "edge"):
            module = importlib.import_module(package)
            for info in pkgutil.walk_packages(module.__path__, package + "."):
                importlib.import_module(info.name)
        from typer.testing import CliRunner
        from storegate.cli import app
        result = CliRunner().invoke(app, ["edge", "--help"])
        assert result.exit_code == 0, result.output
        print("ok", len(BLOCKED))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_the_block_list_really_blocks() -> None:
    assert {"fastapi", "sqlalchemy", "influxdb_client", "cloud"} <= cloud_only_modules()
    assert "paho" not in cloud_only_modules()


def _storegate(*args: str) -> list[str]:
    return [sys.executable, "-m", "storegate", *args]


def test_help_lists_every_subcommand() -> None:
    result = subprocess.run(
        _storegate("--help"), capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    for command in ("demo", "edge", "cloud", "sim", "bench"):
        assert re.search(rf"\b{command}\b", result.stdout), command


def test_version() -> None:
    result = subprocess.run(_storegate("--version"), capture_output=True, text=True, check=True)
    assert result.stdout.startswith("storegate ")


def test_demo_starts_the_embedded_broker_and_stops_on_ctrl_c() -> None:
    port = free_port()
    env = {**os.environ, "COLUMNS": "100"}
    process = subprocess.Popen(
        _storegate("demo", "--port", str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        wait_for_port(port, timeout=20)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "stopped cleanly" in output
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
