"""`storegate bench`: run the registered benchmarks and update BENCHMARKS.md."""

from __future__ import annotations

from rich.console import Console


def run_benchmarks(*, only: list[str], write: bool, quick: bool, console: Console) -> int:
    console.print("[yellow]no benchmarks are registered yet[/]")
    return 2
