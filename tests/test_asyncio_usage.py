"""Project-wide asyncio rules that a linter does not check."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocols", "edge", "cloud", "simulators", "storegate", "bench")


def test_no_asyncio_wait_for_in_the_packages() -> None:
    # On Python 3.11 `asyncio.wait_for` can swallow a cancellation that arrives in the same
    # loop tick as the awaited result (cpython gh-86296, fixed in 3.12): a driver or worker
    # then never stops. `async with asyncio.timeout(...)` does not have that bug.
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "asyncio.wait_for(" in line
    ]
    assert not offenders, "use `async with asyncio.timeout(...)` instead: " + ", ".join(offenders)
