"""Organisation certificates against the sandbox's throwaway PKI: loading, checks, and real mutual TLS."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airflow_provider_skattekonto.domain import certificates
from airflow_provider_skattekonto.domain.certificates import (
    LoadedCertificate,
    load_client_certificate_into,
    load_pem,
    load_pkcs12,
    organisation_number_from_certificate,
    validate_for_orderer,
)
from airflow_provider_skattekonto.exceptions import CertificateError, ConfigurationError
from airflow_provider_skattekonto.sandbox.pki import (
    CA_COMMON_NAME,
    DEFAULT_IDENTITIES,
    Identity,
    SandboxPki,
    ensure_pki,
    issue_identity,
)

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command-line tool is not installed")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SandboxPki:
    return ensure_pki(tmp_path_factory.mktemp("pki"))


def _load(identity: Identity, source: str = "test.p12") -> LoadedCertificate:
    return load_pkcs12(identity.p12_path.read_bytes(), identity.p12_password, source=source)


def _ber(der: bytes) -> bytes:
    """The same PKCS#12 with its outer SEQUENCE re-encoded with BER indefinite length (the MAC still holds)."""
    assert der[0] == 0x30
    first = der[1]
    if first < 0x80:
        length, start = first, 2
    else:
        width = first & 0x7F
        length, start = int.from_bytes(der[2 : 2 + width], "big"), 2 + width
    return b"\x30\x80" + der[start : start + length] + b"\x00\x00"


# -- the sandbox PKI itself ------------------------------------------------------------------------


def test_default_pki_layout_subjects_and_modes(pki: SandboxPki) -> None:
    assert set(pki.identities) == {"orderer", "orderer2", "no_skol", "expired", "untrusted"} == set(DEFAULT_IDENTITIES)
    ca = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CA_COMMON_NAME
    server = x509.load_pem_x509_certificate(pki.server_cert_path.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert stat.S_IMODE(pki.server_key_path.stat().st_mode) == 0o600
    numbers = set()
    for label, (number, name, _kind) in DEFAULT_IDENTITIES.items():
        identity = pki.identity(label)
        assert (identity.organisation_number, identity.name) == (number, name)
        numbers.add(number)
        for secret_file in (identity.key_pem_path, identity.p12_path, identity.p12_path.with_name("identity.json")):
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        cert = x509.load_pem_x509_certificate(identity.cert_pem_path.read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "16" + number
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == name
        assert cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "SE"
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
        assert identity.p12_password not in repr(identity)
    assert len(numbers) == len(DEFAULT_IDENTITIES)
    assert pki.identity("expired").not_valid_after < _now() < pki.identity("orderer").not_valid_after
    with pytest.raises(KeyError, match="orderer2"):
        pki.identity("nobody")


def test_ensure_pki_is_idempotent_and_repairs_what_is_broken(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path)
    ca_before = first.ca_cert_path.read_bytes()
    again = ensure_pki(tmp_path)
    assert again == first and again.ca_cert_path.read_bytes() == ca_before
    # a damaged identity is reissued; the CA and the other identities are kept
    (tmp_path / "orderer2" / "identity.json").write_text("{broken", encoding="utf-8")
    repaired = ensure_pki(tmp_path)
    assert repaired.ca_cert_path.read_bytes() == ca_before
    assert repaired.identity("orderer") == first.identity("orderer")
    assert repaired.identity("orderer2").p12_password != first.identity("orderer2").p12_password
    _load(repaired.identity("orderer2"))
    # a new CA means new server and client certificates
    (tmp_path / "ca-key.pem").unlink()
    renewed = ensure_pki(tmp_path)
    assert renewed.ca_cert_path.read_bytes() != ca_before
    ca = x509.load_pem_x509_certificate(renewed.ca_cert_path.read_bytes())
    for path in (renewed.server_cert_path, renewed.identity("orderer").cert_pem_path):
        x509.load_pem_x509_certificate(path.read_bytes()).verify_directly_issued_by(ca)
    assert not list(tmp_path.rglob("*.tmp"))


def test_concurrent_processes_agree_on_one_pki(tmp_path: Path) -> None:
    script = (
        "import sys, pathlib\n"
        "from airflow_provider_skattekonto.sandbox.pki import ensure_pki\n"
        "pki = ensure_pki(pathlib.Path(sys.argv[1]))\n"
        "print(pki.identity('orderer').p12_password)\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = {process.communicate(timeout=120)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert outputs == {ensure_pki(tmp_path).identity("orderer").p12_password}
    _load(ensure_pki(tmp_path).identity("orderer"))


def test_issue_identity_refuses_default_labels_and_paths(pki: SandboxPki) -> None:
    with pytest.raises(ValueError, match="default sandbox identity"):
        issue_identity(pki, "orderer", "5560000167")
    with pytest.raises(ValueError, match="plain folder name"):
        issue_identity(pki, "../escape", "5560000167")


# -- loading ---------------------------------------------------------------------------------------


def test_pkcs12_loads_with_chain_and_properties(pki: SandboxPki) -> None:
    identity = pki.identity("orderer")
    loaded = _load(identity, source=f"certificate_p12_path={identity.p12_path}")
    assert loaded.organisation_number == "5560000167" == identity.organisation_number
    assert loaded.subject.startswith("serialNumber=165560000167,")
    assert "O=Exempelbyrån Redovisning AB" in loaded.subject
    assert [c.subject.rfc4514_string() for c in loaded.chain] == [f"CN={CA_COMMON_NAME},O=Skattekonto Sandbox,C=SE"]
    assert loaded.not_valid_after == identity.not_valid_after
    assert loaded.not_valid_after.tzinfo is not None and loaded.not_valid_before.tzinfo is not None
    now = _now()
    assert 360 < loaded.days_left(now) <= 365
    assert validate_for_orderer(loaded, "556000-0167", now=now) == []
    assert validate_for_orderer(loaded, "165560000167", now=now) == []
    assert validate_for_orderer(loaded, None, now=now) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        loaded.days_left(dt.datetime(2026, 1, 1))


def test_wrong_pin_garbage_empty_and_pem_are_told_apart(pki: SandboxPki) -> None:
    identity = pki.identity("orderer")
    with pytest.raises(CertificateError, match=r"Wrong certificate password \(PIN\) for org\.p12"):
        load_pkcs12(identity.p12_path.read_bytes(), "not-the-pin", source="org.p12")
    with pytest.raises(CertificateError, match=r"Not a PKCS#12 .*junk\.p12"):
        load_pkcs12(b"\x00garbage bytes, not ASN.1 at all", "pin", source="junk.p12")
    with pytest.raises(CertificateError, match="looks like PEM"):
        load_pkcs12(identity.cert_pem_path.read_bytes(), "pin", source="cert.pem")
    with pytest.raises(CertificateError, match="empty"):
        load_pkcs12(b"", "pin", source="empty.p12")
    with pytest.raises(CertificateError, match=r"No certificate password \(PIN\) is set for nopin\.p12"):
        load_pkcs12(identity.p12_path.read_bytes(), None, source="nopin.p12")


def test_bundles_without_key_or_certificate_and_truncated_ones(pki: SandboxPki) -> None:
    identity = pki.identity("orderer")
    cert = x509.load_pem_x509_certificate(identity.cert_pem_path.read_bytes())
    key = serialization.load_pem_private_key(identity.key_pem_path.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    pin = serialization.BestAvailableEncryption(b"1234")
    certs_only = pkcs12.serialize_key_and_certificates(b"x", None, None, [cert], pin)
    with pytest.raises(CertificateError, match=r"No private key in the PKCS#12 bundle from only-certs\.p12"):
        load_pkcs12(certs_only, "1234", source="only-certs.p12")
    key_only = pkcs12.serialize_key_and_certificates(b"x", key, None, None, pin)
    with pytest.raises(CertificateError, match=r"No certificate in the PKCS#12 bundle from only-key\.p12"):
        load_pkcs12(key_only, "1234", source="only-key.p12")
    # the client certificate stored among the "additional" certificates is still found by its key
    ca = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
    shuffled = pkcs12.serialize_key_and_certificates(b"x", key, None, [ca, cert], pin)
    loaded = load_pkcs12(shuffled, "1234", source="shuffled.p12")
    assert loaded.certificate == cert and loaded.chain == (ca,)
    # a cut-off file starts like PKCS#12 but cannot be read
    with pytest.raises(CertificateError, match=r"PKCS#12 bundle cut\.p12 cannot be read"):
        load_pkcs12(identity.p12_path.read_bytes()[:300], identity.p12_password, source="cut.p12")


def test_secrets_never_in_messages_reprs_or_tracebacks(pki: SandboxPki) -> None:
    identity = pki.identity("orderer")
    loaded = _load(identity)
    key_pem = identity.key_pem_path.read_text()
    key_body = key_pem.splitlines()[1]
    for text in (repr(loaded), str(loaded), repr(identity), str(identity)):
        assert identity.p12_password not in text
        assert key_body not in text and "PRIVATE" not in text and "private_key" not in text
    wrong = "S3cret-PIN-" + identity.p12_password[:6]
    for data, pin in ((identity.p12_path.read_bytes(), wrong), (_ber(identity.p12_path.read_bytes()), wrong)):
        with pytest.raises(CertificateError) as caught:
            load_pkcs12(data, pin, source="org.p12")
        rendered = "".join(traceback.format_exception(caught.value))
        assert wrong not in rendered and identity.p12_password not in rendered


def test_pem_configuration(pki: SandboxPki, tmp_path: Path) -> None:
    identity = pki.identity("orderer")
    cert_pem = identity.cert_pem_path.read_bytes()
    key_pem = identity.key_pem_path.read_bytes()
    ca_pem = pki.ca_cert_path.read_bytes()
    plain = load_pem(cert_pem + ca_pem, key_pem, None, source="certificate_pem_path=cert.pem")
    assert plain.organisation_number == "5560000167" and len(plain.chain) == 1
    # the chain may come first, and a password for an unencrypted key is harmless
    assert load_pem(ca_pem + cert_pem, key_pem, "unused", source="x").certificate == plain.certificate
    # a combined file with certificate and key
    assert load_pem(cert_pem + key_pem, cert_pem + key_pem, None, source="x").certificate == plain.certificate
    key = serialization.load_pem_private_key(key_pem, None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-pass"),
    )
    assert load_pem(cert_pem, encrypted, "key-pass", source="x").organisation_number == "5560000167"
    with pytest.raises(CertificateError, match="Wrong private key password") as caught:
        load_pem(cert_pem, encrypted, "other-pass", source="key.pem")
    assert "other-pass" not in str(caught.value) and "key-pass" not in str(caught.value)
    with pytest.raises(CertificateError, match="is encrypted"):
        load_pem(cert_pem, encrypted, None, source="key.pem")
    with pytest.raises(CertificateError, match="No PEM private key"):
        load_pem(cert_pem, cert_pem, None, source="key.pem")
    with pytest.raises(CertificateError, match="No readable PEM certificate"):
        load_pem(b"nothing here", key_pem, None, source="cert.pem")
    other_key = pki.identity("orderer2").key_pem_path.read_bytes()
    with pytest.raises(CertificateError, match="belongs to none of its certificates"):
        load_pem(cert_pem + ca_pem, other_key, None, source="x")


# -- organisation number and validity -------------------------------------------------------------


@pytest.mark.parametrize("serial_number", ["165567000004", "5567000004", "16556700-0004"])
def test_serial_number_with_or_without_the_16_prefix(pki: SandboxPki, serial_number: str) -> None:
    label = "serial-" + serial_number.replace("-", "h")
    loaded = _load(issue_identity(pki, label, "5567000004", serial_number=serial_number))
    assert loaded.organisation_number == "5567000004"
    assert organisation_number_from_certificate(loaded.certificate) == "5567000004"
    assert validate_for_orderer(loaded, "5567000004", now=_now()) == []


@pytest.mark.parametrize(
    ("serial_number", "match"),
    [
        ("165567000009", "check digit"),  # Luhn failure
        ("5567000009", "check digit"),
        ("161212121212", "3rd-4th digits"),  # a personnummer, not an organisation
        ("ABC-123", r"carries no organisation number \(its serialNumber is 'ABC-123'\)"),
        ("195567000004", "carries no organisation number"),  # 12 digits without the 16 prefix
    ],
)
def test_bad_serial_numbers_are_refused(pki: SandboxPki, serial_number: str, match: str) -> None:
    label = "bad-" + serial_number
    loaded = _load(issue_identity(pki, label, "5567000004", serial_number=serial_number))
    with pytest.raises(CertificateError, match=match):
        validate_for_orderer(loaded, None, now=_now())


def test_certificate_without_serial_number(pki: SandboxPki) -> None:
    # A certificate whose subject has no serialNumber at all, signed by the sandbox CA.
    ca = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key_path.read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Person Utan Orgnr")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=100))
        .sign(ca_key, hashes.SHA256())
    )
    loaded = LoadedCertificate(certificate=cert, chain=(), private_key=key, source="no-serial.p12")
    assert loaded.organisation_number is None
    with pytest.raises(CertificateError, match="its subject has no serialNumber"):
        validate_for_orderer(loaded, None, now=now)


def test_other_organisation_is_refused_naming_both(pki: SandboxPki) -> None:
    loaded = _load(pki.identity("orderer"))
    other = pki.identity("orderer2").organisation_number
    with pytest.raises(CertificateError, match="same organisation as the representative role") as caught:
        validate_for_orderer(loaded, other, now=_now())
    assert other in str(caught.value) and "5560000167" in str(caught.value)
    with pytest.raises(ConfigurationError, match="5560000168"):
        validate_for_orderer(loaded, "5560000168", now=_now())


def test_expired_not_yet_valid_and_expiring_soon(pki: SandboxPki) -> None:
    expired = _load(pki.identity("expired"))
    assert expired.days_left(_now()) < 0
    with pytest.raises(CertificateError, match=r"expired on \d{4}-\d\d-\d\d .*renew it at Expisoft"):
        validate_for_orderer(expired, None, now=_now())
    current = _load(pki.identity("orderer"))
    with pytest.raises(CertificateError, match="not valid until"):
        validate_for_orderer(current, None, now=current.not_valid_before - dt.timedelta(seconds=1))
    with pytest.raises(CertificateError, match="expired on"):
        validate_for_orderer(current, None, now=current.not_valid_after)
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_for_orderer(current, None, now=dt.datetime(2026, 1, 1))

    soon = _load(issue_identity(pki, "soon12", "5567000004", valid_days=12))
    [warning] = validate_for_orderer(soon, "5567000004", now=_now())
    assert "expires in 12 days" in warning and "renew it at Expisoft" in warning
    assert f"({soon.not_valid_after:%Y-%m-%d})" in warning
    # exactly at the threshold there is no warning; one second inside it there is
    boundary = current.not_valid_after - dt.timedelta(days=certificates.EXPIRY_WARNING_DAYS)
    assert validate_for_orderer(current, None, now=boundary) == []
    [inside] = validate_for_orderer(current, None, now=boundary + dt.timedelta(seconds=1))
    assert "expires in 30 days" in inside
    [last] = validate_for_orderer(soon, None, now=soon.not_valid_after - dt.timedelta(hours=3))
    assert "expires in 1 day " in last


# -- TLS -------------------------------------------------------------------------------------------


_removed_files: list[tuple[str, int, bytes]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Records what a file holds just before it is removed (while a test has _removed_files enabled).
    if _removed_files is not None and event == "os.remove":
        path = os.fsdecode(args[0])
        if os.path.basename(path).startswith("skattekonto-client-") and os.path.exists(path):
            with open(path, "rb") as handle:
                _removed_files.append((path, stat.S_IMODE(os.stat(path).st_mode), handle.read()))


sys.addaudithook(_audit)


@pytest.fixture
def removed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int, bytes]]]:
    """Point temporary files at a private folder and record every client file as it is deleted."""
    global _removed_files
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    _removed_files = []
    try:
        yield _removed_files
    finally:
        _removed_files = None


def _server_context(pki: SandboxPki) -> ssl.SSLContext:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.server_cert_path, pki.server_key_path)
    server.load_verify_locations(pki.ca_cert_path)
    server.verify_mode = ssl.CERT_REQUIRED
    return server


def _handshake(pki: SandboxPki, client: ssl.SSLContext) -> tuple[str | None, BaseException | None]:
    """A real TLS handshake over a socket pair; the server requires a client certificate.

    Returns (organisation number the server saw, the server's error).
    """
    server = _server_context(pki)
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(30)
    client_sock.settimeout(30)
    seen: list[str | None] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(server_sock, server_side=True) as tls:
                peer = tls.getpeercert(binary_form=True)
                assert peer is not None
                seen.append(organisation_number_from_certificate(x509.load_der_x509_certificate(peer)))
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)
            server_sock.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(client_sock, server_hostname="localhost") as tls:
            tls.recv(2)
    except (ssl.SSLError, OSError):
        pass
    thread.join(30)
    assert not thread.is_alive()
    return (seen[0] if seen else None), (errors[0] if errors else None)


def test_client_certificate_works_in_real_tls_and_leaves_no_clear_key(
    pki: SandboxPki, removed_files: list[tuple[str, int, bytes]]
) -> None:
    identity = pki.identity("orderer")
    client = ssl.create_default_context(cafile=str(pki.ca_cert_path))
    load_client_certificate_into(client, _load(identity))
    # the one temporary file held the certificate and an encrypted key, mode 0600, and is gone
    [(path, mode, content)] = removed_files
    assert not os.path.exists(path) and os.listdir(tempfile.gettempdir()) == []
    assert mode == 0o600
    assert b"-----BEGIN CERTIFICATE-----" in content and b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in content
    assert b"-----BEGIN PRIVATE KEY-----" not in content
    assert identity.p12_password.encode() not in content
    seen, error = _handshake(pki, client)
    assert error is None and seen == "5560000167"


def test_untrusted_certificate_is_refused_by_the_server(pki: SandboxPki) -> None:
    client = ssl.create_default_context(cafile=str(pki.ca_cert_path))
    untrusted = _load(pki.identity("untrusted"))
    assert validate_for_orderer(untrusted, None, now=_now()) == []  # locally it looks fine
    load_client_certificate_into(client, untrusted)
    seen, error = _handshake(pki, client)
    assert seen is None and isinstance(error, ssl.SSLError)


def test_mismatched_key_is_refused_and_the_file_still_removed(
    pki: SandboxPki, removed_files: list[tuple[str, int, bytes]]
) -> None:
    loaded = _load(pki.identity("orderer"))
    other_key = _load(pki.identity("orderer2")).private_key
    broken = LoadedCertificate(certificate=loaded.certificate, chain=(), private_key=other_key, source="broken.p12")
    with pytest.raises(CertificateError, match=r"refused the certificate from broken\.p12"):
        load_client_certificate_into(ssl.create_default_context(), broken)
    assert len(removed_files) == 1 and os.listdir(tempfile.gettempdir()) == []


# -- lenient loading through the openssl CLI -------------------------------------------------------


@needs_openssl
def test_legacy_bundle_from_openssl_export(pki: SandboxPki, tmp_path: Path) -> None:
    identity = pki.identity("orderer")
    legacy = tmp_path / "legacy.p12"
    result = subprocess.run(
        [OPENSSL or "openssl", "pkcs12", "-export", "-legacy", "-in", str(identity.cert_pem_path),
         "-inkey", str(identity.key_pem_path), "-certfile", str(pki.ca_cert_path), "-out", str(legacy),
         "-passout", "env:TEST_PIN"],
        capture_output=True, check=False, env={**os.environ, "TEST_PIN": "1234"},
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"this openssl cannot write a -legacy bundle: {result.stderr.decode()[:200]}")
    loaded = load_pkcs12(legacy.read_bytes(), "1234", source="legacy.p12")
    assert loaded.organisation_number == "5560000167" and len(loaded.chain) == 1
    with pytest.raises(CertificateError, match="Wrong certificate password"):
        load_pkcs12(legacy.read_bytes(), "4321", source="legacy.p12")


@needs_openssl
def test_ber_bundle_is_read_through_the_openssl_fallback(pki: SandboxPki, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = pki.identity("orderer")
    ber = _ber(identity.p12_path.read_bytes())
    expected = _load(identity)
    # cryptography reads BER only with a "may become an exception" warning; as an error (the future
    # behaviour) it fails, and the bundle must then come through the openssl CLI.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_pkcs12(ber, identity.p12_password, source="ber.p12")
        assert loaded.certificate == expected.certificate and loaded.chain == expected.chain
        assert _public(loaded) == _public(expected)
        with pytest.raises(CertificateError, match=r"Wrong certificate password \(PIN\) for ber\.p12"):
            load_pkcs12(ber, "wrong-pin", source="ber.p12")
        # proof that it was the CLI: without openssl on PATH the same call fails and says why
        monkeypatch.setenv("PATH", "/nonexistent")
        with pytest.raises(CertificateError, match="openssl command-line tool is not installed"):
            load_pkcs12(ber, identity.p12_password, source="ber.p12")


@needs_openssl
def test_openssl_fallback_never_gets_the_pin_on_its_command_line(pki: SandboxPki, tmp_path: Path) -> None:
    # A stand-in "openssl" first on PATH records its argv and environment, then runs the real one.
    identity = pki.identity("orderer")
    log = tmp_path / "argv.json"
    wrapper = tmp_path / "bin" / "openssl"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import json, os, subprocess, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps({{'argv': sys.argv, 'env': sorted(os.environ)}}) + '\\n')\n"
        f"sys.exit(subprocess.run([{OPENSSL!r}, *sys.argv[1:]]).returncode)\n",
        encoding="utf-8",
    )
    wrapper.chmod(0o700)
    env = {**os.environ, "PATH": f"{wrapper.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    script = (
        "import sys, warnings\n"
        "from airflow_provider_skattekonto.domain.certificates import load_pkcs12\n"
        "warnings.simplefilter('error')\n"
        "print(load_pkcs12(sys.stdin.buffer.read(), sys.argv[1], source='ber.p12').organisation_number)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, identity.p12_password],
        input=_ber(identity.p12_path.read_bytes()),
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-500:]
    assert result.stdout.decode().strip() == "5560000167"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls and all(identity.p12_password not in " ".join(call["argv"]) for call in calls)
    assert all("-passin" in call["argv"] and "SKATTEKONTO_P12_PIN" in call["env"] for call in calls)
    assert not [path for path in tmp_path.rglob("*") if path.suffix in {".pem", ".key"}]


def _public(loaded: LoadedCertificate) -> bytes:
    return loaded.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
