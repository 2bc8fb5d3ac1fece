"""Generate the contract documents from the models: JSON Schema per message and AsyncAPI 3.0.

    python -m protocols.asyncapi docs/        # (re)write docs/asyncapi.yaml and docs/schemas/

A test regenerates both in memory and fails when the checked-in files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from protocols.codec import MAX_PAYLOAD_BYTES
from protocols.messages import MESSAGE_CLASSES, SCHEMA_VERSION, Message
from protocols.topics import TOPIC_PREFIX, Channel

_PARAM_DOC = {
    "store": "Store id. 1-64 of A-Z a-z 0-9 _ . -; `shopper` is reserved.",
    "node": "Edge node id, unique within its store.",
    "reader": "RFID reader id (from the node's config).",
    "bank": "Locker bank id.",
    "scanner": "BLE scanner id.",
    "command": "Command name, e.g. resync, reload-config.",
    "shopper": "The shopper app's inbox, given with its broker login; never a BLE token.",
}

# channel -> (address, parameters, who publishes, summary)
_CHANNELS: dict[Channel, tuple[str, list[str], str, str]] = {
    Channel.STATUS: (
        "{store}/{node}/status",
        ["store", "node"],
        "edge",
        "Retained online/offline status. The MQTT Last Will publishes offline with the"
        " session's bd_seq; a will whose bd_seq is older than the last birth is stale.",
    ),
    Channel.BIRTH: (
        "{store}/{node}/birth",
        ["store", "node"],
        "edge",
        "Sent on every (re)connect and on a resync: devices, last seq per stream, snapshots.",
    ),
    Channel.DEATH: ("{store}/{node}/death", ["store", "node"], "edge", "Clean-shutdown goodbye."),
    Channel.HEALTH: ("{store}/{node}/health", ["store", "node"], "edge", "Heartbeat."),
    Channel.RFID: (
        "{store}/{node}/rfid/{reader}",
        ["store", "node", "reader"],
        "edge",
        "Shelf item events, per-(shelf, GTIN) count deltas and snapshots.",
    ),
    Channel.LOCKER: (
        "{store}/{node}/locker/{bank}",
        ["store", "node", "bank"],
        "edge",
        "Compartment state changes and snapshots.",
    ),
    Channel.BLE: (
        "{store}/{node}/ble/{scanner}",
        ["store", "node", "scanner"],
        "edge",
        "Zone presence of allowlisted beacons (never MAC addresses).",
    ),
    Channel.CMD: (
        "{store}/{node}/cmd/{command}",
        ["store", "node", "command"],
        "cloud",
        "Commands to a node; each is answered on ack with its correlation id.",
    ),
    Channel.ACK: (
        "{store}/{node}/ack",
        ["store", "node"],
        "edge",
        "Command acks: accepted, rejected (with reason), done or failed.",
    ),
    Channel.COMMITTED: (
        "{store}/{node}/committed",
        ["store", "node"],
        "cloud",
        "Retained, QoS 1: per stream, the seq up to which the cloud has committed everything."
        " The edge deletes its outbox up to it and resends the rest; the latest mark counts.",
    ),
    Channel.OFFERS: (
        "shopper/{shopper}/offers",
        ["shopper"],
        "cloud",
        "Proximity offers to one opted-in shopper's app.",
    ),
    Channel.ORDERS: (
        "shopper/{shopper}/orders",
        ["shopper"],
        "cloud",
        "BOPIS order updates (ready for pickup, collected, expired, ...) to one shopper's app.",
    ),
}


def _schema_name(cls: type[Message]) -> str:
    return cls.__name__


def message_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """(top-level schema per message class name, shared $defs) with refs into `$defs`."""
    _, top = models_json_schema(
        [(cls, "validation") for cls in MESSAGE_CLASSES],
        ref_template="#/components/schemas/{model}",
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return {_schema_name(cls): defs[_schema_name(cls)] for cls in MESSAGE_CLASSES}, defs


def standalone_json_schemas() -> dict[str, dict[str, Any]]:
    """One self-contained JSON Schema (2020-12) per message type, keyed by file name."""
    out: dict[str, dict[str, Any]] = {}
    for cls in MESSAGE_CLASSES:
        schema = cls.model_json_schema(mode="validation")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://storegate.dev/schemas/v{SCHEMA_VERSION}/{cls.model_fields['type'].default}.json",
            **schema,
        }
        out[f"{cls.model_fields['type'].default}.json"] = schema
    return out


def asyncapi_document() -> dict[str, Any]:
    _, defs = message_schemas()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel, (address, params, producer, summary) in _CHANNELS.items():
        classes = [cls for cls in MESSAGE_CLASSES if cls.channel is channel]
        channel_messages = {}
        for cls in classes:
            name = _schema_name(cls)
            messages[name] = {
                "name": cls.model_fields["type"].default,
                "title": name,
                "summary": (cls.__doc__ or name).strip().splitlines()[0],
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{name}"},
            }
            channel_messages[name] = {"$ref": f"#/components/messages/{name}"}
        channels[channel.value] = {
            "address": f"{TOPIC_PREFIX}/{address}",
            "description": summary,
            "parameters": {p: {"description": _PARAM_DOC[p]} for p in params},
            "messages": channel_messages,
            **({"x-retained": True} if channel is Channel.STATUS else {}),
        }
        operations[f"publish_{channel.value}"] = {
            "action": "send",
            "summary": f"published by the {producer}",
            "channel": {"$ref": f"#/channels/{channel.value}"},
            "messages": [
                {"$ref": f"#/channels/{channel.value}/messages/{_schema_name(cls)}"}
                for cls in classes
            ],
            "x-producer": producer,
            "x-qos": 1,
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "storegate MQTT contract",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": (
                "Topics and payloads between storegate edge nodes, the cloud and shopper apps."
                " Generated from `protocols/` by `python -m protocols.asyncapi docs/`; do not"
                " edit by hand. Every payload is JSON with the envelope fields v, type, msg_id,"
                " store, node, stream, seq, event_time and sent_time (UTC, ISO 8601). All"
                f" messages are QoS 1; payloads are limited to {MAX_PAYLOAD_BYTES} bytes."
                " Unknown fields are ignored (additive changes keep the version)."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "demo": {
                "host": "localhost:1883",
                "protocol": "mqtt",
                "description": "Embedded broker of `storegate demo`.",
            },
            "production": {
                "host": "mqtt.example.com:8883",
                "protocol": "secure-mqtt",
                "description": "Mosquitto or EMQX with per-store credentials and topic ACLs.",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": defs},
    }


def render_asyncapi() -> str:
    return yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=100)


def render_json_schema(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def expected_files() -> dict[str, str]:
    """Relative path under docs/ -> content."""
    files = {"asyncapi.yaml": render_asyncapi()}
    for name, schema in standalone_json_schemas().items():
        files[f"schemas/{name}"] = render_json_schema(schema)
    return files


def write(docs: Path) -> list[Path]:
    written = []
    for relative, content in expected_files().items():
        path = docs / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    for path in write(target):
        print(f"wrote {path}")
