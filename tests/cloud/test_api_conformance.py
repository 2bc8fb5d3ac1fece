"""schemathesis against the cloud's own OpenAPI document: every route, every credential.

The whole cloud runs (real Mosquitto, real SQLite, uvicorn on a free port; see livecloud.py)
with some state in it, so that reads return rows with timestamps. For each operation and
each credential (ops, staff, shopper_app, no key, a wrong key) schemathesis generates
requests, valid and invalid, and every response must be:

- no server error (5xx),
- a status code the document declares for that operation,
- of the declared content type, with a body matching the declared schema (error bodies
  included: `{"error", "detail"}`; timestamps `...Z`), and declared headers;
- every timestamp-named value UTC with `Z`, also in bodies the schema leaves open.

About 1,900 cases in under 20 s on 2 cores (MAX_EXAMPLES tunes it).

Failures are collected across all operations and reported together, so one run shows every
mismatch. Generation is derandomized (the same cases on every run: no flaky CI) and not
shrunk (a failure is reported with the case that found it).

The two event streams are left out of body checks where they would answer 200: a
`text/event-stream` never ends, so there is no body to validate. `/api/v1/events` still
runs for the credentials that are refused (shopper, no key, wrong key); the dashboard's
stream runs for all, since generated tokens are never validly signed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from protocols.codec import encode, topic_for
from tests.cloud.livecloud import (
    CREDENTIALS,
    NODE,
    STORE,
    LiveCloud,
    auth_headers,
    live_cloud,
)
from tests.cloud.streams import GTIN, birth
from tests.mqtt_helpers import publisher

UTC_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


def _timestamps(body: object, path: str = "") -> Iterator[tuple[str, object]]:
    """Every value under a timestamp-named key (`*_at`, `at`, `last_seen`, since/until)."""
    if isinstance(body, dict):
        for key, value in body.items():
            if key.endswith("_at") or key in {"at", "last_seen", "since", "until"}:
                yield f"{path}.{key}", value
            else:
                yield from _timestamps(value, f"{path}.{key}")
    elif isinstance(body, list):
        for index, value in enumerate(body):
            yield from _timestamps(value, f"{path}[{index}]")


def timestamps_are_utc_z(ctx: object, response: schemathesis.Response, case: object) -> None:
    """Bodies the schema leaves open (`dict[str, Any]` routes) must still write every
    timestamp as UTC with `Z` (docs/cloud.md)."""
    if not response.headers.get("content-type", [""])[0].startswith("application/json"):
        return
    try:
        body = json.loads(response.content)
    except ValueError:  # an empty or broken body is the schema check's to report
        return
    for where, value in _timestamps(body):
        if value is not None and not (isinstance(value, str) and UTC_Z.match(value)):
            raise AssertionError(f"timestamp {where} = {value!r} is not UTC with Z")


CHECKS = [
    timestamps_are_utc_z,
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

# Cases per (operation, credential). Refused credentials end at the auth check whatever
# the parameters, so a few cases show their answer conforms; the roles that get through
# explore the parameters.
MAX_EXAMPLES = {"ops": 20, "staff": 12, "shopper_app": 6, "no_key": 3, "wrong_key": 3}

# (path, credential) pairs whose 200 is an endless event stream (see the module doc).
STREAMS_THAT_OPEN = {("/api/v1/events", "ops"), ("/api/v1/events", "staff")}

# Values that name things that exist: one strategy of each operation takes them as its path
# parameters, so that reads reach real rows (and their timestamps), not only 404s.
KNOWN = {"store": STORE, "gtin": GTIN, "shelf": "shelf-a", "node": NODE}


@dataclass
class Tally:
    cases: int = 0
    operations: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCloud]:
    # Refused credentials fail authentication on purpose, many times: a burst that never
    # runs out keeps 429 from answering for every later role.
    with live_cloud(tmp_path_factory.mktemp("conformance"), auth_failure_burst=1_000_000) as c:
        _seed(c)
        yield c


def _seed(cloud: LiveCloud) -> None:
    """A node with inventory (rows with timestamps) and a dead letter."""
    client = publisher(cloud.broker.host, cloud.broker.port)
    for message in (
        birth(1, shelves={("shelf-a", GTIN): 4}, node=NODE),
        birth(1, shelves={("shelf-a", GTIN): 1}, store="store-999", node=NODE),  # unknown
    ):
        client.publish(topic_for(message), encode(message), qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    ops = auth_headers("ops")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        inventory = httpx.get(f"{cloud.url}/api/v1/stores/{STORE}/inventory", headers=ops)
        dead = httpx.get(f"{cloud.url}/api/v1/dead-letters", headers=ops)
        if inventory.json() and dead.json()["items"]:
            return
        time.sleep(0.1)
    raise AssertionError("the seeded birth never reached the state store")


def _run(schema: Any, cloud: LiveCloud, credential: str, tally: Tally) -> None:
    headers = auth_headers(credential)
    with requests.Session() as session:
        for result in schema.get_all_operations():
            _run_operation(result.ok(), cloud, credential, headers, session, tally)


def _run_operation(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    cloud: LiveCloud,
    credential: str,
    headers: dict[str, str],
    session: requests.Session,
    tally: Tally,
) -> None:
    if (operation.path, credential) in STREAMS_THAT_OPEN:
        return
    path_names = [p.name for p in operation.path_parameters]
    known = {name: KNOWN[name] for name in path_names if name in KNOWN}
    strategies = [operation.as_strategy()]
    if known:
        strategies.append(operation.as_strategy(path_parameters=known))
    strategies.append(operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))

    @settings(
        max_examples=MAX_EXAMPLES[credential],
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def check(case: schemathesis.Case[Any]) -> None:
        tally.cases += 1
        tally.operations.add(f"{case.method} {operation.path}")
        response = case.call(base_url=cloud.url, session=session, headers=headers, timeout=10)
        tally.statuses[response.status_code] = tally.statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, BaseExceptionGroup) as failure:
            # A FailureGroup's own text is a title; its parts say what failed.
            parts = getattr(failure, "exceptions", [failure])
            first_line = [str(p).strip().splitlines()[0] for p in parts]
            tally.failures.append(
                f"{credential} {case.method} {case.formatted_path} -> {response.status_code}:"
                f" {' | '.join(first_line)}"
            )

    check()


@pytest.mark.parametrize("credential", list(CREDENTIALS))
def test_every_response_conforms_to_the_published_schema(cloud: LiveCloud, credential: str) -> None:
    schema = schemathesis.openapi.from_url(f"{cloud.url}/openapi.json")
    tally = Tally()
    started = time.monotonic()
    _run(schema, cloud, credential, tally)
    took = time.monotonic() - started
    print(
        f"{credential}: {tally.cases} cases in {took:.1f} s,"
        f" statuses {sorted(tally.statuses.items())}"
    )
    expected = {
        f"{method.upper()} {path}"
        for path, methods in schema.raw_schema["paths"].items()
        for method in methods
        if (path, credential) not in STREAMS_THAT_OPEN
    }
    assert tally.operations == expected  # every route was called
    assert not tally.failures, f"{len(tally.failures)} of {tally.cases} responses:\n" + "\n".join(
        sorted(set(tally.failures))[:60]
    )
