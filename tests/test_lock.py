"""requirements/lock.txt (written by scripts/lock) pins what pyproject.toml declares.

Every dependency of the base install and of every extra (dev holds them all) must be in the
lock at a version its specifier allows and, unless the declaration has a marker, for this
platform too; every pinned package carries hashes, so `pip install --require-hashes`
(scripts/bootstrap) checks each file. A dependency added or narrowed in pyproject.toml
without `scripts/lock` fails here.
"""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO_ROOT

LOCK = REPO_ROOT / "requirements" / "lock.txt"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def declared() -> list[Requirement]:
    """The base dependencies and those of every extra dev reaches, self-references resolved."""
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    found = [Requirement(r) for r in project["dependencies"]]
    pending, seen = ["dev"], set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in extras[extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "storegate":
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    assert seen == set(extras), "dev must reach every extra, or the lock misses some"
    return found


def locked() -> dict[str, list[tuple[Version, Marker | None, int]]]:
    """name -> [(version, marker, number of hashes)] (a package may be pinned per platform)."""
    entries: dict[str, list[tuple[Version, Marker | None, int]]] = {}
    text = LOCK.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        first = block.split("\\", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        requirement = Requirement(first)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", first
        hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", block))
        entries.setdefault(canonicalize_name(requirement.name), []).append(
            (Version(specifier.version), requirement.marker, hashes)
        )
    return entries


def test_the_lock_exists_and_every_pin_has_hashes() -> None:
    pins = locked()
    assert len(pins) >= 50
    unhashed = [name for name, entries in pins.items() for *_, hashes in entries if not hashes]
    assert unhashed == []


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_every_declared_dependency_is_locked_at_an_allowed_version(
    requirement: Requirement,
) -> None:
    entries = locked().get(canonicalize_name(requirement.name))
    assert entries, f"{requirement.name} is not in requirements/lock.txt: run scripts/lock"
    here = [e for e in entries if e[1] is None or e[1].evaluate()]
    if requirement.marker is None or requirement.marker.evaluate():
        assert here, f"{requirement.name} is locked only for other platforms"
    for version, _marker, _hashes in here:
        assert requirement.specifier.contains(version, prereleases=True), (
            f"lock pins {requirement.name}=={version}, pyproject wants {requirement.specifier}:"
            " run scripts/lock"
        )
