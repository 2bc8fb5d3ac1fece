"""Alerts reach people: an alert raised by the real evaluator in an ingest batch goes to a
real HTTP receiver (signed, retried after a 500) and to a real SMTP server (aiosmtpd), by
route: alert kind, store and event."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message as EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from cloud.bus import Change, LiveBus
from cloud.inventory.config import AlertNotifyOptions, parse_options
from cloud.inventory.notify import AlertNotifier, NotifySecrets, load_secrets
from tests.cloud.streams import STORE, rfid
from tests.inventory.conftest import OTHER_STORE, Rig, make_rig
from tests.servers import free_port

GTIN_A, GTIN_B = "80614141000001", "80614141000002"
SECRET = "alert-webhook-test-secret-0123456789"
SECRET_ENV = "STOREGATE_TEST_ALERT_WEBHOOK_KEY"
TIMEOUT_S = 10.0


@dataclass
class Receiver:
    """A real HTTP server answering the next `fail_next` requests with 500, then 204."""

    fail_next: int = 0
    posts: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/alerts"

    def answered(self, status: int) -> list[dict[str, Any]]:
        return [json.loads(body) for code, _, body in self.posts if code == status]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = 500 if self.fail_next > 0 else 204
            self.fail_next -= 1
            self.posts.append((status, headers, body))
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Mailbox:
    """What a real SMTP server (aiosmtpd, on a free loopback port) received."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.port = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    yield box
    controller.stop()


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def routes(receiver: Receiver, mailbox: Mailbox) -> dict[str, Any]:
    return {
        "notifications": {
            "backoff_base_s": 0.05,
            "smtp": {
                "host": "127.0.0.1",
                "port": mailbox.port,
                "security": "none",
                "sender": "storegate@shop.example",
            },
            "routes": [
                {
                    "kinds": ["low_stock"],
                    "stores": [STORE],
                    "webhook": receiver.url,
                    "secret_env": SECRET_ENV,
                },
                {"kinds": ["misplaced", "low_stock"], "email": ["manager@shop.example"]},
            ],
        },
        "reorder_points": [{"gtin": GTIN_A, "reorder_point": 3}],
    }


async def feed(rig: Rig, bus: LiveBus, seq: int, counts: dict[tuple[str, str], int]) -> None:
    """One ingest batch; its changes go on the live bus after the commit, as the consumer's."""
    outcome = await rig.harness.feed(rfid(seq, counts))
    for change in outcome.changes:
        bus.publish(change)


async def test_a_raised_alert_reaches_the_webhook_signed_after_a_500_and_the_mailbox(
    database_url: str,
    receiver: Receiver,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    receiver.fail_next = 1
    async for rig in make_rig(database_url, routes(receiver, mailbox)):
        bus = LiveBus(100)
        notifier = rig.domain.notifier
        notifier.start(bus)
        try:
            await feed(rig, bus, 1, {("shelf-1", GTIN_A): 9})
            await feed(rig, bus, 2, {("shelf-1", GTIN_A): 2})  # on hand 2 <= 3: raised
            await until(lambda: len(receiver.answered(204)) == 1, "the retried POST")
            await until(lambda: len(mailbox.messages) == 1, "the e-mail")
        finally:
            await notifier.stop()

    # the webhook: first answered 500, then the same delivery again, signed
    assert [status for status, _, _ in receiver.posts] == [500, 204]
    (_, first, first_body), (_, headers, body) = receiver.posts
    assert first["x-storegate-delivery"] == headers["x-storegate-delivery"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-storegate-signature"], expected)
    post = json.loads(body)
    assert post["event"] == headers["x-storegate-event"] == "alert.raised"
    assert post["delivery"] == headers["x-storegate-delivery"]
    assert post["store"] == STORE
    alert = post["alert"]
    assert (alert["type"], alert["state"], alert["gtin"], alert["count"]) == (
        "low_stock",
        "raised",
        GTIN_A,
        2,
    )
    assert json.loads(first_body)["alert"] == alert

    # the e-mail: to the route's recipient, saying what and where
    [(recipients, mail)] = mailbox.messages
    assert recipients == ["manager@shop.example"]
    assert mail["From"] == "storegate@shop.example"
    assert "low_stock raised at store-" in mail["Subject"]
    assert GTIN_A in mail["Subject"]
    text = mail.get_payload()
    assert isinstance(text, str)
    assert f"Alert {alert['id']} (low_stock)" in text
    assert SECRET not in text
    assert SECRET not in json.dumps(post)


async def test_routes_filter_by_store_kind_and_event(
    database_url: str,
    receiver: Receiver,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    async for rig in make_rig(database_url, routes(receiver, mailbox)):
        bus = LiveBus(100)
        notifier = rig.domain.notifier
        notifier.start(bus)
        try:
            # low stock in the other store: e-mail only (the webhook is for STORE)
            other = Change("alert", OTHER_STORE, {"event": "raised", "id": 7, "type": "low_stock"})
            bus.publish(other)
            # a kind no route lists, and a clearing no route asks for: nobody
            bus.publish(Change("alert", STORE, {"event": "raised", "id": 8, "type": "exit_unsold"}))
            bus.publish(Change("alert", STORE, {"event": "cleared", "id": 9, "type": "low_stock"}))
            # the newest: a low stock in STORE, to both
            bus.publish(Change("alert", STORE, {"event": "raised", "id": 10, "type": "low_stock"}))
            await until(lambda: len(receiver.posts) == 1, "the webhook")
            await until(lambda: len(mailbox.messages) == 2, "two e-mails")
            await asyncio.sleep(0.3)  # anything else would have gone out by now
        finally:
            await notifier.stop()
    assert [p["alert"]["id"] for p in receiver.answered(204)] == [10]
    assert [m["Message-ID"] is not None for _, m in mailbox.messages] == [True, True]
    assert ["store-007" in str(m["Subject"]) for _, m in mailbox.messages] == [True, False]
    assert len(receiver.posts) == 1
    assert len(mailbox.messages) == 2


def options(url: str, **extra: Any) -> AlertNotifyOptions:
    return AlertNotifyOptions.model_validate(
        {"routes": [{"webhook": url, "secret_env": SECRET_ENV}], "backoff_base_s": 0.02, **extra}
    )


def raised(alert_id: int) -> Change:
    return Change("alert", STORE, {"event": "raised", "id": alert_id, "type": "low_stock"})


async def test_a_full_queue_drops_the_oldest_and_says_so(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = AlertNotifier(
        options(receiver.url, queue_size=2), NotifySecrets({0: SECRET.encode()})
    )
    with caplog.at_level(logging.WARNING, logger="cloud.inventory.notify"):
        for alert_id in (1, 2, 3):  # not started yet: nothing is delivered meanwhile
            assert notifier.notify(raised(alert_id)) == 1
    [worker] = notifier.routes
    assert (worker.waiting, worker.stats.dropped) == (2, 1)
    assert "queue full (2 waiting): dropped raised of alert 1" in caplog.text
    notifier.start(LiveBus())
    try:
        await until(lambda: len(receiver.posts) == 2, "the two kept")
    finally:
        await notifier.stop()
    assert [p["alert"]["id"] for p in receiver.answered(204)] == [2, 3]


async def test_a_receiver_that_keeps_failing_is_given_up_with_a_warning_and_the_next_flows(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_next = 3
    notifier = AlertNotifier(
        options(receiver.url, max_attempts=3), NotifySecrets({0: SECRET.encode()})
    )
    bus = LiveBus()
    notifier.start(bus)
    try:
        with caplog.at_level(logging.WARNING, logger="cloud.inventory.notify"):
            bus.publish(raised(1))
            bus.publish(raised(2))
            await until(lambda: len(receiver.answered(204)) == 1, "the next alert")
    finally:
        await notifier.stop()
    assert [s for s, _, _ in receiver.posts] == [500, 500, 500, 204]
    assert [p["alert"]["id"] for p in receiver.answered(204)] == [2]
    [worker] = notifier.routes
    assert (worker.stats.failed, worker.stats.delivered, worker.stats.retries) == (1, 1, 2)
    assert "gave up on raised of alert 1 (low_stock store-" in caplog.text
    assert "after 3 attempts: HTTP 500" in caplog.text


def test_config_one_channel_per_route_smtp_for_mail_and_secrets_from_the_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "http://127.0.0.1:9/hooks"
    with pytest.raises(ValueError, match="exactly one channel"):
        parse_options({"notifications": {"routes": [{"kinds": ["low_stock"]}]}})
    with pytest.raises(ValueError, match="exactly one channel"):
        parse_options(
            {
                "notifications": {
                    "routes": [{"webhook": url, "secret_env": "X", "email": ["a@b.example"]}],
                    "smtp": {"sender": "s@b.example"},
                }
            }
        )
    with pytest.raises(ValueError, match="needs `secret_env`"):
        parse_options({"notifications": {"routes": [{"webhook": url}]}})
    with pytest.raises(ValueError, match="needs the `smtp` section"):
        parse_options({"notifications": {"routes": [{"email": ["a@b.example"]}]}})
    with pytest.raises(ValueError, match=r"routes\.0\.events"):
        parse_options({"notifications": {"routes": [{"webhook": url, "events": ["opened"]}]}})

    parsed = parse_options(
        {
            "notifications": {
                "routes": [{"webhook": url, "secret_env": SECRET_ENV}],
                "smtp": {"sender": "s@b.example", "username": "u", "password_env": "SMTP_PW"},
            }
        }
    ).notifications
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(ValueError, match=f"routes.0.secret_env: environment variable {SECRET_ENV}"):
        load_secrets(parsed)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv("SMTP_PW", "smtp-password-123")
    secrets = load_secrets(parsed)
    assert secrets.webhook_keys == {0: SECRET.encode()}
    assert secrets.smtp_password == "smtp-password-123"
    assert SECRET not in repr(secrets)
    assert "smtp-password-123" not in repr(secrets)
    with pytest.raises(ValueError, match="no signing key loaded"):
        AlertNotifier(parsed, NotifySecrets())
