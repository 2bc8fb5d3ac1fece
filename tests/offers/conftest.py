"""Fixtures for the offers tests: the cloud tests' SQLite + PostgreSQL `database_url`."""

from tests.cloud.conftest import database_url, postgres_server

__all__ = ["database_url", "postgres_server"]
