"""`storegate sim`: whole simulated stores (see issue "product experience")."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def run_sim(scenario: Path | None, *, console: Console) -> int:
    console.print(
        "[yellow]storegate sim is not built yet[/]: whole-store simulation arrives with the"
        " product-experience work. Run `storegate demo` for what runs today."
    )
    return 2
