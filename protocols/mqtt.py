"""MQTT connection settings and paho client set-up shared by edge and cloud.

Both sides connect to the same brokers with the same security options (TLS with a CA,
client certificates, username and password), so the config model and the code that
applies it to a paho client live here once. paho is imported lazily: it is in the edge and
cloud extras, not in the base install that `protocols` must work with.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

if TYPE_CHECKING:
    import paho.mqtt.client as paho


class TlsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = Field(default=None, description="CA bundle; None uses system CAs")
    cert_file: Path | None = Field(default=None, description="client certificate (mTLS)")
    key_file: Path | None = Field(default=None, description="client private key (mTLS)")
    insecure_skip_verify: bool = Field(
        default=False, description="do not check the broker's hostname (test rigs only)"
    )

    @model_validator(mode="after")
    def _check_pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mTLS needs both)")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {path} does not exist")
        return self


class MqttSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: str | None = Field(default=None, description="default: derived from the role")
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsSettings | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    def describe(self) -> str:
        """For logs: where and how, never the password."""
        auth = f"{self.username}@" if self.username else ""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{auth}{self.host}:{self.port} (MQTT {self.protocol})"


def new_client(
    settings: MqttSettings,
    client_id: str,
    *,
    clean_start: bool = False,
    client_class: type[paho.Client] | None = None,
) -> paho.Client:
    """A paho client (or one of `client_class`, a subclass) with the settings applied;
    persistent session unless `clean_start`."""
    import ssl

    import paho.mqtt.client as paho_client
    from paho.mqtt.enums import CallbackAPIVersion

    cls = client_class or paho_client.Client
    if settings.protocol == "5":
        client = cls(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id or client_id,
            protocol=paho_client.MQTTv5,
        )
    else:
        client = cls(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id or client_id,
            protocol=paho_client.MQTTv311,
            clean_session=clean_start,
        )
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls is not None:
        tls = settings.tls
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        client.tls_insecure_set(tls.insecure_skip_verify)
    client.reconnect_delay_set(
        min_delay=max(1, int(settings.reconnect_min_s)), max_delay=int(settings.reconnect_max_s)
    )
    client.on_socket_open = _no_delay
    return client


def _no_delay(client: paho.Client, userdata: object, sock: object) -> None:
    # MQTT is small request/response packets (PUBLISH, PUBACK): with Nagle's algorithm an
    # offer or a PUBACK waits up to ~40 ms behind the previous unacknowledged segment.
    import socket

    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(
    client: paho.Client,
    settings: MqttSettings,
    *,
    clean_start: bool = False,
    session_expiry_s: int = 7 * 86400,
    asynchronous: bool = False,
) -> None:
    """Connect with a persistent session (unless `clean_start`).

    MQTT 5 expresses "persistent" as clean_start=False plus a session expiry interval; with
    3.1.1 the client's clean_session flag (set by `new_client`) does it. `asynchronous`
    uses paho's connect_async, for a client whose network loop is started afterwards.
    """
    start = client.connect_async if asynchronous else client.connect
    if settings.protocol != "5":
        start(settings.host, settings.port, keepalive=settings.keepalive_s)
        return
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 0 if clean_start else session_expiry_s
    start(
        settings.host,
        settings.port,
        keepalive=settings.keepalive_s,
        clean_start=clean_start,
        properties=properties,
    )
