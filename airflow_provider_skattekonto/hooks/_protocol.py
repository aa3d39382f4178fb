"""The HTTP protocol of Skatteverket's API, without I/O ("sans-IO"). No Airflow import.

The hooks describe each exchange as a *plan*: a generator that yields :class:`Send`, :class:`Sleep`,
:class:`Mask` and :class:`Call` actions and receives their results. A synchronous runner (worker tasks) and an
asynchronous runner (triggers) perform the actions, so authentication, headers, error handling and
retries exist once, whichever side runs them.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from airflow_provider_skattekonto.exceptions import (
    CertificateError,
    SkattekontoApiError,
    SkattekontoError,
    TokenError,
)

__all__ = [
    "Call",
    "Mask",
    "Plan",
    "Reply",
    "RequestSpec",
    "RetryPolicy",
    "Retrying",
    "Secret",
    "Send",
    "Sleep",
    "TokenCache",
    "api_error",
    "new_correlation_id",
    "transport_error",
]

CORRELATION_HEADER = "skv_client_correlation_id"
SERVER_CORRELATION_HEADER = "skv_correlation_id"


@dataclass(frozen=True)
class RequestSpec:
    """One HTTP request to send. ``headers`` may hold secrets: never log or repr them."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    json_body: Any = None
    form: Mapping[str, str] | None = field(default=None, repr=False)
    correlation_id: str | None = None
    #: An idempotent, unauthenticated GET whose answer the async runner gives to every identical request
    #: on the same shared client while it is in flight and for this many seconds after (single-flight).
    share_seconds: float = 0.0


@dataclass(frozen=True)
class Reply:
    """A fully read (small) HTTP answer. ``text`` may hold tokens (the token endpoint's answer): not in repr."""

    status: int
    headers: Mapping[str, str]
    text: str = field(repr=False)
    #: ``time.monotonic()`` when the answer arrived (a shared answer may be older than the request)
    received_at: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.text) if self.text else None


@dataclass(frozen=True)
class Send:
    """Send ``request``; the runner sends back a :class:`Reply` or throws the transport error in."""

    request: RequestSpec


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` (real time)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret (an access or refresh token) held by code that may raise: its repr never shows the value,
    so a traceback that renders local variables (Airflow 3.0's console log does) cannot reveal it."""

    value: str = field(repr=False)


@dataclass(frozen=True)
class Mask:
    """Register ``value`` with Airflow's secrets masker before it can reach any log."""

    value: str = field(repr=False)


@dataclass(frozen=True)
class Call:
    """Run a blocking function (file-system listing, say); async runners run it in a thread."""

    function: Callable[[], Any]


Action: TypeAlias = Send | Sleep | Mask | Call
Plan: TypeAlias = Generator[Action, Any, Any]


def new_correlation_id() -> str:
    """A fresh ``skv_client_correlation_id``: a random UUID, 36 characters, never reused."""
    return str(uuid.uuid4())


# status -> (retryable, what to do)
_ADVICE: dict[int, tuple[bool, str]] = {
    400: (
        False,
        "The service found the call invalid; do not retry. Check the connection and report the "
        "correlation id to Skatteverket if it persists.",
    ),
    401: (
        False,
        "Unauthorized even with a freshly fetched token: check the API-gateway key "
        "(extras api_client_id/api_client_secret), the OAuth2 client and that the token's scope is skahmst.",
    ),
    403: (
        False,
        "The orderer lacks the role 'Juridiskt läsombud Skattekonto' (SKOL), or the certificate "
        "belongs to another organisation than the representative. Register the SKOL role for your "
        "principals at Skatteverket (Ombudsbehörigheter) with the same organisation number as the "
        "certificate; retrying will not help.",
    ),
    404: (False, "Wrong URI: check the connection's host (API base URL, e.g. https://api.skatteverket.se)."),
    405: (
        False,
        "Method not allowed: the provider called the API wrongly; please report this with the correlation id.",
    ),
    406: (
        False,
        "Accept header refused: a proxy may be rewriting headers; the provider sends Accept: application/json.",
    ),
    415: (
        False,
        "Content type refused: a proxy may be rewriting headers; the provider sends application/json.",
    ),
    429: (True, "Rate limited by Skatteverket: backing off and retrying."),
    500: (True, "Internal error at Skatteverket: the spec says to call again after 1 minute."),
    502: (True, "Bad gateway: retrying after the configured delay."),
    503: (
        True,
        "Service not available (answered by another component): the spec says to call again after 1 minute.",
    ),
    504: (True, "Timeout at Skatteverket: the spec says to call again after 1 minute."),
}


def _service_message(reply: Reply) -> str | None:
    """The service's message: JSON ``{"message": ...}``, OAuth2 ``{"error": ...}``, or plain text (503)."""
    text = reply.text.strip()
    if not text:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(body, dict):
        for key in ("message", "error_description", "error"):
            if body.get(key):
                return str(body[key])[:200]
    return text[:200]


def _retry_after(reply: Reply) -> float | None:
    value = reply.header("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def api_error(reply: Reply, request: RequestSpec, *, token_endpoint: bool = False) -> SkattekontoApiError:
    """The typed error for a non-success ``reply``, with the service's message and what to do."""
    retryable, advice = _ADVICE.get(reply.status, (reply.status >= 500, "Unexpected answer from the service."))
    path = request.url.split("://", 1)[-1].partition("/")[2]
    kind = TokenError if token_endpoint else SkattekontoApiError
    if token_endpoint and reply.status in (400, 401):
        advice = (
            "The token endpoint refused the client: check login/password (OAuth2 client id/secret), "
            "grant_type, scope, token_url, and that the organisation certificate is registered for this "
            "client (designated certificate) or is a valid Expisoft certificate."
        )
    elif token_endpoint and reply.status == 404:
        advice = (
            "The token endpoint was not found at this address: check the connection's extra token_url (its "
            "default comes from the host and grant_type; Skatteverket publishes the token URLs on its developer "
            "portal, page 'Säkerhet och API:er')."
        )
    return kind(
        f"{request.method} /{path} answered HTTP {reply.status}",
        status=reply.status,
        service_message=_service_message(reply),
        correlation_id=request.correlation_id,
        advice=advice,
        retryable=retryable,
        retry_after=_retry_after(reply),
    )


def tls_failure(exc: BaseException, url: str, ca_bundle_path: str | None) -> CertificateError | None:
    """A :class:`CertificateError` if ``exc`` comes from a failed TLS verification or handshake, else None.

    An unknown CA, a hostname mismatch, an expired server certificate or a TLS version below 1.2 is not an
    outage: retrying cannot help, so it fails at once and keeps the TLS reason. A connection merely cut
    during the handshake (EOF) stays a retryable transport error.
    """
    import ssl

    transient = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError, ssl.SSLWantReadError)
    seen: set[int] = set()
    link: BaseException | None = exc
    cause: ssl.SSLError | None = None
    while link is not None and id(link) not in seen and cause is None:
        seen.add(id(link))
        if isinstance(link, ssl.SSLError) and not isinstance(link, transient):
            cause = link
        link = link.__cause__ or link.__context__
    if cause is None:
        return None
    host = url.split("://", 1)[-1].split("/", 1)[0]
    bundle = f"ca_bundle_path={ca_bundle_path}" if ca_bundle_path else "ca_bundle_path (not set: the certifi bundle)"
    reason = getattr(cause, "reason", None) or type(cause).__name__
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = cause.verify_message or str(cause)
        return CertificateError(
            f"TLS verification of {host} failed: {detail} ({reason}). The server's certificate is not trusted "
            f"with {bundle}: point ca_bundle_path at the CA bundle that issued it, or fix the URL (host, "
            "token_url, etransport_url) if it names the wrong server. Not retried: this is not an outage."
        )
    return CertificateError(
        f"TLS handshake with {host} failed: {reason} ({cause}). The service requires TLS 1.2 or newer and "
        f"accepts only organisation certificates it trusts; check the server URL, {bundle} and the "
        "organisation certificate. Not retried: this is not an outage."
    )


def transport_error(exc: BaseException, request: RequestSpec, timeout: float) -> SkattekontoApiError:
    """The typed, retryable error for a request that got no (complete) answer."""
    path = request.url.split("://", 1)[-1].partition("/")[2]
    kind = "timed out" if "Timeout" in type(exc).__name__ else "got no complete answer"
    return SkattekontoApiError(
        f"{request.method} /{path} {kind} ({type(exc).__name__}, timeout {timeout:g} s)",
        status=None,
        correlation_id=request.correlation_id,
        advice="The service counts as unavailable; retrying after the configured delay.",
        retryable=True,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry retryable failures.

    :param max_seconds: total time budget for waiting between attempts; past it the last error is raised.
    :param delay_seconds: wait before retrying 5xx answers, timeouts and dropped connections (spec: 60 s),
        unless the answer carries ``Retry-After``.
    :param rate_limit_base_seconds: first backoff for 429 without ``Retry-After``; doubles per attempt,
        capped at ``delay_seconds``.
    """

    max_seconds: float = 300.0
    delay_seconds: float = 60.0
    rate_limit_base_seconds: float = 1.0
    max_attempts: int | None = None

    def start(self) -> Retrying:
        """The retry state of one logical operation (an API call, a download) under this policy."""
        return Retrying(self)

    def delay(self, error: SkattekontoError, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after ``error``."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        if getattr(error, "status", None) == 429:
            backoff = min(self.rate_limit_base_seconds * 2 ** (attempt - 1), max(self.delay_seconds, 1.0))
            return backoff * random.uniform(1.0, 1.2)
        return self.delay_seconds


@dataclass
class Retrying:
    """The one retry mechanism: counts one operation's attempts and keeps its :class:`RetryPolicy`.

    Every retry loop asks it, after a failure, whether and how long to wait (:meth:`next_delay`), and
    an exchange asks it whether a 401 may fetch a new token and try once more (:meth:`refresh_token`).
    """

    policy: RetryPolicy
    attempt: int = 0
    started: float = field(default_factory=time.monotonic)
    refreshed: bool = False

    def next_delay(self, error: SkattekontoError) -> float | None:
        """The wait before the next attempt after ``error``; None when it must not be retried.

        None when the error is not retryable, the attempts (``max_attempts``) are used up, or waiting
        would pass the time budget (``max_seconds``); the caller then raises.
        """
        self.attempt += 1
        if not error.retryable:
            return None
        if self.policy.max_attempts is not None and self.attempt >= self.policy.max_attempts:
            return None
        delay = self.policy.delay(error, self.attempt)
        if time.monotonic() + delay > self.started + self.policy.max_seconds:
            return None
        return delay

    def refresh_token(self) -> bool:
        """After a 401: fetch a new token and try once more, the first time only (the service's rule)."""
        if self.refreshed:
            return False
        self.refreshed = True
        return True


@dataclass
class TokenCache:
    """An OAuth2 access token kept until shortly before it expires (Skatteverket asks for reuse)."""

    margin_seconds: float = 60.0
    _token: str | None = field(default=None, repr=False)
    _expires_at: float = 0.0
    fetched: int = 0

    def get(self) -> str | None:
        if self._token and time.monotonic() < self._expires_at:
            return self._token
        return None

    def store(self, token: str, expires_in: float) -> None:
        self._token = token
        self._expires_at = time.monotonic() + max(0.0, expires_in - min(self.margin_seconds, expires_in / 2))
        self.fetched += 1

    def invalidate(self) -> None:
        self._token = None
        self._expires_at = 0.0
