"""`storegate edge`: load and check the config, create the drivers, run the daemon."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from edge.config import create_drivers, load_edge_settings
from edge.memory import tune_malloc
from edge.runtime import EdgeRuntime
from protocols.settings import ConfigError

EXIT_CONFIG = 2


def edge_version() -> str:
    from storegate import __version__

    return __version__


def run_edge(config: Path | None) -> int:
    """Run until SIGTERM/SIGINT; refuses to start (exit 2) on an invalid config."""
    tune_malloc()  # before the drivers' first buffers: see edge/memory.py
    try:
        settings = load_edge_settings(config)
        # Create every driver now: a bad option must stop the start, naming the field.
        drivers = create_drivers(settings, str(config) if config else "defaults")
    except ConfigError as exc:
        # plain stderr: the daemon does not load rich for one line (journald shows it as is)
        print(f"edge: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    async def main() -> int:
        runtime = EdgeRuntime(settings, drivers, version=edge_version(), config_path=config)
        return await runtime.run()

    return asyncio.run(main())
