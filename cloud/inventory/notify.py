"""Alerts reach people: every alert change on the live bus (raised, cleared, acknowledged;
low_stock, misplaced or any kind another domain announces as `alert`) goes to the routes
whose kinds, stores and events match it, each route one channel:

- **webhook**: a JSON POST signed as every storegate webhook (cloud/signing.py), with
  `X-Storegate-Delivery` (the same on every retry) and `X-Storegate-Event` (`alert.raised`);
- **e-mail**: one message per alert through the configured SMTP server (stdlib `smtplib`
  in a worker thread: a slow mail server never blocks the event loop).

Each route has its own bounded queue and worker, so a dead webhook never delays the e-mails.
A failed delivery (refused, timeout, non-2xx, SMTP error) is retried after
`backoff_base_s * 2^n` capped at `backoff_max_s`, `max_attempts` times, then given up with
a WARNING naming the alert. Queue policy: at most `queue_size` notifications wait per route;
one more drops the oldest waiting one (WARNING with its alert id, counted in `dropped`):
the newest alert matters most, and every alert stays in `GET /api/v1/alerts` regardless.
Notifications still waiting at shutdown are counted and logged, not kept (the alerts are).

Secrets (webhook signing keys, the SMTP password) come from environment variables named in
the config; they are read once at start-up and never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import smtplib
import ssl
import uuid
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx

from cloud.api.timestamps import iso_utc
from cloud.bus import Change, LiveBus, Subscription
from cloud.inventory.config import AlertNotifyOptions, AlertRoute, SmtpOptions
from cloud.signing import SIGNATURE_HEADER, signature
from protocols.messages import utc_now

log = logging.getLogger(__name__)

ALERT_KIND = "alert"  # the live-change kind every alert is announced with


@dataclass(frozen=True, slots=True)
class Notification:
    delivery: str
    event: str  # raised | cleared | acknowledged
    store: str | None
    alert: dict[str, Any]

    @property
    def alert_type(self) -> str:
        return str(self.alert.get("type", "alert"))


@dataclass
class RouteStats:
    delivered: int = 0
    failed: int = 0  # given up after max_attempts
    retries: int = 0
    dropped: int = 0  # the queue was full
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class NotifySecrets:
    """Per route index, the webhook signing key; the SMTP password. From the environment."""

    webhook_keys: dict[int, bytes] = field(default_factory=dict)
    smtp_password: str | None = None

    def __repr__(self) -> str:  # never print a key
        return f"NotifySecrets(webhooks={sorted(self.webhook_keys)}, smtp_password=***)"


def load_secrets(options: AlertNotifyOptions) -> NotifySecrets:
    """Read every secret the routes name; a missing variable stops the start with its name."""
    keys: dict[int, bytes] = {}
    for index, route in enumerate(options.routes):
        if route.secret_env is not None:
            keys[index] = _env(route.secret_env, f"notifications.routes.{index}.secret_env")
    password = None
    if options.smtp is not None and options.smtp.password_env is not None:
        password = _env(options.smtp.password_env, "notifications.smtp.password_env").decode()
    return NotifySecrets(keys, password)


def _env(name: str, where: str) -> bytes:
    value = os.environ.get(name, "")
    if not value:
        raise ValueError(f"{where}: environment variable {name} is not set")
    return value.encode()


class RouteWorker:
    """One route: its bounded queue and the task that delivers it in order."""

    def __init__(
        self,
        index: int,
        route: AlertRoute,
        options: AlertNotifyOptions,
        secrets: NotifySecrets,
    ) -> None:
        self.index = index
        self.route = route
        self.options = options
        self._key = secrets.webhook_keys.get(index)
        if route.webhook is not None and self._key is None:
            raise ValueError(f"notifications.routes.{index}: no signing key loaded")
        self._smtp_password = secrets.smtp_password
        self._queue: deque[Notification] = deque()
        self._wake = asyncio.Event()
        self.stats = RouteStats()

    @property
    def name(self) -> str:
        target = str(self.route.webhook) if self.route.webhook else ",".join(self.route.email)
        return f"route {self.index} ({self.route.channel} {target})"

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def offer(self, notification: Notification) -> None:
        if len(self._queue) >= self.options.queue_size:
            dropped = self._queue.popleft()
            self.stats.dropped += 1
            log.warning(
                "alert notifications: %s queue full (%d waiting): dropped %s of alert %s",
                self.name,
                self.options.queue_size,
                dropped.event,
                dropped.alert.get("id"),
            )
        self._queue.append(notification)
        self._wake.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.options.timeout_s) as client:
            while True:
                while not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                notification = self._queue[0]
                await self._deliver(client, notification)
                if self._queue and self._queue[0] is notification:
                    self._queue.popleft()

    async def _deliver(self, client: httpx.AsyncClient, notification: Notification) -> None:
        options = self.options
        for attempt in range(1, options.max_attempts + 1):
            error = await self._send_once(client, notification)
            if error is None:
                self.stats.delivered += 1
                return
            self.stats.last_error = error
            if attempt == options.max_attempts:
                break
            self.stats.retries += 1
            await asyncio.sleep(
                min(options.backoff_base_s * 2 ** (attempt - 1), options.backoff_max_s)
            )
        self.stats.failed += 1
        log.warning(
            "alert notifications: %s gave up on %s of alert %s (%s %s) after %d attempts: %s",
            self.name,
            notification.event,
            notification.alert.get("id"),
            notification.alert_type,
            notification.store,
            options.max_attempts,
            self.stats.last_error,
        )

    async def _send_once(self, client: httpx.AsyncClient, notification: Notification) -> str | None:
        """None when delivered, else why not (never a response body: it may echo data)."""
        if self.route.webhook is not None:
            return await self._post(client, notification)
        assert self.options.smtp is not None  # the config requires it for e-mail routes
        try:
            await asyncio.to_thread(
                send_mail,
                self.options.smtp,
                self._smtp_password,
                self.route.email,
                email_for(notification, self.options.smtp.sender),
            )
        except (smtplib.SMTPException, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        return None

    async def _post(self, client: httpx.AsyncClient, notification: Notification) -> str | None:
        assert self.route.webhook is not None
        assert self._key is not None
        event = f"alert.{notification.event}"
        body = json.dumps(
            {
                "event": event,
                "delivery": notification.delivery,
                "sent_at": iso_utc(utc_now()),
                "store": notification.store,
                "alert": notification.alert,
            },
            separators=(",", ":"),
            default=str,
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Storegate-Delivery": notification.delivery,
            "X-Storegate-Event": event,
            SIGNATURE_HEADER: signature(self._key, body),
        }
        try:
            response = await client.post(str(self.route.webhook), content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"


def email_for(notification: Notification, sender: str) -> EmailMessage:
    alert = notification.alert
    where = f" on {alert['shelf']}" if alert.get("shelf") else ""
    what = f" {alert['gtin']}" if alert.get("gtin") else ""
    count = f" ({alert['count']} counted)" if alert.get("count") is not None else ""
    message = EmailMessage()
    message["From"] = sender
    message["Subject"] = (
        f"[storegate] {notification.alert_type} {notification.event} at"
        f" {notification.store}:{what}{where}{count}"
    )
    message["Message-ID"] = f"<{notification.delivery}@storegate>"
    lines = [
        f"Alert {alert.get('id')} ({notification.alert_type}) was {notification.event}"
        f" at {notification.store}.",
        "",
        *(f"{name}: {value}" for name, value in alert.items() if name != "event"),
        "",
        "Acknowledge it in the dashboard or with POST /api/v1/alerts/{id}/ack.",
    ]
    message.set_content("\n".join(lines))
    return message


def send_mail(
    smtp: SmtpOptions, password: str | None, recipients: list[str], message: EmailMessage
) -> None:
    """Blocking: run it in a thread."""
    context = ssl.create_default_context()
    server: smtplib.SMTP
    if smtp.security == "tls":
        server = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s, context=context)
    else:
        server = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
    with server:
        if smtp.security == "starttls":
            server.starttls(context=context)
        if smtp.username is not None and password is not None:
            server.login(smtp.username, password)
        server.send_message(message, to_addrs=recipients)


class AlertNotifier:
    """Listens to the live bus for alert changes and hands each to the matching routes."""

    def __init__(self, options: AlertNotifyOptions, secrets: NotifySecrets) -> None:
        self.options = options
        self.routes = [
            RouteWorker(index, route, options, secrets)
            for index, route in enumerate(options.routes)
        ]
        self.missed = 0  # alert changes the bus dropped before we read them
        self._tasks: list[asyncio.Task[None]] = []

    def notify(self, change: Change) -> int:
        """Queue one change on every matching route; returns how many routes took it."""
        if change.kind != ALERT_KIND:
            return 0
        alert = dict(change.data)
        event = str(alert.pop("event", "raised"))
        kind = str(alert.get("type", ""))
        taken = 0
        for worker in self.routes:
            if worker.route.matches(kind, change.store, event):
                worker.offer(Notification(uuid.uuid4().hex, event, change.store, alert))
                taken += 1
        return taken

    def start(self, bus: LiveBus) -> None:
        if not self.routes:
            return
        subscription = bus.subscribe()
        self._tasks = [asyncio.create_task(self._listen(subscription), name="alert-notify")]
        self._tasks += [
            asyncio.create_task(worker.run(), name=f"alert-notify-{worker.index}")
            for worker in self.routes
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for worker in self.routes:
            if worker.waiting:
                log.warning(
                    "alert notifications: %s stopped with %d notifications not delivered",
                    worker.name,
                    worker.waiting,
                )

    async def _listen(self, subscription: Subscription) -> None:
        dropped = subscription.dropped
        try:
            while True:
                change = await subscription.get()
                if subscription.dropped != dropped:
                    self.missed += subscription.dropped - dropped
                    log.warning(
                        "alert notifications: the live bus dropped %d changes before this"
                        " listener read them; alerts among them are not notified (they are in"
                        " GET /api/v1/alerts)",
                        subscription.dropped - dropped,
                    )
                    dropped = subscription.dropped
                try:
                    self.notify(change)
                except Exception:  # a malformed change must not stop the listener
                    log.exception("alert notifications: cannot route %s change", change.kind)
        finally:
            subscription.close()
