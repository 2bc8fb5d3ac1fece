"""`storegate certs`: the private CA and certificates for MQTT over TLS (port 8883).

One directory holds everything a deployment needs:

    ca.crt  ca.key                the project's own CA (ca.key never leaves this machine)
    broker.crt  broker.key        Mosquitto's server certificate, SANs as given
    storegate-cloud.crt/.key      the cloud's client certificate (CN = its broker login)
    <store>.crt  <store>.key      one client certificate per store (CN = the store id)

Keys are written with mode 0600 (the directory 0700 when this creates it), certificates 0644.
Running it again is safe: an existing CA is kept (a new one only with `new_ca`, which
re-issues everything), and a certificate is re-issued only when it is missing, was signed
by another CA, has other names than asked for, or expires within `RENEW_BEFORE`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols.ids import is_identifier

CA_NAME = "ca"
BROKER_NAME = "broker"
CLOUD_NAME = "storegate-cloud"
CA_DAYS = 3650
LEAF_DAYS = 825  # the longest validity clients such as browsers and Apple's stacks accept
RENEW_BEFORE = dt.timedelta(days=30)
KEY_MODE = 0o600
CERT_MODE = 0o644

Key = ec.EllipticCurvePrivateKey


class CertsError(ValueError):
    """A request `storegate certs` cannot carry out; the message says why."""


@dataclass
class CertsReport:
    """What a run did, file by file (for the command's output and the tests)."""

    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)  # signed by a replaced CA, not re-issued


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically, with the final mode from the start (a key is never briefly readable)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.chmod(temporary, mode)  # the umask may have taken bits away
    os.replace(temporary, path)


def _write_key(path: Path, key: Key) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, KEY_MODE)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)


def _names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _issue(
    common_name: str,
    key: Key,
    issuer: tuple[x509.Certificate, Key] | None,
    *,
    days: int,
    server_names: Sequence[str] = (),
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:  # the CA itself
        builder = (
            builder.issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        return builder.sign(key, hashes.SHA256())
    ca_cert, ca_key = issuer
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        builder.issuer_name(ca_cert.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_names(server_names)), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def _load_pair(directory: Path, name: str) -> tuple[x509.Certificate, Key] | None:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    if not (cert_path.is_file() and key_path.is_file()):
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertsError(f"{key_path} is not an EC key made by `storegate certs`")
    return cert, key


def _still_good(
    existing: tuple[x509.Certificate, Key] | None,
    ca: x509.Certificate,
    server_names: Sequence[str],
) -> bool:
    if existing is None:
        return False
    cert, key = existing
    if cert.issuer != ca.subject or cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    if cert.public_key() != key.public_key():
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if server_names:
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        return set(sans) == set(_names(server_names))
    return True


def make_certs(
    directory: Path,
    *,
    broker_names: Sequence[str],
    stores: Sequence[str],
    clients: Sequence[str] = (),
    new_ca: bool = False,
    days: int = LEAF_DAYS,
) -> CertsReport:
    """Create or complete the certificate directory (see the module's docstring).

    `clients` are other broker logins that get a client certificate like a store's (a
    second ingestor replica, an operator's tool)."""
    if not broker_names:
        raise CertsError("the broker certificate needs at least one host name or IP address")
    for name in [*stores, *clients]:
        if not is_identifier(name) or name in (CA_NAME, BROKER_NAME, CLOUD_NAME):
            raise CertsError(f"{name!r} cannot name a client certificate")
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
    report = CertsReport()

    ca = None if new_ca else _load_pair(directory, CA_NAME)
    if ca is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (_issue("storegate CA", ca_key, None, days=CA_DAYS), ca_key)
        _write_key(directory / f"{CA_NAME}.key", ca_key)
        _write_cert(directory / f"{CA_NAME}.crt", ca[0])
        report.created.append(directory / f"{CA_NAME}.crt")
    else:
        report.kept.append(directory / f"{CA_NAME}.crt")

    wanted: list[tuple[str, Sequence[str]]] = [
        (BROKER_NAME, broker_names),
        (CLOUD_NAME, ()),
        *((name, ()) for name in dict.fromkeys([*stores, *clients])),
    ]
    for name, server_names in wanted:
        cert_path = directory / f"{name}.crt"
        if _still_good(_load_pair(directory, name), ca[0], server_names):
            report.kept.append(cert_path)
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        common_name = server_names[0] if server_names else name
        cert = _issue(common_name, key, ca, days=days, server_names=server_names)
        _write_key(directory / f"{name}.key", key)
        _write_cert(cert_path, cert)
        report.created.append(cert_path)
    issued = {directory / f"{name}.crt" for name, _ in wanted} | {directory / f"{CA_NAME}.crt"}
    for other in sorted(set(directory.glob("*.crt")) - issued):
        try:
            good = _still_good(_load_pair(directory, other.stem), ca[0], ())
        except (CertsError, ValueError):  # not a pair this command wrote
            good = False
        if not good:
            report.stale.append(other)
    return report
