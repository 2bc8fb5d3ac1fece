"""edge.memory: the one glibc malloc setting the edge daemon makes, and when it does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edge import memory
from tests.conftest import REPO_ROOT

glibc_only = pytest.mark.skipif(memory._glibc() is None, reason="glibc only")

# In a child process: mallopt changes the whole process, not only the caller. glibc's
# default raises the mmap threshold to the size of an mmapped block once it is freed, so
# after a 2 MiB block comes and goes a 1 MiB one is taken from the heap; pinned, it is
# mmapped again. glibc marks an mmapped chunk with bit 2 of the size word before it.
_PROBE = """
import ctypes, json, sys
from edge.memory import tune_malloc
applied = tune_malloc() if sys.argv[1] == "tune" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def mapped(size):
    pointer = libc.malloc(size)
    word = ctypes.c_size_t.from_address(pointer - ctypes.sizeof(ctypes.c_size_t)).value
    libc.free(pointer)
    return bool(word & 2)
mapped(2 << 20)
print(json.dumps({"applied": applied, "mapped": mapped(1 << 20)}))
"""


def _probe(mode: str, threshold_env: str | None = None) -> dict[str, bool | None]:
    env = {k: v for k, v in os.environ.items() if k != memory.ENV_OVERRIDE}
    if threshold_env is not None:
        env[memory.ENV_OVERRIDE] = threshold_env
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=env,
    )
    result: dict[str, bool | None] = json.loads(done.stdout)
    return result


@glibc_only
def test_the_threshold_stays_pinned_after_a_large_block_is_freed() -> None:
    assert _probe("tune") == {"applied": True, "mapped": True}


@glibc_only
def test_without_it_glibc_raises_the_threshold() -> None:
    # the behaviour the setting exists for: the probe above would fail without tune_malloc
    assert _probe("none") == {"applied": None, "mapped": False}


@glibc_only
def test_the_administrators_setting_wins() -> None:
    # glibc reads the variable itself (4 MiB: both blocks on the heap); we leave it alone
    assert _probe("tune", str(4 << 20)) == {"applied": False, "mapped": False}


def test_no_glibc_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memory.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.tune_malloc() is False
