"""Typed errors of this provider. No Airflow import: usable from hooks, domain code and the sandbox.

Every message names the problem and what to do; none ever contains a secret.
"""

from __future__ import annotations

import datetime as dt

__all__ = [
    "CertificateError",
    "ConfigurationError",
    "ServiceClosedError",
    "SkattekontoApiError",
    "SkattekontoError",
    "TokenError",
]


class SkattekontoError(Exception):
    """Base class of this provider's errors. ``retryable`` says whether trying again later may help."""

    retryable: bool = False


class ConfigurationError(SkattekontoError):
    """The connection or an argument is missing or wrong."""


class CertificateError(SkattekontoError):
    """The organisation certificate cannot be loaded, has expired, or belongs to another organisation."""


class ServiceClosedError(SkattekontoError):
    """The service is closed (03:00-05:00 Europe/Stockholm); ``opens_at`` says when it opens."""

    retryable = True

    def __init__(self, opens_at: dt.datetime) -> None:
        self.opens_at = opens_at
        super().__init__(
            f"Skattekonto service closed until {opens_at:%H:%M} Europe/Stockholm "
            f"({opens_at.isoformat()}); orders are accepted 05:00-03:00. Wait for the opening "
            "(BestallOperator defers until then by itself)."
        )


class SkattekontoApiError(SkattekontoError):
    """An HTTP error answer (or no answer) from the API, with what the caller should do about it."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        service_message: str | None = None,
        correlation_id: str | None = None,
        advice: str = "",
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.service_message = service_message
        self.correlation_id = correlation_id
        self.advice = advice
        self.retryable = retryable
        self.retry_after = retry_after
        self.summary = message  # what failed, without the service's message, correlation id and advice
        parts = [message]
        if service_message:
            parts.append(f"service said: {service_message!r}")
        if correlation_id:
            parts.append(f"skv_client_correlation_id={correlation_id}")
        text = "; ".join(parts)
        super().__init__(f"{text}. {advice}" if advice else text)


class TokenError(SkattekontoApiError):
    """The OAuth2 token endpoint refused or failed to issue a token."""
