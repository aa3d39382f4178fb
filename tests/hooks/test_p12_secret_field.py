"""The inline PKCS#12 certificate is masked by Airflow (UI, REST API); its old name still works but warns."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from airflow_provider_skattekonto.exceptions import ConfigurationError
from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook


def _inline(sandbox: Any) -> str:
    return base64.b64encode(sandbox.pki.identity("orderer").p12_path.read_bytes()).decode()


def _api_view(connection: dict[str, Any]) -> str:
    """What Airflow's REST API returns as the connection's extra."""
    from airflow.api_fastapi.core_api.datamodels.connections import ConnectionResponse

    response = ConnectionResponse.model_validate(
        {
            "conn_id": "skattekonto_default",
            "conn_type": connection["conn_type"],
            "description": None,
            "host": connection["host"],
            "login": connection["login"],
            "schema": None,
            "port": None,
            "password": connection["password"],
            "extra": json.dumps(connection["extra"]),
            "team_name": None,
        }
    )
    return str(response.model_dump_json())


def test_inline_certificate_is_masked_by_the_rest_api_and_works(sandbox: Any, use_connection: Any) -> None:
    inline = _inline(sandbox)
    connection = use_connection(certificate_p12_path=None, certificate_p12_secret_base64=inline)
    seen = _api_view(connection)
    assert inline not in seen and inline[:40] not in seen
    assert connection["extra"]["certificate_password"] not in seen
    assert SkattekontoHook().get_token()  # real mutual TLS with the inline certificate


def test_old_name_still_works_and_warns(sandbox: Any, use_connection: Any) -> None:
    use_connection(certificate_p12_path=None, certificate_p12_base64=_inline(sandbox))
    with pytest.warns(FutureWarning, match="certificate_p12_secret_base64"):
        assert SkattekontoHook().get_token()


def test_both_names_at_once_are_refused(sandbox: Any, use_connection: Any) -> None:
    inline = _inline(sandbox)
    use_connection(certificate_p12_path=None, certificate_p12_base64=inline, certificate_p12_secret_base64=inline)
    with pytest.raises(ConfigurationError, match="deprecated old name"):
        SkattekontoHook().get_token()
