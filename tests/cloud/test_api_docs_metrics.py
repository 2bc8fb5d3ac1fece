"""/metrics behind its key, the OpenAPI security schemes, and /docs without a CDN.

A real cloud (uvicorn, real Mosquitto, temp SQLite); the /docs page in Debian's chromium.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from tests.cloud.cloudproc import OPS_KEY, cloud_config
from tests.servers import MosquittoBroker, require_binary

METRICS_KEY = "Zq3x_T8mKp2VwYb7Rn4sLc9Hd6Jf1Ge"


@pytest.fixture
async def cloud(mosquitto_broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[CloudRuntime]:
    config = cloud_config(mosquitto_broker.port, tmp_path, stores={"store-042": ["pi-1"]})
    config["api"]["metrics_key"] = METRICS_KEY
    runtime = CloudRuntime(CloudSettings(**config))
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.fixture
async def http(cloud: CloudRuntime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.api_port}", timeout=10) as c:
        yield c


async def test_metrics_answer_only_the_metrics_key(http: httpx.AsyncClient) -> None:
    assert (await http.get("/metrics")).status_code == 401
    wrong = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}x"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized"
    assert METRICS_KEY not in wrong.text
    # an API key, even an ops one, is not the metrics key
    assert (await http.get("/metrics", headers={"X-API-Key": OPS_KEY})).status_code == 401
    scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})
    assert scraped.status_code == 200
    assert "storegate_ingest_queue_depth" in scraped.text
    by_header = await http.get("/metrics", headers={"X-API-Key": METRICS_KEY})
    assert by_header.status_code == 200
    assert (await http.get("/healthz")).status_code == 200  # probes stay open


async def test_openapi_declares_the_key_schemes_on_every_keyed_route(
    http: httpx.AsyncClient,
) -> None:
    spec = (await http.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["BearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <API key>",
    }
    assert schemes["ApiKeyHeader"]["type"] == "apiKey"
    assert schemes["ApiKeyHeader"]["in"] == "header"
    assert schemes["ApiKeyHeader"]["name"] == "X-API-Key"
    either: list[dict[str, list[str]]] = [{"BearerKey": []}, {"ApiKeyHeader": []}]
    operations = {
        (method, path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    assert operations["get", "/api/v1/stores"]["security"] == either
    assert operations["post", "/api/v1/stores"]["security"] == either
    assert operations["get", "/metrics"]["security"] == either
    assert "security" not in operations["get", "/healthz"]
    keyed = [where for where, op in operations.items() if where[1].startswith("/api/v1/")]
    unsecured = [where for where in keyed if operations[where].get("security") != either]
    # the dashboard's event stream takes a short-lived ?token= (an EventSource sends no header)
    # the dashboard's and the shopper app's event streams take a short-lived ?token= (an
    # EventSource sends no header); the platform's order webhook is signed (HMAC), not keyed
    assert sorted(unsecured) == [
        ("get", "/api/v1/app/events"),
        ("get", "/api/v1/dashboard/events"),
        ("post", "/api/v1/webhooks/orders"),
    ]
    assert len(keyed) > 20


def external_urls(html: str) -> list[str]:
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(([^)]+)\)""", html)
    found = [a or b for a, b in urls]
    found += re.findall(r"""["'](https?://[^"']+)["']""", html)
    return [url for url in found if urlsplit(url.strip("'\"")).netloc]


async def test_docs_reference_no_other_host_and_their_assets_are_served(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    assert external_urls(page.text) == []
    assets = re.findall(r"""(?:src|href)=["'](/docs/assets/[^"']+)["']""", page.text)
    assert len(assets) >= 2, page.text  # the script and the stylesheet
    for asset in assets:
        response = await http.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 500
    assert "'/openapi.json'" in page.text or '"/openapi.json"' in page.text
    assert (await http.get("/redoc")).status_code == 404  # not served: it would need a CDN


async def test_docs_load_in_chromium_from_this_server_only_and_send_the_key(
    cloud: CloudRuntime, tmp_path: Path
) -> None:
    from playwright.async_api import Request, async_playwright

    from tests.dashboard.conftest import CHROMIUM_ARGS

    executable = require_binary("chromium", hint="Debian package chromium")
    origin = f"http://127.0.0.1:{cloud.api_port}"
    hosts: set[str] = set()
    sent_keys: list[str | None] = []

    def seen(request: Request) -> None:
        hosts.add(urlsplit(request.url).netloc)
        if request.url.endswith("/api/v1/stores"):
            sent_keys.append(request.headers.get("x-api-key"))

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            page.on("request", seen)
            await page.goto(f"{origin}/docs")
            await page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
            # Authorize with the X-API-Key scheme, then try GET /api/v1/stores.
            await page.click("button.authorize")
            dialog = page.locator(".auth-container").filter(has_text="X-API-Key")
            await dialog.locator("input").fill(OPS_KEY)
            await dialog.locator("button.authorize").click()
            await page.click("button.btn-done")
            operation = page.locator("#operations-stores-list_stores_api_v1_stores_get")
            await operation.locator(".opblock-summary").click()
            await operation.locator("button.try-out__btn").click()
            stores_url = f"{origin}/api/v1/stores"
            async with page.expect_response(stores_url, timeout=10_000) as answer:
                await operation.locator("button.execute").click()
            assert (await answer.value).status == 200
            status = operation.locator(".live-responses-table tbody .response-col_status")
            await status.first.wait_for(timeout=10_000)
            assert (await status.first.inner_text()).strip() == "200"
        finally:
            await browser.close()
    assert hosts == {urlsplit(origin).netloc}
    assert sent_keys == [OPS_KEY]
