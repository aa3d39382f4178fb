"""Shared fixtures: one running sandbox per test process, reset before every test that uses it.

* ``sandbox_server`` (session): a :class:`Sandbox` on a free loopback port in a temporary folder.
  Under pytest-xdist every worker process starts its own.
* ``sandbox`` (function): the same sandbox, reset (faults, orders, files, tokens, rate limits, stats,
  settings) with its clock at :data:`SANDBOX_DEFAULT_NOW` running at real speed. Change the start with
  ``@pytest.mark.sandbox_clock("2026-03-13T10:00:00+01:00", speed=0)``.
* ``sandbox_http``: a factory of ``httpx.Client`` objects speaking to the sandbox with an identity's
  client certificate (``sandbox_http("orderer")``; ``None`` for no certificate); closed after the test.

The tests that run DAGs are collected first (see ``pytest_collection_modifyitems``).
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable, Iterator

import httpx
import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, parse_moment
from airflow_provider_skattekonto.sandbox.server import Sandbox

# A Tuesday (business day) at 10:00, service open: orders now land in Wednesday 07:00's file.
SANDBOX_DEFAULT_NOW = dt.datetime(2026, 3, 10, 10, 0, tzinfo=STOCKHOLM)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sandbox_clock(now, speed=1.0): start the sandbox clock of the `sandbox` fixture at `now` (ISO 8601)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests that run DAGs (fixture ``airflow_db``) take seconds each: they go first, so that xdist's
    workers share them out and end on the short tests instead of one worker finishing a DAG run alone."""
    items.sort(key=lambda item: "airflow_db" not in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def sandbox_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One running sandbox for this test process (a worker's own under xdist; port 0)."""
    sandbox = Sandbox.start(tmp_path_factory.mktemp("sandbox"))
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def sandbox(sandbox_server: Sandbox, request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """The session's sandbox, reset, with its clock at the default (or the ``sandbox_clock`` marker's) time."""
    now, speed = SANDBOX_DEFAULT_NOW, 1.0
    marker = request.node.get_closest_marker("sandbox_clock")
    if marker is not None:
        if marker.args:
            now = parse_moment(marker.args[0])
        speed = float(marker.kwargs.get("speed", 1.0))
    sandbox_server.reset(now=now, speed=speed)
    yield sandbox_server
    sandbox_server.faults.reset()


def client_ssl_context(sandbox: Sandbox, identity: str | None) -> ssl.SSLContext:
    """Verify the sandbox with its CA; present ``identity``'s certificate (None: no certificate)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(sandbox.pki.ca_cert_path))
    if identity is not None:
        chosen = sandbox.pki.identity(identity)
        context.load_cert_chain(chosen.cert_pem_path, chosen.key_pem_path)
    return context


@pytest.fixture
def sandbox_http(sandbox: Sandbox) -> Iterator[Callable[..., httpx.Client]]:
    """``sandbox_http(identity="orderer", **httpx_kwargs)`` -> an httpx.Client on the sandbox's base URL."""
    clients: list[httpx.Client] = []

    def make(identity: str | None = "orderer", **kwargs: object) -> httpx.Client:
        kwargs.setdefault("timeout", 30.0)
        client = httpx.Client(
            base_url=sandbox.base_url,
            verify=client_ssl_context(sandbox, identity),
            **kwargs,  # type: ignore[arg-type]
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def sandbox_token(sandbox: Sandbox, sandbox_http: Callable[..., httpx.Client]) -> Callable[..., str]:
    """``sandbox_token(identity="orderer", scope="skahmst")`` -> a fresh access token (client credentials)."""

    def fetch(identity: str = "orderer", *, scope: str = "skahmst") -> str:
        registration = sandbox.registration(identity)
        response = sandbox_http(identity).post(
            "/oauth2/v1/sysorg/token",
            data={
                "grant_type": "client_credentials",
                "client_id": registration.oauth_client_id,
                "client_secret": registration.oauth_client_secret,
                "scope": scope,
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    return fetch


@pytest.fixture
def sandbox_bestall(
    sandbox: Sandbox, sandbox_http: Callable[..., httpx.Client], sandbox_token: Callable[..., str]
) -> Callable[..., httpx.Response]:
    """``sandbox_bestall(identity="orderer", *, client=None, token=None, headers={...}, **request_kwargs)``.

    POSTs a complete, valid bestall call (a fresh token, the identity's API key, a new correlation id,
    body ``{}``); ``headers`` entries replace (or, with value None, remove) the default headers.
    """
    import uuid

    from airflow_provider_skattekonto.sandbox.protocol import BESTALL_PATH

    def call(
        identity: str = "orderer",
        *,
        client: httpx.Client | None = None,
        token: str | None = None,
        headers: dict[str, str | None] | None = None,
        **kwargs: object,
    ) -> httpx.Response:
        registration = sandbox.registration(identity)
        chosen: dict[str, str | None] = {
            "Accept": "application/json",
            "Authorization": f"Bearer {token or sandbox_token(identity)}",
            "client_id": registration.api_client_id,
            "client_secret": registration.api_client_secret,
            "skv_client_correlation_id": str(uuid.uuid4()),
        }
        chosen.update(headers or {})
        final = {key: value for key, value in chosen.items() if value is not None}
        if "json" not in kwargs and "content" not in kwargs:
            kwargs["json"] = {}
        http = client or sandbox_http(identity)
        return http.post(BESTALL_PATH, headers=final, **kwargs)  # type: ignore[arg-type]

    return call
