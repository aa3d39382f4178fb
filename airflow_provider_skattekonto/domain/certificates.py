"""Organisation certificates (Expisoft) for mutual TLS: load, check, and hand to an ``ssl.SSLContext``.

Pure: no Airflow import, no network I/O. Skatteverket wants an Expisoft organisation certificate,
delivered as PKCS#12 (``.p12``) with a PIN; its subject carries ``serialNumber=16`` + the 10-digit
organisation number (sometimes without the ``16``). Some bundles only parse leniently (BER); when
``cryptography`` cannot read one, the ``openssl`` command-line tool is tried, with the PIN passed
through the child's environment (never on its command line) and the PEM read from its stdout.

The private key never touches the disk in clear: :func:`load_client_certificate_into` writes it
encrypted with a random one-time password and removes the file right after loading it. Passwords
and key material never appear in messages or reprs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import secrets
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airflow_provider_skattekonto.domain.identifiers import InvalidIdentifierError, normalize_organisation_number
from airflow_provider_skattekonto.exceptions import CertificateError, ConfigurationError

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "LoadedCertificate",
    "load_client_certificate_into",
    "load_pem",
    "load_pkcs12",
    "organisation_number_from_certificate",
    "validate_for_orderer",
]

# Warn when the certificate has fewer days left than this.
EXPIRY_WARNING_DAYS = 30

_OPENSSL_TIMEOUT_SECONDS = 60
_PIN_ENV_VAR = "SKATTEKONTO_P12_PIN"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"ENCRYPTED PRIVATE KEY"}
_SEPARATORS = re.compile(r"[\s-]")
_NAME_OVERRIDES = {NameOID.SERIAL_NUMBER: "serialNumber"}


def _subject_text(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string(_NAME_OVERRIDES)


def _serial_number_values(cert: x509.Certificate) -> list[str]:
    return [str(attr.value).strip() for attr in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)]


def organisation_number_from_certificate(cert: x509.Certificate) -> str | None:
    """The 10 digits of the subject's ``serialNumber`` (``16`` + orgnr, or the bare orgnr); None if absent.

    Only the form is checked here (10 digits, or 12 starting with ``16``); :func:`validate_for_orderer`
    checks the group digits and the Luhn check digit.
    """
    for value in _serial_number_values(cert):
        digits = _SEPARATORS.sub("", value)
        if not digits.isdigit():
            continue
        if len(digits) == 12 and digits.startswith("16"):
            return digits[2:]
        if len(digits) == 10:
            return digits
    return None


@dataclass(frozen=True)
class LoadedCertificate:
    """A client certificate with its private key and the bundle's other certificates, held in memory."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKeyTypes = field(repr=False)
    source: str

    @property
    def organisation_number(self) -> str | None:
        """The 10-digit organisation number from the subject serialNumber (None if absent)."""
        return organisation_number_from_certificate(self.certificate)

    @property
    def subject(self) -> str:
        """The subject as an RFC 4514 string (``serialNumber=165560000167,CN=...,O=...,C=SE``)."""
        return _subject_text(self.certificate)

    @property
    def not_valid_after(self) -> dt.datetime:
        """End of validity, timezone-aware UTC."""
        return self.certificate.not_valid_after_utc

    @property
    def not_valid_before(self) -> dt.datetime:
        """Start of validity, timezone-aware UTC."""
        return self.certificate.not_valid_before_utc

    def days_left(self, now: dt.datetime) -> float:
        """Days (fractional, negative once expired) from ``now`` (timezone-aware) to the end of validity."""
        return (self.not_valid_after - _aware(now, "now")).total_seconds() / 86400


def _aware(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value


# -- loading -------------------------------------------------------------------------------------


def _pem_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(label, whole block) of every PEM block in ``data``, in order."""
    return [(match.group(1), match.group(0)) for match in _PEM_BLOCK.finditer(data)]


def _public_der(key_or_cert: PrivateKeyTypes | x509.Certificate) -> bytes:
    """The DER SubjectPublicKeyInfo of a private key's or a certificate's public key."""
    public = key_or_cert.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _assemble(
    key: PrivateKeyTypes | None, certs: list[x509.Certificate], source: str, *, what: str
) -> LoadedCertificate:
    """Pick the certificate matching ``key`` as the leaf; the others become the chain."""
    if key is None:
        raise CertificateError(
            f"No private key in the {what} from {source}; export the organisation certificate "
            "together with its private key (a .p12 from Expisoft contains both)"
        )
    if not certs:
        raise CertificateError(
            f"No certificate in the {what} from {source}; export the organisation certificate together with its key"
        )
    try:
        key_der = _public_der(key)
    except (AttributeError, ValueError, TypeError) as exc:
        raise CertificateError(
            f"The private key from {source} is of a type that cannot be used for TLS ({type(key).__name__})"
        ) from exc
    for index, cert in enumerate(certs):
        if _public_der(cert) == key_der:
            chain = tuple(other for position, other in enumerate(certs) if position != index)
            return LoadedCertificate(certificate=cert, chain=chain, private_key=key, source=source)
    subjects = "; ".join(_subject_text(cert) for cert in certs)
    raise CertificateError(
        f"The private key from {source} belongs to none of its certificates ({subjects}); "
        "use the key that was issued with the organisation certificate"
    )


def load_pem(cert_pem: bytes, key_pem: bytes, password: str | None, *, source: str) -> LoadedCertificate:
    """Load a certificate (PEM, optionally followed by its chain) and its private key (PEM, maybe encrypted).

    The certificate matching the key is the client certificate; any other certificates in ``cert_pem``
    become the chain. ``key_pem`` may be a combined file that also holds certificates.
    """
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise CertificateError(
            f"No readable PEM certificate in {source}: expected '-----BEGIN CERTIFICATE-----' blocks ({exc})"
        ) from exc
    key_blocks = [block for label, block in _pem_blocks(key_pem) if label in _KEY_LABELS]
    if not key_blocks:
        raise CertificateError(
            f"No PEM private key in {source}: expected a '-----BEGIN PRIVATE KEY-----' "
            "(or ENCRYPTED/RSA/EC PRIVATE KEY) block"
        )
    secret = password.encode("utf-8") if password else None
    try:
        try:
            key = serialization.load_pem_private_key(key_blocks[0], password=secret)
        except TypeError as exc:
            if secret is None:
                raise CertificateError(
                    f"The private key in {source} is encrypted but no password is set: set the connection's extra "
                    "'certificate_password' to the key's password"
                ) from exc
            # A password was configured but the key is not encrypted: use it as it is.
            key = serialization.load_pem_private_key(key_blocks[0], password=None)
    except ValueError as exc:
        if secret is not None:
            raise CertificateError(f"Wrong private key password for {source}; check the key password") from None
        raise CertificateError(f"The private key in {source} cannot be read ({exc})") from exc
    return _assemble(key, list(certs), source, what="PEM files")


def _der_header_ok(data: bytes) -> bool:
    """True when ``data`` starts like a PKCS#12 PFX: SEQUENCE { INTEGER 3, ... } (DER or BER)."""
    if len(data) < 5 or data[0] != 0x30:
        return False
    first = data[1]
    if first <= 0x80:  # short form, or 0x80: BER indefinite length
        position = 2
    else:
        width = first & 0x7F
        if width > 4:
            return False
        position = 2 + width
    return data[position : position + 3] == b"\x02\x01\x03"


def _not_pkcs12(source: str, data: bytes) -> CertificateError:
    hint = ""
    if data.lstrip().startswith(b"-----BEGIN"):
        hint = " It looks like PEM: configure the certificate and key as PEM files instead."
    return CertificateError(
        f"Not a PKCS#12 (.p12/.pfx) bundle: {source} cannot be parsed as one.{hint} "
        "Use the .p12 file delivered by Expisoft"
    )


def _wrong_password(source: str, password: str | None) -> CertificateError:
    if not password:
        return CertificateError(
            f"No certificate password (PIN) is set for {source}, but the certificate is protected by one: set the "
            "connection's extra 'certificate_password' to the PIN delivered with the Expisoft certificate"
        )
    return CertificateError(
        f"Wrong certificate password (PIN) for {source}; check the PIN delivered with the Expisoft certificate"
    )


def _openssl_pkcs12(data: bytes, password: str | None, source: str) -> tuple[bytes | None, str]:
    """Decode ``data`` with the openssl CLI: (PEM on stdout or None, diagnostic without secrets)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None, "the openssl command-line tool is not installed"
    env = dict(os.environ)
    env[_PIN_ENV_VAR] = password or ""
    diagnostic = ""
    for extra in ([], ["-legacy"]):
        command = [openssl, "pkcs12", "-nodes", "-passin", f"env:{_PIN_ENV_VAR}", *extra]
        try:
            result = subprocess.run(
                command, input=data, capture_output=True, env=env, timeout=_OPENSSL_TIMEOUT_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"openssl could not be run ({type(exc).__name__})"
        if result.returncode == 0 and b"-----BEGIN" in result.stdout:
            return result.stdout, ""
        text = result.stderr.decode("utf-8", "replace")
        if password:
            text = text.replace(password, "***")
        if "mac verify error" in text.lower() or "invalid password" in text.lower():
            raise _wrong_password(source, password)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        diagnostic = diagnostic or (lines[-1][:300] if lines else f"openssl exited with {result.returncode}")
    return None, f"openssl could not read it either: {diagnostic}"


def load_pkcs12(data: bytes, password: str | None, *, source: str) -> LoadedCertificate:
    """Load a PKCS#12 bundle (``.p12``) protected by ``password`` (the PIN).

    Tries ``cryptography`` first, then leniently the ``openssl`` CLI (with and without ``-legacy``).
    Raises :class:`CertificateError` for a wrong PIN, data that is not PKCS#12, or a bundle without a
    key or certificate. ``source`` says where the data came from, for messages.
    """
    if not data:
        raise CertificateError(f"{source} is empty; point it at the .p12 file delivered by Expisoft")
    secret = password.encode("utf-8") if password else None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, secret)
    # UnsupportedAlgorithm: e.g. RC2/RC4 without OpenSSL's legacy provider; UserWarning: cryptography's
    # "parsed as BER" warning when warnings are errors (a future cryptography will raise instead).
    except (ValueError, TypeError, UnsupportedAlgorithm, UserWarning) as exc:
        if not _der_header_ok(data):
            raise _not_pkcs12(source, data) from None
        pem, diagnostic = _openssl_pkcs12(data, password, source)
        if pem is None:
            if "Invalid password" in str(exc):
                raise _wrong_password(source, password) from None
            raise CertificateError(
                f"The PKCS#12 bundle {source} cannot be read ({exc}; {diagnostic}). "
                "Check that it is the complete .p12 file from Expisoft"
            ) from None
        blocks = _pem_blocks(pem)
        cert_pem = b"\n".join(block for label, block in blocks if label == b"CERTIFICATE")
        key_pem = b"\n".join(block for label, block in blocks if label in _KEY_LABELS)
        if not key_pem:
            raise CertificateError(
                f"No private key in the PKCS#12 bundle {source}; export the certificate together with its key"
            ) from None
        if not cert_pem:
            raise CertificateError(f"No certificate in the PKCS#12 bundle {source}") from None
        return load_pem(cert_pem, key_pem, None, source=source)
    # The leaf is picked by its key: some tools store the client certificate among the "additional" ones.
    certs = ([cert] if cert is not None else []) + list(extra)
    return _assemble(key, certs, source, what="PKCS#12 bundle")


# -- checks --------------------------------------------------------------------------------------


def _has_client_auth(cert: x509.Certificate) -> bool | None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return ExtendedKeyUsageOID.CLIENT_AUTH in usage or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usage


def validate_for_orderer(loaded: LoadedCertificate, expected_orderer: str | None, *, now: dt.datetime) -> list[str]:
    """Check that ``loaded`` may order for ``expected_orderer`` at ``now``; return warnings.

    Raises :class:`CertificateError` when the certificate is not yet valid or has expired, carries no
    organisation number, carries an invalid one, or belongs to another organisation than
    ``expected_orderer`` (any accepted form; None skips that check). An ``expected_orderer`` that is
    itself not an organisation number raises :class:`ConfigurationError`. Warnings (strings): the
    certificate expires within :data:`EXPIRY_WARNING_DAYS` days; it lacks the clientAuth key usage.
    """
    now = _aware(now, "now")
    name = f"certificate {loaded.subject} from {loaded.source}"
    if now < loaded.not_valid_before:
        raise CertificateError(
            f"The {name} is not valid until {loaded.not_valid_before.isoformat()}; check the system clock, "
            "or keep using the previous certificate until then"
        )
    if now >= loaded.not_valid_after:
        raise CertificateError(
            f"The {name} expired on {loaded.not_valid_after:%Y-%m-%d} ({loaded.not_valid_after.isoformat()}); "
            "renew it at Expisoft and update the connection with the new .p12 and PIN"
        )
    organisation_number = loaded.organisation_number
    if organisation_number is None:
        found = _serial_number_values(loaded.certificate)
        seen = f"its serialNumber is {found[0]!r}" if found else "its subject has no serialNumber"
        raise CertificateError(
            f"The {name} carries no organisation number ({seen}); an Expisoft organisation certificate has "
            "serialNumber=16 followed by the 10-digit organisation number. Use the organisation certificate"
        )
    try:
        organisation_number = normalize_organisation_number(organisation_number)
    except InvalidIdentifierError as exc:
        raise CertificateError(
            f"The serialNumber of the {name} is not an organisation number: {exc}. "
            "Use the organisation certificate issued by Expisoft"
        ) from None
    if expected_orderer is not None and str(expected_orderer).strip():
        try:
            expected = normalize_organisation_number(str(expected_orderer))
        except InvalidIdentifierError as exc:
            raise ConfigurationError(f"The expected orderer (bestallareId) is not valid: {exc}") from None
        if expected != organisation_number:
            raise CertificateError(
                f"The {name} belongs to organisation {organisation_number}, but the orderer is {expected}: "
                "the certificate must belong to the same organisation as the representative role (SKOL). "
                f"Use {expected}'s organisation certificate, or set the orderer to {organisation_number}"
            )
    warnings: list[str] = []
    days = loaded.days_left(now)
    if days < EXPIRY_WARNING_DAYS:
        whole = max(1, math.ceil(days))
        unit = "day" if whole == 1 else "days"
        warnings.append(
            f"{name} (organisation {organisation_number}) expires in {whole} {unit} "
            f"({loaded.not_valid_after:%Y-%m-%d}); renew it at Expisoft"
        )
    if _has_client_auth(loaded.certificate) is False:
        warnings.append(f"{name} lacks the clientAuth extended key usage; the server may refuse it for mutual TLS")
    return warnings


# -- TLS -----------------------------------------------------------------------------------------


def load_client_certificate_into(context: ssl.SSLContext, loaded: LoadedCertificate) -> None:
    """Install ``loaded`` as ``context``'s client certificate (with its chain).

    ``SSLContext.load_cert_chain`` only reads files, so the certificate, chain and the private key
    encrypted with a random one-time password go to a private temporary file (mode 0600) that is
    removed as soon as it has been read. The key is never on disk in clear.
    """
    one_time = secrets.token_urlsafe(32)
    encrypted_key = loaded.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_time.encode("ascii")),
    )
    pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in (loaded.certificate, *loaded.chain))
    fd, path = tempfile.mkstemp(prefix=f"skattekonto-client-{os.getpid()}-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem + encrypted_key)
        try:
            context.load_cert_chain(certfile=path, password=one_time)
        except ssl.SSLError as exc:
            raise CertificateError(
                f"The TLS library refused the certificate from {loaded.source} ({exc.reason or exc}); "
                "check that the certificate and key belong together"
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
