"""The sandbox's OAuth2 token endpoints, over real mutual TLS."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable

import httpx
import pytest

from airflow_provider_skattekonto.sandbox.server import Sandbox

SYSORG = "/oauth2/v1/sysorg/token"
ORG = "/oauth2/v1/org/token"

Http = Callable[..., httpx.Client]


def _form(sandbox: Sandbox, identity: str = "orderer", /, **changes: str | None) -> dict[str, str]:
    registration = sandbox.registration(identity)
    form: dict[str, str | None] = {
        "grant_type": "client_credentials",
        "client_id": registration.oauth_client_id,
        "client_secret": registration.oauth_client_secret,
        "scope": "skahmst",
    }
    form.update(changes)
    return {key: value for key, value in form.items() if value is not None}


def test_client_credentials_token_is_issued_and_counted(sandbox: Sandbox, sandbox_http: Http) -> None:
    response = sandbox_http("orderer").post(SYSORG, data=_form(sandbox))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "skahmst"
    assert body["expires_in"] == 3600
    assert len(body["access_token"]) >= 32
    registration = sandbox.registration("orderer")
    stats = sandbox.stats()
    assert stats["tokens_issued"] == {registration.oauth_client_id: 1}
    assert stats["tokens_issued_by_identity"] == {"orderer": 1}
    assert stats["requests"]["token_sysorg"] == {"200": 1}


def test_token_lifetime_is_configurable(sandbox: Sandbox, sandbox_http: Http) -> None:
    sandbox.configure(token_lifetime_seconds=120)
    response = sandbox_http("orderer").post(SYSORG, data=_form(sandbox))
    assert response.json()["expires_in"] == 120


def test_designated_certificate_needs_no_secret(sandbox: Sandbox, sandbox_http: Http) -> None:
    response = sandbox_http("orderer").post(SYSORG, data=_form(sandbox, client_secret=None))
    assert response.status_code == 200


def test_without_secret_another_organisations_certificate_is_refused(sandbox: Sandbox, sandbox_http: Http) -> None:
    response = sandbox_http("orderer2").post(SYSORG, data=_form(sandbox, "orderer", client_secret=None))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_client_secret_basic_authentication(sandbox: Sandbox, sandbox_http: Http) -> None:
    registration = sandbox.registration("orderer")
    credentials = f"{registration.oauth_client_id}:{registration.oauth_client_secret}".encode()
    response = sandbox_http("orderer").post(
        SYSORG,
        data={"grant_type": "client_credentials", "scope": "skahmst"},
        headers={"Authorization": "Basic " + base64.b64encode(credentials).decode()},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("changes", "status", "error"),
    [
        ({"grant_type": None}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "refresh_token"}, 400, "unsupported_grant_type"),
        ({"client_id": None}, 400, "invalid_request"),
        ({"scope": None}, 400, "invalid_scope"),
        ({"scope": "everything"}, 400, "invalid_scope"),
        ({"client_id": "nobody"}, 401, "invalid_client"),
        ({"client_secret": "wrong-secret"}, 401, "invalid_client"),
    ],
)
def test_token_request_errors(
    sandbox: Sandbox, sandbox_http: Http, changes: dict[str, str | None], status: int, error: str
) -> None:
    response = sandbox_http("orderer").post(SYSORG, data=_form(sandbox, **changes))

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == error
    assert body["error_description"]
    registration = sandbox.registration("orderer")
    assert registration.oauth_client_secret not in response.text


def test_token_request_must_be_form_encoded(sandbox: Sandbox, sandbox_http: Http) -> None:
    response = sandbox_http("orderer").post(SYSORG, json=_form(sandbox))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_token_endpoint_only_accepts_post(sandbox: Sandbox, sandbox_http: Http) -> None:
    response = sandbox_http("orderer").get(SYSORG)
    assert response.status_code == 405
    assert response.json() == {"message": "Method not allowed"}
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("identity", "problem"),
    [
        (None, "no client certificate"),
        ("untrusted", "not issued by a trusted CA"),
        ("expired", "expired"),
    ],
)
def test_token_refused_without_a_valid_trusted_certificate(
    sandbox: Sandbox, sandbox_http: Http, identity: str | None, problem: str
) -> None:
    label = identity or "orderer"
    response = sandbox_http(identity).post(SYSORG, data=_form(sandbox, label))

    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client"
    assert problem in body["error_description"]
    assert sandbox.stats()["tokens_issued"] == {}


def test_refresh_token_flow(sandbox: Sandbox, sandbox_http: Http) -> None:
    registration = sandbox.registration("orderer")
    response = sandbox_http("orderer").post(
        ORG,
        data={
            "grant_type": "refresh_token",
            "refresh_token": registration.refresh_token,
            "client_id": registration.oauth_client_id,
            "client_secret": registration.oauth_client_secret,
        },
    )
    assert response.status_code == 200
    assert response.json()["scope"] == "skahmst"
    assert sandbox.stats()["requests"]["token_org"] == {"200": 1}


@pytest.mark.parametrize(
    ("changes", "status", "error"),
    [
        ({"refresh_token": "not-a-refresh-token"}, 400, "invalid_grant"),
        ({"refresh_token": None}, 400, "invalid_request"),
        ({"client_secret": None}, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
    ],
)
def test_refresh_token_errors(
    sandbox: Sandbox, sandbox_http: Http, changes: dict[str, str | None], status: int, error: str
) -> None:
    registration = sandbox.registration("orderer")
    form: dict[str, str | None] = {
        "grant_type": "refresh_token",
        "refresh_token": registration.refresh_token,
        "client_id": registration.oauth_client_id,
        "client_secret": registration.oauth_client_secret,
    }
    form.update(changes)
    response = sandbox_http("orderer").post(ORG, data={k: v for k, v in form.items() if v is not None})
    assert response.status_code == status
    assert response.json()["error"] == error


def test_refresh_token_of_another_client_is_refused(sandbox: Sandbox, sandbox_http: Http) -> None:
    mine = sandbox.registration("orderer")
    other = sandbox.registration("orderer2")
    response = sandbox_http("orderer").post(
        ORG,
        data={
            "grant_type": "refresh_token",
            "refresh_token": other.refresh_token,
            "client_id": mine.oauth_client_id,
            "client_secret": mine.oauth_client_secret,
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_secrets_are_random_per_identity_and_hidden_from_repr(sandbox: Sandbox) -> None:
    first, second = sandbox.registration("orderer"), sandbox.registration("orderer2")
    assert first.oauth_client_secret != second.oauth_client_secret
    assert first.api_client_secret != first.oauth_client_secret
    assert first.oauth_client_secret not in repr(first)
    assert first.api_client_secret not in repr(first)
    assert first.refresh_token not in repr(first)


def test_tls_below_1_2_is_refused(sandbox: Sandbox) -> None:
    context = ssl.create_default_context(cafile=str(sandbox.pki.ca_cert_path))
    try:
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with httpx.Client(verify=context) as client, pytest.raises(httpx.ConnectError):
        client.get(sandbox.base_url + "/_sandbox/clock")
