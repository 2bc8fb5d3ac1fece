"""TLS with a CA and client certificates (mTLS) against a real Mosquitto.

Certificates are made for the test with the `openssl` command: a CA, a server certificate
for 127.0.0.1, and a client certificate for store-042.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.mqtt import MqttSettings, TlsSettings, connect, new_client
from tests.servers import free_port, mosquitto, require_binary


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _self_signed(d: Path, name: str, cn: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
             "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"))  # fmt: skip


def _signed_by_ca(d: Path, name: str, cn: str, extension: str) -> None:
    key, csr, pem, ext = (d / f"{name}.{suffix}" for suffix in ("key", "csr", "pem", "ext"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
             "-keyout", str(key), "-out", str(csr))  # fmt: skip
    ext.write_text(extension + "\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(d / "ca.pem"), "-CAkey",
             str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(pem),
             "-extfile", str(ext))  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_binary("openssl", hint="Debian package openssl")
    d = tmp_path_factory.mktemp("pki")
    _self_signed(d, "ca", "storegate test CA")
    _signed_by_ca(d, "server", "127.0.0.1", "subjectAltName=IP:127.0.0.1")
    _signed_by_ca(d, "client", "store-042", "extendedKeyUsage=clientAuth")
    _self_signed(d, "rogue", "rogue")  # a client certificate from a CA the broker does not trust
    for path in d.iterdir():
        path.chmod(0o644)
    return d


@pytest.fixture
def tls_port(tmp_path: Path, pki: Path) -> Iterator[int]:
    """A Mosquitto whose TLS listener requires a client certificate from the test CA."""
    port = free_port()
    broker = mosquitto(
        tmp_path,
        port=free_port(),  # the plain listener of the fixture stays on loopback, unused
        extra_config=(
            f"listener {port} 127.0.0.1\n"
            f"cafile {pki / 'ca.pem'}\n"
            f"certfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
            "require_certificate true\nuse_identity_as_username true\n"
        ),
    )
    broker.start()
    yield port
    broker.kill()


def _connack(settings: MqttSettings) -> str:
    client = new_client(settings, "tls-test", clean_start=True)
    done = threading.Event()
    result: list[str] = []

    def on_connect(
        client: object, userdata: object, flags: object, reason: object, *_: object
    ) -> None:
        result.append(str(reason))
        done.set()

    def on_disconnect(*_: object) -> None:
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        connect(client, settings, clean_start=True)
    except OSError as exc:  # the TLS handshake itself was refused
        return f"refused: {type(exc).__name__}"
    client.loop_start()
    try:
        done.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0] if result else "refused: no CONNACK"


def test_mutual_tls_connects_with_a_trusted_client_certificate(tls_port: int, pki: Path) -> None:
    tls = TlsSettings(
        ca_file=pki / "ca.pem", cert_file=pki / "client.pem", key_file=pki / "client.key"
    )
    port = tls_port
    assert _connack(MqttSettings(host="127.0.0.1", port=port, tls=tls)) == "Success"


def test_mutual_tls_refuses_an_untrusted_client_certificate(tls_port: int, pki: Path) -> None:
    tls = TlsSettings(
        ca_file=pki / "ca.pem", cert_file=pki / "rogue.pem", key_file=pki / "rogue.key"
    )
    port = tls_port
    assert _connack(MqttSettings(host="127.0.0.1", port=port, tls=tls)).startswith("refused")


def test_the_client_checks_the_broker_against_its_ca(tls_port: int, pki: Path) -> None:
    # trusting another CA than the broker's: the client must refuse the server certificate
    tls = TlsSettings(
        ca_file=pki / "rogue.pem", cert_file=pki / "client.pem", key_file=pki / "client.key"
    )
    port = tls_port
    assert _connack(MqttSettings(host="127.0.0.1", port=port, tls=tls)).startswith("refused")


async def test_the_ingest_consumer_reads_a_backlog_to_the_end_over_tls(
    tls_port: int, pki: Path
) -> None:
    # Over TLS the ingest client's read-ahead sits on top of the SSL object's own buffer
    # (whose bytes the selector cannot see either): a backlog is still read to its end.
    from protocols.topics import TOPIC_PREFIX
    from tests.cloud.recording import running_consumer, until_acked

    tls = {
        "ca_file": str(pki / "ca.pem"),
        "cert_file": str(pki / "client.pem"),
        "key_file": str(pki / "client.key"),
    }
    mqtt = {"host": "127.0.0.1", "port": tls_port, "protocol": "5", "tls": tls}
    async with running_consumer(mqtt, "tls-ingest", queue_size=5000):
        pass  # the persistent session now exists
    settings = MqttSettings(host="127.0.0.1", port=tls_port, tls=TlsSettings(**tls))
    publisher = new_client(settings, "tls-publisher", clean_start=True)
    connect(publisher, settings, clean_start=True)
    publisher.loop_start()
    payloads = [f"{i:06d}".encode() for i in range(2_000)]
    try:
        infos = [
            publisher.publish(f"{TOPIC_PREFIX}/store-042/pi-1/rfid/r1", p, qos=1) for p in payloads
        ]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    async with running_consumer(mqtt, "tls-ingest", queue_size=5000) as (applier, consumer):
        await until_acked(consumer, len(payloads), 20)
    assert [payload for _, payload, _ in applier.received] == payloads
