"""`python -m simulators.locker.serve`: the CU16 bank in a process of its own, on ptys the
real `cu16` driver opens as it opens a serial port."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.locker.serve import main
from tests.conftest import REPO_ROOT
from tests.locker.conftest import RecordingContext, cu16_driver, running, wait_until


async def test_the_real_driver_polls_a_bank_in_another_process(tmp_path: Path) -> None:
    paths_file = tmp_path / "bank.json"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "simulators.locker.serve"),
        *("--boards", "0,1", "--locks-per-board", "4", "--paths-file", str(paths_file)),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        paths = json.loads(line)
        assert json.loads(paths_file.read_text()) == paths
        assert not paths_file.with_name("bank.json.partial").exists()
        driver = cu16_driver(
            f"pty://{paths['serial']}",
            keypad=f"pty://{paths['keypad']}",
            boards=[0, 1],
            state_path=str(tmp_path / "locker.sqlite3"),
        )
        async with running(driver, RecordingContext()):
            # both boards answer polls across the process boundary: none reported silent
            await wait_until(lambda: driver.metrics()["polls"] >= 6, what="polls")
            assert driver.metrics()["boards_silent"] == 0
            assert len(driver.compartments) == 8
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--boards", "16"], "0 to 15"),
        (["--boards", "a"], "are numbers"),
        (["--boards", ","], "0 to 15"),
        (["--locks-per-board", "17"], "invalid choice"),
        (["--locks-per-board", "0"], "invalid choice"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(
    argv: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert why in capsys.readouterr().err


def test_the_bounds_themselves_are_accepted() -> None:
    # --duration 0: opens both ptys, prints them, exits at once
    done = subprocess.run(
        [
            *(sys.executable, "-m", "simulators.locker.serve"),
            *("--boards", "0,15", "--locks-per-board", "16", "--duration", "0"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    paths = json.loads(done.stdout)
    assert paths["serial"].startswith("/dev/")
    assert paths["keypad"].startswith("/dev/")
