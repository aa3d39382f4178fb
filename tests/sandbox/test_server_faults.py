"""Fault injection on the sandbox's token endpoints and API (file faults: test_server_etransport.py)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from airflow_provider_skattekonto.sandbox.faults import FaultError, FaultInjector
from airflow_provider_skattekonto.sandbox.server import Sandbox
from tests.waiting import wait_until

Http = Callable[..., httpx.Client]
Bestall = Callable[..., httpx.Response]
Token = Callable[..., str]


def admin(sandbox: Sandbox, method: str, path: str, **kwargs: object) -> httpx.Response:
    """An admin call: TLS verified with the sandbox CA, no client certificate."""
    with httpx.Client(base_url=sandbox.base_url, verify=str(sandbox.pki.ca_cert_path)) as client:
        return client.request(method, "/_sandbox" + path, **kwargs)  # type: ignore[arg-type]


def test_status_fault_strikes_n_times_then_stops(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token
) -> None:
    token = sandbox_token()
    sandbox.faults.status("bestall", 500, times=2)
    assert [sandbox_bestall(token=token).status_code for _ in range(3)] == [500, 500, 202]
    assert sandbox.stats()["faults_applied"] == {"status": 2}
    assert sandbox.stats()["requests"]["bestall"] == {"500": 2, "202": 1}


def test_status_fault_until_cleared(sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token) -> None:
    token = sandbox_token()
    fault = sandbox.faults.status("bestall", 504, times=None)
    assert [sandbox_bestall(token=token).status_code for _ in range(3)] == [504, 504, 504]
    assert sandbox.faults.clear(fault.id) == 1
    assert sandbox_bestall(token=token).status_code == 202


def test_status_fault_on_token_endpoint(sandbox: Sandbox, sandbox_token: Token) -> None:
    sandbox.faults.status("token", 503, retry_after=30)
    with pytest.raises(AssertionError, match="Service not available for request uri: /oauth2/v1/sysorg/token"):
        sandbox_token()
    assert sandbox_token()


def test_status_fault_after_processing_records_the_order(sandbox: Sandbox, sandbox_bestall: Bestall) -> None:
    sandbox.faults.status("bestall", 504, after=True)
    response = sandbox_bestall()
    assert response.status_code == 504
    assert response.json() == {"message": "Timeout"}
    assert len(sandbox.orders()) == 1


def test_drop_closes_without_answer_and_records_nothing(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token
) -> None:
    token = sandbox_token()
    sandbox.faults.drop("bestall")
    with pytest.raises(httpx.TransportError):  # a reset may surface as ReadError or RemoteProtocolError
        sandbox_bestall(token=token)
    assert sandbox.orders() == []
    # the client can see the closed socket before the server thread has counted the drop
    wait_until(
        lambda: sandbox.stats()["requests"].get("bestall") == {"dropped": 1}, 5, "the drop to be counted", interval=0.01
    )
    assert sandbox_bestall(token=token).status_code == 202


def test_drop_after_processing_records_the_order(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token
) -> None:
    token = sandbox_token()
    sandbox.faults.drop("bestall", after=True)
    with pytest.raises(httpx.RemoteProtocolError):
        sandbox_bestall(token=token)
    assert len(sandbox.orders()) == 1


def test_drop_mid_response_sends_part_of_the_body(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token
) -> None:
    token = sandbox_token()
    sandbox.faults.add("drop_mid_response", "bestall")
    with pytest.raises(httpx.RemoteProtocolError):
        sandbox_bestall(token=token)
    assert len(sandbox.orders()) == 1


def test_slow_fault_delays_the_answer(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token, sandbox_http: Http
) -> None:
    token = sandbox_token()
    sandbox.faults.slow("bestall", 5)
    with pytest.raises(httpx.ReadTimeout):
        sandbox_bestall(token=token, client=sandbox_http("orderer", timeout=httpx.Timeout(10.0, read=0.5)))
    sandbox.faults.slow("bestall", 0.2)
    assert sandbox_bestall(token=token).status_code == 202
    assert sandbox.stats()["faults_applied"]["slow"] == 2


def test_a_reset_drops_a_request_still_held_by_a_slow_fault(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token, sandbox_http: Http
) -> None:
    """A test's timed-out request never lands in the next test: the reset between them drops it unprocessed."""
    token = sandbox_token()
    sandbox.faults.slow("bestall", 120)
    with pytest.raises(httpx.ReadTimeout):
        sandbox_bestall(token=token, client=sandbox_http("orderer", timeout=httpx.Timeout(10.0, read=0.3)))
    held = sandbox.stats()["connections_open"]
    sandbox.reset()
    # far less than the fault's pause: it is the reset that ends the request
    wait_until(
        lambda: sandbox.stats()["connections_open"] < held, 60, "the reset to end the held request", interval=0.01
    )
    assert sandbox.orders() == []
    assert "bestall" not in sandbox.stats()["requests"]


def test_expire_tokens_invalidates_every_issued_token(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token
) -> None:
    token = sandbox_token()
    assert sandbox_bestall(token=token).status_code == 202
    sandbox.faults.expire_tokens()
    assert sandbox_bestall(token=token).status_code == 401
    assert sandbox_bestall().status_code == 202  # a new token works


def test_path_prefix_and_wildcard_targets(sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_http: Http) -> None:
    sandbox.faults.status("/etransport/", 500)
    response = sandbox_http("orderer").get("/etransport/v1/files")
    assert response.status_code == 500
    assert response.json() == {"message": "Internal server error"}
    sandbox.faults.status("*", 429, retry_after=2)
    response = sandbox_http("orderer").get("/etransport/v1/files")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert sandbox_bestall().status_code == 202


def test_faults_never_touch_admin_endpoints(sandbox: Sandbox) -> None:
    sandbox.faults.status("*", 500, times=None)
    assert admin(sandbox, "GET", "/clock").status_code == 200


def test_faults_over_admin_http(sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_token: Token) -> None:
    token = sandbox_token()
    response = admin(
        sandbox,
        "POST",
        "/faults",
        json=[{"kind": "status", "target": "bestall", "status": 429, "retry_after": 1}, {"kind": "late", "minutes": 5}],
    )
    assert response.status_code == 201
    added = response.json()["faults"]
    assert [fault["kind"] for fault in added] == ["status", "late"]
    listed = admin(sandbox, "GET", "/faults").json()
    assert [fault["id"] for fault in listed["faults"]] == [fault["id"] for fault in added]
    second = sandbox_bestall(token=token)
    assert second.status_code == 429
    assert second.json() == {"message": "To many requests"}
    assert admin(sandbox, "DELETE", "/faults").json() == {"removed": 1}
    assert admin(sandbox, "GET", "/faults").json()["faults"] == []
    bad = admin(sandbox, "POST", "/faults", json={"kind": "explode"})
    assert bad.status_code == 400
    assert "Unknown fault kind" in bad.json()["message"]
    expire = admin(sandbox, "POST", "/faults", json={"kind": "expire_tokens"})
    assert expire.status_code == 201
    assert sandbox_bestall(token=token).status_code == 401


@pytest.mark.parametrize(
    ("kind", "params", "problem"),
    [
        ("nonsense", {}, "Unknown fault kind"),
        ("status", {"status": 418}, "must be one of"),
        ("status", {}, "must be one of"),
        ("slow", {}, "seconds"),
        ("late", {}, "minutes"),
        ("wrong_balance", {}, "ore"),
        ("wrong_balance", {"ore": "1.5"}, "whole number"),
        ("late", {"minutes": 5, "ore": 3}, "only applies to kind 'wrong_balance'"),
        ("truncate", {"target": "bestall"}, "only applies to downloads"),
        ("drop", {"target": "somewhere"}, "Unknown fault target"),
        ("slow", {"seconds": 1, "after": True}, "after"),
        ("drop", {"times": 0}, "times"),
    ],
)
def test_invalid_faults_are_refused(kind: str, params: dict[str, object], problem: str) -> None:
    injector = FaultInjector()
    target = params.pop("target", None)
    with pytest.raises(FaultError, match=problem):
        injector.add(kind, target, **params)  # type: ignore[arg-type]
    assert injector.active() == []
