"""`storegate certs` and the shipped Mosquitto TLS listener, on a real Mosquitto.

The certificates are made by the command itself; the listener lines are those of
deploy/mosquitto/mosquitto.conf, moved only to a free loopback port and the test's folder.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from protocols.mqtt import MqttSettings, TlsSettings, connect, new_client
from tests.conftest import REPO_ROOT
from tests.servers import free_port, mosquitto

SHIPPED_CONF = REPO_ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
TLS_DIRECTIVES = ("cafile", "certfile", "keyfile", "require_certificate", "tls_version")
CERTS_IN_CONTAINER = "/mosquitto/certs/"


def storegate_certs(out: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "storegate", "certs", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki") / "certs"
    storegate_certs(out, "--store", "store-001", "--broker-host", "localhost",
                    "--broker-host", "127.0.0.1")  # fmt: skip
    return out


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another deployment's CA and a store certificate it signed."""
    out = tmp_path_factory.mktemp("foreign") / "certs"
    storegate_certs(out, "--store", "store-001")
    return out


def shipped_tls_listener(port: int, certs: Path) -> str:
    """The TLS listener of the shipped config, on `port` with the files in `certs`."""
    lines = [line.strip() for line in SHIPPED_CONF.read_text().splitlines()]
    listeners = [line for line in lines if line.startswith("listener ")]
    assert listeners == ["listener 8883"], "the shipped broker listens on TLS 8883 only"
    tls = [line for line in lines if line.split(" ", 1)[0] in TLS_DIRECTIVES]
    assert {line.split(" ", 1)[0] for line in tls} == set(TLS_DIRECTIVES)
    assert "require_certificate true" in tls
    moved = [line.replace(CERTS_IN_CONTAINER, f"{certs}/") for line in tls]
    return "\n".join([f"listener {port} 127.0.0.1", *moved]) + "\n"


@pytest.fixture(scope="module")
def tls_port(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[int]:
    port = free_port()
    workdir = tmp_path_factory.mktemp("broker")
    broker = mosquitto(
        workdir,
        port=free_port(),  # the fixture's own plain listener, on loopback, unused
        extra_config=shipped_tls_listener(port, certs),
    )
    broker.start()
    yield port
    broker.kill()


def connack(port: int, tls: TlsSettings) -> str:
    settings = MqttSettings(host="127.0.0.1", port=port, tls=tls)
    client = new_client(settings, "tls-deploy-test", clean_start=True)
    done = threading.Event()
    result: list[str] = []

    def on_connect(
        client: object, userdata: object, flags: object, reason: object, *_: object
    ) -> None:
        result.append(str(reason))
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_: done.set()
    try:
        connect(client, settings, clean_start=True)
    except OSError as exc:  # the handshake failed (either side refused the other)
        return f"refused: {type(exc).__name__}"
    client.loop_start()
    try:
        done.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0] if result else "refused: no CONNACK"


def test_a_store_with_the_projects_ca_and_its_certificate_connects(
    tls_port: int, certs: Path
) -> None:
    tls = TlsSettings(
        ca_file=certs / "ca.crt",
        cert_file=certs / "store-001.crt",
        key_file=certs / "store-001.key",
    )
    assert connack(tls_port, tls) == "Success"
    cloud = TlsSettings(
        ca_file=certs / "ca.crt",
        cert_file=certs / "storegate-cloud.crt",
        key_file=certs / "storegate-cloud.key",
    )
    assert connack(tls_port, cloud) == "Success"


def test_a_client_without_the_ca_refuses_the_broker(tls_port: int, certs: Path) -> None:
    # no CA file: the system's CAs, which never signed the project's broker certificate
    tls = TlsSettings(cert_file=certs / "store-001.crt", key_file=certs / "store-001.key")
    assert connack(tls_port, tls).startswith("refused")


def test_a_client_trusting_a_foreign_ca_refuses_the_broker(
    tls_port: int, certs: Path, foreign: Path
) -> None:
    tls = TlsSettings(
        ca_file=foreign / "ca.crt",
        cert_file=certs / "store-001.crt",
        key_file=certs / "store-001.key",
    )
    assert connack(tls_port, tls).startswith("refused")


def test_the_broker_refuses_a_certificate_from_a_foreign_ca_or_none(
    tls_port: int, certs: Path, foreign: Path
) -> None:
    rogue = TlsSettings(
        ca_file=certs / "ca.crt",
        cert_file=foreign / "store-001.crt",
        key_file=foreign / "store-001.key",
    )
    assert connack(tls_port, rogue).startswith("refused")
    assert connack(tls_port, TlsSettings(ca_file=certs / "ca.crt")).startswith("refused")


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}


def test_certs_have_private_keys_0600_names_and_sans_as_asked(certs: Path) -> None:
    modes = _modes(certs)
    names = {"ca", "broker", "storegate-cloud", "store-001"}
    assert set(modes) == {f"{n}.{ext}" for n in names for ext in ("crt", "key")}
    assert {n: m for n, m in modes.items() if n.endswith(".key")} == {
        f"{n}.key": 0o600 for n in names
    }
    assert {m for n, m in modes.items() if n.endswith(".crt")} == {0o644}
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    broker = x509.load_pem_x509_certificate((certs / "broker.crt").read_bytes())
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(name.value) for name in sans] == ["localhost", "127.0.0.1"]
    store = x509.load_pem_x509_certificate((certs / "store-001.crt").read_bytes())
    assert store.subject.rfc4514_string() == "CN=store-001"  # the store's broker login


def test_certs_runs_again_without_replacing_the_ca_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    storegate_certs(out, "--store", "store-001")
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    again = storegate_certs(out, "--store", "store-001", "--store", "store-002")
    second = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {n: b for n, b in second.items() if n in first} == first  # nothing re-issued
    assert set(second) - set(first) == {"store-002.crt", "store-002.key"}
    assert re.search(r"kept\s+\S+ca\.crt", again)
    # other broker names: only the broker's certificate is re-issued
    storegate_certs(out, "--store", "store-001", "--broker-host", "mqtt.example.com")
    renamed = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {n for n in second if renamed[n] != second[n]} == {"broker.crt", "broker.key"}
    broker = x509.load_pem_x509_certificate(renamed["broker.crt"])
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(name.value) for name in sans] == ["mqtt.example.com"]
    renewed = storegate_certs(out, "--store", "store-001", "--client", "ingest-2", "--new-ca")
    third = {p.name: p.read_bytes() for p in out.iterdir()}
    changed = {n for n in first if third[n] != first[n]}
    assert changed == set(first)  # a new CA: every certificate and key re-issued
    assert {"ingest-2.crt", "ingest-2.key"} <= set(third)
    # store-002 was not named again: still signed by the old CA, and said so
    assert third["store-002.crt"] == second["store-002.crt"]
    assert re.search(r"stale\s+\S+store-002\.crt", renewed)
    assert "stale" not in again
