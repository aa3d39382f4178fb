"""Error texts read cleanly and point at the right field: real HTTPS against the sandbox, real certificates."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.exceptions import (
    CertificateError,
    ConfigurationError,
    SkattekontoApiError,
    TokenError,
)
from airflow_provider_skattekonto.hooks._connection import nearest_extra, parse_connection
from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

MONDAY_NOON = dt.datetime(2026, 11, 30, 12, 0, tzinfo=STOCKHOLM)
BASE_EXTRA = {
    "api_client_id": "gw",
    "api_client_secret": "gw-secret",
    "certificate_pem_path": "c",
    "private_key_pem_path": "k",
}


@pytest.mark.parametrize(
    ("fault", "service_text"),
    [({"status": 503}, "Service not available for request uri"), ({"status": 500}, "Internal server error")],
)
def test_gave_up_keeps_the_service_message_once_and_reads_cleanly(
    sandbox: Any, use_connection: Any, fault: dict[str, int], service_text: str
) -> None:
    sandbox.clock.set(now=MONDAY_NOON)
    use_connection(retry_max_seconds=0.6, retry_delay_seconds=0.2)
    sandbox.faults.status("bestall", fault["status"], times=None)
    with pytest.raises(SkattekontoApiError, match="Gave up after") as caught:
        SkattekontoHook().bestall()
    text = str(caught.value)
    assert service_text in text and caught.value.service_message  # the service's own words are kept
    assert text.count(str(caught.value.correlation_id)) == 1  # the correlation id once
    assert ".." not in text and "delay." not in text  # no "delay.. Check"
    assert text.endswith("Check Skatteverket's service status; the task may be retried later.")


def test_gave_up_after_timeouts_reads_cleanly(sandbox: Any, use_connection: Any) -> None:
    sandbox.clock.set(now=MONDAY_NOON)
    use_connection(timeout=0.3, retry_max_seconds=0.5, retry_delay_seconds=0.2)
    sandbox.faults.slow("bestall", 1.0, times=None)
    with pytest.raises(SkattekontoApiError, match="Gave up after") as caught:
        SkattekontoHook().bestall()
    text = str(caught.value)
    assert "timed out" in text and ".." not in text
    assert text.count(str(caught.value.correlation_id)) == 1


def test_a_404_from_the_token_endpoint_points_at_token_url(sandbox: Any, use_connection: Any) -> None:
    use_connection(token_url=sandbox.base_url + "/oauth2/v1/no-such-token-endpoint")
    with pytest.raises(TokenError) as caught:
        SkattekontoHook().get_token()
    assert caught.value.status == 404 and not caught.value.retryable
    assert "token_url" in str(caught.value)
    assert "host (API base URL" not in str(caught.value)


def test_a_missing_pin_reads_differently_from_a_wrong_one(sandbox: Any, use_connection: Any) -> None:
    use_connection(certificate_password=None)
    with pytest.raises(CertificateError) as missing:
        SkattekontoHook().load_certificate()
    use_connection(certificate_password="not-the-pin")
    with pytest.raises(CertificateError) as wrong:
        SkattekontoHook().load_certificate()
    assert "No certificate password (PIN) is set" in str(missing.value)
    assert "certificate_password" in str(missing.value) and "Wrong" not in str(missing.value)
    assert "Wrong certificate password (PIN)" in str(wrong.value)
    assert "not-the-pin" not in str(wrong.value)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("certificate_pasword", "certificate_password"),
        ("certificate-password", "certificate_password"),
        ("Archive_URL", "archive_url"),
        ("etransport_inbx", "etransport_inbox"),
        ("retry_max_secs", "retry_max_seconds"),
    ],
)
def test_an_unknown_extra_suggests_the_nearest_known_name(typo: str, meant: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_connection("skv", host=None, login="client", password=None, extra=BASE_EXTRA | {typo: "x"})
    assert f"{typo} (did you mean {meant}?)" in str(caught.value)


def test_no_suggestion_for_a_name_far_from_every_field() -> None:
    assert nearest_extra("colour") is None
    with pytest.raises(ConfigurationError) as caught:
        parse_connection("skv", host=None, login="client", password=None, extra=BASE_EXTRA | {"colour": "x"})
    assert "did you mean" not in str(caught.value)
    assert "certificate_p12_base64" not in str(caught.value)  # the deprecated name is not advertised
