"""SkattekontoHook: OAuth2 + mutual TLS access to Skatteverket's Skattekonto bulk service (scope skahmst)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx

from airflow_provider_skattekonto import __version__
from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, ServiceCalendar
from airflow_provider_skattekonto.exceptions import (
    CertificateError,
    ConfigurationError,
    ServiceClosedError,
    SkattekontoApiError,
    SkattekontoError,
    TokenError,
)
from airflow_provider_skattekonto.hooks._connection import SkattekontoConnectionConfig, parse_connection
from airflow_provider_skattekonto.hooks._protocol import (
    CORRELATION_HEADER,
    SERVER_CORRELATION_HEADER,
    Call,
    Mask,
    Plan,
    Reply,
    RequestSpec,
    RetryPolicy,
    Secret,
    Send,
    Sleep,
    TokenCache,
    api_error,
    new_correlation_id,
    tls_failure,
    transport_error,
)
from airflow_provider_skattekonto.version_compat import BaseHook

if TYPE_CHECKING:
    import ssl

    from airflow_provider_skattekonto.domain.certificates import LoadedCertificate

log = logging.getLogger(__name__)

BESTALL_PATH = "/beskattning/skattekonto/huvudmans-saldo-och-transaktioner/v1/bestall"
SANDBOX_CLOCK_PATH = "/_sandbox/clock"
# The sandbox's clock may jump or change speed at any time: a waiter re-reads it at least this often (real s),
SANDBOX_CLOCK_STEP = 1.0
# and the async waits of a process on one connection share one reading of it for at most this long (real s):
# one request in flight, the others await its answer (a triggerer starting 1000 waits makes one request).
SANDBOX_CLOCK_SHARE = 0.5
# The async hooks of a process share one lookup of a connection while it is in flight and this long after
# (real s): a triggerer starting 1000 waits of one connection looks it up, parses and masks it once.
CONNECTION_SHARE = 1.0
USER_AGENT = f"airflow-provider-skattekonto/{__version__}"
EXPIRY_WARNING_DAYS = 30


@dataclass(frozen=True)
class ClockReading:
    """The service's time now, and how fast it runs against real time (1.0 except on the sandbox)."""

    now: dt.datetime
    speed: float = 1.0
    controllable: bool = False  # the sandbox's clock: it may jump or change speed at any time

    def longest_sleep(self, max_step_seconds: float) -> float:
        """How long a waiter may sleep before reading the clock again (short on a controllable clock)."""
        return min(max_step_seconds, SANDBOX_CLOCK_STEP) if self.controllable else max_step_seconds

    def real_seconds_until(self, moment: dt.datetime) -> float:
        """Real seconds until ``moment`` on this clock (negative when past)."""
        return (moment - self.now).total_seconds() / self.speed


@dataclass(frozen=True)
class BestallResult:
    """An accepted order (HTTP 202)."""

    correlation_id: str
    server_correlation_id: str | None
    ordered_at: dt.datetime
    delivery_morning: dt.datetime
    status: int = 202

    def to_xcom(self) -> dict[str, Any]:
        """JSON-simple form for XCom."""
        return {
            "ordered": True,
            "correlation_id": self.correlation_id,
            "server_correlation_id": self.server_correlation_id,
            "ordered_at": self.ordered_at.isoformat(),
            "delivery_morning": self.delivery_morning.isoformat(),
            "status": self.status,
        }


class SkattekontoHook(BaseHook):
    """Talks to Skatteverket's Skattekonto API with the organisation certificate.

    :param skattekonto_conn_id: a connection of type ``skattekonto`` (see README for its fields).
    :param timeout: per-request timeout in seconds (default: the connection's, else 30).
    :param retry_max_seconds: total time budget for retries (default: the connection's, else 300).
    :param retry_delay_seconds: wait before retrying 5xx/timeouts (default: the connection's, else 60).
    """

    conn_name_attr = "skattekonto_conn_id"
    default_conn_name = "skattekonto_default"
    conn_type = "skattekonto"
    hook_name = "Skatteverket Skattekonto"

    def __init__(
        self,
        skattekonto_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        retry_max_seconds: float | None = None,
        retry_delay_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.skattekonto_conn_id = skattekonto_conn_id
        self._overrides = {
            "timeout": timeout,
            "retry_max_seconds": retry_max_seconds,
            "retry_delay_seconds": retry_delay_seconds,
        }
        self._config: SkattekontoConnectionConfig | None = None
        self._certificate: LoadedCertificate | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._client: httpx.Client | None = None
        self._async_client: httpx.AsyncClient | None = None
        self._shared: _SharedClient | None = None
        self.tokens = TokenCache()
        self._refresh_token: Secret | None = None  # the refresh token in use (the connection's, or a rotated one)

    # -- the UI's connection form on Airflow before 3.2 (3.2+ reads conn-fields from the provider info) ----
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Form fields for the connection's extras, from :class:`ConnectionExtras`."""
        from airflow_provider_skattekonto.hooks._connection import form_widgets

        return form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabelled and placeholder standard fields of the connection form."""
        from airflow_provider_skattekonto.hooks._connection import UI_FIELD_BEHAVIOUR

        return UI_FIELD_BEHAVIOUR

    # -- configuration -----------------------------------------------------------------------------
    def _parse(self, conn: Any, extra: dict[str, Any]) -> SkattekontoConnectionConfig:
        extra = {k.removeprefix("extra__skattekonto__"): v for k, v in extra.items()}
        for key, value in self._overrides.items():
            if value is not None:
                extra[key] = value
        return parse_connection(
            self.skattekonto_conn_id, host=conn.host, login=conn.login, password=conn.password, extra=extra
        )

    @property
    def config(self) -> SkattekontoConnectionConfig:
        """The validated connection (read once per hook)."""
        if self._config is None:
            from airflow_provider_skattekonto.version_compat import mask_secret

            conn = self.get_connection(self.skattekonto_conn_id)
            config = self._parse(conn, conn.extra_dejson)
            for secret in config.secrets():
                mask_secret(secret)
            self._config = config
        return self._config

    async def aconfig(self) -> SkattekontoConnectionConfig:
        """:attr:`config` for async code (triggers): never calls the sync connection API.

        The hooks of an event loop with the same connection id and overrides share one lookup while it is
        in flight and for :data:`CONNECTION_SHARE` seconds after.
        """
        if self._config is None:
            key = (self.skattekonto_conn_id, tuple(sorted(self._overrides.items())))
            lookups = _CONNECTION_LOOKUPS.setdefault(asyncio.get_running_loop(), _SharedAnswers())
            config, _ = await lookups.get(
                key, self._alookup, lambda answer: time.monotonic() - answer[1] <= CONNECTION_SHARE
            )
            self._config = config
        return self._config

    async def _alookup(self) -> tuple[SkattekontoConnectionConfig, float]:
        """The connection, parsed and its secrets masked; and when (monotonic)."""
        from airflow_provider_skattekonto.version_compat import aget_connection_and_extra, amask_secret

        conn, extra = await aget_connection_and_extra(self, self.skattekonto_conn_id)
        config = self._parse(conn, extra)
        for secret in config.secrets():
            await amask_secret(secret)
        return config, time.monotonic()

    @property
    def calendar(self) -> ServiceCalendar:
        """The service calendar, with the connection's extra closed dates."""
        return self.config.calendar

    def _retry_policy(self, config: SkattekontoConnectionConfig, max_attempts: int | None = None) -> RetryPolicy:
        return RetryPolicy(
            max_seconds=config.retry_max_seconds, delay_seconds=config.retry_delay_seconds, max_attempts=max_attempts
        )

    # -- certificate and TLS -----------------------------------------------------------------------
    def load_certificate(self) -> LoadedCertificate:
        """Load and check the organisation certificate (org number, Luhn, expiry, expected orderer)."""
        if self._certificate is None:
            self._certificate = self._load_certificate(self.config)
        return self._certificate

    def _load_certificate(self, config: SkattekontoConnectionConfig) -> LoadedCertificate:
        from airflow_provider_skattekonto.domain import certificates

        source = config.certificate_source
        try:
            if config.certificate_p12_path or config.certificate_p12_base64:
                if config.certificate_p12_path:
                    data = Path(config.certificate_p12_path).expanduser().read_bytes()
                else:
                    data = base64.b64decode(config.certificate_p12_base64 or "", validate=True)
                loaded = _loaded_once(certificates.load_pkcs12, data, config.certificate_password, source=source)
            else:
                cert_pem = Path(config.certificate_pem_path or "").expanduser().read_bytes()
                key_pem = Path(config.private_key_pem_path or "").expanduser().read_bytes()
                loaded = _loaded_once(
                    certificates.load_pem, cert_pem, key_pem, config.certificate_password, source=source
                )
        except OSError as exc:
            raise CertificateError(
                f"Cannot read the organisation certificate ({source}): {exc.strerror or exc}. The file must "
                "exist on every worker and triggerer that runs this connection's tasks."
            ) from None
        except ValueError:
            raise CertificateError(f"certificate_p12_secret_base64 is not valid base64 ({source})") from None
        for warning in certificates.validate_for_orderer(
            loaded, config.orderer_organisation_number, now=dt.datetime.now(dt.timezone.utc)
        ):
            self.log.warning("%s", warning)
        return loaded

    def _build_ssl_context(self, config: SkattekontoConnectionConfig) -> ssl.SSLContext:
        """TLS 1.2+, server verified (system/certifi CAs or ``ca_bundle_path``), certificate presented."""
        import ssl

        from airflow_provider_skattekonto.domain import certificates

        if self._certificate is None:
            self._certificate = self._load_certificate(config)
        if config.ca_bundle_path:
            if not Path(config.ca_bundle_path).expanduser().is_file():
                raise ConfigurationError(
                    f"Connection {config.conn_id!r}: ca_bundle_path {config.ca_bundle_path!r} is not a file"
                )
            context = ssl.create_default_context(cafile=str(Path(config.ca_bundle_path).expanduser()))
        else:
            import certifi

            context = ssl.create_default_context(cafile=certifi.where())
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        certificates.load_client_certificate_into(context, self._certificate)
        return context

    @staticmethod
    def _tls_key(config: SkattekontoConnectionConfig) -> tuple[Any, ...]:
        return (config, _mtime(config.certificate_p12_path), _mtime(config.certificate_pem_path))

    def _client_settings(self, config: SkattekontoConnectionConfig) -> dict[str, Any]:
        if self._ssl_context is None:
            key = self._tls_key(config)
            with _TLS_LOCK:
                cached = _TLS_CONTEXTS.get(key)
                if cached is None:
                    cached = _TLS_CONTEXTS[key] = (self._build_ssl_context(config), self._certificate)
            self._ssl_context, self._certificate = cached
        return {
            "verify": self._ssl_context,
            "timeout": httpx.Timeout(config.timeout),
            "follow_redirects": False,
            "headers": {"User-Agent": USER_AGENT},
            "trust_env": False,
        }

    def get_conn(self) -> httpx.Client:
        """The HTTP client (mutual TLS), created once per hook."""
        if self._client is None:
            self._client = httpx.Client(**self._client_settings(self.config))
        return self._client

    async def aget_conn(self) -> httpx.AsyncClient:
        """The async HTTP client (mutual TLS).

        Shared: one set of pooled clients per connection configuration (and certificate file version) per
        event loop, used by every hook of that configuration in the process (a triggerer's waits), so polls
        reuse pooled TLS connections instead of a handshake each; :meth:`aclose` releases it, and the last
        release closes it. The hook's own requests are spread over the set; this returns its first client.
        """
        if self._async_client is None:
            config = await self.aconfig()
            key = self._tls_key(config)
            clients = _ASYNC_CLIENTS.setdefault(asyncio.get_running_loop(), {})
            shared = clients.get(key)
            if shared is None:
                if key in _TLS_CONTEXTS:  # the certificate is loaded: nothing that blocks
                    settings = self._client_settings(config)
                else:
                    settings = await asyncio.to_thread(self._client_settings, config)
                shared = clients.get(key)  # another hook may have created it meanwhile
            if shared is None:
                # Waiting for a pooled connection is normal when many waits poll at once: no pool timeout
                # (connect, read and write keep the connection's timeout).
                settings["timeout"] = httpx.Timeout(config.timeout, pool=None)
                pools = tuple(httpx.AsyncClient(**settings, limits=_SHARED_LIMITS) for _ in range(_SHARED_POOLS))
                shared = clients[key] = _SharedClient(pools, key)
            shared.users += 1
            self._shared, self._async_client = shared, shared.client
        return self._async_client

    def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Release the async HTTP client (closed when no other hook of the process uses it)."""
        shared, self._shared, self._async_client = self._shared, None, None
        if shared is not None:
            shared.users -= 1
            if shared.users == 0:
                clients = _ASYNC_CLIENTS.get(asyncio.get_running_loop(), {})
                if clients.get(shared.key) is shared:
                    del clients[shared.key]
                await shared.aclose()

    # -- runners: the only places that do I/O for plans ---------------------------------------------
    def run_plan(self, plan: Plan) -> Any:
        """Drive ``plan`` synchronously and return its result."""
        from airflow_provider_skattekonto.version_compat import mask_secret

        client = self.get_conn()
        outcome: _Outcome = (None, None)
        while True:
            done, action = _step(plan, outcome)
            if done:
                return action
            outcome = (None, None)
            try:
                if isinstance(action, Send):
                    outcome = (_read(client.send(_build(client, action.request))), None)
                elif isinstance(action, Sleep):
                    time.sleep(action.seconds)
                elif isinstance(action, Mask):
                    mask_secret(action.value)
                elif isinstance(action, Call):
                    outcome = (action.function(), None)
            except (httpx.TransportError, *_CALL_ERRORS) as exc:
                outcome = (None, exc)

    async def arun_plan(self, plan: Plan) -> Any:
        """Drive ``plan`` asynchronously (triggers) and return its result."""
        from airflow_provider_skattekonto.version_compat import amask_secret

        await self.aget_conn()
        shared = self._shared
        assert shared is not None
        outcome: _Outcome = (None, None)
        while True:
            done, action = _step(plan, outcome)
            if done:
                return action
            outcome = (None, None)
            try:
                if isinstance(action, Send):
                    outcome = (await shared.send(action.request), None)
                elif isinstance(action, Sleep):
                    await asyncio.sleep(action.seconds)
                elif isinstance(action, Mask):
                    await amask_secret(action.value)
                elif isinstance(action, Call):
                    outcome = (await asyncio.to_thread(action.function), None)
            except (httpx.TransportError, *_CALL_ERRORS) as exc:
                outcome = (None, exc)

    # -- plans --------------------------------------------------------------------------------------
    def _exchange_plan(
        self,
        config: SkattekontoConnectionConfig,
        build: Callable[[Secret | None], RequestSpec],
        *,
        authenticated: bool,
        token_endpoint: bool = False,
        expect: tuple[int, ...] = (200,),
        before_retry: Callable[[], Plan] | None = None,
        quiet: bool = False,
    ) -> Plan:
        """One logical call with retries: 401 refreshes the token once; 429/5xx/timeouts back off."""
        policy = self._retry_policy(config)
        retrying = policy.start()
        while True:
            token = (yield from self._token_plan(config)) if authenticated else None
            request = build(token)
            try:
                reply: Reply = yield Send(request)
            except httpx.TransportError as exc:
                tls = tls_failure(exc, request.url, config.ca_bundle_path)
                if tls is not None:
                    raise tls from None
                error = transport_error(exc, request, config.timeout)
                self.log.warning("%s", error)
            else:
                if not quiet:
                    self._log_exchange(request, reply)
                if reply.status in expect:
                    return reply
                if reply.status == 401 and authenticated and retrying.refresh_token():
                    self.log.warning(
                        "401 Unauthorized (%s=%s): fetching a new token and trying once more",
                        CORRELATION_HEADER,
                        request.correlation_id,
                    )
                    self.tokens.invalidate()
                    continue
                error = api_error(reply, request, token_endpoint=token_endpoint)
            delay = retrying.next_delay(error)
            if delay is None:
                if not error.retryable:
                    raise error
                raise type(error)(
                    f"Gave up after {retrying.attempt} attempt(s) within the retry budget of {policy.max_seconds:g} s "
                    f"(retry_max_seconds); last error: {error.summary}",
                    status=error.status,
                    service_message=error.service_message,
                    correlation_id=error.correlation_id,
                    advice="Check Skatteverket's service status; the task may be retried later.",
                    retryable=True,
                ) from None
            self.log.warning("Attempt %d failed; retrying in %.1f s", retrying.attempt, delay)
            yield Sleep(delay)
            if before_retry is not None:
                yield from before_retry()

    def _token_plan(self, config: SkattekontoConnectionConfig) -> Plan:
        """A cached access token, or a new one from the token endpoint (mutual TLS).

        Tokens stay wrapped in :class:`Secret` in this frame and its callers', and the client secret goes
        into the form only inside ``build``: a traceback that shows local variables shows no secret.
        """
        cached = self.tokens.get()
        if cached is not None:
            return Secret(cached)
        used: Secret | None = None
        if config.grant_type == "refresh_token":
            if self._refresh_token is None:
                stored: Secret | None = yield Call(lambda: self._stored_refresh_token(config))
                if stored:
                    yield Mask(stored.value)
                self._refresh_token = stored or Secret(config.refresh_token or "")
            used = self._refresh_token

        def build(_: Secret | None) -> RequestSpec:
            form = {"grant_type": config.grant_type, "client_id": config.oauth_client_id, "scope": config.scope}
            if config.oauth_client_secret:
                form["client_secret"] = config.oauth_client_secret
            if used is not None:
                form["refresh_token"] = used.value
            return RequestSpec("POST", config.token_url, headers={"Accept": "application/json"}, form=form)

        token, expires_in, rotated = _token_answer(
            (yield from self._exchange_plan(config, build, authenticated=False, token_endpoint=True)), config
        )
        yield Mask(token.value)
        if rotated is not None and (used is None or rotated.value != used.value):
            yield Mask(rotated.value)
            yield Call(lambda: self._persist_refresh_token(config, rotated))
            self._refresh_token = rotated
        self.tokens.store(token.value, expires_in)
        self.log.info("Fetched an access token (scope %s, expires in %.0f s)", config.scope, expires_in)
        return token

    # -- rotated refresh tokens ------------------------------------------------------------------------
    @staticmethod
    def refresh_token_variable(conn_id: str) -> str:
        """The Airflow Variable that keeps connection ``conn_id``'s rotated refresh token (its key contains
        "token", so Airflow masks the value in its UI and API; with a Fernet key it is encrypted at rest)."""
        return f"skattekonto_refresh_token_{conn_id}"

    def _stored_refresh_token(self, config: SkattekontoConnectionConfig) -> Secret | None:
        """The refresh token a run stored after a rotation, if it still belongs to the connection's token.

        The Variable records a hash of the connection's refresh token it replaced: once someone puts a new
        refresh token into the connection (after signing in again), the connection's wins.
        """
        key = self.refresh_token_variable(config.conn_id)
        try:
            raw = _get_variable(key)
        except Exception as exc:  # a worker that cannot read Variables: the connection's token is all there is
            self.log.warning(
                "Cannot read the Airflow Variable %s (%s); using the connection's refresh token",
                key,
                type(exc).__name__,
            )
            return None
        try:
            stored = json.loads(raw) if isinstance(raw, str) else raw
            token = Secret(str(stored["refresh_token"]))
            replaces = str(stored["connection_refresh_token_sha256"])
            del raw, stored
        except (ValueError, TypeError, KeyError):
            return None
        if replaces != _sha256(config.refresh_token or ""):
            self.log.info(
                "Connection %r has a refresh token newer than Variable %s; using the connection's", config.conn_id, key
            )
            return None
        self.log.info("Using the rotated refresh token stored in Airflow Variable %s", key)
        return token

    def _persist_refresh_token(self, config: SkattekontoConnectionConfig, token: Secret) -> None:
        """Store a rotated refresh token where the next run finds it; fail at once if that is impossible."""
        key = self.refresh_token_variable(config.conn_id)
        value = json.dumps(
            {
                "refresh_token": token.value,
                "connection_refresh_token_sha256": _sha256(config.refresh_token or ""),
                "rotated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
        )
        try:
            _set_variable(
                key, value, f"airflow-provider-skattekonto: rotated refresh token of connection {config.conn_id}"
            )
            readable = _get_variable(key) == value
            problem = (
                ""
                if readable
                else "reading it back gives another value (a secrets backend or an AIRFLOW_VAR_ environment "
                "variable shadows it)"
            )
        except Exception as exc:
            problem = f"{type(exc).__name__} while writing it"
        del value  # holds the token: not a local of the frame that raises
        if problem:
            raise TokenError(
                f"The token endpoint rotated the refresh token of connection {config.conn_id!r} (it issued a new one "
                f"and invalidated the one used), but the new one could not be kept in the Airflow Variable {key!r}: "
                f"{problem}",
                status=None,
                advice=(
                    "The next run cannot authenticate with the old refresh token. Let tasks write that Variable (and "
                    "remove whatever shadows it), then sign in again with the authorization-code flow and put the new "
                    "refresh token into the connection's extra refresh_token."
                ),
            )
        self.log.warning(
            "The token endpoint rotated the refresh token of connection %r: the new one is stored (masked) in "
            "Airflow Variable %s, where the next run finds it.",
            config.conn_id,
            key,
        )

    def _clock_plan(self, config: SkattekontoConnectionConfig) -> Plan:
        """The service's clock: real time, or the sandbox's controllable clock when configured."""
        if not config.sandbox_clock:
            return ClockReading(now=dt.datetime.now(STOCKHOLM))

        def build(_: object) -> RequestSpec:
            return RequestSpec(
                "GET",
                config.base_url + SANDBOX_CLOCK_PATH,
                headers={"Accept": "application/json"},
                share_seconds=SANDBOX_CLOCK_SHARE,
            )

        reply = yield from self._exchange_plan(config, build, authenticated=False, quiet=True)
        body = reply.json()
        speed = float(body.get("speed", 1.0))
        # a shared answer may be a little older than this request: advance it by its age on that clock
        age = max(0.0, time.monotonic() - reply.received_at) * max(0.0, speed)
        now = (dt.datetime.fromisoformat(body["now"]) + dt.timedelta(seconds=age)).astimezone(STOCKHOLM)
        return ClockReading(now=now, speed=speed or 1.0, controllable=True)

    def _wait_plan(
        self,
        config: SkattekontoConnectionConfig,
        moment: dt.datetime,
        *,
        max_step_seconds: float,
        jitter_seconds: float = 0.0,
        reading: ClockReading | None = None,
    ) -> Plan:
        """Sleep until ``moment`` on the service clock, re-reading it at least every step; the last reading.

        The clock is real time, or the sandbox's controllable clock when the connection says
        ``sandbox_clock`` (then real sleeps are scaled by its speed, and the clock is re-read every second
        so that a jump is noticed). ``jitter_seconds`` (service time) is added to ``moment`` only when the
        first reading is before ``moment``: waiters that sleep towards the same moment do not all wake at it.
        ``reading``: a fresh reading to start from (saves one clock read).
        """
        if reading is None:
            reading = yield from self._clock_plan(config)
        if jitter_seconds > 0 and reading.now < moment:
            moment += dt.timedelta(seconds=jitter_seconds)
        while True:
            remaining = reading.real_seconds_until(moment)
            if remaining <= 0:
                return reading
            yield Sleep(min(remaining, reading.longest_sleep(max_step_seconds)))
            reading = yield from self._clock_plan(config)

    def _bestall_plan(self, config: SkattekontoConnectionConfig) -> Plan:
        calendar = config.calendar

        def check_open() -> Plan:
            reading = yield from self._clock_plan(config)
            if not calendar.is_service_open(reading.now):
                raise ServiceClosedError(calendar.next_service_opening(reading.now))
            return reading

        before: ClockReading = yield from check_open()
        sent: list[RequestSpec] = []

        def build(token: Secret | None) -> RequestSpec:
            correlation_id = new_correlation_id()
            request = RequestSpec(
                "POST",
                config.base_url + BESTALL_PATH,
                headers={
                    "Accept": "application/json",
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {token.value if token else ''}",
                    "client_id": config.api_client_id,
                    "client_secret": config.api_client_secret,
                    CORRELATION_HEADER: correlation_id,
                },
                json_body={},
                correlation_id=correlation_id,
            )
            sent.append(request)
            return request

        reply = yield from self._exchange_plan(
            config, build, authenticated=True, expect=(202,), before_retry=check_open
        )
        after: ClockReading = yield from self._clock_plan(config)
        delivery = calendar.delivery_for(before.now)
        late = calendar.delivery_for(after.now)
        if late != delivery:
            self.log.warning(
                "The order was sent at %s and answered at %s, across the 03:00 cutoff: assuming it lands "
                "in the later file (%s).",
                before.now.isoformat(),
                after.now.isoformat(),
                late.isoformat(),
            )
            delivery = late
        result = BestallResult(
            correlation_id=sent[-1].correlation_id or "",
            server_correlation_id=reply.header(SERVER_CORRELATION_HEADER),
            ordered_at=before.now,
            delivery_morning=delivery,
            status=reply.status,
        )
        self.log.info(
            "Order accepted (HTTP %d), %s=%s; its answer file is due on E-transport by %s",
            reply.status,
            CORRELATION_HEADER,
            result.correlation_id,
            delivery.isoformat(),
        )
        return result

    def _log_exchange(self, request: RequestSpec, reply: Reply) -> None:
        """Log the call and both correlation ids (sent and echoed); never headers or bodies."""
        self.log.info(
            "%s %s -> HTTP %d; %s sent=%s echoed=%s; %s=%s",
            request.method,
            request.url.split("?", 1)[0],
            reply.status,
            CORRELATION_HEADER,
            request.correlation_id or "-",
            reply.header(CORRELATION_HEADER) or "-",
            SERVER_CORRELATION_HEADER,
            reply.header(SERVER_CORRELATION_HEADER) or "-",
        )

    # -- public API ---------------------------------------------------------------------------------
    def bestall(self) -> BestallResult:
        """Place the order (POST bestall). Raises :class:`ServiceClosedError` in 03:00-05:00."""
        return self.run_plan(self._bestall_plan(self.config))

    def service_clock(self) -> ClockReading:
        """The service's clock (real time, or the sandbox's)."""
        return self.run_plan(self._clock_plan(self.config))

    async def aservice_clock(self) -> ClockReading:
        """Async :meth:`service_clock`."""
        return await self.arun_plan(self._clock_plan(await self.aconfig()))

    def service_now(self) -> dt.datetime:
        """Now, in Europe/Stockholm, on the service's clock."""
        return self.service_clock().now

    def get_token(self) -> str:
        """A valid access token (cached until shortly before expiry)."""
        token: Secret = self.run_plan(self._token_plan(self.config))
        return token.value

    def wait_until(
        self,
        moment: dt.datetime,
        *,
        max_step_seconds: float = 60.0,
        jitter_seconds: float = 0.0,
        reading: ClockReading | None = None,
    ) -> ClockReading:
        """Block until ``moment`` on the service clock (non-deferrable mode); see :meth:`_wait_plan`."""
        return self.run_plan(
            self._wait_plan(
                self.config, moment, max_step_seconds=max_step_seconds, jitter_seconds=jitter_seconds, reading=reading
            )
        )

    async def await_until(
        self,
        moment: dt.datetime,
        *,
        max_step_seconds: float = 300.0,
        jitter_seconds: float = 0.0,
        reading: ClockReading | None = None,
    ) -> ClockReading:
        """Async :meth:`wait_until` (triggers)."""
        return await self.arun_plan(
            self._wait_plan(
                await self.aconfig(),
                moment,
                max_step_seconds=max_step_seconds,
                jitter_seconds=jitter_seconds,
                reading=reading,
            )
        )

    def certificate_summary(self) -> str:
        """Organisation number and validity of the configured certificate, for messages."""
        loaded = self.load_certificate()
        days = loaded.days_left(dt.datetime.now(dt.timezone.utc))
        return (
            f"organisation {loaded.organisation_number}, certificate valid until "
            f"{loaded.not_valid_after:%Y-%m-%d} ({days:.0f} days left)"
        )

    def test_connection(self) -> tuple[bool, str]:
        """For the UI's Test button: load the certificate and fetch a token."""
        try:
            summary = self.certificate_summary()
            self.get_token()
            reading = self.service_clock()
            state = "open" if self.calendar.is_service_open(reading.now) else "closed (03:00-05:00)"
            return True, f"Token fetched for {summary}; the service is {state} now."
        except SkattekontoError as exc:
            return False, str(exc)
        finally:
            self.close()


# One TLS context per connection configuration (and certificate file version) per process: a triggerer
# holding many waits, or a worker running many hooks, loads the certificate and CA bundle once.
_TLS_CONTEXTS: dict[tuple[Any, ...], tuple[ssl.SSLContext, LoadedCertificate | None]] = {}
_TLS_LOCK = threading.Lock()

# The certificates loaded in this process, by what was loaded (the bytes, the password and where they came from):
# checking an RSA key costs tens of milliseconds, and several connections often use one organisation certificate.
_CERTIFICATES: dict[bytes, LoadedCertificate] = {}
_CERTIFICATES_KEPT = 32
_CERTIFICATES_LOCK = threading.Lock()  # not _TLS_LOCK: that one is held while a certificate loads


def _loaded_once(load: Callable[..., LoadedCertificate], *parts: bytes | str | None, source: str) -> LoadedCertificate:
    """``load(*parts, source=source)``, or what it returned before for the same parts in this process."""
    digest = hashlib.sha256(load.__name__.encode())
    for part in (*parts, source):
        raw = b"" if part is None else part.encode() if isinstance(part, str) else part
        digest.update(len(raw).to_bytes(8, "big") + (b"-" if part is None else b"+") + raw)
    key = digest.digest()
    with _CERTIFICATES_LOCK:
        loaded = _CERTIFICATES.get(key)
    if loaded is None:
        loaded = load(*parts, source=source)
        with _CERTIFICATES_LOCK:
            if len(_CERTIFICATES) >= _CERTIFICATES_KEPT:
                del _CERTIFICATES[next(iter(_CERTIFICATES))]
            _CERTIFICATES[key] = loaded
    return loaded


# A triggerer's polls share these pools: keep as many connections alive as may be open.
_SHARED_POOLS = 5
_CONNECTIONS_PER_POOL = 10
_SHARED_CONNECTIONS = _SHARED_POOLS * _CONNECTIONS_PER_POOL
_SHARED_LIMITS = httpx.Limits(
    max_connections=_CONNECTIONS_PER_POOL, max_keepalive_connections=_CONNECTIONS_PER_POOL, keepalive_expiry=15.0
)


@dataclass(eq=False)
class _SharedClient:
    """The async clients of one connection configuration in one event loop, and what their users share.

    The pooled connections are split over several clients (``_SHARED_POOLS`` of ``_CONNECTIONS_PER_POOL``):
    httpcore's pool checks every pooled connection (``has_expired``: a socket poll) on every request that
    starts or ends, and counts the idle ones once per idle connection, so one pool of 50 spent most of a
    busy triggerer's loop on its own bookkeeping. A request takes the first client with a free connection.
    """

    clients: tuple[httpx.AsyncClient, ...]
    key: tuple[Any, ...]
    users: int = 0
    # Requests in flight at most (= pooled connections): the others wait here, in order, because
    # httpcore's pool does work proportional to its queue on every change of it.
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(_SHARED_CONNECTIONS))
    in_flight: list[int] = field(init=False)  # requests in flight per client
    # The answers of shareable requests (RequestSpec.share_seconds) by (method, URL): in flight, or recent.
    answers: _SharedAnswers[Reply] = field(default_factory=lambda: _SharedAnswers())

    def __post_init__(self) -> None:
        self.in_flight = [0] * len(self.clients)

    @property
    def client(self) -> httpx.AsyncClient:
        """The client :meth:`SkattekontoHook.aget_conn` hands out."""
        return self.clients[0]

    async def send(self, request: RequestSpec) -> Reply:
        """Send ``request`` through the gate. A shareable one is sent only when no identical request is in
        flight and the last answer (2xx) is older than its ``share_seconds``; else that answer is returned."""
        if request.share_seconds <= 0:
            return await self._send(request)

        def fresh(reply: Reply) -> bool:
            return 200 <= reply.status < 300 and time.monotonic() - reply.received_at <= request.share_seconds

        return await self.answers.get((request.method, request.url), lambda: self._send(request), fresh)

    async def _send(self, request: RequestSpec) -> Reply:
        async with self.gate:
            # past the gate, some client has a free connection: the first such (its idle connections are reused)
            in_flight = self.in_flight
            index = next((i for i, n in enumerate(in_flight) if n < _CONNECTIONS_PER_POOL), 0)
            client = self.clients[index]
            in_flight[index] += 1
            try:
                return _read(await client.send(_build(client, request)))
            finally:
                in_flight[index] -= 1

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


_T = TypeVar("_T")


class _SharedAnswers(Generic[_T]):
    """Single-flight, with reuse: one computation per key at a time, whose result every caller gets while
    it runs and, as long as ``fresh(result)``, after it; a failure is given only to the callers it had."""

    def __init__(self) -> None:
        self._futures: dict[Hashable, asyncio.Future[_T]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[_T]], fresh: Callable[[_T], bool]) -> _T:
        future = self._futures.get(key)
        if future is None or (future.done() and not _reusable(future, fresh)):
            future = self._futures[key] = asyncio.ensure_future(make())
            future.add_done_callback(_retrieved)
        # shielded: a caller cancelled (its trigger removed) does not cancel what the others await
        return await asyncio.shield(future)


def _reusable(future: asyncio.Future[_T], fresh: Callable[[_T], bool]) -> bool:
    return not future.cancelled() and future.exception() is None and fresh(future.result())


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a shared failure as seen (its callers may all be gone): no 'exception never retrieved' warning."""
    if not future.cancelled():
        future.exception()


# The shared connection lookups (SkattekontoHook.aconfig), per event loop.
_CONNECTION_LOOKUPS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, _SharedAnswers[tuple[SkattekontoConnectionConfig, float]]
] = weakref.WeakKeyDictionary()
# The shared async clients, per event loop (a client's connections belong to its loop).
_ASYNC_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], _SharedClient]] = (
    weakref.WeakKeyDictionary()
)


def _mtime(path: str | None) -> float | None:
    try:
        return Path(path).expanduser().stat().st_mtime if path else None
    except OSError:
        return None


def _task_sdk_context() -> bool:
    """Whether this process talks to Airflow through a supervisor (a task, a triggerer, ``dag.test()``)."""
    try:
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS  # noqa: F401
    except ImportError:
        return False
    return True


def _get_variable(key: str) -> Any:
    """An Airflow Variable's value (None if unset): through the task SDK in tasks and triggers, else (a script,
    the API server's connection test) through Airflow's metadata database."""
    if _task_sdk_context():
        from airflow.sdk import Variable

        return Variable.get(key, default=None)
    from airflow.models.variable import Variable as StoredVariable

    return StoredVariable.get(key, default_var=None)


def _set_variable(key: str, value: str, description: str) -> None:
    """Write an Airflow Variable (encrypted at rest when Airflow has a Fernet key), like :func:`_get_variable`."""
    if _task_sdk_context():
        from airflow.sdk import Variable

        Variable.set(key, value, description=description)
        return
    from airflow.models.crypto import get_fernet
    from airflow.models.variable import Variable as StoredVariable

    StoredVariable.set(key, value, description=description)
    if not get_fernet().is_encrypted:
        log.warning(
            "Airflow has no Fernet key ([core] fernet_key): Variable %s is stored unencrypted in the metadata "
            "database; configure a Fernet key so it is encrypted at rest",
            key,
        )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _host(url: str | None) -> str:
    return urlsplit(url).netloc if url else "-"


def _token_answer(reply: Reply, config: SkattekontoConnectionConfig) -> tuple[Secret, float, Secret | None]:
    """The access token, its lifetime and a rotated refresh token (if any) from the token endpoint's answer."""
    try:
        body = reply.json()
        token = Secret(str(body["access_token"]))
        expires_in = float(body.get("expires_in", 3600))
        rotated = body.get("refresh_token") if config.grant_type == "refresh_token" else None
    except (ValueError, KeyError, TypeError):
        body = None
        raise TokenError(
            "The token endpoint answered 200 without a usable access_token",
            status=reply.status,
            advice=f"Check token_url (host {_host(config.token_url)}).",
        ) from None
    return token, expires_in, (Secret(str(rotated)) if rotated else None)


def endpoints_for_log(config: SkattekontoConnectionConfig) -> str:
    """The connection's endpoints by host, for log lines.

    Airflow masks the value of any extra whose key contains "token", so the full ``token_url`` would
    print as ``***``; its host alone stays readable (and reveals nothing secret).
    """
    source = config.etransport_url or config.etransport_inbox
    return f"connection {config.conn_id!r}: API {_host(config.base_url)}, token endpoint {_host(config.token_url)}" + (
        f", E-transport {_host(source) or source}" if source else ""
    )


_Outcome = tuple[Any, BaseException | None]
# What a Call action may raise back into its plan (file-system and parsing errors); anything else is a bug.
_CALL_ERRORS = (OSError, ValueError, SkattekontoError)


def _step(plan: Plan, outcome: _Outcome) -> tuple[bool, Any]:
    """Advance ``plan`` with the last action's (value, error): (True, result) once done, else (False, action)."""
    value, error = outcome
    try:
        return False, (plan.throw(error) if error is not None else plan.send(value))
    except StopIteration as stop:
        return True, stop.value


def _build(client: httpx.Client | httpx.AsyncClient, spec: RequestSpec) -> httpx.Request:
    return client.build_request(spec.method, spec.url, headers=dict(spec.headers), json=spec.json_body, data=spec.form)


def _read(response: httpx.Response) -> Reply:
    return Reply(
        status=response.status_code,
        headers={k.lower(): v for k, v in response.headers.items()},
        text=response.text,
    )


__all__ = ["BestallResult", "ClockReading", "SkattekontoApiError", "SkattekontoHook"]
