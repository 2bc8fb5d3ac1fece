"""edge.health.ProcessStats: the heartbeat's CPU and RSS read from the kernel, agreeing with
psutil (which the daemon no longer loads for them)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from edge.health import ProcessStats
from tests.conftest import REPO_ROOT


def test_rss_agrees_with_psutil() -> None:
    stats = ProcessStats()
    ours, theirs = stats.rss_bytes(), psutil.Process().memory_info().rss
    assert abs(ours - theirs) <= 1024 * 1024  # the same pages, read a moment apart
    ballast = bytearray(64 * 1024 * 1024)  # touched: resident
    assert stats.rss_bytes() - ours >= 60 * 1024 * 1024
    del ballast


def test_cpu_percent_is_the_share_of_one_core_since_the_last_call() -> None:
    stats = ProcessStats()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        pass  # busy: about 100 % of one core (less on a loaded machine)
    busy = stats.cpu_percent()
    time.sleep(0.5)
    idle = stats.cpu_percent()
    assert busy > 40.0
    assert busy < 150.0  # one thread cannot use more than one core
    assert idle < 20.0


def test_without_proc_it_asks_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ProcessStats, "STATM", "/nonexistent/statm")
    stats = ProcessStats()
    assert stats._psutil is not None
    assert abs(stats.rss_bytes() - psutil.Process().memory_info().rss) <= 1024 * 1024


def test_the_daemon_does_not_load_psutil() -> None:
    code = (
        "import sys, edge.main, edge.runtime, edge.rfid.driver, edge.locker.driver;"
        "from edge.health import ProcessStats; ProcessStats().rss_bytes();"
        "print('psutil' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
