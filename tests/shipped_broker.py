"""A real Mosquitto running the shipped deploy config: `deploy/mosquitto/mosquitto.conf`
with only its listener, data directory and plugin path rewritten for this machine, and the
dynamic-security file `storegate broker-logins` writes from `deploy/mosquitto/logins.yaml`.
"""

from __future__ import annotations

import glob
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.broker.dynsec_file import Logins, build_document, load_logins
from tests.conftest import REPO_ROOT
from tests.servers import IN_CI, MosquittoBroker, mosquitto

DEPLOY = REPO_ROOT / "deploy" / "mosquitto"
LOGINS = DEPLOY / "logins.yaml"
# Test passwords for the variables deploy/mosquitto/logins.yaml names.
PASSWORDS = {
    "MQTT_ADMIN_PASSWORD": "admin-password-0123456789",
    "MQTT_CLOUD_PASSWORD": "cloud-password-0123456789",
    "MQTT_STORE_001_PASSWORD": "store-001-password-0123456",
    "MQTT_STORE_002_PASSWORD": "store-002-password-0123456",
    "MQTT_STORE_003_PASSWORD": "store-003-password-0123456",
}
ADMIN = "storegate-admin"
INGEST = "storegate-cloud-ingest"


def plugin_path() -> str:
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")) + sorted(
        glob.glob("/usr/lib/mosquitto_dynamic_security.so")
    )
    if not found:
        message = "mosquitto_dynamic_security.so not found (Debian package mosquitto)"
        if IN_CI:
            pytest.fail(message + ": CI must have it", pytrace=False)
        pytest.skip(message)
    return found[0]


# The listener's TLS lines: tests/test_deploy_tls.py runs them with certificates from
# `storegate certs`; here the listener is plain so that the logins and ACLs are tested alone.
TLS_LINE = r"^(cafile|certfile|keyfile|require_certificate|tls_version) .*\n"


def shipped_config(port: int, data_dir: Path) -> str:
    """The shipped mosquitto.conf with only what differs on this machine rewritten."""
    text = (DEPLOY / "mosquitto.conf").read_text()
    text, count = re.subn(TLS_LINE, "", text, flags=re.MULTILINE)
    assert count == 5, "the shipped listener's TLS lines changed"
    rewrites = {
        r"^listener 8883$": f"listener {port} 127.0.0.1",
        r"^plugin /usr/lib/mosquitto_dynamic_security\.so$": f"plugin {plugin_path()}",
        r"/mosquitto/data/": f"{data_dir}/",
    }
    for pattern, replacement in rewrites.items():
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count, f"the shipped mosquitto.conf no longer has {pattern!r}"
    assert "allow_anonymous false" in text
    return text


def start_shipped_mosquitto(
    workdir: Path, passwords: dict[str, str], logins: Logins | None = None
) -> MosquittoBroker:
    """Started; the caller kills it."""
    document = build_document(logins or load_logins(LOGINS), passwords)
    (workdir / "dynamic-security.json").write_text(json.dumps(document))
    broker = mosquitto(workdir)
    # Keep what the fixture adds for this machine (`user root` when run as root).
    user = "user root\n" if "user root" in broker.config_path.read_text() else ""
    broker.config_path.write_text(shipped_config(broker.port, workdir) + user)
    broker.start()
    return broker


class ConnectionRefusedByBrokerError(Exception):
    def __init__(self, code: ReasonCode) -> None:
        super().__init__(f"connection refused: {code}")
        self.code = code


class Client:
    """A logged-in MQTT 5 client that records messages, the broker's answers and whether
    the broker took its connection away."""

    def __init__(
        self,
        broker: MosquittoBroker,
        user: str | None,
        password: str | None = None,
        *,
        client_id: str | None = None,
        clean_start: bool = True,
    ) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.suback: list[ReasonCode] = []
        self.puback: dict[int, ReasonCode] = {}
        self.disconnected: ReasonCode | None = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or user or "anonymous-test",
            protocol=mqtt.MQTTv5,
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        self.connack: ReasonCode | None = None

        def on_connect(
            client: object, userdata: object, flags: object, code: ReasonCode, props: object
        ) -> None:
            self.connack = code
            self._connected.set()

        def on_disconnect(
            client: object, userdata: object, flags: object, code: ReasonCode, props: object
        ) -> None:
            self.disconnected = code

        def on_message(client: object, userdata: object, message: mqtt.MQTTMessage) -> None:
            with self._lock:
                self.received.append((message.topic, bytes(message.payload)))

        def on_subscribe(
            client: object, userdata: object, mid: int, codes: list[ReasonCode], props: object
        ) -> None:
            self.suback = list(codes)
            self._subscribed.set()

        def on_publish(
            client: object, userdata: object, mid: int, code: ReasonCode, props: object
        ) -> None:
            with self._lock:
                self.puback[mid] = code

        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        self.client.on_message = on_message
        self.client.on_subscribe = on_subscribe
        self.client.on_publish = on_publish
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 0 if clean_start else 3600
        self.client.connect(
            broker.host, broker.port, clean_start=clean_start, properties=properties
        )
        self.client.loop_start()
        assert self._connected.wait(10), f"{user}: no CONNACK"
        if self.connack is None or self.connack.is_failure:  # type: ignore[unreachable]
            self.close()
            raise ConnectionRefusedByBrokerError(self.connack)  # type: ignore[arg-type]

    def subscribe(self, topic: str) -> ReasonCode:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(10), f"no SUBACK for {topic}"
        return self.suback[0]

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                if info.mid in self.puback:
                    return self.puback[info.mid]
            time.sleep(0.01)
        raise TimeoutError(f"no PUBACK for {topic}")

    def messages(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
