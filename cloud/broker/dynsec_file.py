"""The dynamic-security plugin's file for the deploy-time logins.

`deploy/mosquitto/logins.yaml` lists the logins (the admin, one per cloud replica, the
ingest shard sessions, one per edge node) and names the environment variable holding each
password; `storegate broker-logins` writes the plugin's JSON from it before the broker
starts. Passwords are stored the way the plugin stores them (PBKDF2-SHA512, a random salt
per login), never in clear. Shopper logins, which the cloud creates at run time through the
control topic, are kept across regenerations; every other login and role is rewritten from
the file, so a removed node loses its login.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud.broker import policy
from protocols.ids import IDENTIFIER_PATTERN

# The plugin's own default (mosquitto_ctrl and `createClient` use it): logins are random
# secrets of >= 128 bits, so the iteration count is not what protects them.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
MIN_PASSWORD_CHARS = 16
ENV_PATTERN = r"^[A-Z_][A-Z0-9_]*$"


class LoginsError(ValueError):
    """The logins file or a password is unusable; the message names which."""


class _Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password_env: str = Field(pattern=ENV_PATTERN, description="variable holding the password")


class AdminLogin(_Login):
    username: str = Field(pattern=IDENTIFIER_PATTERN, description="also the client id")


class CloudLogin(_Login):
    username: str = Field(
        pattern=IDENTIFIER_PATTERN,
        description="also the client id: the replica's `ingest.client_id` and `mqtt.username`",
    )


class NodeLogin(_Login):
    store: str = Field(pattern=IDENTIFIER_PATTERN)
    node: str = Field(pattern=IDENTIFIER_PATTERN)

    @property
    def username(self) -> str:
        # The edge's default client id (edge/config.py), which is also its user name.
        return f"storegate-edge-{self.store}-{self.node}"


class ShardLogins(_Login):
    """The shard sessions of `ingest.shards` > 1: `<prefix>-s0` .. `<prefix>-s<count-1>`.

    One password for all of them: a shard moves between replicas with its lease, so every
    replica must be able to log in as every shard; distinct passwords all known to every
    replica would protect nothing more. Each login is still pinned to its one client id."""

    prefix: str = Field(
        pattern=IDENTIFIER_PATTERN,
        description="every replica's `ingest.client_id`",
    )
    count: int = Field(ge=2, le=1024, description="`ingest.shards`")

    @property
    def usernames(self) -> list[str]:
        return [f"{self.prefix}-s{shard}" for shard in range(self.count)]


class Logins(BaseModel):
    model_config = ConfigDict(extra="forbid")
    admins: list[AdminLogin] = Field(
        min_length=1, description="one per cloud replica: each login is one session"
    )
    cloud: list[CloudLogin] = Field(min_length=1)
    ingest_shards: ShardLogins | None = None
    nodes: list[NodeLogin] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_login_per_client_id(self) -> Logins:
        names = [admin.username for admin in self.admins]
        for login in self.cloud:
            names += [login.username, login.username + policy.OFFERS_LISTENER_SUFFIX]
        if self.ingest_shards is not None:
            names += self.ingest_shards.usernames
        names += [node.username for node in self.nodes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"client ids used by two logins: {', '.join(duplicates)} (a store id and a"
                " node id may join into another store's and node's; rename one)"
            )
        shoppers = [n for n in names if n.startswith(policy.SHOPPER_PREFIX)]
        if shoppers:
            raise ValueError(f"{policy.SHOPPER_PREFIX}* is for shopper apps: {shoppers}")
        return self


def load_logins(path: Path) -> Logins:
    import yaml

    return Logins.model_validate(yaml.safe_load(path.read_text()))


def hash_password(password: str, *, salt: bytes | None = None) -> dict[str, Any]:
    """The plugin's stored form of a password."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": PBKDF2_ITERATIONS,
    }


def _client(username: str, password: str, role: str) -> dict[str, Any]:
    return {
        "username": username,
        "clientid": username,  # the login may connect with this client id only
        **hash_password(password),
        "roles": [{"rolename": role}],
    }


def _password(login: _Login, env: Mapping[str, str]) -> str:
    password = env.get(login.password_env, "")
    if "change-me" in password:
        raise LoginsError(f"{login.password_env}: still the example's change-me value")
    if len(password) < MIN_PASSWORD_CHARS:
        raise LoginsError(
            f"{login.password_env}: a broker password needs >= {MIN_PASSWORD_CHARS} characters"
            f" ({'unset' if not password else f'{len(password)} given'}); openssl rand -hex 24"
        )
    return password


def build_document(
    logins: Logins, env: Mapping[str, str], existing: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The plugin's JSON: the logins of `logins` with passwords from `env`, plus the shopper
    logins and roles of `existing` (the file as the running broker last saved it)."""
    clients = [
        _client(admin.username, _password(admin, env), policy.ADMIN_ROLE) for admin in logins.admins
    ]
    roles: list[dict[str, Any]] = [
        {"rolename": policy.ADMIN_ROLE, "acls": policy.admin_acls()},
        {"rolename": policy.CLOUD_ROLE, "acls": policy.cloud_acls()},
        {"rolename": policy.OFFERS_LISTENER_ROLE, "acls": policy.offers_listener_acls()},
    ]
    for cloud in logins.cloud:
        password = _password(cloud, env)
        clients.append(_client(cloud.username, password, policy.CLOUD_ROLE))
        listener = cloud.username + policy.OFFERS_LISTENER_SUFFIX
        clients.append(_client(listener, password, policy.OFFERS_LISTENER_ROLE))
    if logins.ingest_shards is not None:
        password = _password(logins.ingest_shards, env)
        for username in logins.ingest_shards.usernames:
            clients.append(_client(username, password, policy.CLOUD_ROLE))
    for node in logins.nodes:
        role = policy.node_role(node.store, node.node)
        clients.append(_client(node.username, _password(node, env), role))
        roles.append({"rolename": role, "acls": policy.node_acls(node.store, node.node)})
    if existing:
        clients += [
            c
            for c in existing.get("clients", [])
            if str(c.get("username", "")).startswith(policy.SHOPPER_PREFIX)
        ]
        roles += [
            r
            for r in existing.get("roles", [])
            if str(r.get("rolename", "")).startswith(policy.SHOPPER_PREFIX)
        ]
    return {
        "clients": clients,
        "roles": roles,
        "groups": [],
        "defaultACLAccess": dict(policy.DEFAULT_ACL_ACCESS),
    }


def write_document(
    logins_path: Path, out: Path, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Regenerate `out` from `logins_path`, keeping its shopper logins; atomic, mode 0600."""
    existing = json.loads(out.read_text()) if out.exists() else None
    document = build_document(
        load_logins(logins_path), os.environ if env is None else env, existing
    )
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1))
    tmp.chmod(0o600)
    tmp.replace(out)
    return document
