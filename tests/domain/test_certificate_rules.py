"""Organisation certificates: PKCS#12 and PEM loading, organisation number, expiry, TLS use."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from airflow_provider_skattekonto.domain import certificates
from airflow_provider_skattekonto.exceptions import CertificateError
from airflow_provider_skattekonto.sandbox.pki import SandboxPki, ensure_pki, issue_identity

NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SandboxPki:
    return ensure_pki(tmp_path_factory.mktemp("pki"))


def load(identity) -> certificates.LoadedCertificate:  # type: ignore[no-untyped-def]
    return certificates.load_pkcs12(identity.p12_path.read_bytes(), identity.p12_password, source="test.p12")


def test_pkcs12_and_pem_give_the_same_organisation(pki: SandboxPki) -> None:
    identity = pki.identity("orderer")
    from_p12 = load(identity)
    from_pem = certificates.load_pem(
        identity.cert_pem_path.read_bytes(), identity.key_pem_path.read_bytes(), None, source="pem"
    )
    assert from_p12.organisation_number == from_pem.organisation_number == identity.organisation_number
    assert certificates.validate_for_orderer(from_p12, identity.organisation_number, now=NOW) == []
    assert "PRIVATE" not in repr(from_p12) and "private_key" not in repr(from_p12)


def test_wrong_pin_and_garbage_are_told_apart(pki: SandboxPki) -> None:
    identity = pki.identity("orderer")
    with pytest.raises(CertificateError, match="Wrong certificate password") as caught:
        certificates.load_pkcs12(identity.p12_path.read_bytes(), "123456-not-it", source="org.p12")
    assert "123456-not-it" not in str(caught.value) and "org.p12" in str(caught.value)
    with pytest.raises(CertificateError, match="Not a PKCS#12"):
        certificates.load_pkcs12(b"definitely not a p12", "pin", source="junk.p12")


@pytest.mark.parametrize("serial_number", ["165567000004", "5567000004"])
def test_serial_number_with_or_without_the_16_prefix(pki: SandboxPki, serial_number: str) -> None:
    identity = issue_identity(pki, f"serial{len(serial_number)}", "5567000004", serial_number=serial_number)
    assert load(identity).organisation_number == "5567000004"


def test_bad_serial_number_and_mismatch_are_refused(pki: SandboxPki) -> None:
    bad = load(issue_identity(pki, "badluhn", "5567000009"))
    with pytest.raises(CertificateError, match="not an organisation number"):
        certificates.validate_for_orderer(bad, None, now=NOW)
    loaded = load(pki.identity("orderer"))
    other = pki.identity("orderer2").organisation_number
    with pytest.raises(CertificateError, match="same organisation as the representative role") as caught:
        certificates.validate_for_orderer(loaded, other, now=NOW)
    assert other in str(caught.value) and loaded.organisation_number in str(caught.value)


def test_expired_refused_and_expiring_soon_warned(pki: SandboxPki) -> None:
    with pytest.raises(CertificateError, match=r"expired on .*renew it at Expisoft"):
        certificates.validate_for_orderer(load(pki.identity("expired")), None, now=NOW)
    soon = load(issue_identity(pki, "soon", "5567000004", valid_days=12))
    [warning] = certificates.validate_for_orderer(soon, "5567000004", now=NOW)
    assert "expires in 1" in warning and "Expisoft" in warning


def test_loaded_into_tls_presents_the_certificate_and_leaves_no_key_file(pki: SandboxPki) -> None:
    before = set(os.listdir(tempfile.gettempdir()))
    client = ssl.create_default_context(cafile=str(pki.ca_cert_path))
    certificates.load_client_certificate_into(client, load(pki.identity("orderer")))
    assert set(os.listdir(tempfile.gettempdir())) - before == set()

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.server_cert_path, pki.server_key_path)
    server.load_verify_locations(pki.ca_cert_path)
    server.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[str | None] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with server.wrap_socket(conn, server_side=True) as tls:
            from cryptography import x509

            peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
            seen.append(certificates.organisation_number_from_certificate(peer))

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(listener.getsockname()) as raw, client.wrap_socket(raw, server_hostname="localhost"):
        pass
    thread.join(10)
    listener.close()
    assert seen == [pki.identity("orderer").organisation_number]


def test_lenient_fallback_reads_a_legacy_bundle(pki: SandboxPki, tmp_path: Path) -> None:
    identity = pki.identity("orderer")
    legacy = tmp_path / "legacy.p12"
    result = subprocess.run(
        ["openssl", "pkcs12", "-export", "-legacy", "-in", str(identity.cert_pem_path), "-inkey",
         str(identity.key_pem_path), "-out", str(legacy), "-passout", "pass:1234"],
        capture_output=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"openssl cannot write a legacy bundle here: {result.stderr.decode()[:200]}")
    loaded = certificates.load_pkcs12(legacy.read_bytes(), "1234", source="legacy.p12")
    assert loaded.organisation_number == identity.organisation_number
