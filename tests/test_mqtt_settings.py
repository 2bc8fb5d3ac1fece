"""Shared MQTT connection settings against a real Mosquitto that requires a password."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from protocols.mqtt import MqttSettings, TlsSettings, connect, new_client
from tests.servers import mosquitto, require_binary


def _connect(settings: MqttSettings) -> str:
    """Connect once and return the broker's reason code name."""
    client = new_client(settings, "settings-test", clean_start=True)
    done = threading.Event()
    result: list[str] = []

    def on_connect(
        client: object, userdata: object, flags: object, reason: object, *_: object
    ) -> None:
        result.append(str(reason))
        done.set()

    client.on_connect = on_connect
    connect(client, settings, clean_start=True)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK within 10 s"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_username_and_password(tmp_path: Path, protocol: str) -> None:
    passwd = require_binary("mosquitto_passwd", hint="Debian package mosquitto")
    password_file = tmp_path / "passwords"
    subprocess.run([passwd, "-b", "-c", str(password_file), "store-042", "s3cret"], check=True)
    broker = mosquitto(
        tmp_path, extra_config=f"password_file {password_file}\n", allow_anonymous=False
    )
    broker.start()
    try:
        base = {"host": broker.host, "port": broker.port, "protocol": protocol}
        good = MqttSettings(**base, username="store-042", password="s3cret")
        bad = MqttSettings(**base, username="store-042", password="wrong")
        assert _connect(good) == "Success"
        assert _connect(bad) in {"Not authorized", "Bad user name or password"}
    finally:
        broker.kill()


def test_describe_never_shows_the_password() -> None:
    settings = MqttSettings(username="store-042", password="s3cret")
    assert "s3cret" not in settings.describe()
    assert "s3cret" not in repr(settings)
    assert "store-042@" in settings.describe()


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cert_file and key_file go together"):
        TlsSettings(cert_file=tmp_path / "c.pem")
    with pytest.raises(ValidationError, match="does not exist"):
        TlsSettings(ca_file=tmp_path / "missing.pem")


def test_mqtt_sockets_disable_nagle(tmp_path: Path) -> None:
    import socket

    broker = mosquitto(tmp_path)
    broker.start()
    try:
        settings = MqttSettings(host=broker.host, port=broker.port)
        client = new_client(settings, "nodelay-test", clean_start=True)
        connect(client, settings, clean_start=True)
        sock = client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client.disconnect()
    finally:
        broker.kill()
