"""Shopper apps' broker logins, created by the cloud after consent and revoked on
withdrawal or erasure.

The login is the broker's: the cloud sends it over the plugin's control topic and keeps
nothing (the broker stores a salted hash). Its name, client id and topics derive from the
shopper id, which the phone never broadcasts; the password is random and returned once.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from cloud.api.errors import ApiError
from cloud.broker import policy
from cloud.broker.control import (
    BrokerControl,
    BrokerControlError,
    provision_shopper,
    revoke_shopper,
)
from cloud.config import CloudSettings

log = logging.getLogger(__name__)
PASSWORD_BYTES = 24  # 192 bits


@dataclass(frozen=True, slots=True)
class ShopperLogin:
    username: str
    password: str
    inbox: str
    topics: policy.ShopperTopics


def _control(settings: CloudSettings) -> BrokerControl:
    if settings.broker_admin is None or settings.broker_admin.password is None:
        raise ApiError(
            503,
            "unavailable",
            "no broker admin login configured (broker_admin): shopper apps cannot get logins",
        )
    return BrokerControl(settings.mqtt, settings.broker_admin)


async def create(settings: CloudSettings, shopper_id: str) -> ShopperLogin:
    control = _control(settings)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    try:
        username = await provision_shopper(control, shopper_id, password)
    except BrokerControlError as exc:
        log.error("shopper broker login not created: %s", exc)
        raise ApiError(503, "unavailable", f"the broker did not create the login: {exc}") from None
    return ShopperLogin(
        username=username,
        password=password,
        inbox=policy.shopper_inbox(shopper_id),
        topics=policy.shopper_topics(shopper_id),
    )


async def revoke(settings: CloudSettings, shopper_id: str) -> None:
    """Delete the shopper's login if there may be one; a broker that cannot be reached is
    logged (the login then outlives the consent until the next revoke) but does not undo
    the withdrawal or erasure that was already committed."""
    if settings.broker_admin is None or settings.broker_admin.password is None:
        return
    try:
        await revoke_shopper(BrokerControl(settings.mqtt, settings.broker_admin), shopper_id)
    except BrokerControlError as exc:
        log.error(
            "broker login %s NOT revoked: %s; delete it by hand (mosquitto_ctrl dynsec"
            " deleteClient %s)",
            policy.shopper_login(shopper_id),
            exc,
            policy.shopper_login(shopper_id),
        )
