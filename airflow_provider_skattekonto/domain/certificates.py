"""The organisation certificate: loading (PKCS#12 or PEM), its organisation number, expiry, TLS use.

Pure: no Airflow import. Expisoft delivers organisation certificates as PKCS#12 (``.p12``) with a PIN;
the subject carries ``serialNumber=16`` + the 10-digit organisation number (sometimes without ``16``).
Some bundles only parse leniently (BER); those fall back to the ``openssl`` command line, with the
password passed through the child's environment, never its arguments. The private key never touches
disk in clear: :func:`load_client_certificate_into` writes it encrypted with a one-time password.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from airflow_provider_skattekonto.domain.identifiers import InvalidIdentifierError, normalize_organisation_number
from airflow_provider_skattekonto.exceptions import CertificateError

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "LoadedCertificate",
    "load_client_certificate_into",
    "load_pem",
    "load_pkcs12",
    "organisation_number_from_certificate",
    "validate_for_orderer",
]

EXPIRY_WARNING_DAYS = 30


@dataclass(frozen=True)
class LoadedCertificate:
    """A client certificate with its private key. The key never shows in ``repr``."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKeyTypes = field(repr=False)
    source: str

    @property
    def organisation_number(self) -> str | None:
        """The 10-digit organisation number from the subject's serialNumber, if present and well-formed."""
        return organisation_number_from_certificate(self.certificate)

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def not_valid_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def not_valid_before(self) -> dt.datetime:
        return self.certificate.not_valid_before_utc

    def days_left(self, now: dt.datetime) -> float:
        """Days until the certificate expires (negative once expired)."""
        return (self.not_valid_after - now).total_seconds() / 86400


def _serial_number(cert: x509.Certificate) -> str | None:
    attributes = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(attributes[0].value).strip() if attributes else None


def organisation_number_from_certificate(cert: x509.Certificate) -> str | None:
    """The 10-digit organisation number in the subject serialNumber (``16`` prefix optional), or None."""
    serial = _serial_number(cert)
    if not serial:
        return None
    try:
        return normalize_organisation_number(serial)
    except InvalidIdentifierError:
        return None


def load_pkcs12(data: bytes, password: str | None, *, source: str) -> LoadedCertificate:
    """Load a PKCS#12 bundle; fall back to ``openssl`` for bundles only lenient parsers accept."""
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password.encode() if password else None)
    except ValueError:
        pem, diagnosis = _openssl_pkcs12_to_pem(data, password)
        if pem is None:
            raise CertificateError(f"{diagnosis} ({source})") from None
        return load_pem(pem, pem, None, source=source)
    if key is None or cert is None:
        raise CertificateError(f"{source} holds no {'private key' if key is None else 'certificate'}")
    return LoadedCertificate(cert, tuple(extra or ()), key, source)


_WRONG_PIN = "Wrong certificate password (PIN)"
_NOT_P12 = (
    "Not a PKCS#12 (.p12) file this provider can read (also tried openssl leniently); check that it is the "
    "Expisoft .p12 file, or export it as PEM and set certificate_pem_path + private_key_pem_path"
)


def _openssl_pkcs12_to_pem(data: bytes, password: str | None) -> tuple[bytes | None, str]:
    """(PEM key + certificates in memory, '') from a leniently parsed bundle, else (None, diagnosis)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None, f"{_WRONG_PIN}, or not a PKCS#12 file"
    env = {"PATH": os.environ.get("PATH", ""), "SKATTEKONTO_P12_PIN": password or ""}
    diagnosis = _NOT_P12
    for legacy in ([], ["-legacy"]):
        try:
            result = subprocess.run(
                [openssl, "pkcs12", *legacy, "-nodes", "-passin", "env:SKATTEKONTO_P12_PIN"],
                input=data,
                capture_output=True,
                env=env,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None, diagnosis
        if result.returncode == 0 and b"PRIVATE KEY" in result.stdout:
            return result.stdout, ""
        if b"mac verify" in result.stderr.lower() or b"invalid password" in result.stderr.lower():
            diagnosis = _WRONG_PIN
    return None, diagnosis


def load_pem(cert_pem: bytes, key_pem: bytes, password: str | None, *, source: str) -> LoadedCertificate:
    """Load a PEM certificate (first block; further blocks are the chain) and its PEM private key."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertificateError(f"{source}: no PEM certificate found") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password.encode() if password else None)
    except TypeError:
        raise CertificateError(f"{source}: the private key is encrypted; set certificate_password") from None
    except ValueError as exc:
        if "password" in str(exc).lower() or "decrypt" in str(exc).lower():
            raise CertificateError(f"Wrong certificate password (PIN) for {source}") from None
        raise CertificateError(f"{source}: no readable PEM private key") from None
    return LoadedCertificate(certs[0], tuple(certs[1:]), key, source)


def validate_for_orderer(loaded: LoadedCertificate, expected_orderer: str | None, *, now: dt.datetime) -> list[str]:
    """Refuse a certificate that cannot be used for this orderer; return warnings (expiring soon)."""
    if now < loaded.not_valid_before:
        raise CertificateError(
            f"The organisation certificate ({loaded.source}) is not valid before {loaded.not_valid_before:%Y-%m-%d}"
        )
    if now >= loaded.not_valid_after:
        raise CertificateError(
            f"The organisation certificate ({loaded.source}, {loaded.subject}) expired on "
            f"{loaded.not_valid_after:%Y-%m-%d}; renew it at Expisoft and update the connection"
        )
    serial = _serial_number(loaded.certificate)
    if not serial:
        raise CertificateError(
            f"The certificate ({loaded.source}, {loaded.subject}) has no serialNumber with an organisation "
            "number: it is not an organisation certificate (Expisoft's carry serialNumber=16<orgnr>)"
        )
    try:
        number = normalize_organisation_number(serial)
    except InvalidIdentifierError as exc:
        raise CertificateError(
            f"The certificate's serialNumber {serial!r} is not an organisation number: {exc}"
        ) from None
    if expected_orderer is not None and number != normalize_organisation_number(expected_orderer):
        raise CertificateError(
            f"The certificate belongs to organisation {number}, but the connection expects orderer "
            f"{normalize_organisation_number(expected_orderer)}: the certificate must belong to the same "
            "organisation as the representative role (SKOL). Use that organisation's certificate, or fix "
            "orderer_organisation_number."
        )
    days = loaded.days_left(now)
    if days < EXPIRY_WARNING_DAYS:
        return [
            f"The organisation certificate of {number} expires in {days:.0f} days "
            f"({loaded.not_valid_after:%Y-%m-%d}); renew it at Expisoft before then"
        ]
    return []


def load_client_certificate_into(context: ssl.SSLContext, loaded: LoadedCertificate) -> None:
    """Present ``loaded`` on ``context``'s TLS connections.

    ``ssl`` only loads keys from files, so the key goes to a 0600 temporary file encrypted with a
    random one-time password, and the file is removed right after loading.
    """
    one_time = secrets.token_urlsafe(32).encode()
    key_pem = loaded.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_time),
    )
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (loaded.certificate, *loaded.chain))
    fd, path = tempfile.mkstemp(prefix="skattekonto-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(chain_pem + key_pem)
        context.load_cert_chain(path, password=one_time)
    except ssl.SSLError as exc:
        raise CertificateError(f"TLS could not use the certificate from {loaded.source}: {exc.reason}") from None
    finally:
        os.unlink(path)
