"""The sandbox's bestall API: every status of the service description, with its exact body."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import httpx
import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.sandbox.protocol import BESTALL_PATH
from airflow_provider_skattekonto.sandbox.server import Sandbox

Http = Callable[..., httpx.Client]
Bestall = Callable[..., httpx.Response]
Token = Callable[..., str]

TUESDAY_10 = dt.datetime(2026, 3, 10, 10, 0, tzinfo=STOCKHOLM)
SERVICE_503 = "Service not available for request uri: " + BESTALL_PATH


def _json_message(response: httpx.Response) -> object:
    assert response.headers["content-type"] == "application/json"
    return response.json()


@pytest.mark.sandbox_clock(TUESDAY_10.isoformat(), speed=0)
def test_accepted_order_echoes_headers_and_is_recorded(sandbox: Sandbox, sandbox_bestall: Bestall) -> None:
    correlation = str(uuid.uuid4())
    response = sandbox_bestall(headers={"skv_client_correlation_id": correlation})

    assert response.status_code == 202
    assert _json_message(response) == {"message": "Accepted"}
    assert response.headers["skv_client_correlation_id"] == correlation
    server_correlation = response.headers["skv_correlation_id"]
    assert uuid.UUID(server_correlation)
    assert response.headers["x-ratelimit-limit"] == "20"
    assert int(response.headers["x-ratelimit-remaining"]) == 19
    [order] = sandbox.orders()
    assert order.orderer == sandbox.pki.identity("orderer").organisation_number
    assert order.received_at == TUESDAY_10
    assert order.client_correlation_id == correlation
    assert order.correlation_id == server_correlation
    assert order.identity == "orderer"
    assert order.delivery_morning == dt.datetime(2026, 3, 11, 7, 0, tzinfo=STOCKHOLM)
    assert sandbox.stats()["requests"]["bestall"] == {"202": 1}
    assert sandbox.stats()["unexpected_headers"] == {}


def test_unknown_path_is_404(sandbox: Sandbox, sandbox_http: Http) -> None:
    response = sandbox_http().post("/beskattning/skattekonto/nothing-here/v1/bestall", json={})
    assert response.status_code == 404
    assert _json_message(response) == {"message": "Not found"}


def test_wrong_method_is_405(sandbox: Sandbox, sandbox_http: Http) -> None:
    response = sandbox_http().get(BESTALL_PATH, headers={"Accept": "application/json"})
    assert response.status_code == 405
    assert _json_message(response) == {"message": "Method not allowed"}
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("accept", ["text/xml", "*/*", None])
def test_wrong_accept_is_406(sandbox: Sandbox, sandbox_bestall: Bestall, accept: str | None) -> None:
    response = sandbox_bestall(headers={"Accept": accept})
    assert response.status_code == 406
    assert _json_message(response) == {"message": "Not acceptable"}


def test_wrong_content_type_is_415(sandbox: Sandbox, sandbox_bestall: Bestall) -> None:
    response = sandbox_bestall(content=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert _json_message(response) == {"message": "Unsupported media type"}


@pytest.mark.parametrize("content", [b"[]", b"not json", b""])
def test_body_that_is_not_a_json_object_is_400(sandbox: Sandbox, sandbox_bestall: Bestall, content: bytes) -> None:
    response = sandbox_bestall(content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert _json_message(response) == {"message": "Bad request"}


@pytest.mark.parametrize(
    "headers",
    [
        {"client_id": None},
        {"client_secret": None},
        {"client_secret": "wrong"},
        {"client_id": "unknown-api-client"},
    ],
)
def test_wrong_api_gateway_key_is_401(
    sandbox: Sandbox, sandbox_bestall: Bestall, headers: dict[str, str | None]
) -> None:
    response = sandbox_bestall(headers=headers)
    assert response.status_code == 401
    assert _json_message(response) == {"message": "Unauthorized"}


@pytest.mark.parametrize("correlation", [None, "", "x" * 37])
def test_missing_or_too_long_correlation_id_is_400(
    sandbox: Sandbox, sandbox_bestall: Bestall, correlation: str | None
) -> None:
    response = sandbox_bestall(headers={"skv_client_correlation_id": correlation})
    assert response.status_code == 400
    assert _json_message(response) == {"message": "Bad request"}


def test_correlation_id_of_36_characters_is_accepted(sandbox: Sandbox, sandbox_bestall: Bestall) -> None:
    response = sandbox_bestall(headers={"skv_client_correlation_id": "y" * 36})
    assert response.status_code == 202


@pytest.mark.parametrize("authorization", [None, "Bearer unknown-token", "Basic abc", "Bearer"])
def test_missing_or_unknown_bearer_token_is_401(
    sandbox: Sandbox, sandbox_bestall: Bestall, authorization: str | None
) -> None:
    response = sandbox_bestall(headers={"Authorization": authorization})
    assert response.status_code == 401
    assert _json_message(response) == {"message": "Unauthorized"}


@pytest.mark.sandbox_clock(TUESDAY_10.isoformat(), speed=0)
def test_token_expires_on_the_sandbox_clock(sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token) -> None:
    sandbox.configure(token_lifetime_seconds=600)
    token = sandbox_token()
    assert sandbox_bestall(token=token).status_code == 202
    sandbox.clock.advance(599)
    assert sandbox_bestall(token=token).status_code == 202
    sandbox.clock.advance(1)
    response = sandbox_bestall(token=token)
    assert response.status_code == 401
    assert _json_message(response) == {"message": "Unauthorized"}


def test_token_of_another_scope_is_401(sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token) -> None:
    response = sandbox_bestall(token=sandbox_token(scope="ska"))
    assert response.status_code == 401


def test_token_of_another_client_is_401(sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token) -> None:
    # orderer2's token with orderer's API key and certificate.
    response = sandbox_bestall("orderer", token=sandbox_token("orderer2"))
    assert response.status_code == 401


def test_api_call_without_client_certificate_is_401(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_http: Http
) -> None:
    response = sandbox_bestall(client=sandbox_http(None))
    assert response.status_code == 401
    assert _json_message(response) == {"message": "Unauthorized"}


def test_certificate_of_another_organisation_than_the_token_is_401(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_http: Http
) -> None:
    registration = sandbox.registration("orderer")
    # "Any organisation certificate" flow: orderer's client with orderer2's certificate -> token for orderer2.
    token = (
        sandbox_http("orderer2")
        .post(
            "/oauth2/v1/sysorg/token",
            data={
                "grant_type": "client_credentials",
                "client_id": registration.oauth_client_id,
                "client_secret": registration.oauth_client_secret,
                "scope": "skahmst",
            },
        )
        .json()["access_token"]
    )
    response = sandbox_bestall("orderer", token=token, client=sandbox_http("orderer"))
    assert response.status_code == 401
    assert sandbox.orders() == []


def test_organisation_without_skol_role_is_403(sandbox: Sandbox, sandbox_bestall: Bestall) -> None:
    response = sandbox_bestall("no_skol")
    assert response.status_code == 403
    assert _json_message(response) == {"message": "Forbidden"}
    assert sandbox.orders() == []


def test_rate_limit_is_429_with_retry_after(sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token) -> None:
    sandbox.configure(rate_limit_per_second=0.001, rate_limit_burst=1)
    token = sandbox_token()
    first = sandbox_bestall(token=token)
    assert first.status_code == 202
    assert first.headers["x-ratelimit-limit"] == "1"
    assert first.headers["x-ratelimit-remaining"] == "0"

    second = sandbox_bestall(token=token)
    assert second.status_code == 429
    assert _json_message(second) == {"message": "To many requests"}
    assert int(second.headers["retry-after"]) >= 1
    assert second.headers["x-ratelimit-remaining"] == "0"
    # Another API client has its own bucket.
    assert sandbox_bestall("orderer2").status_code == 202
    assert len(sandbox.orders()) == 2


@pytest.mark.parametrize("status", [500, 504, 429])
def test_injected_json_statuses_have_the_spec_body(sandbox: Sandbox, sandbox_bestall: Bestall, status: int) -> None:
    messages = {500: "Internal server error", 504: "Timeout", 429: "To many requests"}
    sandbox.faults.status("bestall", status)
    response = sandbox_bestall()
    assert response.status_code == status
    assert _json_message(response) == {"message": messages[status]}
    assert "skv_correlation_id" in response.headers
    assert sandbox.orders() == []


def test_injected_503_is_plain_text(sandbox: Sandbox, sandbox_bestall: Bestall) -> None:
    sandbox.faults.status("bestall", 503, retry_after=60)
    response = sandbox_bestall()
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == SERVICE_503
    assert response.headers["retry-after"] == "60"


@pytest.mark.parametrize(
    ("moment", "open_"),
    [
        ("2026-03-10T02:59:59+01:00", True),
        ("2026-03-10T03:00:00+01:00", False),
        ("2026-03-10T04:59:59+01:00", False),
        ("2026-03-10T05:00:00+01:00", True),
        ("2026-07-04T03:30:00+02:00", False),  # summer time: still 03-05 Stockholm
    ],
)
def test_service_window_on_the_sandbox_clock(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token, moment: str, open_: bool
) -> None:
    token = sandbox_token()
    sandbox.clock.set(now=dt.datetime.fromisoformat(moment), speed=0)
    response = sandbox_bestall(token=token)
    if open_:
        assert response.status_code == 202
    else:
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == SERVICE_503
        assert sandbox.orders() == []


def test_checks_run_in_gateway_order(sandbox: Sandbox, sandbox_bestall: Bestall) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 3, 10, 3, 30, tzinfo=STOCKHOLM), speed=0)
    # Closed window wins over everything else wrong in the call.
    response = sandbox_bestall(headers={"Accept": "text/xml", "client_id": None}, token="junk")
    assert response.status_code == 503
    sandbox.clock.set(now=TUESDAY_10)
    assert sandbox_bestall(headers={"Accept": "text/xml", "client_id": None}).status_code == 406
    assert sandbox_bestall(content=b"[]", headers={"Content-Type": "text/plain", "client_id": None}).status_code == 415
    assert (
        sandbox_bestall(content=b"[]", headers={"Content-Type": "application/json", "client_id": None}).status_code
        == 400
    )
    assert sandbox_bestall(headers={"client_id": None, "skv_client_correlation_id": None}).status_code == 401
    assert sandbox_bestall(headers={"skv_client_correlation_id": None}, token="junk").status_code == 400


def test_unexpected_headers_and_reused_correlation_ids_are_counted(sandbox: Sandbox, sandbox_bestall: Bestall) -> None:
    assert sandbox_bestall(headers={"X-Trace": "1", "skv_client_correlation_id": "same-id"}).status_code == 202
    assert sandbox_bestall(headers={"skv_client_correlation_id": "same-id"}).status_code == 202
    stats = sandbox.stats()
    assert stats["unexpected_headers"] == {"x-trace": 1}
    assert stats["reused_client_correlation_ids"] == 1


def test_keep_alive_connection_serves_many_calls(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_http: Http
) -> None:
    client = sandbox_http("orderer")
    for _ in range(5):
        assert sandbox_bestall(client=client).status_code == 202
    assert sandbox.stats()["connections_total"] >= 1
    assert len(sandbox.orders()) == 5
