"""A server certificate that cannot be verified fails at once as a CertificateError, not as an outage.

Real TLS against the sandbox, with a CA bundle that did not issue the sandbox's server certificate."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.exceptions import CertificateError
from airflow_provider_skattekonto.hooks.etransport import ETransportHook
from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook


@pytest.fixture
def untrusted(sandbox: Any, use_connection: Any) -> None:
    """A connection whose ca_bundle_path is another CA, with a long retry budget (an outage would retry)."""
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 10, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection(ca_bundle_path=str(sandbox.pki.foreign_ca_cert_path), retry_max_seconds=240, retry_delay_seconds=30)


def _check(error: CertificateError, sandbox: Any, logs: Callable[[], str]) -> None:
    text = str(error)
    assert "ca_bundle_path=" + str(sandbox.pki.foreign_ca_cert_path) in text
    assert "CERTIFICATE_VERIFY_FAILED" in text and "self-signed certificate in certificate chain" in text
    assert "service status" not in text
    assert "retrying" not in logs()
    assert not error.retryable


def test_token_endpoint_and_api(untrusted: None, sandbox: Any, logs: Callable[[], str]) -> None:
    with pytest.raises(CertificateError) as caught:
        SkattekontoHook().bestall()
    _check(caught.value, sandbox, logs)
    assert sandbox.orders() == []


def test_etransport_listing(untrusted: None, sandbox: Any, logs: Callable[[], str]) -> None:
    with pytest.raises(CertificateError) as caught:
        ETransportHook().list_files()
    _check(caught.value, sandbox, logs)


def test_connection_test_button_answers_at_once(untrusted: None, sandbox: Any) -> None:
    ok, message = SkattekontoHook().test_connection()
    assert not ok
    assert "CERTIFICATE_VERIFY_FAILED" in message and "ca_bundle_path" in message
