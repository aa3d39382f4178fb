"""The sandbox's clock, admin endpoints, Python API and Airflow connection."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import httpx
import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.sandbox.clock import SandboxClock
from airflow_provider_skattekonto.sandbox.server import Sandbox

Bestall = Callable[..., httpx.Response]


def admin(sandbox: Sandbox, method: str, path: str, **kwargs: object) -> httpx.Response:
    with httpx.Client(base_url=sandbox.base_url, verify=str(sandbox.pki.ca_cert_path)) as client:
        return client.request(method, "/_sandbox" + path, **kwargs)  # type: ignore[arg-type]


# -- clock ---------------------------------------------------------------------------------------


def test_frozen_clock_advance_and_set() -> None:
    start = dt.datetime(2026, 3, 10, 10, 0, tzinfo=STOCKHOLM)
    clock = SandboxClock(start, speed=0)
    assert clock.now() == start
    assert clock.advance(90) == start + dt.timedelta(seconds=90)
    assert clock.now() == start + dt.timedelta(seconds=90)
    clock.set(now=dt.datetime(2026, 7, 1, 12, 0))  # naive: Stockholm local time
    assert clock.now() == dt.datetime(2026, 7, 1, 12, 0, tzinfo=STOCKHOLM)
    assert clock.now().utcoffset() == dt.timedelta(hours=2)
    with pytest.raises(ValueError, match="speed"):
        clock.set(speed=-1)


def test_running_clock_moves_forward_at_its_speed() -> None:
    clock = SandboxClock(dt.datetime(2026, 3, 10, 10, 0, tzinfo=STOCKHOLM), speed=3600)
    first = clock.now()
    time.sleep(0.01)
    assert clock.now() > first
    clock.set(speed=0)
    frozen = clock.now()
    assert clock.now() == frozen
    assert clock.speed == 0


def test_reset_clock_follows_real_time() -> None:
    clock = SandboxClock(dt.datetime(2020, 1, 1, tzinfo=STOCKHOLM), speed=0)
    clock.reset()
    assert abs((clock.now() - dt.datetime.now(STOCKHOLM)).total_seconds()) < 60
    assert clock.speed == 1.0


def test_clock_admin_endpoint(sandbox: Sandbox) -> None:
    assert sandbox.stats()["clock_reads"] == 0
    body = admin(sandbox, "GET", "/clock").json()
    assert set(body) == {"now", "speed"}
    assert sandbox.stats()["clock_reads"] == 1  # reads are counted (the clock's users), settings are not
    assert dt.datetime.fromisoformat(body["now"]).utcoffset() is not None
    assert body["speed"] == 1.0
    body = admin(sandbox, "POST", "/clock", json={"now": "2026-03-13T06:00:00+01:00", "speed": 0}).json()
    assert body == {"now": "2026-03-13T06:00:00+01:00", "speed": 0.0}
    body = admin(sandbox, "POST", "/clock", json={"advance_seconds": 3600}).json()
    assert body["now"] == "2026-03-13T07:00:00+01:00"
    assert sandbox.clock.now() == dt.datetime(2026, 3, 13, 7, 0, tzinfo=STOCKHOLM)
    assert admin(sandbox, "POST", "/clock", json={"speed": -2}).status_code == 400
    # UTC input is answered in Stockholm time.
    body = admin(sandbox, "POST", "/clock", json={"now": "2026-06-01T10:00:00+00:00"}).json()
    assert body["now"] == "2026-06-01T12:00:00+02:00"
    assert sandbox.stats()["clock_reads"] == 1


# -- orders, stats, config, reset ---------------------------------------------------------------


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_orders_admin_endpoint(sandbox: Sandbox, sandbox_bestall: Bestall) -> None:
    assert sandbox_bestall().status_code == 202
    placed = admin(sandbox, "POST", "/orders", json={"orderer": "orderer2", "received_at": "2026-03-10T11:00:00+01:00"})
    assert placed.status_code == 201
    assert placed.json()["source"] == "admin"
    orders = admin(sandbox, "GET", "/orders").json()["orders"]
    assert [order["identity"] for order in orders] == ["orderer", "orderer2"]
    assert orders[0]["received_at"] == "2026-03-10T10:00:00+01:00"
    assert orders[0]["delivery_morning"] == "2026-03-11T07:00:00+01:00"
    assert orders[1]["orderer"] == sandbox.pki.identity("orderer2").organisation_number
    by_number = sandbox.place_order("556000-0167")
    assert by_number.identity == "orderer"
    assert admin(sandbox, "POST", "/orders", json={"orderer": "12345"}).status_code == 400


def test_stats_config_connection_and_health(sandbox: Sandbox, sandbox_bestall: Bestall) -> None:
    assert sandbox_bestall().status_code == 202
    stats = admin(sandbox, "GET", "/stats").json()
    assert stats["requests"]["bestall"] == {"202": 1}
    assert stats["orders"] == 1
    assert stats["tokens_issued_by_identity"] == {"orderer": 1}
    config = admin(sandbox, "POST", "/config", json={"rate_limit_per_second": 5}).json()
    assert config["rate_limit_per_second"] == 5
    assert admin(sandbox, "POST", "/config", json={"nonsense": 1}).status_code == 400
    connection = admin(sandbox, "GET", "/connection", params={"identity": "orderer2"}).json()
    assert connection == sandbox.airflow_connection("orderer2")
    assert admin(sandbox, "GET", "/health").json()["status"] == "ok"
    assert admin(sandbox, "GET", "/nothing").status_code == 404
    assert admin(sandbox, "DELETE", "/clock").status_code == 405


def test_reset_clears_state_but_keeps_clients(sandbox: Sandbox, sandbox_bestall: Bestall) -> None:
    registration = sandbox.registration("orderer")
    assert sandbox_bestall().status_code == 202
    sandbox.faults.status("bestall", 500)
    sandbox.configure(rate_limit_per_second=1)
    answer = admin(sandbox, "POST", "/reset", json={"now": "2026-03-10T12:00:00+01:00", "speed": 0})
    assert answer.json()["clock"] == {"now": "2026-03-10T12:00:00+01:00", "speed": 0.0}
    assert sandbox.orders() == []
    assert sandbox.faults.active() == []
    assert sandbox.settings.rate_limit_per_second == 20.0
    assert sandbox.stats()["requests"] == {}
    assert sandbox.stats()["tokens_issued"] == {}
    assert sandbox.registration("orderer") == registration
    assert sandbox_bestall().status_code == 202


# -- Airflow connection --------------------------------------------------------------------------


def test_airflow_connection_shape(sandbox: Sandbox) -> None:
    connection = sandbox.airflow_connection()
    registration = sandbox.registration("orderer")
    identity = sandbox.pki.identity("orderer")
    assert connection == {
        "conn_type": "skattekonto",
        "host": sandbox.base_url,
        "login": registration.oauth_client_id,
        "password": registration.oauth_client_secret,
        "extra": {
            "api_client_id": registration.api_client_id,
            "api_client_secret": registration.api_client_secret,
            "grant_type": "client_credentials",
            "token_url": sandbox.base_url + "/oauth2/v1/sysorg/token",
            "scope": "skahmst",
            "certificate_p12_path": str(identity.p12_path),
            "certificate_password": identity.p12_password,
            "ca_bundle_path": str(sandbox.pki.ca_cert_path),
            "orderer_organisation_number": identity.organisation_number,
            "timeout": 5,
            "retry_max_seconds": 10,
            "retry_delay_seconds": 0.2,
            "etransport_url": sandbox.base_url + "/etransport/v1",
            "sandbox_clock": True,
        },
    }


def test_airflow_connection_refresh_flow_and_overrides(sandbox: Sandbox) -> None:
    connection = sandbox.airflow_connection("orderer2", grant_type="refresh_token", timeout=30, scope=None)
    extra = connection["extra"]
    assert extra["token_url"] == sandbox.base_url + "/oauth2/v1/org/token"
    assert extra["refresh_token"] == sandbox.registration("orderer2").refresh_token
    assert extra["timeout"] == 30
    assert "scope" not in extra
    with pytest.raises(KeyError, match="known identities"):
        sandbox.airflow_connection("nobody")
    with pytest.raises(ValueError, match="grant_type"):
        sandbox.airflow_connection(grant_type="password")


def test_connection_extras_are_known_to_the_hook(sandbox: Sandbox) -> None:
    hooks = pytest.importorskip("airflow_provider_skattekonto.hooks._connection")
    extras = set(sandbox.airflow_connection(grant_type="refresh_token")["extra"])
    assert extras <= set(hooks.KNOWN_EXTRAS)
