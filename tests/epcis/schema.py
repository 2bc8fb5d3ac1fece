"""The vendored GS1 EPCIS 2.0 JSON Schema as a validator, with format checks on."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.conftest import FIXTURES

EPCIS = FIXTURES / "epcis"
BASE = "https://gs1.github.io/EPCIS/JSON-Schema/"


@cache
def validator() -> jsonschema.protocols.Validator:
    """The document schema (EPCISDocument or EPCISQueryDocument), every $ref resolved from
    the local copies, `format` checked. jsonschema checks `date-time` and `uri` only when
    rfc3339-validator and rfc3986-validator are installed (the dev extra): without them it
    would pass any string, so their absence fails here instead of passing quietly."""
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
    checker = cls.FORMAT_CHECKER
    missing = {"date-time", "uri"} - set(checker.checkers)
    assert not missing, f"jsonschema cannot check {missing}: install the dev extra"
    return cls(root, registry=registry, format_checker=checker)


def validate(document: dict[str, Any]) -> None:
    validator().validate(document)
