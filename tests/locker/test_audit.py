"""The edge audit log: hash-chained JSON lines that show tampering, bounded by rotation."""

from __future__ import annotations

import json
from pathlib import Path

from edge.locker.audit import GENESIS, AuditLog


def test_chain_verifies_and_resumes_after_reopen(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    first = log.append("event", {"n": 1})
    log.append("event", {"n": 2})
    reopened = AuditLog(tmp_path / "audit.jsonl", fsync=False)
    assert reopened.seq == 2
    reopened.append("event", {"n": 3})
    check = reopened.verify()
    assert check.ok
    assert check.records == 3
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert lines[0]["prev"] == GENESIS
    assert lines[1]["prev"] == first
    assert [r["seq"] for r in lines] == [1, 2, 3]


def test_editing_or_deleting_a_line_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync=False)
    for n in range(4):
        log.append("code", {"outcome": "wrong", "n": n})
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1].replace("wrong", "ok"), *lines[2:]]) + "\n")
    check = log.verify()
    assert not check.ok
    assert check.error is not None
    assert "line 2" in check.error
    assert "altered" in check.error
    path.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    check = log.verify()
    assert not check.ok
    assert check.error is not None
    assert "chain broken" in check.error


def test_rotation_bounds_disk_and_keeps_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=2_000, keep=2, fsync=False)
    for n in range(200):
        log.append("event", {"n": n, "pad": "x" * 50})
    files = log.files_oldest_first()
    assert [f.name for f in files] == ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]
    assert sum(f.stat().st_size for f in files) <= 3 * 2_000
    check = log.verify()
    assert check.ok
    assert 0 < check.records < 200
    assert AuditLog(path, max_bytes=2_000, keep=2, fsync=False).seq == 200
