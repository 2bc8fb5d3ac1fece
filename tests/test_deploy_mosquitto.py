"""The shipped Mosquitto ACLs, enforced by a real Mosquitto with per-store passwords."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.conftest import REPO_ROOT
from tests.servers import MosquittoBroker, mosquitto, require_binary

ACL = REPO_ROOT / "deploy" / "mosquitto" / "acl"
USERS = {"store-1": "pw-one", "store-2": "pw-two", "storegate-cloud": "pw-cloud"}


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    passwd = require_binary("mosquitto_passwd", hint="Debian package mosquitto")
    password_file = tmp_path / "passwd"
    for index, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run([passwd, "-b", *create, str(password_file), user, password], check=True)
    broker = mosquitto(
        tmp_path,
        allow_anonymous=False,
        extra_config=f"password_file {password_file}\nacl_file {ACL}\n",
    )
    broker.start()
    yield broker
    broker.kill()


class Client:
    """A logged-in MQTT 5 client that records messages and the broker's answers."""

    def __init__(self, broker: MosquittoBroker, user: str, password: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.suback: list[ReasonCode] = []
        self.puback: dict[int, ReasonCode] = {}
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{user}-test", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(user, password)
        self.connack: ReasonCode | None = None

        def on_connect(
            client: object, userdata: object, flags: object, code: ReasonCode, props: object
        ) -> None:
            self.connack = code
            self._connected.set()

        self.client.on_connect = on_connect
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))

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

        self.client.on_subscribe = on_subscribe
        self.client.on_publish = on_publish
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._connected.wait(10), f"{user}: no CONNACK"
        if self.connack is None or self.connack.is_failure:  # type: ignore[unreachable]
            self.close()
            raise PermissionError(f"{user} could not connect: {self.connack}")

    def subscribe(self, topic: str) -> list[ReasonCode]:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(10)
        return self.suback

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                if info.mid in self.puback:
                    return self.puback[info.mid]
            time.sleep(0.01)
        raise TimeoutError(f"no PUBACK for {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_store_publishes_only_under_its_own_prefix(secured_broker: MosquittoBroker) -> None:
    cloud = Client(secured_broker, "storegate-cloud", USERS["storegate-cloud"])
    store = Client(secured_broker, "store-1", USERS["store-1"])
    try:
        assert not cloud.subscribe("storegate/v1/#")[0].is_failure
        own = store.publish("storegate/v1/store-1/pi-1/rfid/reader-1", b"own")
        forged = store.publish("storegate/v1/store-2/pi-1/rfid/reader-1", b"forged")
        command = store.publish("storegate/v1/store-1/pi-1/cmd/resync", b"self-command")
        assert not own.is_failure
        assert forged.is_failure
        assert forged.getName() == "Not authorized"
        assert command.is_failure
        assert _wait_for(
            lambda: ("storegate/v1/store-1/pi-1/rfid/reader-1", b"own") in cloud.received
        )
        time.sleep(0.3)
        assert [payload for _, payload in cloud.received] == [b"own"]
    finally:
        cloud.close()
        store.close()


def test_store_reads_only_its_own_commands(secured_broker: MosquittoBroker) -> None:
    cloud = Client(secured_broker, "storegate-cloud", USERS["storegate-cloud"])
    store = Client(secured_broker, "store-1", USERS["store-1"])
    try:
        assert not store.subscribe("storegate/v1/store-1/+/cmd/+")[0].is_failure
        # Mosquitto 2.0 grants a wildcard subscription and enforces read ACLs per message:
        # what matters is that nothing of store-2 is ever delivered to store-1.
        store.subscribe("storegate/v1/store-2/+/cmd/+")
        store.subscribe("storegate/v1/#")
        assert not cloud.publish("storegate/v1/store-1/pi-1/cmd/resync", b"for-1").is_failure
        assert not cloud.publish("storegate/v1/store-2/pi-1/cmd/resync", b"for-2").is_failure
        assert _wait_for(lambda: len(store.received) >= 1)
        time.sleep(0.3)
        # (overlapping subscriptions may deliver the same message twice: compare as a set)
        assert set(store.received) == {("storegate/v1/store-1/pi-1/cmd/resync", b"for-1")}
    finally:
        cloud.close()
        store.close()


def test_store_reads_only_its_own_commit_marks_and_cannot_forge_them(
    secured_broker: MosquittoBroker,
) -> None:
    cloud = Client(secured_broker, "storegate-cloud", USERS["storegate-cloud"])
    store = Client(secured_broker, "store-1", USERS["store-1"])
    try:
        # A forged mark would make the edge delete messages the cloud never committed.
        assert store.publish("storegate/v1/store-1/pi-1/committed", b"forged").is_failure
        assert not store.subscribe("storegate/v1/store-1/pi-1/committed")[0].is_failure
        store.subscribe("storegate/v1/store-2/pi-1/committed")
        assert not cloud.publish("storegate/v1/store-1/pi-1/committed", b"for-1").is_failure
        assert not cloud.publish("storegate/v1/store-2/pi-1/committed", b"for-2").is_failure
        assert _wait_for(lambda: len(store.received) >= 1)
        time.sleep(0.3)
        assert set(store.received) == {("storegate/v1/store-1/pi-1/committed", b"for-1")}
    finally:
        cloud.close()
        store.close()


def test_shopper_offers_are_cloud_only(secured_broker: MosquittoBroker) -> None:
    store = Client(secured_broker, "store-2", USERS["store-2"])
    cloud = Client(secured_broker, "storegate-cloud", USERS["storegate-cloud"])
    try:
        assert store.publish("storegate/v1/shopper/tok1/offers", b"spam").is_failure
        assert not cloud.publish("storegate/v1/shopper/tok1/offers", b"offer").is_failure
    finally:
        store.close()
        cloud.close()


def test_wrong_password_is_refused(secured_broker: MosquittoBroker) -> None:
    with pytest.raises(PermissionError, match="could not connect: Not authorized"):
        Client(secured_broker, "store-1", "wrong")
