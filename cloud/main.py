"""`storegate cloud`: placeholder until the cloud ingestor lands."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def run_cloud(config: Path | None, *, console: Console) -> int:
    console.print("[yellow]the cloud is not built yet[/] (cloud ingestor issue)")
    return 2
