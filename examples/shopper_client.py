"""A shopper app's MQTT client: the reference for app developers.

The app's backend (holding the `shopper_app` API key) asks the cloud for the shopper's own
broker login once the shopper opted in:

    POST /api/v1/shoppers/{shopper_id}/broker-login  ->  {username, password, client_id,
                                                          inbox, topics: {offers, orders}}

and hands it to the phone. With it the app may read its two topics and nothing else: it
subscribes (QoS 1) to its offers and its order updates, and connects with exactly that
client id (the broker accepts the login with no other). A second call replaces the
password; withdrawing consent or erasing the shopper takes the login away, and the broker
then refuses the connection: the app asks its backend for a new login (or stops).

Messages are JSON (the schemas are docs/schemas/offer.json and order.update.json):
an offer carries `offer_id`, `title`, `body`, `gtins`, `zone`, `expires_at`; an order update
`order_id`, `state`, and where to collect it. An order update never carries the pickup code:
the app fetches it once, when the order is ready, through its backend
(`POST /api/v1/orders/{id}/pickup-code`).

Run it against a cloud that provisions broker logins (`broker_admin` configured, Mosquitto
with dynamic security: docker-compose.yml, docs/broker-auth.md):

    python examples/shopper_client.py --api http://127.0.0.1:8080 --key "$SHOPPER_APP_KEY" \\
        --shopper shopper-1 --broker-host mqtt.example.com --broker-port 8883 --ca-file ca.crt

Needs `aiomqtt` and `httpx` (both in storegate's dev extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import httpx


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    username: str
    password: str
    client_id: str
    inbox: str  # give it as `shopper` when placing an order, so updates reach this app
    offers_topic: str
    orders_topic: str

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> BrokerLogin:
        return cls(
            username=body["username"],
            password=body["password"],
            client_id=body["client_id"],
            inbox=body["inbox"],
            offers_topic=body["topics"]["offers"],
            orders_topic=body["topics"]["orders"],
        )


@dataclass(frozen=True, slots=True)
class ShopperMessage:
    kind: str  # "offer" or "order"
    body: dict[str, Any]


async def provision(api: str, key: str, shopper_id: str) -> BrokerLogin:
    """What the app's backend does: the shopper's broker login (the shopper must have
    opted in, else 409)."""
    async with httpx.AsyncClient(base_url=api, timeout=10) as http:
        response = await http.post(
            f"/api/v1/shoppers/{shopper_id}/broker-login",
            headers={"Authorization": f"Bearer {key}"},
        )
        response.raise_for_status()
        return BrokerLogin.from_api(response.json())


async def receive(
    login: BrokerLogin,
    host: str,
    port: int,
    on_message: Callable[[ShopperMessage], Awaitable[None]],
    *,
    tls: ssl.SSLContext | None = None,
    subscribed: asyncio.Event | None = None,
) -> None:
    """Subscribe to the shopper's offers and order updates and hand each to `on_message`
    until cancelled. Reconnects after a lost connection (the broker keeps the QoS 1
    messages of the session meanwhile); a refused login (revoked) ends with MqttCodeError."""
    kinds = {login.offers_topic: "offer", login.orders_topic: "order"}
    while True:
        try:
            async with aiomqtt.Client(
                host,
                port,
                username=login.username,
                password=login.password,
                identifier=login.client_id,
                clean_session=False,
                tls_context=tls,
            ) as client:
                await client.subscribe([(topic, 1) for topic in kinds])
                if subscribed is not None:
                    subscribed.set()
                async for message in client.messages:
                    try:
                        body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    except ValueError:
                        continue  # not JSON: nothing an app could show
                    await on_message(ShopperMessage(kinds.get(message.topic.value, "?"), body))
        except aiomqtt.MqttCodeError:
            raise  # refused: the login was revoked or replaced
        except aiomqtt.MqttError:
            await asyncio.sleep(2)  # connection lost: try again


async def _print(message: ShopperMessage) -> None:
    if message.kind == "offer":
        print(f"offer {message.body.get('offer_id')}: {message.body.get('title')}", flush=True)
    else:
        print(f"order {message.body.get('order_id')}: {message.body.get('state')}", flush=True)


async def _main(args: argparse.Namespace) -> None:
    login = await provision(args.api, args.key, args.shopper)
    tls = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    await receive(login, args.broker_host, args.broker_port, _print, tls=tls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True, help="the cloud's address")
    parser.add_argument("--key", required=True, help="the shopper_app API key (the backend's)")
    parser.add_argument("--shopper", required=True, help="the shopper id")
    parser.add_argument("--broker-host", required=True)
    parser.add_argument("--broker-port", type=int, default=8883)
    parser.add_argument("--ca-file", help="the deployment's CA (MQTT over TLS)")
    try:
        asyncio.run(_main(parser.parse_args(argv)))
    except KeyboardInterrupt:
        return 0
    except (httpx.HTTPError, aiomqtt.MqttError) as exc:
        print(f"shopper client: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
