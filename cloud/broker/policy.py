"""Who may do what on the broker: the roles and ACLs of every kind of login.

Every login is pinned to exactly one client id (the plugin refuses any other id for it) and
every login has one, so no login can connect with another's client id: that would
disconnect the victim and, with a clean start, wipe its persistent session (queued QoS 1
messages included). Logins therefore come one per MQTT session: one per ingestor replica
(and one per ingest shard session), one per edge node, one per shopper app.

The ACLs are literal per login: there are no `%u` patterns that a cleverly chosen user
name could steer into a store's prefix. A shopper's role names one inbox under
`storegate/v1/shopper/`, which no store role covers (`shopper` is a reserved store id).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from protocols.topics import (
    OFFERS_LEVEL,
    ORDERS_LEVEL,
    SHOPPER_LEVEL,
    TOPIC_PREFIX,
    Channel,
    NodeTopic,
)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
ADMIN_ROLE = "storegate-admin"
CLOUD_ROLE = "storegate-cloud"
OFFERS_LISTENER_ROLE = "storegate-cloud-offers-listener"
# Shopper logins and their roles carry this prefix and nothing else does: the cloud creates
# and deletes only names under it, and the deploy-time file keeps them across regenerations.
SHOPPER_PREFIX = "storegate-shopper-"
# The offer delivery listener of a cloud replica logs in as its own session.
OFFERS_LISTENER_SUFFIX = "-offers"

# Nothing is allowed unless a role says so, receiving included.
DEFAULT_ACL_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}

Acl = dict[str, Any]


def _acl(kind: str, topic: str) -> Acl:
    return {"acltype": kind, "topic": topic, "allow": True}


def _read(topic_filter: str) -> list[Acl]:
    return [_acl("subscribePattern", topic_filter), _acl("publishClientReceive", topic_filter)]


def _write(topic_filter: str) -> list[Acl]:
    return [_acl("publishClientSend", topic_filter)]


def admin_acls() -> list[Acl]:
    """The cloud's admin login: the plugin's control topic, nothing else."""
    control = "$CONTROL/dynamic-security/#"
    return _write(control) + _read(control)


def cloud_acls() -> list[Acl]:
    """Ingestor replicas: read every store stream (directly or as an MQTT 5 shared
    subscription) and send commands, commit marks, offers and orders."""
    everything = f"{TOPIC_PREFIX}/#"
    return [
        *_read(everything),
        _acl("subscribePattern", f"$share/+/{everything}"),
        *_write(f"{TOPIC_PREFIX}/+/+/{Channel.CMD}/+"),
        *_write(f"{TOPIC_PREFIX}/+/+/{Channel.COMMITTED}"),
        *_write(f"{TOPIC_PREFIX}/{SHOPPER_LEVEL}/+/{OFFERS_LEVEL}"),
        *_write(f"{TOPIC_PREFIX}/{SHOPPER_LEVEL}/+/{ORDERS_LEVEL}"),
    ]


def offers_listener_acls() -> list[Acl]:
    """A replica's offer delivery listener: it only sees offers go out."""
    return _read(f"{TOPIC_PREFIX}/{SHOPPER_LEVEL}/+/{OFFERS_LEVEL}")


def node_role(store: str, node: str) -> str:
    # '/' cannot occur in a store or node id, so the name is unambiguous.
    return f"storegate-node/{store}/{node}"


def node_acls(store: str, node: str) -> list[Acl]:
    """One edge node: publish its own streams, read its own commands and commit marks. A
    compromised Pi cannot forge another node's (or store's) data or read its commands."""
    prefix = f"{TOPIC_PREFIX}/{store}/{node}"
    NodeTopic(store, node, Channel.STATUS)  # raises TopicError for an invalid or reserved id
    acls: list[Acl] = []
    for channel in (Channel.STATUS, Channel.BIRTH, Channel.DEATH, Channel.HEALTH, Channel.ACK):
        acls += _write(f"{prefix}/{channel}")
    for channel in (Channel.RFID, Channel.LOCKER, Channel.BLE):
        acls += _write(f"{prefix}/{channel}/+")
    acls += _read(f"{prefix}/{Channel.CMD}/+")
    acls += _read(f"{prefix}/{Channel.COMMITTED}")
    return acls


def shopper_inbox(shopper_id: str) -> str:
    """The topic level of a shopper's offers and orders: derived from the shopper id (which
    the phone never broadcasts), so it is neither the BLE token nor the shopper id itself."""
    return hashlib.sha256(f"storegate-shopper-inbox:{shopper_id}".encode()).hexdigest()[:32]


def shopper_login(shopper_id: str) -> str:
    """User name, client id and role name of a shopper app's broker login."""
    return f"{SHOPPER_PREFIX}{shopper_inbox(shopper_id)}"


@dataclass(frozen=True, slots=True)
class ShopperTopics:
    offers: str
    orders: str


def shopper_topics(shopper_id: str) -> ShopperTopics:
    inbox = f"{TOPIC_PREFIX}/{SHOPPER_LEVEL}/{shopper_inbox(shopper_id)}"
    return ShopperTopics(offers=f"{inbox}/{OFFERS_LEVEL}", orders=f"{inbox}/{ORDERS_LEVEL}")


def shopper_acls(shopper_id: str) -> list[Acl]:
    """A shopper app reads its own two topics and publishes nothing."""
    topics = shopper_topics(shopper_id)
    return [
        _acl("subscribeLiteral", topics.offers),
        _acl("publishClientReceive", topics.offers),
        _acl("subscribeLiteral", topics.orders),
        _acl("publishClientReceive", topics.orders),
    ]
