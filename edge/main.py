"""`storegate edge`: placeholder until the edge runtime lands."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def run_edge(config: Path | None, *, console: Console) -> int:
    console.print("[yellow]the edge daemon is not built yet[/] (edge runtime issue)")
    return 2
