"""The dashboard's HTTP surface without a browser: page and assets, session tokens, the
token-authenticated event stream (same filtering as /api/v1/events) and stock history."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from cloud.api.auth import Principal
from cloud.api.errors import ApiError
from cloud.bus import Change
from cloud.config import CloudSettings, Role
from cloud.dashboard import create_domain
from cloud.dashboard.tokens import SessionSigner
from cloud.runtime import CloudRuntime
from tests.cloud.cloudproc import OPS_KEY, SHOPPER_KEY, STAFF_KEY
from tests.dashboard.edge import (
    GTIN_A,
    OTHER_STORE,
    SHELF_A,
    STORE,
    EdgePublisher,
    birth,
    count_change,
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_page_and_assets_are_served_with_a_strict_policy(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/dashboard/app.js">' in page.text
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        asset = await http.get(f"/dashboard/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
    # every module the page imports exists (no build step: a typo would only show at runtime)
    app_js = (await http.get("/dashboard/app.js")).text
    for line in app_js.splitlines():
        if line.startswith("import") and "from " in line:
            module = line.split("from ")[1].strip(" \";'").removeprefix("./")
            assert (await http.get(f"/dashboard/{module}")).status_code == 200, module
    for bad in ["nope.js", "..%2Fapp.py", "__init__.py", "APP.JS"]:
        assert (await http.get(f"/dashboard/{bad}")).status_code == 404, bad


async def test_a_session_needs_a_reader_key(http: httpx.AsyncClient) -> None:
    assert (await http.post("/api/v1/dashboard/session")).status_code == 401
    wrong = await http.post("/api/v1/dashboard/session", headers=bearer("wrong"))
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "unknown API key"
    shopper = await http.post("/api/v1/dashboard/session", headers=bearer(SHOPPER_KEY))
    assert shopper.status_code == 403
    staff = await http.post("/api/v1/dashboard/session", headers=bearer(STAFF_KEY))
    assert staff.status_code == 200
    body = staff.json()
    assert (body["role"], body["stores"]) == ("staff", [STORE])
    assert STAFF_KEY not in body["token"]


async def test_the_event_stream_refuses_missing_forged_and_expired_tokens(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get("/api/v1/dashboard/events")).status_code == 401
    token = (await http.post("/api/v1/dashboard/session", headers=bearer(STAFF_KEY))).json()[
        "token"
    ]
    body, mac = token.split(".")
    forged = await http.get("/api/v1/dashboard/events", params={"token": f"{body}.{mac[:-2]}AA"})
    assert forged.status_code == 401
    assert forged.json()["detail"] == "invalid session token"

    signer = SessionSigner(b"0123456789abcdef0123", ttl_s=30)
    principal = Principal("ops", Role.OPS, frozenset())
    issued = signer.issue(principal, now=1000.0)
    assert signer.verify(issued.token, now=1029.0) == principal
    with pytest.raises(Exception, match="expired"):
        signer.verify(issued.token, now=1030.0)
    other = SessionSigner(b"another-secret-of-16+", ttl_s=30)
    with pytest.raises(Exception, match="invalid session token"):
        other.verify(issued.token, now=1000.0)


async def _first_changes(
    http: httpx.AsyncClient, token: str, cloud: CloudRuntime, changes: list[Change], want: int
) -> list[dict[str, Any]]:
    """Open the stream, publish `changes` on the bus once it is open, return `want` events."""
    received: list[dict[str, Any]] = []
    async with http.stream("GET", "/api/v1/dashboard/events", params={"token": token}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line.removeprefix("data:").strip())
            if event["kind"] == "hello":
                for change in changes:
                    cloud.bus.publish(change)
                continue
            received.append(event)
            if len(received) == want:
                return received
    raise AssertionError(f"stream ended after {received}")


async def test_staff_see_only_their_stores_changes(
    http: httpx.AsyncClient, cloud: CloudRuntime
) -> None:
    changes = [
        Change("inventory", OTHER_STORE, {"items": [{"shelf": "s", "gtin": GTIN_A, "count": 1}]}),
        Change("dead_letter", None, {"topic": "x", "reason": "invalid_json", "detail": "d"}),
        Change("alert", STORE, {"id": "a1", "type": "low_stock", "state": "raised"}),
    ]
    staff = (await http.post("/api/v1/dashboard/session", headers=bearer(STAFF_KEY))).json()
    seen = await asyncio.wait_for(_first_changes(http, staff["token"], cloud, changes, 1), 10)
    assert [(e["kind"], e["store"]) for e in seen] == [("alert", STORE)]
    assert seen[0]["data"] == {"id": "a1", "type": "low_stock", "state": "raised"}

    ops = (await http.post("/api/v1/dashboard/session", headers=bearer(OPS_KEY))).json()
    seen = await asyncio.wait_for(_first_changes(http, ops["token"], cloud, changes, 3), 10)
    assert [e["kind"] for e in seen] == ["inventory", "dead_letter", "alert"]


async def test_history_feeds_the_chart(
    http: httpx.AsyncClient, cloud: CloudRuntime, edge: EdgePublisher
) -> None:
    edge.send(birth(1, {(SHELF_A, GTIN_A): 12}))
    for seq, count in enumerate([11, 10, 9], start=1):
        edge.send(count_change(seq, SHELF_A, GTIN_A, count, delta=-1))
    params: dict[str, str | int] = {"store": STORE, "gtin": GTIN_A, "minutes": 10, "points": 60}
    body: dict[str, Any] = {}
    for _ in range(100):  # history arrives through the spool and its pump
        response = await http.get(
            "/api/v1/dashboard/history", params=params, headers=bearer(OPS_KEY)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        if body["total"] and body["total"][-1] == 9:
            break
        await asyncio.sleep(0.1)
    assert body["total"][-1] == 9, body
    assert body["shelves"][SHELF_A][-1] == 9
    assert len(body["times"]) == len(body["total"])
    assert body["every_s"] == 10.0

    forbidden = await http.get(
        "/api/v1/dashboard/history",
        params={**params, "store": OTHER_STORE},
        headers=bearer(STAFF_KEY),
    )
    assert forbidden.status_code == 403
    invalid = await http.get(
        "/api/v1/dashboard/history", params={**params, "gtin": "12"}, headers=bearer(OPS_KEY)
    )
    assert invalid.status_code == 422


def test_bad_dashboard_options_are_named() -> None:
    settings = CloudSettings()
    with pytest.raises(ValueError, match="session_ttl_s"):
        create_domain(settings, {"session_ttl_s": -1})
    with pytest.raises(ValueError, match="session_secret"):
        create_domain(settings, {"session_secret": "short"})
    with pytest.raises(ValueError, match="colour"):
        create_domain(settings, {"colour": "blue"})


async def test_a_session_token_opens_one_stream_only(http: httpx.AsyncClient) -> None:
    token = (await http.post("/api/v1/dashboard/session", headers=bearer(STAFF_KEY))).json()[
        "token"
    ]
    async with http.stream("GET", "/api/v1/dashboard/events", params={"token": token}) as first:
        assert first.status_code == 200
        async for line in first.aiter_lines():
            if line.startswith("data:"):
                assert json.loads(line.removeprefix("data:"))["kind"] == "hello"
                break
        # Reused while the first stream is still open, and after it closed: refused.
        again = await http.get("/api/v1/dashboard/events", params={"token": token})
        assert again.status_code == 401
        assert again.json()["detail"] == "session token already used: ask for a new one"
    after = await http.get("/api/v1/dashboard/events", params={"token": token})
    assert after.status_code == 401


def test_spent_tokens_are_remembered_until_they_expire_and_bounded() -> None:
    signer = SessionSigner(b"0123456789abcdef0123", ttl_s=30, max_spent=2)
    principal = Principal("ops", Role.OPS, frozenset())
    first, second, third = (signer.issue(principal, now=1000.0 + i) for i in range(3))
    assert signer.redeem(first.token, now=1010.0) == principal
    with pytest.raises(ApiError, match="already used"):
        signer.redeem(first.token, now=1029.9)  # the last instant it is still valid
    assert signer.redeem(second.token, now=1010.0) == principal
    with pytest.raises(ApiError, match="2 session tokens opened") as full:
        signer.redeem(third.token, now=1029.0)
    assert full.value.status == 429
    assert full.value.headers == {"Retry-After": "1"}
    assert signer.spent == 2
    # At 1030 the first token has expired: its id is forgotten, which makes room.
    assert signer.redeem(third.token, now=1030.0) == principal
    assert signer.spent == 2
    with pytest.raises(ApiError, match="expired"):
        signer.redeem(first.token, now=1030.0)
