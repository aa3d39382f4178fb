"""SkattekontoHook against the sandbox: real HTTPS with client certificates, real status codes."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.exceptions import (
    CertificateError,
    ServiceClosedError,
    SkattekontoApiError,
    TokenError,
)
from airflow_provider_skattekonto.hooks.skattekonto import BESTALL_PATH, SANDBOX_CLOCK_SHARE, SkattekontoHook

MONDAY_NOON = dt.datetime(2026, 11, 30, 12, 0, tzinfo=STOCKHOLM)


@pytest.fixture
def hook(sandbox: Any, use_connection: Any) -> SkattekontoHook:
    sandbox.clock.set(now=MONDAY_NOON, speed=1.0)
    use_connection()
    return SkattekontoHook()


def bestall_requests(sandbox: Any) -> int:
    """How many bestall requests reached the sandbox (any status)."""
    routes = sandbox.stats()["requests"]
    return sum(sum(counts.values()) for route, counts in routes.items() if route.startswith("bestall"))


def test_bestall_accepted_with_correlation_ids(hook: SkattekontoHook, sandbox: Any, logs: Any) -> None:
    result = hook.bestall()

    assert result.status == 202
    assert len(result.correlation_id) == 36 and uuid.UUID(result.correlation_id)
    assert result.server_correlation_id
    assert result.ordered_at.date() == MONDAY_NOON.date()
    assert result.delivery_morning == dt.datetime(2026, 12, 1, 7, 0, tzinfo=STOCKHOLM)
    orders = sandbox.orders()
    assert [o.client_correlation_id for o in orders] == [result.correlation_id]
    assert orders[0].orderer == sandbox.pki.identity("orderer").organisation_number
    assert f"sent={result.correlation_id} echoed={result.correlation_id}" in logs()
    assert result.to_xcom()["delivery_morning"] == "2026-12-01T07:00:00+01:00"


def test_one_token_for_many_calls_and_unique_correlation_ids(hook: SkattekontoHook, sandbox: Any) -> None:
    ids = {hook.bestall().correlation_id for _ in range(5)}
    assert len(ids) == 5
    assert hook.tokens.fetched == 1
    stats = sandbox.stats()
    assert sum(stats["tokens_issued"].values()) == 1
    assert stats["reused_client_correlation_ids"] == 0
    assert stats["unexpected_headers"] == {}  # only the headers the service lists


def test_expired_token_is_refreshed_once(hook: SkattekontoHook, sandbox: Any) -> None:
    hook.bestall()
    sandbox.faults.expire_tokens()
    hook.bestall()
    assert hook.tokens.fetched == 2
    assert len(sandbox.orders()) == 2


def test_second_401_fails_clearly(hook: SkattekontoHook, sandbox: Any) -> None:
    sandbox.faults.status("bestall", 401, times=2)
    with pytest.raises(SkattekontoApiError) as caught:
        hook.bestall()
    assert caught.value.status == 401 and not caught.value.retryable
    assert "api_client_id" in str(caught.value)
    assert bestall_requests(sandbox) == 2


@pytest.mark.parametrize("status", [400, 404, 405, 406, 415])
def test_client_errors_fail_at_once(hook: SkattekontoHook, sandbox: Any, status: int) -> None:
    sandbox.faults.status("bestall", status)
    with pytest.raises(SkattekontoApiError) as caught:
        hook.bestall()
    error = caught.value
    assert error.status == status and not error.retryable
    assert error.correlation_id and error.correlation_id in str(error)
    assert error.service_message
    assert bestall_requests(sandbox) == 1
    assert sandbox.orders() == []


def test_forbidden_explains_the_skol_role(sandbox: Any, use_connection: Any) -> None:
    sandbox.clock.set(now=MONDAY_NOON)
    use_connection(identity="no_skol")
    with pytest.raises(SkattekontoApiError) as caught:
        SkattekontoHook().bestall()
    assert caught.value.status == 403
    assert caught.value.service_message == "Forbidden"
    assert "SKOL" in str(caught.value) and "Juridiskt läsombud Skattekonto" in str(caught.value)


@pytest.mark.parametrize("status", [429, 500, 503, 504])
def test_retryable_statuses_are_retried(hook: SkattekontoHook, sandbox: Any, status: int) -> None:
    sandbox.faults.status("bestall", status, times=2)
    result = hook.bestall()
    assert result.status == 202
    assert bestall_requests(sandbox) == 3
    assert len(sandbox.orders()) == 1


def test_503_plain_text_body_is_reported(sandbox: Any, use_connection: Any) -> None:
    sandbox.clock.set(now=MONDAY_NOON)
    use_connection(retry_max_seconds=0)
    sandbox.faults.status("bestall", 503)
    with pytest.raises(SkattekontoApiError) as caught:
        SkattekontoHook().bestall()
    assert caught.value.status == 503
    assert "Service not available for request uri" in str(caught.value)


def test_retry_after_header_is_honoured(hook: SkattekontoHook, sandbox: Any, logs: Any) -> None:
    sandbox.faults.status("bestall", 429, retry_after=1)
    hook.bestall()
    assert "retrying in 1.0 s" in logs()  # Retry-After is whole seconds on the wire


def test_retries_stop_at_the_budget(sandbox: Any, use_connection: Any) -> None:
    sandbox.clock.set(now=MONDAY_NOON)
    # a budget of 3 s at 0.3 s per retry: at most 11 attempts, and at least 2 however slow a busy machine is
    use_connection(retry_max_seconds=3.0, retry_delay_seconds=0.3)
    sandbox.faults.status("bestall", 500, times=None)
    with pytest.raises(SkattekontoApiError, match="Gave up after") as caught:
        SkattekontoHook().bestall()
    assert caught.value.status == 500
    assert 2 <= bestall_requests(sandbox) <= 11


def test_timeouts_and_dropped_connections_are_retried(sandbox: Any, use_connection: Any) -> None:
    sandbox.clock.set(now=MONDAY_NOON)
    use_connection(timeout=1.0)
    sandbox.faults.slow("bestall", 3.0)
    sandbox.faults.drop("bestall")
    result = SkattekontoHook().bestall()
    assert result.status == 202
    assert len(sandbox.orders()) >= 1


def test_closed_window_raises_without_calling(hook: SkattekontoHook, sandbox: Any) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 11, 27, 3, 30, tzinfo=STOCKHOLM))
    with pytest.raises(ServiceClosedError, match="closed until 05:00") as caught:
        hook.bestall()
    assert caught.value.opens_at == dt.datetime(2026, 11, 27, 5, 0, tzinfo=STOCKHOLM)
    assert bestall_requests(sandbox) == 0


def test_friday_order_lands_in_mondays_file(hook: SkattekontoHook, sandbox: Any) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 11, 27, 10, 0, tzinfo=STOCKHOLM))
    assert hook.bestall().delivery_morning == dt.datetime(2026, 11, 30, 7, 0, tzinfo=STOCKHOLM)


def test_no_secret_reaches_the_logs(sandbox: Any, use_connection: Any, logs: Any) -> None:
    sandbox.clock.set(now=MONDAY_NOON)
    connection = use_connection()
    hook = SkattekontoHook()
    hook.bestall()
    sandbox.faults.status("bestall", 401, times=2)
    with pytest.raises(SkattekontoApiError) as caught:
        hook.bestall()
    token = hook.tokens._token
    secrets = [
        connection["password"],
        connection["extra"]["api_client_secret"],
        connection["extra"]["certificate_password"],
    ]
    text = logs() + str(caught.value) + repr(hook.config)
    for secret in secrets:
        assert secret and secret not in text
    assert token is None or token not in text


def test_certificate_of_another_organisation_is_refused(sandbox: Any, use_connection: Any) -> None:
    other = sandbox.pki.identity("orderer2").organisation_number
    use_connection(orderer_organisation_number=other)
    with pytest.raises(CertificateError) as caught:
        SkattekontoHook().get_token()
    assert other in str(caught.value)
    assert sandbox.pki.identity("orderer").organisation_number in str(caught.value)


def test_expired_certificate_is_refused_before_any_call(sandbox: Any, use_connection: Any) -> None:
    use_connection(identity="expired")
    with pytest.raises(CertificateError, match="expired"):
        SkattekontoHook().get_token()
    assert sum(sandbox.stats()["tokens_issued"].values()) == 0


def test_untrusted_certificate_gets_a_token_error(sandbox: Any, use_connection: Any) -> None:
    use_connection(identity="untrusted")
    with pytest.raises(TokenError) as caught:
        SkattekontoHook().get_token()
    assert caught.value.status in (400, 401)


def test_wrong_certificate_password(sandbox: Any, use_connection: Any) -> None:
    use_connection(certificate_password="not-the-pin")
    with pytest.raises(CertificateError, match="password") as caught:
        SkattekontoHook().get_token()
    assert "not-the-pin" not in str(caught.value)


def test_pem_certificate_and_refresh_token_flow(sandbox: Any, use_connection: Any) -> None:
    identity = sandbox.pki.identity("orderer")
    use_connection(
        grant_type="refresh_token",
        certificate_p12_path=None,
        certificate_password=None,
        certificate_pem_path=str(identity.cert_pem_path),
        private_key_pem_path=str(identity.key_pem_path),
    )
    sandbox.clock.set(now=MONDAY_NOON)
    assert SkattekontoHook().bestall().status == 202


def test_test_connection_reports_organisation_and_expiry(sandbox: Any, use_connection: Any) -> None:
    use_connection()
    ok, message = SkattekontoHook().test_connection()
    assert ok, message
    assert sandbox.pki.identity("orderer").organisation_number in message and "valid until" in message
    use_connection(certificate_password="wrong-pin")
    ok, message = SkattekontoHook().test_connection()
    assert not ok and "password" in message


async def test_async_runner_shares_the_plans(sandbox: Any, use_connection: Any) -> None:
    sandbox.clock.set(now=MONDAY_NOON, speed=1.0)
    use_connection()
    hook = SkattekontoHook()
    try:
        reading = await hook.aservice_clock()
        assert abs((reading.now - MONDAY_NOON).total_seconds()) < 60
        sandbox.faults.status("bestall", 503)
        result = await hook.arun_plan(hook._bestall_plan(await hook.aconfig()))
    finally:
        await hook.aclose()
    assert result.status == 202
    assert bestall_requests(sandbox) == 2


FROZEN = dt.datetime(2026, 11, 30, 6, 0, tzinfo=STOCKHOLM)


async def _ready_hooks(count: int) -> list[SkattekontoHook]:
    """``count`` hooks of one connection, each with its configuration and the shared client (nothing left to
    await before their first request)."""
    hooks = [SkattekontoHook() for _ in range(count)]
    for hook in hooks:
        await hook.aget_conn()
    return hooks


@pytest.mark.sandbox_clock(FROZEN.isoformat(), speed=0)
async def test_async_reads_of_the_sandbox_clock_on_one_connection_share_one_request(
    sandbox: Any, use_connection: Any
) -> None:
    """Concurrent waits of a process on one connection make one clock request and share its answer; a reading
    is shared for SANDBOX_CLOCK_SHARE at most, so a jump of the clock is seen after that."""
    use_connection()
    hooks = await _ready_hooks(20)
    try:
        before = sandbox.stats()["clock_reads"]
        readings = await asyncio.gather(*(hook.aservice_clock() for hook in hooks))
        assert sandbox.stats()["clock_reads"] - before == 1
        assert {reading.now for reading in readings} == {FROZEN}
        sandbox.clock.set(now=FROZEN + dt.timedelta(hours=1))
        assert (await hooks[0].aservice_clock()).now == FROZEN  # the shared reading, still fresh
        await asyncio.sleep(SANDBOX_CLOCK_SHARE + 0.1)
        assert (await hooks[1].aservice_clock()).now == FROZEN + dt.timedelta(hours=1)
        assert sandbox.stats()["clock_reads"] - before == 2
    finally:
        for hook in hooks:
            await hook.aclose()
    SkattekontoHook().service_clock()  # the sync runner (a worker's own hook) reads the clock itself
    assert sandbox.stats()["clock_reads"] - before == 3


@pytest.mark.sandbox_clock(FROZEN.isoformat(), speed=0)
async def test_a_cancelled_waiter_leaves_the_shared_clock_read_to_the_others(sandbox: Any, use_connection: Any) -> None:
    use_connection()
    hooks = await _ready_hooks(3)
    try:
        before = sandbox.stats()["clock_reads"]
        first = asyncio.ensure_future(hooks[0].aservice_clock())  # sends the request
        others = [asyncio.ensure_future(hook.aservice_clock()) for hook in hooks[1:]]  # await its answer
        await asyncio.sleep(0)
        first.cancel()  # its trigger is removed while the request is in flight
        assert [reading.now for reading in await asyncio.gather(*others)] == [FROZEN, FROZEN]
        with pytest.raises(asyncio.CancelledError):
            await first
        assert sandbox.stats()["clock_reads"] - before == 1
    finally:
        for hook in hooks:
            await hook.aclose()


async def test_a_process_s_requests_fill_the_shared_pools_in_order(sandbox: Any, use_connection: Any) -> None:
    """The hooks of one connection in a process share _SHARED_POOLS clients of _CONNECTIONS_PER_POOL connections:
    requests one at a time reuse one connection; many at once take the first client with a free connection, so
    no client holds more than its share, the process no more than _SHARED_CONNECTIONS, and every one is answered."""
    from airflow_provider_skattekonto.hooks.etransport import ETransportHook
    from airflow_provider_skattekonto.hooks.skattekonto import (
        _CONNECTIONS_PER_POOL,
        _SHARED_CONNECTIONS,
        _SHARED_POOLS,
    )

    use_connection()
    hooks = [ETransportHook() for _ in range(_SHARED_CONNECTIONS + 10)]
    for hook in hooks:
        await hook.aget_conn()
    shared = hooks[0]._shared
    assert shared is not None and all(hook._shared is shared for hook in hooks)
    peaks = [0] * _SHARED_POOLS

    async def watch() -> None:
        while True:
            peaks[:] = map(max, peaks, shared.in_flight)
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(watch())
    try:
        before = sandbox.stats()["connections_total"]
        for hook in hooks[:3]:
            assert await hook.alist_files() == []
        assert sandbox.stats()["connections_total"] - before == 1
        assert peaks == [1] + [0] * (_SHARED_POOLS - 1)
        sandbox.faults.slow("etransport_list", 0.5, times=None)
        listings = await asyncio.gather(*(hook.alist_files() for hook in hooks))
        assert listings == [[]] * len(hooks)
        assert peaks == [_CONNECTIONS_PER_POOL] * _SHARED_POOLS
        assert sandbox.stats()["connections_total"] - before == _SHARED_CONNECTIONS
        assert shared.in_flight == [0] * _SHARED_POOLS
    finally:
        watcher.cancel()
        for hook in hooks:
            await hook.aclose()
    assert all(client.is_closed for client in shared.clients)


def test_bestall_path_is_the_specs() -> None:
    assert BESTALL_PATH == "/beskattning/skattekonto/huvudmans-saldo-och-transaktioner/v1/bestall"


def test_hooks_of_one_connection_share_the_tls_context(sandbox: Any, use_connection: Any) -> None:
    use_connection()
    first, second = SkattekontoHook(), SkattekontoHook()
    first.get_token()
    second.get_token()
    assert first._ssl_context is second._ssl_context is not None
    use_connection(timeout=7)  # another configuration: its own context
    third = SkattekontoHook()
    third.get_token()
    assert third._ssl_context is not first._ssl_context


def test_connections_with_one_certificate_load_it_once(
    sandbox: Any, use_connection: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking an RSA key is slow: a process loads each certificate once, and again only when its bytes change."""
    from airflow_provider_skattekonto.domain import certificates

    loads: list[str] = []
    real = certificates.load_pkcs12

    def counting(data: bytes, password: str | None, *, source: str) -> Any:
        loads.append(source)
        return real(data, password, source=source)

    monkeypatch.setattr(certificates, "load_pkcs12", counting)
    p12 = tmp_path / "identity.p12"
    p12.write_bytes(sandbox.pki.identity("orderer").p12_path.read_bytes())
    use_connection(certificate_p12_path=str(p12))
    SkattekontoHook().get_token()
    use_connection(certificate_p12_path=str(p12), timeout=7)  # another configuration, the same certificate
    SkattekontoHook().get_token()
    assert len(loads) == 1
    p12.write_bytes(sandbox.pki.identity("orderer2").p12_path.read_bytes())  # renewed: other bytes
    use_connection(identity="orderer2", certificate_p12_path=str(p12))
    assert (
        SkattekontoHook().load_certificate().organisation_number == sandbox.pki.identity("orderer2").organisation_number
    )
    assert len(loads) == 2


@pytest.mark.sandbox_clock("2026-12-01T06:59:00+01:00", speed=60.0)
@pytest.mark.parametrize("runner", ["sync", "async"])
def test_wait_until_sleeps_to_the_moment_on_the_service_clock(sandbox: Any, use_connection: Any, runner: str) -> None:
    """Workers and triggers wait with one plan: a minute of sandbox time at 60x is about a real second."""
    use_connection()
    hook = SkattekontoHook()
    moment = dt.datetime(2026, 12, 1, 7, 0, tzinfo=STOCKHOLM)
    reading = hook.wait_until(moment) if runner == "sync" else asyncio.run(hook.await_until(moment))
    assert moment <= reading.now < moment + dt.timedelta(seconds=50)


# 30 sandbox seconds (10 to 07:00, then the jitter) pass in a real second; the second wait has 80 more (2.6 s real)
@pytest.mark.sandbox_clock("2026-12-01T06:59:50+01:00", speed=30.0)
def test_wait_jitter_applies_only_to_a_waiter_that_sleeps_towards_the_moment(sandbox: Any, use_connection: Any) -> None:
    use_connection()
    hook = SkattekontoHook()
    moment = dt.datetime(2026, 12, 1, 7, 0, tzinfo=STOCKHOLM)
    reading = hook.wait_until(moment, jitter_seconds=20)
    assert reading.now >= moment + dt.timedelta(seconds=20)
    past = hook.wait_until(moment, jitter_seconds=600)  # already past: no jitter, returns at once
    assert past.now < moment + dt.timedelta(seconds=100)
