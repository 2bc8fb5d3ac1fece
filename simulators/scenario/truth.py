"""The ground truth, as JSON lines: one line per change of where an item is.

    {"t": 1790000000.123, "store": "store-042", "epc": "3074...", "gtin": "00614141...",
     "shelf": "shelf-2", "why": "misplaced"}

`shelf` is null when the item left the shelves (picked or bought). Replaying the lines in
order gives the exact shelf contents at any time, to compare with what the cloud shows.
The writer is shared by every store of a run; lines are flushed once per drain so a reader
can follow the file live.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from edge.rfid.epc import decode_epc
from simulators.llrp.world import World


class TruthWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self.lines = 0

    def drain(self, store: str, world: World, reasons: list[str], start_t: float) -> None:
        """Write the world's new changes and forget them (the world keeps no history then).

        `reasons` holds why, for the last `len(reasons)` changes; older ones are the initial
        stock (at t=0, stamped with the store's start time)."""
        history = world.history
        if not history:
            return
        unexplained = len(history) - len(reasons)
        whys = ["stocked"] * unexplained + reasons
        for change, why in zip(history, whys, strict=True):
            self._file.write(
                json.dumps(
                    {
                        "t": round(change.t or start_t, 3),
                        "store": store,
                        "epc": change.epc,
                        "gtin": decode_epc(change.epc).gtin,
                        "shelf": None if change.antenna is None else world.shelf(change.antenna),
                        "why": why,
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )
        self.lines += len(history)
        history.clear()
        reasons.clear()
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def replay(path: Path) -> dict[str, dict[str, str]]:
    """Store -> {EPC -> shelf} after every line of a truth file (for tests and accuracy)."""
    shelves: dict[str, dict[str, str]] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            change = json.loads(line)
            items = shelves.setdefault(change["store"], {})
            if change["shelf"] is None:
                items.pop(change["epc"], None)
            else:
                items[change["epc"]] = change["shelf"]
    return shelves
