"""`storegate cloud` keeps its files in one data dir: --data-dir, then the environment, then
the file, then $XDG_STATE_HOME/storegate, else ./.storegate."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.config import CloudSettings, load_cloud_settings
from cloud.state.db import sqlite_path


def test_default_is_dot_storegate_without_a_state_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("STOREGATE_CLOUD_DATA_DIR", raising=False)
    settings = CloudSettings()
    assert settings.data_dir == Path(".storegate")
    assert sqlite_path(settings.database_url) == Path(".storegate/cloud.db")
    assert settings.spool_dir == Path(".storegate/spool")


def test_state_home_then_file_then_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STOREGATE_CLOUD_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert CloudSettings().data_dir == tmp_path / "state" / "storegate"
    config = tmp_path / "cloud.yaml"
    config.write_text(f"data_dir: {tmp_path / 'from-file'}\n")
    assert load_cloud_settings(config).data_dir == tmp_path / "from-file"
    monkeypatch.setenv("STOREGATE_CLOUD_DATA_DIR", str(tmp_path / "from-env"))
    settings = load_cloud_settings(config)
    assert settings.data_dir == tmp_path / "from-env"
    assert settings.spool_dir == tmp_path / "from-env" / "spool"


def test_explicit_database_and_spool_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STOREGATE_CLOUD_DATA_DIR", raising=False)
    settings = CloudSettings(
        data_dir=tmp_path / "data",
        database_url="postgresql+asyncpg://u@db/storegate",
        ingest={"spool_dir": tmp_path / "spool"},
    )
    assert sqlite_path(settings.database_url) is None
    assert settings.spool_dir == tmp_path / "spool"


async def test_migrations_say_nothing_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from cloud.state.db import create_engine, migrate

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        with caplog.at_level(logging.INFO):
            await migrate(engine)
        assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            await migrate(engine)  # at debug they are there (nothing to upgrade: the context)
        assert any(r.name.startswith("alembic") for r in caplog.records)
    finally:
        await engine.dispose()


def test_the_docker_build_context_leaves_local_state_out() -> None:
    from tests.conftest import REPO_ROOT

    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", ".storegate", "**/__pycache__", ".env"} <= ignored
    gitignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert ".storegate/" in gitignored
