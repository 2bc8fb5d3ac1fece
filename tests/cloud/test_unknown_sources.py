"""Messages from unregistered stores or nodes: a WARNING that names the config key to add,
then one summary per source per minute with the count, never one line per message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cloud.ingest.unknown import UnknownSources
from tests.cloud.harness import StateHarness
from tests.cloud.streams import NODE, STORE, rfid


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_first_message_names_the_config_key_then_one_summary_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    sources = UnknownSources(clock=clock)
    with caplog.at_level(logging.WARNING, logger="cloud.ingest"):
        sources.note("unknown_store", "store-555", "pi-1")
        [first] = warnings(caplog)
        assert "store 'store-555'" in first
        assert "`stores:`" in first
        assert "- id: store-555, nodes: [pi-1]" in first
        assert "POST /api/v1/stores" in first
        for _ in range(99):
            clock.now += 0.5
            sources.note("unknown_store", "store-555", "pi-1")
        assert len(warnings(caplog)) == 1  # quiet inside the minute
        clock.now = 1000.0 + 59.999
        sources.flush_due()
        assert len(warnings(caplog)) == 1
        clock.now = 1000.0 + 60.0  # exactly a minute: the summary is due
        sources.flush_due()
        summary = warnings(caplog)[-1]
        assert summary.startswith("99 more message(s) from unregistered store 'store-555'")
        sources.flush_due()  # nothing new: nothing said
        assert len(warnings(caplog)) == 2


def test_unknown_node_names_the_nodes_key_and_sources_are_counted_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    sources = UnknownSources(clock=clock)
    with caplog.at_level(logging.WARNING, logger="cloud.ingest"):
        sources.note("unknown_node", "store-042", "pi-9")
        sources.note("unknown_node", "store-042", "pi-8")
        sources.note("unknown_node", "store-042", "pi-9", count=5)
        lines = warnings(caplog)
        assert len(lines) == 2
        assert "add 'pi-9' to `nodes:` of store 'store-042'" in lines[0]
        clock.now += 61
        sources.flush_due()
        assert warnings(caplog)[-1].startswith(
            "5 more message(s) from unregistered node 'pi-9' of store 'store-042'"
        )


async def test_the_ingestor_warns_for_an_unregistered_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    harness = StateHarness(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", {STORE: [NODE]})
    await harness.start()
    try:
        with caplog.at_level(logging.WARNING, logger="cloud.ingest"):
            outcome = await harness.feed(
                rfid(1, {("s1", "80614141123458"): 1}, store="store-555"),
                rfid(2, {("s1", "80614141123458"): 1}, store="store-555"),
                rfid(1, {("s1", "80614141123458"): 1}, node="pi-unknown"),
            )
        assert outcome.dead_lettered == 3
        lines = warnings(caplog)
        assert len(lines) == 2, lines
        assert "store 'store-555'" in lines[0]
        assert "node 'pi-unknown'" in lines[1]
    finally:
        await harness.close()
