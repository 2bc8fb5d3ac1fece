"""Pure rules: arbitration, schedules, holdout, options."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from cloud.config import CloudSettings
from cloud.offers import create_domain
from cloud.offers.arbitration import Placement, arbitrate
from cloud.offers.campaigns import Schedule, in_holdout
from protocols.messages import PresenceKind

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday


def _enter(current: Placement | None, zone: str, rssi: float | None, after_s: float) -> bool:
    verdict = arbitrate(
        current,
        PresenceKind.ENTER,
        zone,
        "tok",
        rssi,
        T0 + timedelta(seconds=after_s),
        window_s=10,
        switch_db=6,
    )
    return verdict.fires


def test_a_conflicting_enter_needs_6_db_more_inside_the_window() -> None:
    here = Placement("coffee", "tok", -60.0, T0, T0)
    assert not _enter(here, "tea", -57.0, 2)  # 3 dB stronger: stays at the coffee shelf
    assert _enter(here, "tea", -53.0, 2)  # 7 dB stronger: moves
    assert _enter(here, "tea", -80.0, 15)  # past the window the latest enter wins
    assert not _enter(here, "coffee", -50.0, 1)  # the same zone again is not a new enter
    assert not _enter(here, "tea", -40.0, -1)  # out of order across nodes


def test_exits_and_dwells_count_only_in_the_current_zone_and_token() -> None:
    here = Placement("coffee", "new", -60.0, T0, T0)
    at = T0 + timedelta(seconds=5)
    kwargs = {"window_s": 10.0, "switch_db": 6.0}
    assert not arbitrate(here, PresenceKind.EXIT, "coffee", "old", None, at, **kwargs).fires
    assert not arbitrate(here, PresenceKind.EXIT, "tea", "new", None, at, **kwargs).fires
    assert not arbitrate(here, PresenceKind.DWELL, "tea", "new", -60, at, **kwargs).fires
    assert arbitrate(here, PresenceKind.DWELL, "coffee", "old", -60, at, **kwargs).fires
    gone = arbitrate(here, PresenceKind.EXIT, "coffee", "new", None, at, **kwargs)
    assert gone.fires
    assert gone.placement.zone is None


def test_schedule_window_days_hours_and_timezone() -> None:
    weekday_mornings = Schedule(
        days=[0, 1, 2, 3, 4], hours_from="09:00", hours_to="12:00", timezone="Europe/Paris"
    )
    assert weekday_mornings.open_at(T0)  # 11:00 in Paris on a Monday
    assert not weekday_mornings.open_at(T0 + timedelta(hours=2))  # 13:00
    assert not weekday_mornings.open_at(T0 + timedelta(days=5))  # Saturday
    night = Schedule(hours_from="22:00", hours_to="02:00")
    assert night.open_at(T0.replace(hour=23))
    assert night.open_at(T0.replace(hour=1))
    assert not night.open_at(T0.replace(hour=12))
    bounded = Schedule(starts_at=T0, ends_at=T0 + timedelta(hours=1))
    assert bounded.open_at(T0)
    assert not bounded.open_at(T0 + timedelta(hours=1))
    with pytest.raises(ValidationError, match="unknown timezone"):
        Schedule(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="ends_at"):
        Schedule(starts_at=T0, ends_at=T0)


def test_holdout_is_a_stable_share() -> None:
    shoppers = [f"shopper-{i}" for i in range(4000)]
    held = [s for s in shoppers if in_holdout("c1", s, 10)]
    assert 0.08 < len(held) / len(shoppers) < 0.12
    assert held == [s for s in shoppers if in_holdout("c1", s, 10)]
    assert not any(in_holdout("c1", s, 0) for s in shoppers)
    assert all(in_holdout("c1", s, 100) for s in shoppers)


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match=r"webhook.url"):
        create_domain(CloudSettings(), {"webhook": {"url": "ftp://x"}})
    with pytest.raises(ValueError, match="visit_gap_s"):
        create_domain(CloudSettings(), {"visit_gap_s": 0})
