"""The shipped broker identities, enforced by a real Mosquitto with the shipped config.

The broker runs `deploy/mosquitto/mosquitto.conf` (only its listener, data directory and the
plugin's path rewritten for this machine) with the dynamic-security file that `storegate
broker-logins` writes from `deploy/mosquitto/logins.yaml`; shopper logins are created the
way the cloud creates them, through the plugin's control topic.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from cloud.broker import policy
from cloud.broker.control import BrokerControl, BrokerControlError, provision_shopper
from cloud.broker.dynsec_file import LoginsError, NodeLogin, build_document, load_logins
from cloud.config import BrokerAdminSettings
from protocols.mqtt import MqttSettings
from tests.servers import MosquittoBroker
from tests.shipped_broker import (
    ADMIN,
    INGEST,
    LOGINS,
    Client,
    ConnectionRefusedByBrokerError,
    start_shipped_mosquitto,
    wait_for,
)
from tests.shipped_broker import PASSWORDS as SHIPPED_PASSWORDS

PASSWORDS = {**SHIPPED_PASSWORDS, "MQTT_STORE_001_PI_2_PASSWORD": "store-001-pi-2-password-01"}
NODE_A = "storegate-edge-store-001-pi-1"
NODE_A2 = "storegate-edge-store-001-pi-2"
NODE_B = "storegate-edge-store-002-pi-1"
SHOPPER_ID = "shopper-alice"
OTHER_SHOPPER_ID = "shopper-bob"
SHOPPER_PASSWORD = "shopper-password-0123456789"


def _broker_with_shoppers(workdir: Path) -> MosquittoBroker:
    logins = load_logins(LOGINS)
    # One more node in store A, to show nodes of one store are kept apart too.
    logins.nodes.append(
        NodeLogin(store="store-001", node="pi-2", password_env="MQTT_STORE_001_PI_2_PASSWORD")
    )
    broker = start_shipped_mosquitto(workdir, PASSWORDS, logins)
    control = BrokerControl(
        MqttSettings(host=broker.host, port=broker.port),
        BrokerAdminSettings(username=ADMIN, password=SecretStr(PASSWORDS["MQTT_ADMIN_PASSWORD"])),
    )
    for shopper in (SHOPPER_ID, OTHER_SHOPPER_ID):
        asyncio.run(provision_shopper(control, shopper, SHOPPER_PASSWORD + shopper))
    return broker


@pytest.fixture(scope="module")
def shipped_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    broker = _broker_with_shoppers(tmp_path_factory.mktemp("shipped-mosquitto"))
    yield broker
    broker.kill()


@pytest.fixture(scope="module")
def takeover_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    # Its own broker: the matrix's clients hold the same logins and would fight the victims.
    broker = _broker_with_shoppers(tmp_path_factory.mktemp("takeover-mosquitto"))
    yield broker
    broker.kill()


LOGIN_PASSWORDS = {
    ADMIN: PASSWORDS["MQTT_ADMIN_PASSWORD"],
    INGEST: PASSWORDS["MQTT_CLOUD_PASSWORD"],
    INGEST + policy.OFFERS_LISTENER_SUFFIX: PASSWORDS["MQTT_CLOUD_PASSWORD"],
    NODE_A: PASSWORDS["MQTT_STORE_001_PASSWORD"],
    NODE_A2: PASSWORDS["MQTT_STORE_001_PI_2_PASSWORD"],
    NODE_B: PASSWORDS["MQTT_STORE_002_PASSWORD"],
    policy.shopper_login(SHOPPER_ID): SHOPPER_PASSWORD + SHOPPER_ID,
    policy.shopper_login(OTHER_SHOPPER_ID): SHOPPER_PASSWORD + OTHER_SHOPPER_ID,
}


def login(broker: MosquittoBroker, user: str, **kwargs: object) -> Client:
    return Client(broker, user, LOGIN_PASSWORDS[user], **kwargs)  # type: ignore[arg-type]


# --- the file the broker starts from -------------------------------------------------------


def test_passwords_are_stored_hashed_and_short_ones_refused() -> None:
    document = build_document(load_logins(LOGINS), PASSWORDS)
    text = repr(document)
    assert not any(password in text for password in PASSWORDS.values())
    assert {c["clientid"] for c in document["clients"]} == {
        c["username"] for c in document["clients"]
    }
    with pytest.raises(LoginsError, match=r"MQTT_CLOUD_PASSWORD: .* >= 16 characters"):
        build_document(load_logins(LOGINS), {**PASSWORDS, "MQTT_CLOUD_PASSWORD": "0123456789"})
    with pytest.raises(LoginsError, match="MQTT_ADMIN_PASSWORD: still the example's change-me"):
        build_document(
            load_logins(LOGINS), {**PASSWORDS, "MQTT_ADMIN_PASSWORD": "change-me-admin-0123456"}
        )


def test_regenerating_keeps_the_shopper_logins_and_drops_removed_nodes() -> None:
    logins = load_logins(LOGINS)
    shopper = policy.shopper_login(SHOPPER_ID)
    running = build_document(logins, PASSWORDS)
    running["clients"].append({"username": shopper, "clientid": shopper, "roles": []})
    running["roles"].append({"rolename": shopper, "acls": policy.shopper_acls(SHOPPER_ID)})
    logins.nodes = [n for n in logins.nodes if n.store != "store-003"]
    again = build_document(logins, PASSWORDS, running)
    users = {c["username"] for c in again["clients"]}
    assert shopper in users
    assert "storegate-edge-store-003-pi-1" not in users
    assert shopper in {r["rolename"] for r in again["roles"]}


def test_the_cli_writes_the_file_privately_and_keeps_shopper_logins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from storegate.cli import app

    out = tmp_path / "dynamic-security.json"
    shopper = policy.shopper_login(SHOPPER_ID)
    out.write_text(
        json.dumps({"clients": [{"username": shopper}], "roles": [{"rolename": shopper}]})
    )
    for name, value in PASSWORDS.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["broker-logins", str(LOGINS), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o600
    written = json.loads(out.read_text())
    users = [c["username"] for c in written["clients"]]
    assert users.count(shopper) == 1
    assert "storegate-edge-store-002-pi-1" in users
    monkeypatch.setenv("MQTT_STORE_002_PASSWORD", "short")
    result = CliRunner().invoke(app, ["broker-logins", str(LOGINS), "--out", str(out)])
    assert result.exit_code == 2
    assert "MQTT_STORE_002_PASSWORD" in result.output
    assert json.loads(out.read_text()) == written  # a refused run leaves the file alone


def test_two_logins_with_one_client_id_are_refused() -> None:
    logins = load_logins(LOGINS).model_dump()
    # store "a-b" node "c" and store "a" node "b-c" would share storegate-edge-a-b-c.
    logins["nodes"] = [
        {"store": "a-b", "node": "c", "password_env": "X"},
        {"store": "a", "node": "b-c", "password_env": "Y"},
    ]
    with pytest.raises(ValueError, match="client ids used by two logins: storegate-edge-a-b-c"):
        type(load_logins(LOGINS)).model_validate(logins)


# --- one identity per session ---------------------------------------------------------------


@dataclass(frozen=True)
class Takeover:
    victim: str
    attacker: str
    queue_topic: str  # where the victim's persistent session queues QoS 1 messages
    publisher: str  # a login allowed to publish there


TAKEOVERS = [
    Takeover(INGEST, NODE_B, "storegate/v1/store-001/pi-1/rfid/reader-1", NODE_A),
    Takeover(
        INGEST, policy.shopper_login(SHOPPER_ID), "storegate/v1/store-001/pi-1/health", NODE_A
    ),
    Takeover(INGEST, INGEST + "-offers", "storegate/v1/store-001/pi-1/health", NODE_A),
    Takeover(NODE_A, NODE_B, "storegate/v1/store-001/pi-1/cmd/resync", INGEST),
    Takeover(NODE_A, NODE_A2, "storegate/v1/store-001/pi-1/committed", INGEST),
    Takeover(NODE_A, INGEST, "storegate/v1/store-001/pi-1/cmd/resync", INGEST),
]


@pytest.mark.parametrize("case", TAKEOVERS, ids=[f"{t.attacker}-as-{t.victim}" for t in TAKEOVERS])
def test_another_login_cannot_take_a_client_id_over(
    takeover_broker: MosquittoBroker, case: Takeover
) -> None:
    broker = takeover_broker
    victim = login(broker, case.victim, clean_start=False)
    try:
        assert not victim.subscribe(case.queue_topic).is_failure
        # While the victim is connected: a clean-start takeover is refused, the victim stays.
        with pytest.raises(ConnectionRefusedByBrokerError) as refused:
            login(broker, case.attacker, client_id=case.victim, clean_start=True)
        assert refused.value.code.getName() == "Not authorized"
        time.sleep(0.2)
        assert victim.disconnected is None
    finally:
        victim.close()
    # While it is away: its queued QoS 1 messages survive another takeover attempt.
    sender = login(broker, case.publisher)
    try:
        for n in range(5):
            assert not sender.publish(case.queue_topic, b"queued-%d" % n).is_failure
    finally:
        sender.close()
    with pytest.raises(ConnectionRefusedByBrokerError):
        login(broker, case.attacker, client_id=case.victim, clean_start=True)
    back = login(broker, case.victim, clean_start=False)
    try:
        expected = [(case.queue_topic, b"queued-%d" % n) for n in range(5)]
        assert wait_for(lambda: back.messages() == expected), back.messages()
    finally:
        back.close()


# --- the ACL matrix -----------------------------------------------------------------------

SHOPPER_TOPICS = policy.shopper_topics(SHOPPER_ID)
OTHER_SHOPPER_TOPICS = policy.shopper_topics(OTHER_SHOPPER_ID)
STORE_A = "storegate/v1/store-001/pi-1"
TOPIC_FAMILIES = {
    "status": f"{STORE_A}/status",
    "birth": f"{STORE_A}/birth",
    "death": f"{STORE_A}/death",
    "health": f"{STORE_A}/health",
    "rfid": f"{STORE_A}/rfid/reader-1",
    "locker": f"{STORE_A}/locker/bank-a",
    "ble": f"{STORE_A}/ble/scanner-1",
    "ack": f"{STORE_A}/ack",
    "cmd": f"{STORE_A}/cmd/open",
    "committed": f"{STORE_A}/committed",
    "own-offers": SHOPPER_TOPICS.offers,
    "own-orders": SHOPPER_TOPICS.orders,
    "other-offers": OTHER_SHOPPER_TOPICS.offers,
    "other-orders": OTHER_SHOPPER_TOPICS.orders,
    "all-stores": "storegate/v1/#",
    "shared": "$share/ingest/storegate/v1/+/+/rfid/+",
    "control": policy.CONTROL_TOPIC,
}
# Where a subscriber of the family listens, when that is not where it is sent.
SUBSCRIBE_TOPICS = {"control": f"{policy.CONTROL_TOPIC}/response"}
EDGE_STREAMS = {"status", "birth", "death", "health", "rfid", "locker", "ble", "ack"}
TO_EDGE = {"cmd", "committed"}
TO_SHOPPERS = {"own-offers", "own-orders", "other-offers", "other-orders"}
FILTERS = {"all-stores", "shared"}  # subscribe only: a filter is not a topic
# "own" is the shopper SHOPPER_ID and store-001/pi-1 (NODE_A). Everything not listed is denied.
ALLOWED: dict[str, dict[str, set[str]]] = {
    "cloud": {"publish": TO_EDGE | TO_SHOPPERS, "subscribe": set(TOPIC_FAMILIES) - {"control"}},
    "store-A-node": {"publish": EDGE_STREAMS, "subscribe": TO_EDGE},
    "store-A-other-node": {"publish": set(), "subscribe": set()},
    "store-B-node": {"publish": set(), "subscribe": set()},
    "shopper": {"publish": set(), "subscribe": {"own-offers", "own-orders"}},
    "cloud-admin": {"publish": {"control"}, "subscribe": {"control"}},
    "cloud-offers-listener": {"publish": set(), "subscribe": {"own-offers", "other-offers"}},
}
ROLE_LOGINS = {
    "cloud": INGEST,
    "store-A-node": NODE_A,
    "store-A-other-node": NODE_A2,
    "store-B-node": NODE_B,
    "shopper": policy.shopper_login(SHOPPER_ID),
    "cloud-admin": ADMIN,
    "cloud-offers-listener": INGEST + policy.OFFERS_LISTENER_SUFFIX,
}
MATRIX = [
    (role, action, family)
    for role in ROLE_LOGINS
    for action in ("publish", "subscribe")
    for family in TOPIC_FAMILIES
    if not (action == "publish" and family in FILTERS)
]


@pytest.fixture(scope="module")
def role_clients(shipped_broker: MosquittoBroker) -> Iterator[dict[str, Client]]:
    # Clean sessions with their pinned ids, held for the whole matrix.
    clients = {role: login(shipped_broker, user) for role, user in ROLE_LOGINS.items()}
    yield clients
    for client in clients.values():
        client.close()


@pytest.mark.parametrize(("role", "action", "family"), MATRIX)
def test_acl_matrix(
    shipped_broker: MosquittoBroker,
    role_clients: dict[str, Client],
    role: str,
    action: str,
    family: str,
) -> None:
    client = role_clients[role]
    topic = TOPIC_FAMILIES[family]
    allowed = family in ALLOWED[role][action]
    if action == "publish":
        code = client.publish(topic, b"matrix")
        assert code.is_failure is not allowed, f"{role} publish {topic}: {code}"
        if not allowed:
            assert code.getName() == "Not authorized"
        return
    topic = SUBSCRIBE_TOPICS.get(family, topic)
    code = client.subscribe(topic)
    assert code.is_failure is not allowed, f"{role} subscribe {topic}: {code}"
    if allowed and family == "control":
        # the plugin answers a command of the admin's on the response topic
        command = {"commands": [{"command": "listRoles", "correlationData": "matrix"}]}
        assert not client.publish(policy.CONTROL_TOPIC, json.dumps(command).encode()).is_failure
        assert wait_for(lambda: any(t == topic for t, _ in client.messages()))
        client.client.unsubscribe(topic)
    elif allowed:
        # Granted means delivered: the topic's legitimate sender publishes, the role gets it.
        sample = f"{STORE_A}/rfid/reader-9" if family in FILTERS else topic
        sender = role_clients["cloud" if family in TO_EDGE | TO_SHOPPERS else "store-A-node"]
        payload = f"{role}-{family}".encode()
        assert not sender.publish(sample, payload).is_failure
        assert wait_for(lambda: (sample, payload) in client.messages())
        client.client.unsubscribe(topic)
    else:
        assert code.getName() == "Not authorized"


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), (NODE_A, "wrong-password-0123456789"), ("nobody-at-all", "whatever-0123456789")],
    ids=["anonymous", "wrong-password", "unknown-user"],
)
def test_no_valid_login_no_connection(
    shipped_broker: MosquittoBroker, user: str | None, password: str | None
) -> None:
    # Refused at CONNECT, so every publish and subscribe of the matrix is denied for them.
    with pytest.raises(ConnectionRefusedByBrokerError) as refused:
        Client(shipped_broker, user, password, client_id="storegate-edge-store-009-pi-1")
    assert refused.value.code.getName() in {"Not authorized", "Bad user name or password"}


def test_a_shopper_reads_nothing_of_a_store_even_through_wildcards(
    shipped_broker: MosquittoBroker, role_clients: dict[str, Client]
) -> None:
    shopper = login(shipped_broker, policy.shopper_login(OTHER_SHOPPER_ID))
    try:
        for topic_filter in ("#", "storegate/#", "storegate/v1/+/+/cmd/+", "$SYS/#", "+/+/+/+"):
            assert shopper.subscribe(topic_filter).getName() == "Not authorized", topic_filter
        assert not role_clients["cloud"].publish(f"{STORE_A}/cmd/open", b"x").is_failure
        time.sleep(0.2)
        assert shopper.messages() == []
    finally:
        shopper.close()


# --- the real daemons on the shipped logins ---------------------------------------------


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = start_shipped_mosquitto(tmp_path, PASSWORDS)
    yield broker
    broker.kill()


async def test_the_edge_and_the_cloud_work_on_their_own_logins(
    fresh_broker: MosquittoBroker, tmp_path: Path
) -> None:
    """The edge daemon publishes under its node's role, the ingestor commits on its login,
    and the commit marks reach the edge (its outbox drains): every grant the real daemons
    need is in the policy."""
    from cloud.config import CloudSettings
    from cloud.runtime import CloudRuntime
    from edge.config import create_drivers, load_edge_settings
    from edge.runtime import EdgeRuntime
    from tests.edge.helpers import edge_config, sim_device

    cloud = CloudRuntime(
        CloudSettings.model_validate(
            {
                "mqtt": {
                    "host": fresh_broker.host,
                    "port": fresh_broker.port,
                    "username": INGEST,
                    "password": PASSWORDS["MQTT_CLOUD_PASSWORD"],
                },
                "ingest": {
                    "client_id": INGEST,
                    "spool_dir": str(tmp_path / "spool"),
                    "commit_interval_ms": 100,
                },
                "database_url": f"sqlite+aiosqlite:///{tmp_path}/state.db",
                "api": {"port": 0},
                "stores": [{"id": "store-001", "nodes": ["pi-1"]}],
            }
        )
    )
    path = edge_config(
        tmp_path,
        fresh_broker.port,
        [sim_device(rate_hz=50)],
        store="store-001",
        node="pi-1",
        mqtt={"username": NODE_A, "password": PASSWORDS["MQTT_STORE_001_PASSWORD"]},
    )
    settings = load_edge_settings(path)
    assert settings.client_id() == NODE_A
    edge = EdgeRuntime(
        settings, create_drivers(settings), version="9.9.9", config_path=path, handle_signals=False
    )
    await cloud.start()
    task = asyncio.create_task(edge.run())
    try:
        assert await asyncio.to_thread(cloud.consumer.connected.wait, 20), "cloud not connected"

        def drained() -> bool:
            positions = edge.outbox.stream_positions() if hasattr(edge, "outbox") else {}
            # Without commit marks the outbox keeps every message (depth = position); with
            # them only what the cloud has not confirmed yet stays, at 50 messages/s a few.
            return positions.get("rfid/reader-1", 0) >= 100 and edge.outbox.depth < 20

        for _ in range(300):
            if drained():
                break
            await asyncio.sleep(0.1)
        assert drained(), f"no commit marks reached the edge: depth {edge.outbox.depth}"
    finally:
        edge.stop()
        await asyncio.wait_for(task, 20)
        await cloud.stop()


def test_the_entrypoint_needs_the_logins_file_and_starts_the_broker_on_it(
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    from types import SimpleNamespace

    from tests.servers import free_port, wait_for_port
    from tests.shipped_broker import DEPLOY, shipped_config

    script = str(DEPLOY / "entrypoint.sh")
    logins = tmp_path / "dynamic-security.json"
    config = tmp_path / "mosquitto.conf"
    port = free_port()
    user = "user root\n" if os.geteuid() == 0 else ""
    config.write_text(shipped_config(port, tmp_path) + user)
    certs_src, certs = tmp_path / "certs-src", tmp_path / "certs"
    env = {
        "PATH": os.environ["PATH"] + ":/usr/sbin",
        "MOSQUITTO_DYNSEC_FILE": str(logins),
        "MOSQUITTO_CONFIG": str(config),
        "MOSQUITTO_CERTS_SRC": str(certs_src),
        "MOSQUITTO_CERTS": str(certs),
    }
    missing = subprocess.run(["sh", script], env=env, capture_output=True, text=True, timeout=10)
    assert missing.returncode == 1
    assert "run the mosquitto-logins service" in missing.stderr

    logins.write_text(json.dumps(build_document(load_logins(LOGINS), PASSWORDS)))
    logins.chmod(0o644)
    no_certs = subprocess.run(["sh", script], env=env, capture_output=True, text=True, timeout=10)
    assert no_certs.returncode == 1
    assert "missing deploy/certs/ca.crt: run 'storegate certs' first" in no_certs.stderr

    # The TLS lines are tested with real certificates in tests/test_deploy_tls.py; here the
    # listener is plain and the script only has to copy the files, key included, 0600.
    certs_src.mkdir()
    for name in ("ca.crt", "broker.crt", "broker.key"):
        (certs_src / name).write_text(f"{name}\n")
    broker = subprocess.Popen(["sh", script], env=env)
    try:
        wait_for_port(port)
        assert logins.stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in certs.iterdir()) == ["broker.crt", "broker.key", "ca.crt"]
        assert (certs / "broker.key").stat().st_mode & 0o777 == 0o600
        running = SimpleNamespace(host="127.0.0.1", port=port)
        login(running, INGEST).close()  # type: ignore[arg-type]  # the logins are in force
        with pytest.raises(ConnectionRefusedByBrokerError):
            login(running, NODE_B, client_id=INGEST)  # type: ignore[arg-type]
    finally:
        broker.terminate()
        broker.wait(10)


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        (ADMIN, "wrong-password-0123456789", "refused the admin login"),
        (NODE_B, PASSWORDS["MQTT_STORE_002_PASSWORD"], "subscribing to .* refused"),
        (ADMIN, PASSWORDS["MQTT_ADMIN_PASSWORD"], "Connection refused"),
    ],
    ids=["wrong-password", "not-an-admin", "broker-down"],
)
def test_the_control_client_says_why_it_could_not_change_a_login(
    takeover_broker: MosquittoBroker, username: str, password: str, reason: str
) -> None:
    # (on the takeover broker: the matrix's clients hold NODE_B's session on the other one)
    from tests.servers import free_port

    port = free_port() if reason == "Connection refused" else takeover_broker.port
    control = BrokerControl(
        MqttSettings(host=takeover_broker.host, port=port),
        BrokerAdminSettings(username=username, password=SecretStr(password), timeout_s=5),
    )
    with pytest.raises(BrokerControlError, match=reason):
        asyncio.run(provision_shopper(control, "shopper-carol", "carol-password-0123456789"))
    with pytest.raises(ConnectionRefusedByBrokerError):  # and no login was created
        Client(takeover_broker, policy.shopper_login("shopper-carol"), "carol-password-0123456789")


def test_shopper_logins_survive_a_restart_with_regenerated_logins(
    fresh_broker: MosquittoBroker,
) -> None:
    """The broker saves a shopper login the cloud created in its own file; the next
    `storegate broker-logins` (every compose start) rewrites the deploy-time logins from
    logins.yaml and keeps it."""
    from cloud.broker.dynsec_file import write_document

    control = BrokerControl(
        MqttSettings(host=fresh_broker.host, port=fresh_broker.port),
        BrokerAdminSettings(username=ADMIN, password=SecretStr(PASSWORDS["MQTT_ADMIN_PASSWORD"])),
    )
    asyncio.run(provision_shopper(control, SHOPPER_ID, "dave-password-0123456789"))
    fresh_broker.stop()
    rotated = {**PASSWORDS, "MQTT_CLOUD_PASSWORD": "rotated-cloud-password-0123"}
    write_document(LOGINS, fresh_broker.workdir / "dynamic-security.json", rotated)
    fresh_broker.start()
    shopper = Client(fresh_broker, policy.shopper_login(SHOPPER_ID), "dave-password-0123456789")
    try:
        assert not shopper.subscribe(policy.shopper_topics(SHOPPER_ID).offers).is_failure
    finally:
        shopper.close()
    # the regenerated logins are in force: the cloud's new password, not the old one
    Client(fresh_broker, INGEST, rotated["MQTT_CLOUD_PASSWORD"]).close()
    with pytest.raises(ConnectionRefusedByBrokerError):
        Client(fresh_broker, INGEST, PASSWORDS["MQTT_CLOUD_PASSWORD"])
