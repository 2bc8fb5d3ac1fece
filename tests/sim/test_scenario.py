"""The scenario model: defaults, the example file, and refusals that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.scenario.model import ScenarioError, load_scenario, parse_scenario
from tests.conftest import REPO_ROOT


def test_the_example_scenario_loads() -> None:
    scenario = load_scenario(REPO_ROOT / "examples" / "scenario.yaml")
    assert [s.id for s in scenario.stores] == ["store-201", "store-202", "store-203"]
    nantes = scenario.stores[1]
    assert scenario.behaviour_of(nantes).shoppers_per_minute == 20
    assert scenario.behaviour_of(scenario.stores[0]).shoppers_per_minute == 6
    assert scenario.stores[2].lockers is None
    assert scenario.broker.protocol == "5"


def test_the_smallest_scenario_is_one_store_id() -> None:
    scenario = parse_scenario({"stores": [{"id": "store-1"}]})
    assert scenario.stores[0].shelves == 4
    assert scenario.stores[0].lockers is not None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"stores": [{"id": "a"}, {"id": "b", "shelves": 99}]}, "stores.1.shelves"),
        ({"stores": [{"id": "a", "colour": "red"}]}, "stores.0.colour"),
        ({"stores": [{"id": "shopper"}]}, "stores.0.id"),
        ({"stores": [{"id": "a"}], "behaviour": {"buy_p": 2}}, "behaviour.buy_p"),
        ({"stores": [{"id": "a"}], "broker": {"protocol": "4"}}, "broker.protocol"),
        ({"stores": [{"id": "a"}], "behaviour": {"browse_s": {"low": 9, "high": 1}}}, "browse_s"),
        ({"stores": []}, "stores"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        parse_scenario(data)


def test_a_store_id_used_twice_is_refused() -> None:
    with pytest.raises(ScenarioError, match="'a' is used twice"):
        parse_scenario({"stores": [{"id": "a"}, {"id": "a"}]})


def test_load_mode_copies_the_first_store() -> None:
    scenario = parse_scenario({"stores": [{"id": "s", "shelves": 2}, {"id": "t"}]}).scaled(3)
    assert [s.id for s in scenario.stores] == ["s-0001", "s-0002", "s-0003"]
    assert {s.shelves for s in scenario.stores} == {2}


def test_a_broken_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("stores: [{id: a, shelves: x}]\n")
    with pytest.raises(ScenarioError, match=r"bad\.yaml: stores\.0\.shelves"):
        load_scenario(path)
    path.write_text("stores: [\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(path)
