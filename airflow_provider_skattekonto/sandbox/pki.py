"""A throwaway PKI for the local sandbox: a CA, a server certificate and Expisoft-like client identities.

Layout of ``directory`` (created once by :func:`ensure_pki`, reused while still valid)::

    ca.pem, ca-key.pem                     the sandbox CA (clients verify the server with ca.pem)
    foreign-ca.pem, foreign-ca-key.pem     a CA the sandbox does NOT trust (for the ``untrusted`` identity)
    server.pem, server-key.pem             server certificate for localhost / 127.0.0.1 / ::1
    <label>/identity.p12                   PKCS#12 bundle: key, certificate and its CA (password-protected)
    <label>/identity.json                  organisation number, name and the random p12 password (mode 0600)
    <label>/cert.pem, <label>/key.pem      the same certificate and an unencrypted PEM key (mode 0600)

Client subjects look like Expisoft's: ``C=SE, O=<name>, CN=<name>, serialNumber=16<orgnr>``.
Every file is written to a temporary name and moved into place with :func:`os.replace`; a lock file
serialises concurrent :func:`ensure_pki` calls of several processes on the same directory.
Nothing here is secret outside the sandbox: the keys are generated per directory and never leave it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_COMMON_NAME",
    "DEFAULT_IDENTITIES",
    "FOREIGN_CA_COMMON_NAME",
    "Identity",
    "SandboxPki",
    "ensure_pki",
    "issue_identity",
]

CA_COMMON_NAME = "Skattekonto Sandbox CA"
FOREIGN_CA_COMMON_NAME = "Foreign Untrusted Test CA"

# label -> (organisation number, organisation name, kind). Kinds: "skol" (representative with the SKOL
# role), "no_skol" (valid certificate, organisation without the role), "expired", "untrusted".
DEFAULT_IDENTITIES: dict[str, tuple[str, str, str]] = {
    "orderer": ("5560000167", "Exempelbyrån Redovisning AB", "skol"),
    "orderer2": ("5567000012", "Andra Byrån Ekonomi AB", "skol"),
    "no_skol": ("5569000028", "Utan Ombudsroll AB", "no_skol"),
    "expired": ("5590000039", "Utgånget Certifikat AB", "expired"),
    "untrusted": ("5591000046", "Okänd Utfärdare AB", "untrusted"),
}

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
FOREIGN_CA_FILE = "foreign-ca.pem"
FOREIGN_CA_KEY_FILE = "foreign-ca-key.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"
P12_FILE = "identity.p12"
META_FILE = "identity.json"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
_LOCK_FILE = ".pki.lock"

_CA_DAYS = 3650
_SERVER_DAYS = 825
_KEY_SIZE = 2048
# Certificates start a day in the past so small clock differences never make them "not yet valid".
_BACKDATE = dt.timedelta(days=1)
# Reuse a stored certificate only while it has at least this long left (clients warn below 30 days).
_MIN_REMAINING = dt.timedelta(days=45)


@dataclass(frozen=True)
class Identity:
    """One organisation's client certificate, as files (PKCS#12 and PEM)."""

    label: str
    organisation_number: str
    name: str
    p12_path: Path
    p12_password: str = field(repr=False)
    cert_pem_path: Path
    key_pem_path: Path
    not_valid_after: dt.datetime


@dataclass(frozen=True)
class SandboxPki:
    """The sandbox CA, server certificate and client identities in ``directory``."""

    directory: Path
    ca_cert_path: Path
    server_cert_path: Path
    server_key_path: Path
    identities: dict[str, Identity]

    @property
    def ca_key_path(self) -> Path:
        """The sandbox CA's private key (unencrypted, mode 0600)."""
        return self.directory / CA_KEY_FILE

    @property
    def foreign_ca_cert_path(self) -> Path:
        """The CA of the ``untrusted`` identity, which the sandbox does not trust."""
        return self.directory / FOREIGN_CA_FILE

    def identity(self, label: str) -> Identity:
        """The identity ``label``; ``KeyError`` naming the known labels otherwise."""
        try:
            return self.identities[label]
        except KeyError:
            known = ", ".join(sorted(self.identities)) or "(none)"
            raise KeyError(f"No sandbox identity {label!r}; known identities: {known}") from None


# -- files ---------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file beside ``path`` (with ``mode`` from the start), then replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``directory`` (POSIX ``flock``; no-op elsewhere)."""
    directory.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":  # pragma: no cover - the sandbox is used on POSIX systems
        yield
        return
    import fcntl

    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _load_key(path: Path) -> rsa.RSAPrivateKey | None:
    """The PEM key this module wrote to ``path``, or None when it is missing or unreadable.

    OpenSSL's RSA consistency check is skipped: it costs more than the rest of a sandbox start, these keys are
    the sandbox's own, and :func:`ensure_pki` replaces a key that does not match its certificate (:func:`_matches`).
    """
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None, unsafe_skip_rsa_key_validation=True)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, rsa.RSAPrivateKey) else None


def _matches(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _fresh(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - now >= _MIN_REMAINING


# -- certificates --------------------------------------------------------------------------------


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)


def _ca_certificate(key: rsa.RSAPrivateKey, common_name: str, now: dt.datetime) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Skattekonto Sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    *,
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    usage: x509.ObjectIdentifier,
    san: x509.SubjectAlternativeName | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _ensure_ca(directory: Path, cert_file: str, key_file: str, common_name: str, now: dt.datetime) -> bool:
    """Make sure a valid CA is in ``directory``; True when it was (re)created."""
    cert = _load_cert(directory / cert_file)
    key = _load_key(directory / key_file)
    if cert is not None and key is not None and _matches(cert, key) and _fresh(cert, now):
        return False
    key = _new_key()
    cert = _ca_certificate(key, common_name, now)
    _write_atomic(directory / key_file, _key_pem(key), 0o600)
    _write_atomic(directory / cert_file, _cert_pem(cert))
    return True


def _load_ca(directory: Path, cert_file: str, key_file: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert = _load_cert(directory / cert_file)
    key = _load_key(directory / key_file)
    if cert is None or key is None:
        raise FileNotFoundError(
            f"The sandbox CA in {directory} ({cert_file}, {key_file}) is missing or unreadable; "
            "call ensure_pki(directory) first"
        )
    return cert, key


def _ensure_server(directory: Path, ca_cert: x509.Certificate, now: dt.datetime, force: bool) -> None:
    cert = _load_cert(directory / SERVER_CERT_FILE)
    key = _load_key(directory / SERVER_KEY_FILE)
    if (
        not force
        and cert is not None
        and key is not None
        and _matches(cert, key)
        and _fresh(cert, now)
        and _issued_by(cert, ca_cert)
    ):
        return
    _, ca_key = _load_ca(directory, CA_FILE, CA_KEY_FILE)
    key = _new_key()
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Skattekonto Sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]
    )
    cert = _leaf_certificate(
        subject=subject,
        key=key,
        ca_cert=ca_cert,
        ca_key=ca_key,
        not_before=now - _BACKDATE,
        not_after=now + dt.timedelta(days=_SERVER_DAYS),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=san,
    )
    _write_atomic(directory / SERVER_KEY_FILE, _key_pem(key), 0o600)
    _write_atomic(directory / SERVER_CERT_FILE, _cert_pem(cert))


def _client_subject(name: str, serial_number: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number),
        ]
    )


def _identity(
    folder: Path, label: str, organisation_number: str, name: str, password: str, cert: x509.Certificate
) -> Identity:
    return Identity(
        label=label,
        organisation_number=organisation_number,
        name=name,
        p12_path=folder / P12_FILE,
        p12_password=password,
        cert_pem_path=folder / CERT_FILE,
        key_pem_path=folder / KEY_FILE,
        not_valid_after=cert.not_valid_after_utc,
    )


def _identity_from_disk(directory: Path, label: str) -> tuple[Identity, x509.Certificate] | None:
    """The stored identity ``label`` with its certificate, or None when files are missing or broken."""
    folder = directory / label
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        organisation_number = str(meta["organisation_number"])
        name = str(meta["name"])
        password = str(meta["p12_password"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    cert = _load_cert(folder / CERT_FILE)
    key = _load_key(folder / KEY_FILE)
    if cert is None or key is None or not _matches(cert, key) or not (folder / P12_FILE).is_file():
        return None
    return _identity(folder, label, organisation_number, name, password, cert), cert


def _write_identity(
    directory: Path,
    label: str,
    organisation_number: str,
    name: str,
    *,
    valid_days: int,
    expired: bool,
    foreign_ca: bool,
    serial_number: str | None,
    now: dt.datetime,
) -> Identity:
    if foreign_ca:
        ca_cert, ca_key = _load_ca(directory, FOREIGN_CA_FILE, FOREIGN_CA_KEY_FILE)
    else:
        ca_cert, ca_key = _load_ca(directory, CA_FILE, CA_KEY_FILE)
    if expired:
        not_after = now - dt.timedelta(days=1)
        not_before = not_after - dt.timedelta(days=max(valid_days, 1))
    else:
        not_before = now - _BACKDATE
        not_after = now + dt.timedelta(days=valid_days)
    key = _new_key()
    serial = serial_number if serial_number is not None else "16" + organisation_number
    cert = _leaf_certificate(
        subject=_client_subject(name, serial),
        key=key,
        ca_cert=ca_cert,
        ca_key=ca_key,
        not_before=not_before,
        not_after=not_after,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    password = secrets.token_urlsafe(18)
    p12 = pkcs12.serialize_key_and_certificates(
        name=label.encode("utf-8"),
        key=key,
        cert=cert,
        cas=[ca_cert],
        encryption_algorithm=serialization.BestAvailableEncryption(password.encode("utf-8")),
    )
    folder = directory / label
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"label": label, "organisation_number": organisation_number, "name": name, "p12_password": password}
    # The PEM files first, the p12 + its password last: a reader that sees the JSON sees a matching p12.
    _write_atomic(folder / KEY_FILE, _key_pem(key), 0o600)
    _write_atomic(folder / CERT_FILE, _cert_pem(cert))
    _write_atomic(folder / P12_FILE, p12, 0o600)
    _write_atomic(folder / META_FILE, json.dumps(meta, ensure_ascii=False, indent=2).encode("utf-8"), 0o600)
    return _identity(folder, label, organisation_number, name, password, cert)


def _default_identity_ok(
    found: tuple[Identity, x509.Certificate] | None,
    organisation_number: str,
    name: str,
    kind: str,
    ca_cert: x509.Certificate,
    foreign_cert: x509.Certificate,
    now: dt.datetime,
) -> bool:
    if found is None:
        return False
    identity, cert = found
    if identity.organisation_number != organisation_number or identity.name != name:
        return False
    if not _issued_by(cert, foreign_cert if kind == "untrusted" else ca_cert):
        return False
    if kind == "expired":
        return cert.not_valid_after_utc < now
    return _fresh(cert, now)


# -- public API ----------------------------------------------------------------------------------


def ensure_pki(directory: Path) -> SandboxPki:
    """The sandbox PKI in ``directory``: created on first use, reused while its files are still valid.

    Idempotent and safe when several processes call it at once (a lock file serialises them and every
    file is replaced atomically). Whatever is missing, broken, about to expire or signed by a CA that
    is no longer the current one is regenerated; the rest is kept.
    """
    directory = Path(directory)
    with _locked(directory):
        now = _now()
        ca_renewed = _ensure_ca(directory, CA_FILE, CA_KEY_FILE, CA_COMMON_NAME, now)
        foreign_renewed = _ensure_ca(directory, FOREIGN_CA_FILE, FOREIGN_CA_KEY_FILE, FOREIGN_CA_COMMON_NAME, now)
        ca_cert, _ = _load_ca(directory, CA_FILE, CA_KEY_FILE)
        foreign_cert, _ = _load_ca(directory, FOREIGN_CA_FILE, FOREIGN_CA_KEY_FILE)
        _ensure_server(directory, ca_cert, now, force=ca_renewed)
        identities: dict[str, Identity] = {}
        for label, (organisation_number, name, kind) in DEFAULT_IDENTITIES.items():
            renewed = foreign_renewed if kind == "untrusted" else ca_renewed
            found = None if renewed else _identity_from_disk(directory, label)
            if _default_identity_ok(found, organisation_number, name, kind, ca_cert, foreign_cert, now):
                assert found is not None
                identities[label] = found[0]
                continue
            identities[label] = _write_identity(
                directory,
                label,
                organisation_number,
                name,
                valid_days=365,
                expired=kind == "expired",
                foreign_ca=kind == "untrusted",
                serial_number=None,
                now=now,
            )
    return SandboxPki(
        directory=directory,
        ca_cert_path=directory / CA_FILE,
        server_cert_path=directory / SERVER_CERT_FILE,
        server_key_path=directory / SERVER_KEY_FILE,
        identities=identities,
    )


def issue_identity(
    pki: SandboxPki,
    label: str,
    organisation_number: str,
    *,
    name: str = "Testbolaget AB",
    valid_days: int = 365,
    expired: bool = False,
    foreign_ca: bool = False,
    serial_number: str | None = None,
) -> Identity:
    """Issue a new client identity in ``pki.directory/label`` (always fresh, replacing that folder's files).

    For tests that need special certificates. ``valid_days`` counts from now (or, with ``expired``, the
    certificate's whole lifetime, ending yesterday); ``foreign_ca`` signs it with the CA the sandbox does
    not trust; ``serial_number`` overrides the subject serialNumber (default ``"16" + organisation_number``).
    ``organisation_number`` is not validated, so broken certificates can be made on purpose. The new
    identity is returned; ``pki.identities`` is left unchanged.
    """
    if label in DEFAULT_IDENTITIES:
        raise ValueError(
            f"{label!r} is a default sandbox identity; pick another label for a special certificate "
            f"(defaults: {', '.join(DEFAULT_IDENTITIES)})"
        )
    if "/" in label or "\\" in label or label in {"", ".", ".."}:
        raise ValueError(f"Identity label {label!r} must be a plain folder name")
    with _locked(pki.directory):
        return _write_identity(
            pki.directory,
            label,
            organisation_number,
            name,
            valid_days=valid_days,
            expired=expired,
            foreign_ca=foreign_ca,
            serial_number=serial_number,
            now=_now(),
        )
