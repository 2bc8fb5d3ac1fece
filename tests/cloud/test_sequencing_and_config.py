"""The dedup window rules, and the cloud config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.config import CloudSettings, Role, hash_key, load_cloud_settings
from cloud.ingest.sequencing import StreamPosition, admit, on_birth
from protocols.settings import ConfigError
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "cloud.yaml"


def test_in_order_then_duplicates() -> None:
    position = StreamPosition()
    assert not admit(position, 1, window=8).duplicate
    assert not admit(position, 2, window=8).duplicate
    assert admit(position, 2, window=8).duplicate
    assert admit(position, 1, window=8).duplicate
    assert position.hw == 2
    assert not position.marks


def test_an_unknown_stream_starts_at_one_not_at_the_first_seq_seen() -> None:
    """A new ingestor that catches the tail of a resend (the head went to a broker with no
    subscriber yet) must not confirm the head to the edge, which would delete it."""
    position = StreamPosition()
    admission = admit(position, 231, window=1024)
    assert admission.gap == (1, 230)
    assert position.hw == 0  # what the commit mark says: nothing confirmed yet
    for seq in range(232, 301):
        admit(position, seq, window=1024)
    assert position.hw == 0
    for seq in range(1, 231):  # the edge resends what stays unconfirmed
        assert not admit(position, seq, window=1024).duplicate
    assert position.hw == 300
    assert not position.marks


def test_a_first_birth_sets_the_position_from_what_the_edge_holds() -> None:
    position = StreamPosition()
    on_birth(position, 300, kept_from=101)
    assert position.hw == 100  # 101..300 will be resent
    older = StreamPosition()
    on_birth(older, 300)  # an edge older than commit marks resends nothing it sent
    assert older.hw == 300


def test_gap_marks_fold_back_when_filled() -> None:
    position = StreamPosition(hw=1)
    admission = admit(position, 4, window=8)
    assert admission.gap == (2, 3)
    assert admission.live
    assert position.marks == {4}
    admit(position, 2, window=8)
    admit(position, 3, window=8)
    assert position.hw == 4
    assert not position.marks


def test_window_is_bounded() -> None:
    position = StreamPosition(hw=0)
    for seq in range(2, 2 + 9):
        admission = admit(position, seq, window=8)
    assert admission.gave_up
    assert position.hw == 10
    assert not position.marks
    assert admit(position, 1, window=8).duplicate  # given up: a very late seq is dropped


def test_birth_position_makes_earlier_events_history_only() -> None:
    position = StreamPosition(hw=3)
    on_birth(position, 10)
    admission = admit(position, 4, window=8)
    assert not admission.duplicate
    assert not admission.live
    assert admit(position, 11, window=8).live
    # a birth whose counter went backwards (node lost its disk) restarts the stream
    on_birth(position, 0)
    assert position.hw == 0
    assert not admit(position, 1, window=8).duplicate


def test_birth_covers_a_pending_gap() -> None:
    # an edge older than commit marks (no kept_from): the gap below its birth is closed
    position = StreamPosition(hw=1)
    admit(position, 6, window=8)
    on_birth(position, 5)
    assert position.hw == 6
    assert not position.marks


def test_birth_skips_only_what_the_edge_no_longer_holds() -> None:
    # The edge still holds (and resends) seqs 4..: the cloud waits for them; 2-3 were
    # dropped there and will never come.
    position = StreamPosition(hw=1)
    admit(position, 7, window=8)  # arrived out of order, above the gap
    on_birth(position, 9, kept_from=4)
    assert (position.hw, position.marks) == (3, {7})
    resent = admit(position, 4, window=8)
    assert not resent.duplicate
    assert resent.gap is None
    assert not resent.live  # the birth's snapshot has it: history only
    admit(position, 5, window=8)
    assert not admit(position, 6, window=8).live
    assert position.hw == 7
    assert admit(position, 7, window=8).duplicate
    # holding nothing (kept_from = position + 1): everything up to the position is done
    on_birth(position, 12, kept_from=13)
    assert position.hw == 12


def test_birth_skips_the_runs_the_edge_dropped_and_waits_for_the_rest() -> None:
    position = StreamPosition(hw=1)
    # held: 2-3, 6, 9-10; dropped: 4-5, 7-8
    on_birth(position, 10, kept_from=2, dropped=[(4, 5), (7, 8)])
    assert position.hw == 1
    for seq in (2, 3, 6, 9):
        assert not admit(position, seq, window=8).duplicate
        assert not position.marks  # stepped over the dropped runs: no gap, nothing waited for
    assert position.hw == 9
    assert admit(position, 10, window=8).gap is None
    assert position.hw == 10
    # a dropped seq that shows up late (it was sent before the drop) is not applied
    late = StreamPosition(hw=1)
    on_birth(late, 10, kept_from=2, dropped=[(4, 5)])
    assert admit(late, 5, window=8).duplicate
    # a run right above hw is stepped over at the birth itself
    at_once = StreamPosition(hw=3)
    on_birth(at_once, 10, kept_from=6, dropped=[(6, 8)])
    assert at_once.hw == 8


def test_a_seq_filling_a_gap_below_a_newer_one_is_history_only() -> None:
    position = StreamPosition(hw=1)
    assert admit(position, 3, window=8).live  # newer, applied to live state
    late = admit(position, 2, window=8)
    assert (late.duplicate, late.live) == (False, False)  # must not overwrite seq 3's state
    assert position.hw == 3
    assert admit(position, 4, window=8).live


def test_a_lifecycle_stream_keeps_no_marks() -> None:
    # heartbeats lost with a broker are never resent: nothing to wait for or remember
    position = StreamPosition(hw=2)
    admission = admit(position, 9, window=8, newest_only=True)
    assert (admission.duplicate, admission.gap) == (False, None)
    assert (position.hw, position.marks) == (9, set())
    assert admit(position, 5, window=8, newest_only=True).duplicate  # late and stale


def test_a_gap_the_birth_covers_asks_for_no_resync() -> None:
    position = StreamPosition(hw=1, birth_seq=10)
    admission = admit(position, 5, window=8)
    assert (admission.duplicate, admission.gap) == (False, None)
    assert admit(position, 12, window=8).gap == (2, 11)


def test_example_config_parses() -> None:
    settings = load_cloud_settings(EXAMPLE)
    assert [store.id for store in settings.stores] == ["store-201", "store-202", "store-203"]
    roles = {key.name: key.role for key in settings.api.keys}
    assert roles["staff-store-201"] is Role.STAFF
    assert settings.api.keys[0].sha256 == hash_key("ops-demo-key")


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREGATE_CLOUD_MQTT__PORT", "18830")
    monkeypatch.setenv("STOREGATE_CLOUD_INGEST__SHARED_GROUP", "ingest")
    monkeypatch.setenv("STOREGATE_CLOUD_INFLUXDB__URL", "http://influx:8086")
    monkeypatch.setenv("STOREGATE_CLOUD_INFLUXDB__TOKEN", "s3cret")
    settings = load_cloud_settings(EXAMPLE)
    assert settings.mqtt.port == 18830
    assert settings.ingest.shared_group == "ingest"
    assert settings.influxdb is not None
    assert "s3cret" not in repr(settings.influxdb)


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_text("api:\n  keys:\n    - {name: s, role: staff, sha256: " + "a" * 64 + "}\n")
    with pytest.raises(ConfigError, match="must list the stores"):
        load_cloud_settings(path)
    path.write_text("api:\n  keys:\n    - {name: k, role: ops, sha256: not-a-hash}\n")
    with pytest.raises(ConfigError, match=r"api\.keys\.0\.sha256"):
        load_cloud_settings(path)
    assert CloudSettings().database_url.startswith("sqlite+aiosqlite")
