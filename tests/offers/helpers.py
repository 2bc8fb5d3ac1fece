"""Builders for the offers tests: presence as the edge publishes it, shoppers, campaigns."""

from __future__ import annotations

import itertools
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import MetaData, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.offers import registry
from cloud.offers.campaigns import CampaignSpec
from protocols.ids import contains_mac_address
from protocols.messages import BlePresence, PresenceEvent, PresenceKind, utc_now
from tests.servers import free_port

STORE, NODE, NODE_B = "store-042", "pi-front", "pi-back"
SHELF, GTIN = "aisle3-shelf2", "80614141123458"
TOKEN = "0001002a"
_seqs: dict[tuple[str, str], itertools.count[int]] = {}


def presence(
    *events: tuple[str, str, str, float | None, datetime],
    node: str = NODE,
    scanner: str = "ble-1",
) -> BlePresence:
    """events: (kind, token, zone, rssi, at); sequenced per (node, scanner) like the edge."""
    seq = next(_seqs.setdefault((node, scanner), itertools.count(1)))
    return BlePresence(
        store=STORE,
        node=node,
        seq=seq,
        scanner=scanner,
        events=[
            PresenceEvent(
                kind=PresenceKind(kind),
                beacon=f"app:{token}",
                zone=zone,
                rssi=rssi,
                dwell_s=20.0 if kind == "dwell" else None,
                at=at,
            )
            for kind, token, zone, rssi, at in events
        ],
    )


def reset_seqs() -> None:
    _seqs.clear()


async def opted_in(
    engine: AsyncEngine,
    shopper: str,
    token: str,
    *,
    consent: bool = True,
    segment: str | None = None,
) -> None:
    await registry.set_shopper(engine, shopper, consent=consent, segment=segment)
    now = utc_now()
    await registry.add_token(
        engine,
        shopper,
        token,
        valid_from=now - timedelta(minutes=5),
        expires_at=now + timedelta(minutes=15),
    )


def campaign(**overrides: Any) -> CampaignSpec:
    spec: dict[str, Any] = {
        "title": "2 for 1 on coffee",
        "body": "Today only, at the coffee shelf",
        "trigger": "enter",
        "zones": ["coffee"],
        "gtins": [GTIN],
        "zone_cooldown_s": 0,
    }
    spec.update(overrides)
    return CampaignSpec.model_validate(spec)


async def text_values_with_mac(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    """Every text value of every table that contains a MAC address: (table, column, value)."""
    found = []
    metadata = MetaData()
    async with engine.connect() as connection:
        await connection.run_sync(metadata.reflect)
        for table in metadata.sorted_tables:
            for row in (await connection.execute(select(table))).all():
                for column, value in row._mapping.items():
                    if value is not None and contains_mac_address(str(value)):
                        found.append((table.name, str(column), str(value)))
    return found


class WebhookServer:
    """A real HTTP server; answers 503 to the first `fail_first` requests, then 204."""

    def __init__(self, fail_first: int = 1) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        received = self.requests
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = 503 if len(received) <= server.fail_first else 204
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/offers"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
