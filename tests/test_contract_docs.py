"""The checked-in contract documents match the models, and the samples match the schemas."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from protocols.asyncapi import asyncapi_document, expected_files
from protocols.codec import encode
from protocols.messages import MESSAGE_CLASSES, Message
from protocols.topics import parse_topic
from tests.conftest import REPO_ROOT
from tests.samples import all_samples

DOCS = REPO_ROOT / "docs"
REGENERATE = "run `python -m protocols.asyncapi docs/` and commit the result"


@pytest.mark.parametrize("relative", sorted(expected_files()))
def test_checked_in_contract_is_current(relative: str) -> None:
    path = DOCS / relative
    assert path.exists(), f"docs/{relative} is missing: {REGENERATE}"
    assert path.read_text() == expected_files()[relative], f"docs/{relative} is stale: {REGENERATE}"


def test_no_orphan_schema_files() -> None:
    expected = {f"schemas/{p.name}" for p in (DOCS / "schemas").glob("*.json")}
    assert expected <= set(expected_files()), "docs/schemas has files no model generates"


def test_asyncapi_document_shape() -> None:
    doc = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert doc["asyncapi"] == "3.0.0"
    # every message class is reachable from a channel, and every $ref resolves
    reachable = {
        ref["$ref"].rsplit("/", 1)[1]
        for channel in doc["channels"].values()
        for ref in channel["messages"].values()
    }
    assert reachable == {cls.__name__ for cls in MESSAGE_CLASSES}
    text = json.dumps(doc)
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node = doc
        for part in ref.split("/"):
            assert part in node, f"dangling $ref #/{ref}"
            node = node[part]
    # every channel address has exactly the parameters it declares
    for channel in doc["channels"].values():
        assert set(re.findall(r"{(\w+)}", channel["address"])) == set(channel["parameters"])
    for operation in doc["operations"].values():
        assert operation["action"] in {"send", "receive"}


@pytest.mark.parametrize("message", all_samples(), ids=lambda m: m.type)
def test_samples_validate_against_generated_schemas(message: Message) -> None:
    schema = json.loads((DOCS / "schemas" / f"{message.type}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(encode(message)), schema)


@pytest.mark.parametrize("message", all_samples(), ids=lambda m: m.type)
def test_sample_topics_match_asyncapi_addresses(message: Message) -> None:
    doc = asyncapi_document()
    topic = str(message.topic())
    address = doc["channels"][message.channel.value]["address"]
    pattern = "^" + re.sub(r"\{\w+\}", "[^/]+", address) + "$"
    assert re.match(pattern, topic), (topic, address)
    assert parse_topic(topic) == message.topic()
