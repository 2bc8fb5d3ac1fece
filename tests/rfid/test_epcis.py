"""Item events as EPCIS 2.0 documents, validated against the GS1 JSON Schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from edge.rfid.epcis import document
from protocols.messages import ItemEvent, ItemEventKind
from tests.conftest import FIXTURES

EPCIS = FIXTURES / "epcis"
BASE = "https://gs1.github.io/EPCIS/JSON-Schema/"


def _validator() -> jsonschema.protocols.Validator:
    """The document schema, with every $ref resolved from the local copies."""
    resources: list[tuple[str, Resource[Any]]] = []
    for path in [*EPCIS.glob("*.json"), *(EPCIS / "schemas").glob("*.json")]:
        schema = json.loads(path.read_text())
        relative = path.relative_to(EPCIS).as_posix()
        resource = Resource.from_contents(schema, default_specification=DRAFT7)
        resources.append((BASE + relative, resource))
        if "$id" in schema:
            resources.append((schema["$id"], resource))
    registry: Registry[Any] = Registry().with_resources(resources)
    root = json.loads((EPCIS / "EPCIS-Document-JSON-Schema.json").read_text())
    cls = jsonschema.validators.validator_for(root)
    return cls(root, registry=registry, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    return _validator()


def _events() -> list[ItemEvent]:
    at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    return [
        ItemEvent(
            kind=ItemEventKind.ARRIVED,
            epc="3074257BF7194E4000001A85",
            gtin="80614141123458",
            shelf="shelf-1",
            at=at,
            rssi=-55,
        ),
        ItemEvent(
            kind=ItemEventKind.MOVED,
            epc="3074257BF7194E4000001A85",
            gtin="80614141123458",
            shelf="shelf-2",
            from_shelf="shelf-1",
            at=at,
        ),
        ItemEvent(
            kind=ItemEventKind.DEPARTED, epc="E2801160600002084A6B1C35", from_shelf="shelf-2", at=at
        ),
    ]


def test_gs1_example_validates(validator: jsonschema.protocols.Validator) -> None:
    example = json.loads((EPCIS / "Example_9.6.1-ObjectEvent.jsonld").read_text())
    validator.validate(example)


def test_item_events_validate_against_the_epcis_schema(
    validator: jsonschema.protocols.Validator,
) -> None:
    doc = document(_events(), "store-1")
    validator.validate(doc)
    first = doc["epcisBody"]["eventList"][0]
    assert first["action"] == "OBSERVE"
    assert first["bizStep"] == "cycle_counting"
    assert first["disposition"] == "sellable_accessible"
    assert first["epcList"] == ["urn:epc:id:sgtin:0614141.812345.6789"]
    assert first["readPoint"] == {"id": "urn:storegate:store-1:shelf:shelf-1"}
    assert first["bizLocation"] == {"id": "urn:storegate:store-1"}


def test_the_schema_catches_a_broken_event(validator: jsonschema.protocols.Validator) -> None:
    doc = document(_events(), "store-1")
    doc["epcisBody"]["eventList"][0]["action"] = "LOOK"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(doc)
