"""The ``skattekonto`` connection: its fields, declared once, and their validation. No Airflow import.

:class:`ConnectionExtras` is the one declaration of the connection's extras (JSON keys in its ``extra``):
the validation below, the UI's connection form (``conn-fields`` in the provider info on Airflow 3.2+, the
hook's form widgets before) and the README's connection table (checked by a test) all come from it.
Standard fields: ``host`` is the API base URL (default ``https://api.skatteverket.se``); ``login`` /
``password`` are the OAuth2 client id / secret for the token endpoint (no secret for a designated
certificate); see :data:`UI_FIELD_BEHAVIOUR`.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from airflow_provider_skattekonto.domain.identifiers import (
    InvalidIdentifierError,
    normalize_organisation_number,
)
from airflow_provider_skattekonto.exceptions import ConfigurationError

if TYPE_CHECKING:
    from airflow_provider_skattekonto.domain.calendar import ServiceCalendar

PRODUCTION_API = "https://api.skatteverket.se"
TEST_API = "https://api.test.skatteverket.se"
# Token endpoints published on Skatteverket's developer portal ("Säkerhet och API:er").
_TOKEN_URLS = {
    ("production", "client_credentials"): "https://sysorgoauth2.skatteverket.se/oauth2/v1/sysorg/token",
    ("production", "refresh_token"): "https://orgoauth2.skatteverket.se/oauth2/v1/org/token",
    ("test", "client_credentials"): "https://sysorgoauth2.test.skatteverket.se/oauth2/v1/sysorg/token",
    ("test", "refresh_token"): "https://orgoauth2.test.skatteverket.se/oauth2/v1/org/token",
}


DEFAULT_MAX_DOWNLOAD_MIB = 512.0
DEFAULT_INBOX_SETTLE_SECONDS = 10.0


def _extra(label: str, description: str, default: Any = None, *, secret: bool = False) -> Any:
    """Declare one extra: its form label and help text, its default, and whether it is a secret."""
    return Field(default=default, title=label, description=description, json_schema_extra={"secret": secret})


class ConnectionExtras(BaseModel):
    """The extras of a ``skattekonto`` connection (blank values count as missing, so defaults apply)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_client_id: str | None = _extra("API client id", "API-gateway key sent in the client_id header of API calls")
    api_client_secret: str | None = _extra(
        "API client secret", "API-gateway secret sent in the client_secret header", secret=True
    )
    grant_type: Literal["client_credentials", "refresh_token"] = _extra(
        "OAuth2 grant type",
        "client_credentials (unattended, mutual TLS) or refresh_token (authorization code)",
        "client_credentials",
    )
    token_url: str | None = _extra("Token URL", "OAuth2 token endpoint; default derived from the host and grant type")
    scope: str = _extra("Scope", "OAuth2 scope", "skahmst")
    refresh_token: str | None = _extra("Refresh token", "Stored refresh token for the refresh_token grant", secret=True)
    certificate_p12_path: str | None = _extra("Certificate (.p12) path", "Organisation certificate as PKCS#12 file")
    certificate_p12_secret_base64: str | None = _extra(
        "Certificate (.p12) base64",
        "Organisation certificate as base64 PKCS#12, instead of a path (masked by Airflow)",
        secret=True,
    )
    certificate_p12_base64: str | None = Field(  # deprecated old name: accepted with a warning, not in the form
        default=None,
        title="Certificate (.p12) base64, old name",
        description="Deprecated: use the masked field",
        json_schema_extra={"secret": True, "deprecated": True},
    )
    certificate_password: str | None = _extra(
        "Certificate PIN", "Password (PIN) of the PKCS#12 file or PEM key", secret=True
    )
    certificate_pem_path: str | None = _extra("Certificate PEM path", "Certificate (and chain) as PEM, with a PEM key")
    private_key_pem_path: str | None = _extra("Private key PEM path", "Private key of the PEM certificate")
    ca_bundle_path: str | None = _extra(
        "CA bundle path", "CA certificates to verify the server; default: system/certifi"
    )
    orderer_organisation_number: str | None = _extra(
        "Orderer organisation number", "Expected bestallareId; the certificate must carry this number"
    )
    timeout: float = Field(
        default=30.0, ge=0, title="Timeout (s)", description="Per-request timeout; the service answers within 30 s"
    )
    retry_max_seconds: float = Field(
        default=300.0, ge=0, title="Retry budget (s)", description="Total time spent retrying 429/5xx/timeouts"
    )
    retry_delay_seconds: float = Field(
        default=60.0, ge=0, title="Retry delay (s)", description="Wait before retrying 500/503/504 (spec: 60)"
    )
    closed_dates: str | list[str] | None = _extra(
        "Extra closed dates", "Comma-separated ISO dates with no file, beyond holidays"
    )
    etransport_url: str | None = _extra("E-transport URL", "HTTPS base URL of the E-transport file source")
    etransport_inbox: str | None = _extra(
        "E-transport inbox", "Directory or object-storage URL where your E-transport client drops files"
    )
    archive_url: str | None = _extra(
        "Archive URL", "Object-storage URL (file://, s3://...) where answer files are archived before loading"
    )
    max_download_mib: float = Field(
        default=DEFAULT_MAX_DOWNLOAD_MIB,
        gt=0,
        title="Download cap (MiB)",
        description="Largest answer file downloaded (also when the listing gives no size); larger fails",
    )
    inbox_settle_seconds: float = Field(
        default=DEFAULT_INBOX_SETTLE_SECONDS,
        ge=0,
        title="Inbox settle time (s)",
        description="An inbox file without a .sha256 is taken once its size and mtime stay unchanged this long",
    )
    sandbox_clock: bool = _extra("Sandbox clock", "Local sandbox only: take 'now' from the sandbox's clock", False)

    @model_validator(mode="before")
    @classmethod
    def _blank_means_missing(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        cleaned: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, str):
                value = value.strip()
            elif isinstance(value, int | float) and not isinstance(value, bool) and key in TEXT_EXTRAS:
                value = str(value)  # e.g. an organisation number written as a JSON number
            if value is None or value == "":
                continue
            cleaned[key] = value
        return cleaned


KNOWN_EXTRAS = frozenset(ConnectionExtras.model_fields)
GRANT_TYPES: tuple[str, ...] = get_args(ConnectionExtras.model_fields["grant_type"].annotation)


def _declared(test: Any) -> frozenset[str]:
    return frozenset(name for name, info in ConnectionExtras.model_fields.items() if test(info))


SECRET_EXTRAS = _declared(lambda info: isinstance(info.json_schema_extra, dict) and info.json_schema_extra["secret"])
TEXT_EXTRAS = _declared(lambda info: info.annotation in (str, str | None))
#: Old names still accepted (with a warning) but no longer in the form or the docs.
DEPRECATED_EXTRAS = _declared(
    lambda info: isinstance(info.json_schema_extra, dict) and "deprecated" in info.json_schema_extra
)
SECRET_FIELDS = ("oauth_client_secret", *sorted(SECRET_EXTRAS))
#: The standard fields in the UI's connection form (keys as Airflow's ``get_ui_field_behaviour`` uses them).
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": ["schema", "port"],
    "relabeling": {"host": "API base URL", "login": "OAuth2 client id", "password": "OAuth2 client secret"},
    "placeholders": {
        "host": PRODUCTION_API,
        "login": "client id from Skatteverket's developer portal",
        "password": "empty for a designated certificate (no secret)",
    },
}


def _json_type(name: str) -> str:
    annotation: Any = ConnectionExtras.model_fields[name].annotation
    return {bool: "boolean", float: "number"}.get(annotation, "string")


def conn_fields() -> dict[str, dict[str, Any]]:
    """The extras as Airflow 3.2+'s declarative ``conn-fields`` (JSON schema per field) for the provider info."""
    fields: dict[str, dict[str, Any]] = {}
    for name, info in ConnectionExtras.model_fields.items():
        if name in DEPRECATED_EXTRAS:
            continue
        schema: dict[str, Any] = {"type": [_json_type(name), "null"]}
        if info.default is not None:
            schema["default"] = info.default
        choices = getattr(info.annotation, "__args__", ())
        if choices and all(isinstance(choice, str) for choice in choices):
            schema["enum"] = list(choices)
        if name in SECRET_EXTRAS:
            schema["format"] = "password"
        fields[name] = {"label": info.title, "description": info.description, "schema": schema}
    return fields


def form_widgets() -> dict[str, Any]:
    """The extras as WTForms fields, for the connection form of Airflow before 3.2 (which reads the hook's
    ``get_connection_form_widgets``; its API server renders them without Flask-AppBuilder)."""
    from wtforms import BooleanField, IntegerField, PasswordField, StringField
    from wtforms.validators import Optional, any_of

    widgets: dict[str, Any] = {}
    for name, spec in conn_fields().items():
        schema = spec["schema"]
        kind = schema["type"][0]
        validators: list[Any] = [Optional()]
        if "enum" in schema:
            validators.append(any_of(schema["enum"]))
        if kind == "boolean":
            field_class: Any = BooleanField
        elif kind == "number":
            field_class = IntegerField  # the older UI knows whole numbers only; seconds are enough here
        else:
            field_class = PasswordField if name in SECRET_EXTRAS else StringField
        widgets[name] = field_class(
            spec["label"], validators=validators, description=spec["description"], default=schema.get("default")
        )
    return widgets


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
    max_download_mib: float = DEFAULT_MAX_DOWNLOAD_MIB
    inbox_settle_seconds: float = DEFAULT_INBOX_SETTLE_SECONDS

    def secrets(self) -> list[str]:
        """The secret values of this configuration (for Airflow's secrets masker)."""
        values = (getattr(self, name, None) for name in SECRET_FIELDS)
        return [value for value in values if value]

    @property
    def certificate_source(self) -> str:
        """Where the certificate comes from, for messages (never the content)."""
        if self.certificate_p12_path:
            return f"certificate_p12_path={self.certificate_p12_path}"
        if self.certificate_p12_base64:
            return "certificate_p12_secret_base64 (inline)"
        return f"certificate_pem_path={self.certificate_pem_path}"


def nearest_extra(name: str) -> str | None:
    """The known extra closest to the unknown ``name`` (a typo, another case, dashes), or None."""
    import difflib

    known = sorted(KNOWN_EXTRAS - DEPRECATED_EXTRAS)
    folded = {candidate.lower(): candidate for candidate in known}
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in folded:
        return folded[key]
    close = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.75)
    return folded[close[0]] if close else None


def validate_extras(conn_id: str, extra: Mapping[str, Any]) -> ConnectionExtras:
    """The connection's extras checked against :class:`ConnectionExtras`; a mistake names the field (never a
    secret's value) and what it expects."""
    try:
        return ConnectionExtras.model_validate(extra)
    except ValidationError as exc:
        errors = exc.errors()
    unknown = sorted(str(error["loc"][0]) for error in errors if error["type"] == "extra_forbidden")
    if unknown:
        hints = [f"{name} (did you mean {nearest}?)" if (nearest := nearest_extra(name)) else name for name in unknown]
        raise ConfigurationError(
            f"Connection {conn_id!r}: unknown extra field(s) {', '.join(hints)}; known fields: "
            f"{', '.join(sorted(KNOWN_EXTRAS - DEPRECATED_EXTRAS))}"
        )
    error = errors[0]
    name = str(error["loc"][0]) if error["loc"] else "extra"
    info = ConnectionExtras.model_fields.get(name)
    got = "" if name in SECRET_EXTRAS else f", got {error.get('input')!r}"
    expected = f" Expected: {info.description}." if info is not None else ""
    raise ConfigurationError(f"Connection {conn_id!r}: extra {name!r} is invalid ({error['msg']}){got}.{expected}")


#: Storage URL schemes accepted for ``etransport_inbox`` and ``archive_url``: local files and object stores
#: that speak TLS. Plaintext transports (http, ftp, ...) would expose the principals' tax data on the wire.
STORAGE_SCHEMES = frozenset({"file", "local", "s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl"})


def plaintext_storage_problem(url: str | None) -> str | None:
    """Why ``url`` may not hold answer files (a plaintext or unknown scheme), or None when it may."""
    if not url or "://" not in url:
        return None  # a plain local path
    scheme = url.split("://", 1)[0].lower()
    if scheme in STORAGE_SCHEMES:
        return None
    return (
        f"uses {scheme}://, which is refused: answer files hold principals' tax data and may only live on local "
        f"paths or TLS-capable object storage ({', '.join(sorted(STORAGE_SCHEMES))}://, or a plain path); got "
        f"{url.split('://', 1)[0]}://{urlsplit(url).hostname or ''}..."
    )


def _environment(base_url: str) -> str | None:
    host = urlsplit(base_url).hostname or ""
    if host == "api.skatteverket.se":
        return "production"
    if host == "api.test.skatteverket.se":
        return "test"
    return None


def _closed_dates(raw: str | list[str] | None, conn_id: str) -> ServiceCalendar:
    from airflow_provider_skattekonto.domain.calendar import ServiceCalendar  # holidays: not at provider-info time

    raw = raw or []
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

    fields = validate_extras(conn_id, extra)
    base_url = (host or PRODUCTION_API).strip().rstrip("/")
    if "://" not in base_url:
        base_url = f"https://{base_url}"
    if not base_url.startswith("https://"):
        raise problem(f"host must be an https:// URL (the service requires TLS 1.2+), got {base_url!r}")

    grant_type = fields.grant_type
    if not login:
        raise problem("login (the OAuth2 client id from Skatteverket's developer portal) is empty")
    refresh_token = fields.refresh_token
    if grant_type == "refresh_token" and not refresh_token:
        raise problem("grant_type is refresh_token but extra 'refresh_token' is empty")
    if grant_type == "refresh_token" and not password:
        raise problem("grant_type is refresh_token, which needs the OAuth2 client secret in password")

    api_client_id = fields.api_client_id
    api_client_secret = fields.api_client_secret
    if not api_client_id or not api_client_secret:
        raise problem(
            "extras 'api_client_id' and 'api_client_secret' (the API-gateway key pair sent as the "
            "client_id/client_secret headers) are required"
        )

    token_url = fields.token_url
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

    p12_path = fields.certificate_p12_path
    p12_inline = fields.certificate_p12_secret_base64
    legacy_p12 = fields.certificate_p12_base64
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
    pem_path = fields.certificate_pem_path
    key_path = fields.private_key_pem_path
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

    orderer = fields.orderer_organisation_number
    if orderer:
        try:
            orderer = normalize_organisation_number(orderer)
        except InvalidIdentifierError as exc:
            raise problem(f"extra 'orderer_organisation_number': {exc}") from None

    etransport_url = fields.etransport_url
    if etransport_url and not etransport_url.startswith("https://"):
        raise problem(f"extra 'etransport_url' must be an https:// URL, got {etransport_url!r}")
    for name in ("etransport_inbox", "archive_url"):
        refused = plaintext_storage_problem(getattr(fields, name))
        if refused:
            raise problem(f"extra {name!r} {refused}")

    return SkattekontoConnectionConfig(
        conn_id=conn_id,
        base_url=base_url,
        oauth_client_id=login,
        oauth_client_secret=password or None,
        api_client_id=api_client_id,
        api_client_secret=api_client_secret,
        grant_type=grant_type,
        token_url=token_url.rstrip("/"),
        scope=fields.scope,
        refresh_token=refresh_token,
        certificate_p12_path=p12_path,
        certificate_p12_base64=p12_inline,
        certificate_password=fields.certificate_password,
        certificate_pem_path=pem_path,
        private_key_pem_path=key_path,
        ca_bundle_path=fields.ca_bundle_path,
        orderer_organisation_number=orderer,
        timeout=fields.timeout or 30.0,
        retry_max_seconds=fields.retry_max_seconds,
        retry_delay_seconds=fields.retry_delay_seconds,
        calendar=_closed_dates(fields.closed_dates, conn_id),
        etransport_url=etransport_url.rstrip("/") if etransport_url else None,
        etransport_inbox=fields.etransport_inbox,
        archive_url=fields.archive_url,
        sandbox_clock=fields.sandbox_clock,
        max_download_mib=fields.max_download_mib,
        inbox_settle_seconds=fields.inbox_settle_seconds,
    )


def utc_now() -> dt.datetime:
    """The real wall clock, tz-aware."""
    return dt.datetime.now(dt.timezone.utc)
