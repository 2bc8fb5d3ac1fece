"""Serve a simulated CU16 locker bank on a real pty, in a process of its own:

    python -m simulators.locker.serve --boards 0 --locks-per-board 16 --paths-file bank.json

The bank's bus and its keypad line are two pseudo-terminals (`LockerSimulator.start_pty`).
Their paths are written once both are open to the paths file (JSON: {"serial": ...,
"keypad": ...}) and printed on stdout as one JSON line; an edge daemon in another process
opens them with the real `cu16` driver (`transport: pty:///dev/pts/N`), so the simulator's
work is not counted in the daemon's footprint. Runs until SIGTERM/SIGINT or `--duration`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

from protocols import cu16
from simulators.locker.board import LockerBank
from simulators.locker.server import LockerSimulator


async def serve(
    boards: list[int],
    locks_per_board: int,
    paths_file: Path | None,
    duration: float | None,
    spring_doors: bool,
) -> None:
    bank = LockerBank(boards, locks_per_board, spring_doors=spring_doors)
    simulator = LockerSimulator(bank)
    serial_path = await simulator.start_pty()
    paths = {"serial": serial_path, "keypad": simulator.keypad_path}
    try:
        if paths_file is not None:
            # written whole under another name first: a reader never sees half a file
            partial = paths_file.with_name(paths_file.name + ".partial")
            await asyncio.to_thread(partial.write_text, json.dumps(paths))
            await asyncio.to_thread(partial.replace, paths_file)
        print(json.dumps(paths), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        remaining = None if duration is None else max(0.0, duration)
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await stop.wait()
        if simulator.dropped_writes:
            print(
                f"{simulator.dropped_writes} replies the pty could not take "
                f"in {time.monotonic() - started:.0f} s",
                file=sys.stderr,
            )
    finally:
        await simulator.close()


def _boards(text: str) -> list[int]:
    try:
        boards = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: board addresses are numbers, e.g. 0,1"
        ) from None
    if not boards or any(not 0 <= b < cu16.MAX_BOARDS for b in boards):
        raise argparse.ArgumentTypeError(
            f"{text!r}: one or more board addresses from 0 to {cu16.MAX_BOARDS - 1}"
        )
    return boards


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--boards", type=_boards, default=[0], help="addresses, e.g. 0,1")
    parser.add_argument(
        "--locks-per-board",
        type=int,
        default=cu16.LOCKS_PER_BOARD,
        choices=range(1, cu16.LOCKS_PER_BOARD + 1),
        metavar=f"1..{cu16.LOCKS_PER_BOARD}",
    )
    parser.add_argument("--paths-file", type=Path, default=None)
    parser.add_argument("--duration", type=float, default=None, help="seconds, then exit")
    parser.add_argument(
        "--no-spring-doors", action="store_true", help="doors stay shut after an unlock"
    )
    args = parser.parse_args(argv)
    asyncio.run(
        serve(
            args.boards,
            args.locks_per_board,
            args.paths_file,
            args.duration,
            spring_doors=not args.no_spring_doors,
        )
    )


if __name__ == "__main__":
    main()
