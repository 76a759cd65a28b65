"""Certificates for the lab's SMTP servers: a per-lab CA, and self-signed throwaways.

The MX gets a self-signed certificate made in memory (a direct-mode sender only
encrypts opportunistically).  The smarthost gets one signed by a CA made for each lab,
because relay mode verifies the smarthost before it hands over the SASL password: the
jira host trusts that CA (jirahost.trust_ca) the way a Debian host trusts a public one.
Keys touch disk only as 0600 files in the lab's 0700 state directory, or for an
instant in a private temp dir while `ssl` loads them.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _server_cert(hostname: str, key: Key, issuer: x509.Name, signer: Key, days: int = 2,
                 addresses: Sequence[str] = (), also: Sequence[str] = ()) -> x509.Certificate:
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in (hostname, *also)]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    return (
        x509.CertificateBuilder()
        .subject_name(_name(hostname))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: Path, key_path: Path) -> tuple[Path, Path]:
        """Certificate world-readable (it is public), key 0600."""
        cert_path.write_bytes(self.cert_pem)
        write_private(key_path, self.key_pem)
        return cert_path, key_path


def write_private(path: Path, data: bytes) -> Path:
    """A file only its owner can read, created so (never readable for an instant)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


def self_signed(hostname: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _server_cert(hostname, key, _name(hostname), key)
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class LabCA:
    """A CA that exists for one lab only; `issue` signs server certificates for a DNS name."""

    key: Key
    cert: x509.Certificate

    @classmethod
    def create(cls, label: str) -> LabCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(f"jira-mailhost lab CA {label}")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> LabCA:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: not the lab CA's EC key")
        return cls(key, x509.load_pem_x509_certificate(cert_path.read_bytes()))

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def save(self, cert_path: Path, key_path: Path) -> None:
        Issued(self.cert_pem, _key_pem(self.key)).write(cert_path, key_path)

    def issue(self, hostname: str, addresses: Sequence[str] = (), also: Sequence[str] = ()) -> Issued:
        """A server certificate for hostname (and these IP addresses: a client that connects by address; and
        the other DNS names in `also`)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _server_cert(hostname, key, self.cert.subject, self.key, addresses=addresses, also=also)
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate (DER), AB:CD:… as Postfix's smtp_tls_fingerprint_cert_match takes it."""
    digest = hashlib.sha256(x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER))
    return ":".join(f"{b:02X}" for b in digest.digest())


def tlsa_3_1_1(cert_pem: bytes) -> str:
    """The TLSA data a DANE MX publishes for this certificate: DANE-EE (3), its public key (1), SHA-256 (1)."""
    spki = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"3 1 1 {hashlib.sha256(spki).hexdigest()}"


def context_from_files(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


def server_context(hostname: str) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate (the MX)."""
    issued = self_signed(hostname)
    with tempfile.TemporaryDirectory(prefix="jm-tls-") as tmp:
        paths = issued.write(Path(tmp) / "cert.pem", Path(tmp) / "key.pem")
        return context_from_files(*paths)
