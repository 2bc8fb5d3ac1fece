"""Commands from the cloud, each answered on the ack stream.

Every command gets `accepted` then `done`/`failed`, or `rejected` with the reason (expired,
unknown, malformed, no such device). A payload too broken to carry a usable correlation id
cannot be answered: it is logged and counted (`command.malformed` in the heartbeat's
drops). Acks go through the outbox with Priority.CONTROL, so they survive an outage.
Nothing that arrives here can stop the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pydantic_core
from pydantic import JsonValue

from edge.drivers.base import CommandOutcome, Priority
from edge.outbox import Outbox
from edge.supervisor import DriverSupervisor
from protocols.codec import DecodeError, decode, encode, topic_for
from protocols.ids import is_identifier
from protocols.messages import AckStatus, Command, CommandAck

log = logging.getLogger(__name__)

RuntimeCommand = Callable[[Command], Awaitable[CommandOutcome]]
# Runs before `accepted` is sent: returns the reason to reject the command, or None.
CommandCheck = Callable[[Command], str | None]
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class CommandDispatcher:
    def __init__(
        self,
        store: str,
        node: str,
        outbox: Outbox,
        *,
        runtime_commands: Mapping[str, RuntimeCommand],
        checks: Mapping[str, CommandCheck] | None = None,
        drivers: Callable[[], Mapping[str, DriverSupervisor]],
        on_ack: Callable[[], None],
    ) -> None:
        self._store = store
        self._node = node
        self._outbox = outbox
        self._runtime_commands = runtime_commands
        self._checks = checks or {}
        self._drivers = drivers
        self._on_ack = on_ack
        self._tasks: set[asyncio.Task[None]] = set()
        self.malformed = 0

    def handle(self, topic: str, payload: bytes) -> None:
        """Called on the event loop for every message on cmd/+."""
        try:
            command = decode(payload, topic=topic, expect=Command)
        except DecodeError as exc:
            self._reject_malformed(topic, payload, exc)
            return
        assert isinstance(command, Command)
        if command.expired():
            self._ack(command, AckStatus.REJECTED, reason="expired")
            return
        handler = self._resolve(command)
        if isinstance(handler, str):
            self._ack(command, AckStatus.REJECTED, reason=handler)
            return
        self._ack(command, AckStatus.ACCEPTED)
        task = asyncio.create_task(self._execute(command, handler), name=f"cmd:{command.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, within_s: float) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=within_s)

    def _resolve(self, command: Command) -> RuntimeCommand | str:
        """The handler for `command`, or the reason it is rejected."""
        if command.target is None:
            handler = self._runtime_commands.get(command.name)
            if handler is None:
                return f"unknown command {command.name!r}"
            check = self._checks.get(command.name)
            problem = check(command) if check is not None else None
            return problem if problem is not None else handler
        supervisor = self._drivers().get(command.target)
        if supervisor is None:
            return f"unknown device {command.target!r}"
        if command.name not in supervisor.driver.commands():
            return f"device {command.target!r} has no command {command.name!r}"
        return supervisor.driver.handle_command

    async def _execute(self, command: Command, handler: RuntimeCommand) -> None:
        try:
            outcome = await handler(command)
        except Exception as exc:  # a failing handler fails the command, not the daemon
            log.exception("command %s failed", command.name)
            outcome = CommandOutcome(False, f"{type(exc).__name__}: {exc}")
        self._ack(
            command,
            AckStatus.DONE if outcome.ok else AckStatus.FAILED,
            reason=outcome.reason,
            result=outcome.result,
        )

    def _reject_malformed(self, topic: str, payload: bytes, error: DecodeError) -> None:
        correlation_id, name = _salvage(topic, payload)
        if correlation_id is None:
            self.malformed += 1
            self._outbox.count_drop("command.malformed")
            log.warning("malformed command on %s without a correlation id: %s", topic, error)
            return
        log.warning("rejecting malformed command %s on %s: %s", correlation_id, topic, error)
        self._emit_ack(correlation_id, name, AckStatus.REJECTED, reason=str(error)[:500])

    def _ack(
        self,
        command: Command,
        status: AckStatus,
        *,
        reason: str | None = None,
        result: dict[str, JsonValue] | None = None,
    ) -> None:
        self._emit_ack(command.correlation_id, command.name, status, reason=reason, result=result)

    def _emit_ack(
        self,
        correlation_id: str,
        name: str,
        status: AckStatus,
        *,
        reason: str | None = None,
        result: dict[str, JsonValue] | None = None,
    ) -> None:
        draft = CommandAck(
            store=self._store,
            node=self._node,
            seq=0,
            correlation_id=correlation_id,
            command=name,
            status=status,
            reason=reason,
            result=result,
        )

        def build(seq: int) -> tuple[str, bytes]:
            message = draft.model_copy(update={"seq": seq})
            return topic_for(message), encode(message)

        self._outbox.append(draft.stream, Priority.CONTROL, build)
        self._on_ack()


def _salvage(topic: str, payload: bytes) -> tuple[str | None, str]:
    """The correlation id and command name of a payload that failed validation, if usable."""
    name = topic.rsplit("/", 1)[-1]
    if not is_identifier(name):
        name = "unknown"
    try:
        data: Any = pydantic_core.from_json(payload)
    except ValueError:
        return None, name
    if not isinstance(data, dict):
        return None, name
    correlation_id = data.get("correlation_id")
    if isinstance(correlation_id, str) and _MESSAGE_ID.fullmatch(correlation_id):
        return correlation_id, name
    return None, name
