"""The repository stands alone: nothing it tests, runs or documents reads from outside it.

A clone in an empty folder must pass its own tests, so fixtures are vendored under
`tests/fixtures/` (with their NOTICE and licences). These tests read the source as text and
fail on any path that climbs out of the checkout: the sibling `shared/` folder of the
development workspace, or `REPO_ROOT.parent`-style navigation.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO_ROOT

# Ways a file can name a place outside the checkout.
_OUTSIDE = [
    re.compile(r"\.\./shared\b"),
    re.compile(r"""["']shared["']\s*/\s*["']fixtures"""),
    re.compile(r"REPO_ROOT\.parent|ROOT\.parent\b"),
    re.compile(r"parents\[\s*[2-9]\s*\]"),
    re.compile(r"/work/shared"),
]
_CHECKED_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".ini", ""}
_CHECKED_DIRS = ["tests", "scripts", "docs", "bench", "edge", "cloud", "simulators", "storegate"]
_CHECKED_FILES = ["README.md", "pyproject.toml", "docker-compose.yml", ".ci/run"]


def _files() -> list[Path]:
    files = [REPO_ROOT / name for name in _CHECKED_FILES if (REPO_ROOT / name).is_file()]
    for top in _CHECKED_DIRS:
        for path in (REPO_ROOT / top).rglob("*"):
            if not path.is_file() or path.suffix not in _CHECKED_SUFFIXES:
                continue
            if FIXTURES in path.parents or "__pycache__" in path.parts:
                continue
            files.append(path)
    return files


def test_the_checked_set_is_not_empty() -> None:
    names = {path.relative_to(REPO_ROOT).as_posix() for path in _files()}
    assert "tests/conftest.py" in names
    assert "scripts/test" in names
    assert len(names) > 100


@pytest.mark.parametrize("pattern", _OUTSIDE, ids=lambda p: p.pattern)
def test_no_file_refers_to_a_path_outside_the_repository(pattern: re.Pattern[str]) -> None:
    this_file = Path(__file__).resolve()
    offenders = []
    for path in _files():
        if path == this_file:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "reads outside the repository:\n" + "\n".join(offenders)


def test_the_guard_catches_the_old_way_of_reading_fixtures() -> None:
    # The exact line conftest.py used before the fixtures were vendored.
    old = 'SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"'
    assert any(pattern.search(old) for pattern in _OUTSIDE)


def test_vendored_fixtures_carry_their_notice_and_licence() -> None:
    notice = (FIXTURES / "NOTICE.md").read_text()
    for folder in ("llrp", "epcis"):
        assert any((FIXTURES / folder).iterdir()), folder
        assert f"`{folder}/`" in notice
    assert "edgexfoundry/device-rfid-llrp-go" in notice
    assert "gs1/EPCIS" in notice
    assert "Apache License" in (FIXTURES / "LICENSE-Apache-2.0").read_text()
    assert len(list((FIXTURES / "llrp").glob("*.bytes"))) >= 12
    assert (FIXTURES / "epcis" / "EPCIS-JSON-Schema-root.json").is_file()
