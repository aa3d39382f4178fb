"""Parsing of the ``skattekonto`` connection: defaults and a clear error for every mistake."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_skattekonto.exceptions import ConfigurationError
from airflow_provider_skattekonto.hooks._connection import parse_connection

BASE_EXTRA = {"api_client_id": "gw", "api_client_secret": "gw-secret", "certificate_p12_path": "/c.p12"}


def parse(host: str | None = None, login: str | None = "client", password: str | None = "s3cret", **extra: Any):
    return parse_connection("skv", host=host, login=login, password=password, extra=BASE_EXTRA | extra)


def test_production_defaults() -> None:
    config = parse()
    assert config.base_url == "https://api.skatteverket.se"
    assert config.token_url == "https://sysorgoauth2.skatteverket.se/oauth2/v1/sysorg/token"
    assert config.scope == "skahmst" and config.grant_type == "client_credentials"
    assert config.timeout == 30 and config.retry_delay_seconds == 60 and not config.sandbox_clock


def test_test_environment_and_refresh_token_urls() -> None:
    config = parse("api.test.skatteverket.se", grant_type="refresh_token", refresh_token="r-token")
    assert config.base_url == "https://api.test.skatteverket.se"
    assert config.token_url == "https://orgoauth2.test.skatteverket.se/oauth2/v1/org/token"


def test_secrets_stay_out_of_repr() -> None:
    config = parse(refresh_token="refresh-value", certificate_password="pin-value")
    text = repr(config)
    for secret in ("s3cret", "gw-secret", "refresh-value", "pin-value"):
        assert secret not in text
    assert set(config.secrets()) == {"s3cret", "gw-secret", "refresh-value", "pin-value"}


def test_orderer_and_closed_dates_are_normalised() -> None:
    config = parse(orderer_organisation_number="16556000-0167", closed_dates="2026-12-23, 2026-12-30")
    assert config.orderer_organisation_number == "5560000167"
    assert not config.calendar.is_business_day(__import__("datetime").date(2026, 12, 23))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "http://api.skatteverket.se"}, "https://"),
        ({"login": None}, "OAuth2 client id"),
        ({"grant_type": "password"}, "grant_type"),
        ({"grant_type": "refresh_token"}, "refresh_token"),
        ({"api_client_secret": ""}, "api_client_secret"),
        ({"host": "https://sandbox.local"}, "token_url"),
        ({"certificate_p12_path": None}, "no organisation certificate"),
        ({"certificate_pem_path": "/c.pem"}, "exactly one certificate source"),
        ({"orderer_organisation_number": "5560000168"}, "check digit"),
        ({"timeout": "soon"}, "timeout"),
        ({"closed_dates": "tomorrow"}, "closed_dates"),
        ({"certifcate_password": "typo"}, "unknown extra field(s) certifcate_password"),
    ],
)
def test_configuration_mistakes_name_the_field(kwargs: dict[str, Any], message: str) -> None:
    host = kwargs.pop("host", None)
    login = kwargs.pop("login", "client")
    with pytest.raises(ConfigurationError) as caught:
        parse(host, login, **kwargs)
    assert message in str(caught.value)
    assert "'skv'" in str(caught.value)
