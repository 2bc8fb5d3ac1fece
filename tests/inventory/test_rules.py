"""The alert rules and the domain's config section, without a database."""

from __future__ import annotations

import pytest

from cloud.config import CloudSettings
from cloud.domains import load_domains
from cloud.inventory import InventoryDomain, RecentEpcs
from cloud.inventory.config import parse_options
from cloud.inventory.rules import Action, AlertType, low_stock, misplaced, open_key
from protocols.settings import ConfigError

GTIN_A, GTIN_B = "80614141000001", "80614141000002"


@pytest.mark.parametrize(
    ("on_hand", "expected"),
    [(0, Action.OPEN), (3, Action.OPEN), (4, Action.KEEP), (5, Action.KEEP), (6, Action.CLOSE)],
)
def test_low_stock_raises_at_the_point_and_clears_above_the_band(
    on_hand: int, expected: Action
) -> None:
    assert low_stock(on_hand, 3, hysteresis=2) is expected


def test_low_stock_without_hysteresis_and_without_a_point() -> None:
    assert low_stock(4, 3, hysteresis=0) is Action.CLOSE
    assert low_stock(0, None, hysteresis=2) is Action.CLOSE


def test_misplaced_needs_a_planned_shelf_and_a_count() -> None:
    assert misplaced(2, GTIN_A, {GTIN_B}) is Action.OPEN
    assert misplaced(2, GTIN_A, set()) is Action.OPEN  # planned empty: nothing belongs
    assert misplaced(0, GTIN_A, {GTIN_B}) is Action.CLOSE
    assert misplaced(2, GTIN_A, {GTIN_A}) is Action.CLOSE
    assert misplaced(2, GTIN_A, None) is Action.CLOSE  # unplanned shelves are not checked


def test_open_keys_are_distinct_per_scope() -> None:
    keys = {
        open_key(AlertType.LOW_STOCK, "s1", None, GTIN_A),
        open_key(AlertType.LOW_STOCK, "s1", "shelf-1", GTIN_A),
        open_key(AlertType.MISPLACED, "s1", "shelf-1", GTIN_A),
        open_key(AlertType.LOW_STOCK, "s2", None, GTIN_A),
    }
    assert len(keys) == 4


def test_configured_points_most_specific_wins() -> None:
    options = parse_options(
        {
            "default_reorder_point": 1,
            "reorder_points": [
                {"gtin": GTIN_A, "reorder_point": 5},
                {"gtin": GTIN_A, "reorder_point": 9, "store": "s2"},
                {"gtin": GTIN_A, "reorder_point": 2, "shelf": "shelf-1"},
            ],
        }
    )
    assert options.configured_point("s1", GTIN_A, None) == 5
    assert options.configured_point("s2", GTIN_A, None) == 9
    assert options.configured_point("s1", GTIN_A, "shelf-1") == 2
    assert options.configured_point("s1", GTIN_B, None) == 1  # the default: store-wide only
    assert options.configured_point("s1", GTIN_B, "shelf-1") is None


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        parse_options({"hysteresis": -1})
    with pytest.raises(ValueError, match=r"reorder_points\.0\.gtin"):
        parse_options({"reorder_points": [{"gtin": "123", "reorder_point": 1}]})
    with pytest.raises(ValueError, match="colour"):
        parse_options({"colour": "red"})


def test_the_cloud_loads_the_domain_and_names_a_bad_section() -> None:
    domains = load_domains(CloudSettings(domains={"inventory": {"hysteresis": 2}}))
    inventory = [d for d in domains if isinstance(d, InventoryDomain)]
    assert len(inventory) == 1
    assert inventory[0].options.hysteresis == 2
    with pytest.raises(ConfigError, match=r"domains\.inventory: availability\.safety_stock"):
        load_domains(CloudSettings(domains={"inventory": {"availability": {"safety_stock": -1}}}))


def test_recent_epcs_are_bounded() -> None:
    recent = RecentEpcs(per_key=2, max_keys=2)
    for epc in ("A1", "A2", "A3", "A2"):
        recent.add("s", "shelf-1", GTIN_A, epc)
    assert recent.get("s", "shelf-1", GTIN_A) == ["A3", "A2"]
    recent.add("s", "shelf-2", GTIN_A, "B1")
    recent.add("s", "shelf-3", GTIN_A, "C1")  # evicts the least recently used key
    assert recent.get("s", "shelf-1", GTIN_A) == []
    assert recent.get("s", "shelf-3", GTIN_A) == ["C1"]
