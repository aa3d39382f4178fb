"""The ``skattekonto`` connection: parsing and validating its fields. No Airflow import.

Field map (extras are JSON keys in the connection's ``extra``):

* ``host``: API base URL (default ``https://api.skatteverket.se``)
* ``login`` / ``password``: the OAuth2 client id / secret for the token endpoint (no secret for a
  designated certificate)
* ``api_client_id`` / ``api_client_secret``: the API-gateway key pair sent as ``client_id`` /
  ``client_secret`` headers on API calls
* ``grant_type`` (``client_credentials`` | ``refresh_token``), ``token_url``, ``scope`` (``skahmst``),
  ``refresh_token``
* certificate: ``certificate_p12_path`` or ``certificate_p12_secret_base64`` with ``certificate_password``,
  or ``certificate_pem_path`` + ``private_key_pem_path`` (+ ``certificate_password`` for an encrypted key)
* ``ca_bundle_path``, ``orderer_organisation_number``, ``timeout``, ``retry_max_seconds``,
  ``retry_delay_seconds``, ``closed_dates``, ``sandbox_clock``
* E-transport: ``etransport_url`` (HTTPS source) or ``etransport_inbox`` (a folder or object-storage
  URL your E-transport client fills), and ``archive_url`` (where downloaded files are kept)
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_skattekonto.domain.calendar import ServiceCalendar
from airflow_provider_skattekonto.domain.identifiers import (
    InvalidIdentifierError,
    normalize_organisation_number,
)
from airflow_provider_skattekonto.exceptions import ConfigurationError

PRODUCTION_API = "https://api.skatteverket.se"
TEST_API = "https://api.test.skatteverket.se"
GRANT_TYPES = ("client_credentials", "refresh_token")
# Token endpoints published on Skatteverket's developer portal ("Säkerhet och API:er").
_TOKEN_URLS = {
    ("production", "client_credentials"): "https://sysorgoauth2.skatteverket.se/oauth2/v1/sysorg/token",
    ("production", "refresh_token"): "https://orgoauth2.skatteverket.se/oauth2/v1/org/token",
    ("test", "client_credentials"): "https://sysorgoauth2.test.skatteverket.se/oauth2/v1/sysorg/token",
    ("test", "refresh_token"): "https://orgoauth2.test.skatteverket.se/oauth2/v1/org/token",
}
KNOWN_EXTRAS = frozenset(
    {
        "api_client_id",
        "api_client_secret",
        "grant_type",
        "token_url",
        "scope",
        "refresh_token",
        "certificate_p12_path",
        "certificate_p12_secret_base64",
        "certificate_p12_base64",  # deprecated name of certificate_p12_secret_base64 (Airflow shows it in clear)
        "certificate_password",
        "certificate_pem_path",
        "private_key_pem_path",
        "ca_bundle_path",
        "orderer_organisation_number",
        "timeout",
        "retry_max_seconds",
        "retry_delay_seconds",
        "closed_dates",
        "etransport_url",
        "etransport_inbox",
        "archive_url",
        "sandbox_clock",
    }
)
SECRET_FIELDS = (
    "oauth_client_secret",
    "api_client_secret",
    "refresh_token",
    "certificate_password",
    "certificate_p12_base64",
)


@dataclass(frozen=True)
class SkattekontoConnectionConfig:
    """Everything the hooks need from a ``skattekonto`` connection. Secrets are kept out of ``repr``."""

    conn_id: str
    base_url: str
    oauth_client_id: str
    oauth_client_secret: str | None = field(repr=False)
    api_client_id: str
    api_client_secret: str = field(repr=False)
    grant_type: str
    token_url: str
    scope: str
    refresh_token: str | None = field(repr=False)
    certificate_p12_path: str | None
    certificate_p12_base64: str | None = field(repr=False)
    certificate_password: str | None = field(repr=False)
    certificate_pem_path: str | None
    private_key_pem_path: str | None
    ca_bundle_path: str | None
    orderer_organisation_number: str | None
    timeout: float
    retry_max_seconds: float
    retry_delay_seconds: float
    calendar: ServiceCalendar
    etransport_url: str | None
    etransport_inbox: str | None
    archive_url: str | None
    sandbox_clock: bool

    def secrets(self) -> list[str]:
        """The secret values of this configuration (for Airflow's secrets masker)."""
        values = (getattr(self, name) for name in SECRET_FIELDS)
        return [value for value in values if value]

    @property
    def certificate_source(self) -> str:
        """Where the certificate comes from, for messages (never the content)."""
        if self.certificate_p12_path:
            return f"certificate_p12_path={self.certificate_p12_path}"
        if self.certificate_p12_base64:
            return "certificate_p12_secret_base64 (inline)"
        return f"certificate_pem_path={self.certificate_pem_path}"


def _text(extra: Mapping[str, Any], key: str) -> str | None:
    value = extra.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(value).strip()


def _number(extra: Mapping[str, Any], key: str, default: float, conn_id: str) -> float:
    value = extra.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"Connection {conn_id!r}: extra {key!r} must be a number of seconds, got {value!r}"
        ) from None
    if number < 0:
        raise ConfigurationError(f"Connection {conn_id!r}: extra {key!r} must not be negative, got {value!r}")
    return number


def _flag(extra: Mapping[str, Any], key: str) -> bool:
    value = extra.get(key, False)
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _environment(base_url: str) -> str | None:
    host = urlsplit(base_url).hostname or ""
    if host == "api.skatteverket.se":
        return "production"
    if host == "api.test.skatteverket.se":
        return "test"
    return None


def _closed_dates(extra: Mapping[str, Any], conn_id: str) -> ServiceCalendar:
    raw = extra.get("closed_dates") or []
    items = [part.strip() for part in raw.split(",")] if isinstance(raw, str) else list(raw)
    try:
        return ServiceCalendar.with_closed_dates(item for item in items if item)
    except ValueError:
        raise ConfigurationError(
            f"Connection {conn_id!r}: extra 'closed_dates' must be ISO dates (2026-12-23), "
            f"comma-separated or a JSON list; got {raw!r}"
        ) from None


def parse_connection(
    conn_id: str,
    *,
    host: str | None,
    login: str | None,
    password: str | None,
    extra: Mapping[str, Any],
) -> SkattekontoConnectionConfig:
    """Validate a connection's fields; raise :class:`ConfigurationError` naming the field and the fix."""

    def problem(text: str) -> ConfigurationError:
        return ConfigurationError(f"Connection {conn_id!r}: {text}")

    unknown = sorted(set(extra) - KNOWN_EXTRAS)
    if unknown:
        raise problem(f"unknown extra field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(KNOWN_EXTRAS))}")
    base_url = (host or PRODUCTION_API).strip().rstrip("/")
    if "://" not in base_url:
        base_url = f"https://{base_url}"
    if not base_url.startswith("https://"):
        raise problem(f"host must be an https:// URL (the service requires TLS 1.2+), got {base_url!r}")

    grant_type = _text(extra, "grant_type") or "client_credentials"
    if grant_type not in GRANT_TYPES:
        raise problem(f"extra 'grant_type' must be one of {', '.join(GRANT_TYPES)}, got {grant_type!r}")
    if not login:
        raise problem("login (the OAuth2 client id from Skatteverket's developer portal) is empty")
    refresh_token = _text(extra, "refresh_token")
    if grant_type == "refresh_token" and not refresh_token:
        raise problem("grant_type is refresh_token but extra 'refresh_token' is empty")
    if grant_type == "refresh_token" and not password:
        raise problem("grant_type is refresh_token, which needs the OAuth2 client secret in password")

    api_client_id = _text(extra, "api_client_id")
    api_client_secret = _text(extra, "api_client_secret")
    if not api_client_id or not api_client_secret:
        raise problem(
            "extras 'api_client_id' and 'api_client_secret' (the API-gateway key pair sent as the "
            "client_id/client_secret headers) are required"
        )

    token_url = _text(extra, "token_url")
    if not token_url:
        environment = _environment(base_url)
        if environment is None:
            raise problem(
                f"extra 'token_url' is required for host {base_url!r} (defaults exist only for "
                f"{PRODUCTION_API} and {TEST_API})"
            )
        token_url = _TOKEN_URLS[(environment, grant_type)]
    if not token_url.startswith("https://"):
        raise problem(f"extra 'token_url' must be an https:// URL, got {token_url!r}")

    p12_path = _text(extra, "certificate_p12_path")
    p12_inline = _text(extra, "certificate_p12_secret_base64")
    legacy_p12 = _text(extra, "certificate_p12_base64")
    if legacy_p12:
        if p12_inline:
            raise problem(
                "give only 'certificate_p12_secret_base64'; 'certificate_p12_base64' is its deprecated old name"
            )
        warnings.warn(
            f"Connection {conn_id!r}: extra 'certificate_p12_base64' is deprecated; rename it to "
            "'certificate_p12_secret_base64', which Airflow masks in its UI and REST API (the old name is shown "
            "in clear to anyone who can read connections)",
            FutureWarning,
            stacklevel=2,
        )
        p12_inline = legacy_p12
    pem_path = _text(extra, "certificate_pem_path")
    key_path = _text(extra, "private_key_pem_path")
    sources = [name for name, value in (("p12 path", p12_path), ("p12 base64", p12_inline)) if value]
    if pem_path or key_path:
        sources.append("PEM")
    if not sources:
        raise problem(
            "no organisation certificate: set extra 'certificate_p12_path' (or 'certificate_p12_secret_base64') "
            "with 'certificate_password', or 'certificate_pem_path' + 'private_key_pem_path'; the service "
            "requires mutual TLS with the organisation certificate"
        )
    if len(sources) > 1:
        raise problem(f"give exactly one certificate source, found: {', '.join(sources)}")
    if (pem_path or key_path) and not (pem_path and key_path):
        raise problem("a PEM certificate needs both 'certificate_pem_path' and 'private_key_pem_path'")

    orderer = _text(extra, "orderer_organisation_number")
    if orderer:
        try:
            orderer = normalize_organisation_number(orderer)
        except InvalidIdentifierError as exc:
            raise problem(f"extra 'orderer_organisation_number': {exc}") from None

    etransport_url = _text(extra, "etransport_url")
    if etransport_url and not etransport_url.startswith("https://"):
        raise problem(f"extra 'etransport_url' must be an https:// URL, got {etransport_url!r}")

    return SkattekontoConnectionConfig(
        conn_id=conn_id,
        base_url=base_url,
        oauth_client_id=login,
        oauth_client_secret=password or None,
        api_client_id=api_client_id,
        api_client_secret=api_client_secret,
        grant_type=grant_type,
        token_url=token_url.rstrip("/"),
        scope=_text(extra, "scope") or "skahmst",
        refresh_token=refresh_token,
        certificate_p12_path=p12_path,
        certificate_p12_base64=p12_inline,
        certificate_password=_text(extra, "certificate_password"),
        certificate_pem_path=pem_path,
        private_key_pem_path=key_path,
        ca_bundle_path=_text(extra, "ca_bundle_path"),
        orderer_organisation_number=orderer,
        timeout=_number(extra, "timeout", 30.0, conn_id) or 30.0,
        retry_max_seconds=_number(extra, "retry_max_seconds", 300.0, conn_id),
        retry_delay_seconds=_number(extra, "retry_delay_seconds", 60.0, conn_id),
        calendar=_closed_dates(extra, conn_id),
        etransport_url=etransport_url.rstrip("/") if etransport_url else None,
        etransport_inbox=_text(extra, "etransport_inbox"),
        archive_url=_text(extra, "archive_url"),
        sandbox_clock=_flag(extra, "sandbox_clock"),
    )


def utc_now() -> dt.datetime:
    """The real wall clock, tz-aware."""
    return dt.datetime.now(dt.timezone.utc)
