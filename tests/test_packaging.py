"""Packaging promises: the edge install stays small, and the CLI works from the start."""

from __future__ import annotations

import ast
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
    "cryptography": ["cryptography"],
    "swagger-ui-bundle-v2": ["swagger_ui_bundle"],
}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;]", requirement, maxsplit=1)[0].strip().lower()


def cloud_only_modules() -> set[str]:
    edge = {_name(r) for r in EXTRAS["edge"] + PYPROJECT["project"]["dependencies"]}
    cloud_only = {_name(r) for r in EXTRAS["cloud"] + EXTRAS["sim"]} - edge - {"storegate"}
    missing = cloud_only - IMPORT_NAMES.keys()
    assert not missing, f"add the import names of {missing} to IMPORT_NAMES"
    return {module for dist in cloud_only for module in IMPORT_NAMES[dist]} | {"cloud"}


def edge_blocked_modules() -> set[str]:
    """What an edge node must run without: the cloud, its libraries, and the simulators
    (sim-* drivers reach the edge through entry points, never through an edge import)."""
    return cloud_only_modules() | {"simulators"}


def test_edge_and_protocols_never_import_cloud_dependencies_or_simulators() -> None:
    blocked = sorted(edge_blocked_modules())
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
        from edge.drivers.registry import BUILTIN_DRIVERS, driver_spec
        for name in BUILTIN_DRIVERS:  # every real driver loads on a node without them
            driver_spec(name)
        assert not BLOCKED & {{name.split(".")[0] for name in sys.modules}}
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
    assert "simulators" in edge_blocked_modules()


def imported_top_level_packages(source: str) -> set[str]:
    """Every package a module imports anywhere: at the top, in a function, under
    TYPE_CHECKING (a relative import stays inside its own package)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_edge_source_imports_simulators_or_cloud() -> None:
    """The static half: catches an import the subprocess check cannot reach (one inside a
    function, or under TYPE_CHECKING)."""
    offenders = {}
    sources = sorted((REPO_ROOT / "edge").rglob("*.py"))
    assert len(sources) > 30
    for path in sources:
        bad = imported_top_level_packages(path.read_text()) & {"simulators", "cloud"}
        if bad:
            offenders[str(path.relative_to(REPO_ROOT))] = sorted(bad)
    assert not offenders, f"edge/ must not import these: {offenders}"


@pytest.mark.parametrize(
    "source",
    [
        "from simulators.llrp.world import World",
        "import simulators.locker.board as board",
        "def f():\n    from simulators import demo",
        "if TYPE_CHECKING:\n    import cloud.api",
    ],
)
def test_the_static_check_sees_every_form_of_import(source: str) -> None:
    assert imported_top_level_packages(source) & {"simulators", "cloud"}
    not_ours = imported_top_level_packages("from . import simulators\nimport simulation")
    assert not_ours == {"simulation"}


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
