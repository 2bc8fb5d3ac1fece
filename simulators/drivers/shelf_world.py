"""What every simulated shelf reader shares, whatever protocol it speaks: its options and
the tag population (a `World`) it reports."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from simulators.llrp.world import World, WorldConfig


class SimReaderOptions(BaseModel):
    """Options every simulated reader shares: the tag population and the reporting."""

    model_config = ConfigDict(extra="forbid")

    antennas: int = Field(default=4, ge=1, le=32)
    items_per_shelf: int = Field(default=20, ge=0, le=5_000)
    products_per_shelf: int = Field(default=4, ge=1, le=100)
    read_rate: float = Field(default=0.7, gt=0, le=1)
    cross_read_rate: float = Field(default=0.3, ge=0, le=1)
    seed: int = 1
    cycle_s: float = Field(default=1.0, gt=0)
    report_interval_s: float = Field(default=2.0, ge=1.0, le=5.0)
    presence: dict[str, Any] = Field(default_factory=dict)


def simulated_world(options: SimReaderOptions) -> World:
    """The tag population a simulated reader of any protocol reports."""
    return World(
        WorldConfig(
            antennas=options.antennas,
            items_per_shelf=options.items_per_shelf,
            products_per_shelf=options.products_per_shelf,
            read_rate=options.read_rate,
            cross_read_rate=options.cross_read_rate,
            seed=options.seed,
        )
    )
