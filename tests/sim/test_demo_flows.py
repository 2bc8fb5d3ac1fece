"""`storegate demo` runs every flow: within 60 s of its start, the API behind every panel of
the ops dashboard has data (nodes, shelves with low-stock and misplaced alerts, stock over
time, locker banks, orders collected / cancelled / expired, offers triggered and received by
the apps over MQTT, the live activity stream), and the collected orders came through the
order intake with their picked EPCs. The demo runs for real, as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO_ROOT
from tests.servers import free_port, wait_for_port

OPS = {"X-API-Key": "ops-demo-key"}
STORES = ("store-042", "store-007", "store-101")
WITHIN_S = 60.0


class LiveEvents:
    """The live change stream (`/api/v1/events`, what the dashboard's activity feed shows),
    read in a thread: (kind, state or event) pairs seen so far."""

    def __init__(self, base: str) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.alert_types: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(base,), daemon=True)
        self._thread.start()

    def _read(self, base: str) -> None:
        while not self._stop.is_set():
            try:
                with httpx.stream(
                    "GET", f"{base}/api/v1/events", headers=OPS, timeout=httpx.Timeout(5, read=30)
                ) as response:
                    kind = ""
                    for line in response.iter_lines():
                        if self._stop.is_set():
                            return
                        if line.startswith("event:"):
                            kind = line.split(":", 1)[1].strip()
                        elif line.startswith("data:") and kind:
                            data = json.loads(line.split(":", 1)[1])
                            self.seen.add((kind, str(data.get("state") or data.get("event"))))
                            if kind == "alert":
                                self.alert_types.add(str(data.get("type")))
            except httpx.HTTPError:
                time.sleep(0.5)

    def close(self) -> None:
        self._stop.set()

    def join(self) -> None:
        self._thread.join(timeout=10)  # it notices with the next event (several a second)


def _get(base: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{base}{path}", headers=OPS, params=params, timeout=5)
    response.raise_for_status()
    return response.json()


def _panels(base: str, live: LiveEvents) -> dict[str, bool]:
    """Per dashboard panel: does its API have data now?"""
    inventory = {s: _get(base, f"/api/v1/stores/{s}/inventory") for s in STORES}
    gtin = next((row["gtin"] for row in inventory["store-042"] if row["count"] > 0), None)
    history = (
        _get(base, "/api/v1/dashboard/history", store="store-042", gtin=gtin, minutes=5)
        if gtin
        else {}
    )
    alerts = _get(base, "/api/v1/alerts", limit=500)["items"]
    counts = [_get(base, f"/api/v1/campaigns/demo-{s}/counts") for s in STORES]
    orders = {state for kind, state in live.seen if kind == "order"}
    return {
        "nodes": all(
            [n["status"] for n in _get(base, f"/api/v1/stores/{s}/nodes")] == ["online"]
            for s in STORES
        ),
        "shelves": all(sum(r["count"] for r in rows) > 0 for rows in inventory.values()),
        "low_stock alerts": any(a["type"] == "low_stock" for a in alerts),
        "misplaced alerts": any(a["type"] == "misplaced" for a in alerts),
        "stock over time": any(v is not None for v in history.get("total", [])),
        "locker banks": all(len(_get(base, f"/api/v1/stores/{s}/lockers")) > 0 for s in STORES),
        "orders collected, cancelled, expired": {"collected", "cancelled", "expired"} <= orders,
        "offers triggered and delivered": sum(c["delivered"] for c in counts) > 0,
        "activity": len(live.seen) >= 5,
    }


def test_every_dashboard_panel_has_data_within_a_minute_and_the_urls_are_printed(
    tmp_path: Path,
) -> None:
    mqtt_port, http_port = free_port(), free_port()
    log = (tmp_path / "demo.out").open("w")  # a file, not a pipe: nobody reads while we poll
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "storegate",
            "demo",
            "--port",
            str(mqtt_port),
            "--http-port",
            str(http_port),
            "--hold",
            "10",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
        cwd=REPO_ROOT,
    )
    base = f"http://127.0.0.1:{http_port}"
    live: LiveEvents | None = None
    panels: dict[str, bool] = {}
    try:
        wait_for_port(http_port, timeout=30)
        live = LiveEvents(base)
        while time.monotonic() - started < WITHIN_S:
            assert process.poll() is None, (tmp_path / "demo.out").read_text()
            try:
                panels = _panels(base, live)
            except httpx.HTTPError as exc:
                panels = {"api": False, str(exc): False}
            if all(panels.values()):
                break
            time.sleep(1.0)
        took = time.monotonic() - started
        collected = [
            _get(base, f"/api/v1/orders/{o['order_id']}")
            for o in _get(base, "/api/v1/orders", status="collected")
        ]
        live.close()  # an open event stream would hold the API's graceful shutdown
        live.join()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    finally:
        if live is not None:
            live.close()
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    output = (tmp_path / "demo.out").read_text()
    missing = [name for name, ok in panels.items() if not ok]
    assert not missing, f"no data after {WITHIN_S:.0f} s for: {missing}\n{output[-3000:]}"
    print(f"every panel had data {took:.1f} s after the demo started")
    # the orders came through the intake, and staff staged them with the EPCs they scanned
    assert collected, output[-3000:]
    assert all(o["external_id"].startswith("demo-") for o in collected), collected
    assert any(o["picked"]["recorded"] for o in collected), collected
    assert process.returncode == 0, output
    assert "demo stopped cleanly" in output
    for path, key in (("/", "ops-demo-key"), ("/staff", "staff-demo-key"), ("/app", "shopper")):
        assert f"{base}{path}  (key {key}" in output, output[:2000]
    # the apps received their offers over MQTT, on their own topics
    offers = [line for line in output.splitlines() if "offers received:" in line]
    assert offers, output[-2000:]
    assert not offers[-1].rstrip().endswith("offers received: 0"), offers[-1]
