"""`storegate cloud`: the ingestor, state store and API in one process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from rich.console import Console

from cloud.config import DATA_DIR_ENV, load_cloud_settings
from cloud.inventory.config import parse_options as parse_inventory_options
from cloud.inventory.feed import write_file
from cloud.state.db import create_engine, sqlite_path
from protocols.settings import ConfigError

log = logging.getLogger(__name__)


def run_cloud(config: Path | None, *, console: Console, data_dir: Path | None = None) -> int:
    if data_dir is not None:
        # The command line wins over the environment, which wins over the file.
        os.environ[DATA_DIR_ENV] = str(data_dir)
    try:
        settings = load_cloud_settings(config)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    from cloud.runtime import CloudRuntime

    async def serve() -> None:
        runtime = CloudRuntime(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start()
        console.print(
            f"storegate cloud: MQTT {settings.mqtt.describe()}, API on"
            f" http://{settings.api.host}:{runtime.api_port}, data in {settings.data_dir}"
        )
        await stop.wait()
        log.info("stopping: finishing the batch in progress")
        await runtime.stop()

    try:
        asyncio.run(serve())
    except Exception as exc:  # the operator needs one clear line, the log has the trace
        log.debug("cloud failed", exc_info=True)
        console.print(f"[red]cloud failed: {type(exc).__name__}: {exc}[/]")
        return 1
    return 0


def write_local_inventory_feed(
    config: Path | None, out: Path, fmt: str, *, console: Console, data_dir: Path | None = None
) -> int:
    """`storegate feed`: the local inventory feed from the database the cloud keeps."""
    if fmt not in ("tsv", "jsonl"):
        console.print(f'[red]--format must be "tsv" or "jsonl", not {fmt!r}[/]')
        return 2
    if data_dir is not None:
        os.environ[DATA_DIR_ENV] = str(data_dir)
    try:
        settings = load_cloud_settings(config)
        options = parse_inventory_options(settings.domains.get("inventory", {}))
    except (ConfigError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        console.print(f"[red]no cloud database at {path}: run `storegate cloud` first[/]")
        return 2

    async def write() -> int:
        engine = create_engine(settings.database_url)
        try:
            return await write_file(engine, options, out, "tsv" if fmt == "tsv" else "jsonl")
        finally:
            await engine.dispose()

    try:
        rows = asyncio.run(write())
    except Exception as exc:  # one clear line; the log has the trace
        log.debug("feed failed", exc_info=True)
        console.print(f"[red]feed failed: {type(exc).__name__}: {exc}[/]")
        return 1
    console.print(f"wrote {rows} rows to {out}")
    return 0
