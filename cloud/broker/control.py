"""Changing broker logins at run time, through the dynamic-security plugin's control topic.

The cloud holds an admin login whose role allows `$CONTROL/dynamic-security/#` and nothing
else. Each call connects, sends one batch of commands, waits for the plugin's answers and
disconnects: provisioning is rare (once per app install), and a short session cannot be
left half-open. Passwords travel only inside the command to the broker, which stores them
hashed; nothing here logs a command's payload.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from typing import Any

from cloud.broker import policy
from cloud.config import BrokerAdminSettings
from protocols.mqtt import MqttSettings, new_client

log = logging.getLogger(__name__)

RESPONSE_TOPIC = f"{policy.CONTROL_TOPIC}/response"


class BrokerControlError(RuntimeError):
    """The broker could not be reached or refused a command; the message says which."""


class BrokerControl:
    def __init__(self, mqtt: MqttSettings, admin: BrokerAdminSettings) -> None:
        if admin.password is None:
            raise BrokerControlError(
                f"broker_admin {admin.username}: no password"
                " (STOREGATE_CLOUD_BROKER_ADMIN__PASSWORD)"
            )
        self.settings = mqtt.model_copy(
            update={
                "username": admin.username,
                "password": admin.password,
                "client_id": admin.username,
                "protocol": "5",
            }
        )
        self.timeout_s = admin.timeout_s
        self._lock = asyncio.Lock()  # one admin session at a time: the login has one client id

    async def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send `commands` in one message; the plugin's response to each, in order."""
        async with self._lock:
            return await asyncio.to_thread(self._run, commands)

    def _run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        correlation = uuid.uuid4().hex
        commands = [
            {**command, "correlationData": f"{correlation}-{index}"}
            for index, command in enumerate(commands)
        ]
        answer: dict[str, Any] = {}
        ready = threading.Event()
        connected = threading.Event()
        client = new_client(self.settings, self.settings.client_id or "", clean_start=True)

        def on_connect(_c: Any, _u: Any, _f: Any, code: Any, _p: Any) -> None:
            answer["connack"] = code
            connected.set()
            if not code.is_failure:
                client.subscribe(RESPONSE_TOPIC, qos=1)

        def on_subscribe(_c: Any, _u: Any, _m: Any, codes: Any, _p: Any) -> None:
            if any(code.is_failure for code in codes):
                answer["error"] = f"subscribing to {RESPONSE_TOPIC} refused: {codes[0]}"
                ready.set()
                return
            client.publish(policy.CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)

        def on_message(_c: Any, _u: Any, message: Any) -> None:
            try:
                responses = json.loads(message.payload)["responses"]
            except (ValueError, KeyError, TypeError):
                return
            if any(str(r.get("correlationData", "")).startswith(correlation) for r in responses):
                answer["responses"] = responses
                ready.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        try:
            client.connect(self.settings.host, self.settings.port, keepalive=30)
        except OSError as exc:
            raise BrokerControlError(f"broker {self.settings.describe()}: {exc}") from None
        client.loop_start()
        try:
            if not connected.wait(self.timeout_s):
                raise BrokerControlError(f"broker {self.settings.describe()}: no CONNACK")
            if answer["connack"].is_failure:
                raise BrokerControlError(
                    f"broker refused the admin login {self.settings.describe()}:"
                    f" {answer['connack']}"
                )
            if not ready.wait(self.timeout_s):
                raise BrokerControlError(
                    f"no answer on {RESPONSE_TOPIC} within {self.timeout_s}s"
                    " (is the dynamic-security plugin loaded?)"
                )
            if "error" in answer:
                raise BrokerControlError(answer["error"])
        finally:
            client.disconnect()
            client.loop_stop()
        by_id = {str(r.get("correlationData")): r for r in answer["responses"]}
        return [by_id.get(str(c["correlationData"]), {}) for c in commands]


async def provision_shopper(control: BrokerControl, shopper_id: str, password: str) -> str:
    """Create (or replace, with a new password) the shopper's login and role; its name.

    A previous login of the shopper is deleted first, which disconnects an app still using
    the old password: provisioning again is how an app rotates its broker password.
    """
    name = policy.shopper_login(shopper_id)
    responses = await control.run(
        [
            {"command": "deleteClient", "username": name},
            {"command": "deleteRole", "rolename": name},
            {"command": "createRole", "rolename": name, "acls": policy.shopper_acls(shopper_id)},
            {
                "command": "createClient",
                "username": name,
                "password": password,
                "clientid": name,
                "roles": [{"rolename": name}],
            },
        ]
    )
    # The deletes may find nothing (a first login); the creates must succeed.
    for command, response in zip(("createRole", "createClient"), responses[2:], strict=True):
        if response.get("error") or response.get("command") != command:
            raise BrokerControlError(f"{command} {name}: {response.get('error', 'no answer')}")
    log.info("broker login %s provisioned", name)
    return name


async def revoke_shopper(control: BrokerControl, shopper_id: str) -> None:
    """Delete the shopper's login and role (erasure); a missing login is not an error."""
    name = policy.shopper_login(shopper_id)
    await control.run(
        [
            {"command": "deleteClient", "username": name},
            {"command": "deleteRole", "rolename": name},
        ]
    )
    log.info("broker login %s revoked", name)
