"""Append-only, hash-chained audit log of a locker bank (JSON lines).

Every record carries the hash of the previous one and its own hash over both, so editing,
removing or reordering a line breaks the chain at that line (`verify()` says where). The
chain continues across rotations: the first record of a new file points at the last hash
of the previous file.

Bounded: when the live file passes `max_bytes` it is renamed `<name>.1` (older files shift
up) and at most `keep` rotated files are kept; the oldest is deleted. So the disk used is
at most about (keep + 1) * max_bytes. What it records is what happened (states, causes,
command names, code outcomes); never a code, a key or a hash of either.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _digest(record: dict[str, Any]) -> str:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    records: int
    error: str | None = None


class AuditLog:
    def __init__(
        self, path: Path, *, max_bytes: int = 4 * 1024 * 1024, keep: int = 4, fsync: bool = True
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self.seq, self.last_hash = self._resume()

    def _resume(self) -> tuple[int, str]:
        for candidate in [self.path, *self.rotated()]:
            last = _last_line(candidate)
            if last is not None:
                record = json.loads(last)
                return int(record["seq"]), str(record["hash"])
        return 0, GENESIS

    def rotated(self) -> list[Path]:
        return [p for i in range(1, self.keep + 1) if (p := self._rotated(i)).exists()]

    def _rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def append(self, kind: str, data: dict[str, Any], at: datetime | None = None) -> str:
        """Append one record; returns its hash."""
        record: dict[str, Any] = {
            "seq": self.seq + 1,
            "at": (at or datetime.now(UTC)).isoformat(),
            "kind": kind,
            "data": data,
            "prev": self.last_hash,
        }
        record["hash"] = _digest(record)
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
            self._rotate()
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        self.seq, self.last_hash = record["seq"], record["hash"]
        return str(record["hash"])

    def _rotate(self) -> None:
        oldest = self._rotated(self.keep)
        if oldest.exists():
            oldest.unlink()
        for index in range(self.keep - 1, 0, -1):
            if (src := self._rotated(index)).exists():
                src.rename(self._rotated(index + 1))
        self.path.rename(self._rotated(1))

    def files_oldest_first(self) -> list[Path]:
        return [*reversed(self.rotated()), *([self.path] if self.path.exists() else [])]

    def verify(self) -> ChainCheck:
        """Check the chain over the files still kept (the first kept record's `prev` is
        trusted: older files were rotated away on purpose)."""
        prev: str | None = None
        count = 0
        for file in self.files_oldest_first():
            for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                where = f"{file.name} line {number}"
                try:
                    record = json.loads(line)
                    claimed = record.pop("hash")
                except (ValueError, KeyError, AttributeError):
                    return ChainCheck(False, count, f"{where}: not an audit record")
                if prev is not None and record.get("prev") != prev:
                    return ChainCheck(False, count, f"{where}: chain broken (prev mismatch)")
                if _digest(record) != claimed:
                    return ChainCheck(False, count, f"{where}: record altered (hash mismatch)")
                prev = claimed
                count += 1
        return ChainCheck(True, count)


def _last_line(path: Path) -> str | None:
    if not path.exists():
        return None
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 8192))
        lines = f.read().decode("utf-8", errors="replace").splitlines()
    return lines[-1] if lines else None
