"""The HTTP API against a real uvicorn server, fed by the real ingestor over Mosquitto."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from protocols.codec import encode, topic_for
from tests.cloud.cloudproc import OPS_KEY, SHOPPER_KEY, STAFF_KEY, cloud_config
from tests.cloud.streams import GTIN, NODE, STORE, birth, rfid
from tests.mqtt_helpers import publisher
from tests.servers import MosquittoBroker

OTHER_STORE = "store-007"


@pytest.fixture
async def cloud(mosquitto_broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[CloudRuntime]:
    config = cloud_config(
        mosquitto_broker.port, tmp_path, stores={STORE: [NODE], OTHER_STORE: ["pi-1"]}
    )
    runtime = CloudRuntime(CloudSettings(**config))
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.fixture
async def http(cloud: CloudRuntime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.api_port}", timeout=10) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def publish(broker: MosquittoBroker, *messages: object) -> None:
    client = publisher(broker.host, broker.port)
    for message in messages:
        client.publish(topic_for(message), encode(message), qos=1).wait_for_publish(10)  # type: ignore[arg-type]
    client.disconnect()
    client.loop_stop()


async def eventually(
    http: httpx.AsyncClient, path: str, key: str, check: Callable[[Any], bool]
) -> Any:
    for _ in range(100):
        body = (await http.get(path, headers=bearer(key))).json()
        if check(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never satisfied the check; last: {body}")


async def test_health_ready_metrics_openapi(http: httpx.AsyncClient, cloud: CloudRuntime) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    for _ in range(100):
        if (await http.get("/readyz")).status_code == 200:
            break
        await asyncio.sleep(0.1)
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    metrics = (await http.get("/metrics")).text
    assert "storegate_ingest_queue_depth" in metrics
    spec = (await http.get("/openapi.json")).json()
    assert "/api/v1/availability/{gtin}" in spec["paths"]


async def test_auth_and_roles(http: httpx.AsyncClient) -> None:
    missing = await http.get("/api/v1/stores")
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    assert missing.json()["detail"]
    wrong = await http.get("/api/v1/stores", headers=bearer("not-a-key"))
    assert wrong.status_code == 401
    shopper = await http.get(f"/api/v1/stores/{STORE}/inventory", headers=bearer(SHOPPER_KEY))
    assert shopper.status_code == 403
    assert shopper.json()["error"] == "forbidden"
    by_header = await http.get("/api/v1/stores", headers={"X-API-Key": OPS_KEY})
    assert [s["id"] for s in by_header.json()] == [OTHER_STORE, STORE]
    staff = await http.get("/api/v1/stores", headers=bearer(STAFF_KEY))
    assert [s["id"] for s in staff.json()] == [STORE]
    other = await http.get(f"/api/v1/stores/{OTHER_STORE}/nodes", headers=bearer(STAFF_KEY))
    assert other.status_code == 403
    register = await http.post(
        "/api/v1/stores", json={"id": "store-100", "nodes": ["pi-a"]}, headers=bearer(STAFF_KEY)
    )
    assert register.status_code == 403
    unknown = await http.get("/api/v1/stores/store-555/nodes", headers=bearer(OPS_KEY))
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "not_found"


async def test_inventory_nodes_availability_and_dead_letters(
    http: httpx.AsyncClient, mosquitto_broker: MosquittoBroker
) -> None:
    await publish(
        mosquitto_broker,
        birth(3, shelves={("shelf-a", GTIN): 4}, rfid_seq=0),
        rfid(1, {("shelf-b", GTIN): 2}),
        birth(1, shelves={("s1", GTIN): 5}, store=OTHER_STORE, node="pi-1"),
        rfid(1, {("s1", GTIN): 1}, store="store-555"),  # unknown store
    )
    inventory = await eventually(
        http, f"/api/v1/stores/{STORE}/inventory", STAFF_KEY, lambda body: len(body) == 2
    )
    assert {(i["shelf"], i["count"]) for i in inventory} == {("shelf-a", 4), ("shelf-b", 2)}
    nodes = (await http.get(f"/api/v1/stores/{STORE}/nodes", headers=bearer(STAFF_KEY))).json()
    assert nodes[0]["status"] == "online"
    assert nodes[0]["bd_seq"] == 3
    availability = await eventually(
        http, f"/api/v1/availability/{GTIN}", SHOPPER_KEY, lambda body: len(body["stores"]) == 2
    )
    # The default safety stock (1 per store) is kept back from what the webshop may sell.
    assert [
        (s["store"], s["on_hand"], s["shelves"], s["available"]) for s in availability["stores"]
    ] == [(OTHER_STORE, 5, 1, 4), (STORE, 6, 2, 5)]
    assert availability["available"] == 9
    staff_view = (await http.get(f"/api/v1/availability/{GTIN}", headers=bearer(STAFF_KEY))).json()
    assert staff_view["available"] == 5
    bad_gtin = await http.get("/api/v1/availability/123", headers=bearer(SHOPPER_KEY))
    assert bad_gtin.status_code == 422
    assert bad_gtin.json()["error"] == "invalid_request"
    dead = await eventually(
        http, "/api/v1/dead-letters?limit=1", OPS_KEY, lambda body: len(body["items"]) == 1
    )
    assert dead["items"][0]["reason"] == "unknown_store"
    staff_dead = (await http.get("/api/v1/dead-letters", headers=bearer(STAFF_KEY))).json()
    assert staff_dead["items"] == []  # not one of the staff key's stores


async def test_registration_lets_a_new_store_publish(
    http: httpx.AsyncClient, mosquitto_broker: MosquittoBroker
) -> None:
    created = await http.post(
        "/api/v1/stores", json={"id": "store-100", "nodes": ["pi-a"]}, headers=bearer(OPS_KEY)
    )
    assert created.status_code == 201
    await publish(mosquitto_broker, rfid(1, {("x1", GTIN): 9}, store="store-100", node="pi-a"))
    await eventually(
        http, "/api/v1/stores/store-100/inventory", OPS_KEY, lambda body: len(body) == 1
    )


async def test_sse_delivers_a_live_change(
    http: httpx.AsyncClient, mosquitto_broker: MosquittoBroker
) -> None:
    async with http.stream("GET", "/api/v1/events", headers=bearer(STAFF_KEY)) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()

        async def next_event() -> tuple[str, dict[str, object]]:
            event = ""
            async for line in lines:
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event:
                    return event, json.loads(line.split(":", 1)[1])
            raise AssertionError("stream ended")

        assert (await asyncio.wait_for(next_event(), 10))[0] == "hello"
        await publish(mosquitto_broker, rfid(1, {("shelf-z", GTIN): 7}))
        while True:
            kind, data = await asyncio.wait_for(next_event(), 10)
            if kind == "inventory":
                break
        assert data["store"] == STORE
        assert data["items"] == [{"shelf": "shelf-z", "gtin": GTIN, "count": 7}]


def _timestamps(body: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string under a timestamp-named key (`*_at`, `at`, `last_seen`, since/until)."""
    found: list[tuple[str, str]] = []
    if isinstance(body, dict):
        for key, value in body.items():
            where = f"{path}.{key}"
            timestamp_key = key.endswith("_at") or key in {"at", "last_seen", "since", "until"}
            if timestamp_key and isinstance(value, str):
                found.append((where, value))
            else:
                found += _timestamps(value, where)
    elif isinstance(body, list):
        for index, value in enumerate(body):
            found += _timestamps(value, f"{path}[{index}]")
    return found


async def test_every_timestamp_is_utc_with_z(
    http: httpx.AsyncClient, mosquitto_broker: MosquittoBroker
) -> None:
    await publish(
        mosquitto_broker,
        birth(3, shelves={("shelf-a", GTIN): 4}, rfid_seq=0),
        rfid(1, {("shelf-b", GTIN): 2}),
        rfid(1, {("s1", GTIN): 1}, store="store-555"),  # a dead letter
    )
    await eventually(
        http, "/api/v1/dead-letters?limit=1", OPS_KEY, lambda body: len(body["items"]) == 1
    )
    await eventually(
        http, f"/api/v1/stores/{STORE}/nodes", OPS_KEY, lambda b: b and b[0]["health_at"] is None
    )
    seen: list[tuple[str, str]] = []
    for path in (
        f"/api/v1/stores/{STORE}/nodes",
        f"/api/v1/stores/{STORE}/inventory",
        f"/api/v1/availability/{GTIN}",
        "/api/v1/dead-letters",
    ):
        seen += _timestamps((await http.get(path, headers=bearer(OPS_KEY))).json(), path)
    assert {where.split(".")[-1] for where, _ in seen} >= {
        "last_birth_at",
        "last_seen",
        "updated_at",
        "received_at",
    }
    assert [(where, value) for where, value in seen if not value.endswith("Z")] == []

    # The published schema says so: every date-time a response carries is UTC with Z.
    spec = (await http.get("/openapi.json")).json()
    date_times = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("format") == "date-time":
                date_times.append((where, node))
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(spec["components"]["schemas"], "#/components/schemas")
    # Request bodies may send any offset; what the API answers is UTC. A schema is on the
    # request side when only request bodies refer to it (`...In`, `-Input`, or by use).
    request_only = _request_only_schemas(spec)
    response_side = [
        (w, n)
        for w, n in date_times
        if not w.split("/")[3].endswith(("In", "-Input")) and w.split("/")[3] not in request_only
    ]
    assert response_side, "no date-time in the published schemas"
    assert [
        w
        for w, n in response_side
        if n.get("pattern") != "Z$" or "UTC" not in n.get("description", "")
    ] == []


def _request_only_schemas(spec: dict[str, Any]) -> set[str]:
    """Schemas reachable from request bodies and from no response."""

    def refs(node: Any) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                found.add(ref.rsplit("/", 1)[-1])
            for value in node.values():
                found |= refs(value)
        elif isinstance(node, list):
            for value in node:
                found |= refs(value)
        return found

    def closure(names: set[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo += refs(spec["components"]["schemas"].get(name, {}))
        return seen

    requests: set[str] = set()
    responses: set[str] = set()
    for operations in spec["paths"].values():
        for operation in operations.values():
            if isinstance(operation, dict):
                requests |= refs(operation.get("requestBody", {}))
                responses |= refs(operation.get("responses", {}))
    return closure(requests) - closure(responses)
