"""Registered API consumers of the sandbox and the access tokens issued to them.

Each PKI identity gets an OAuth2 client (id + secret, for the token endpoints), an API-gateway key
pair (id + secret, for the ``client_id``/``client_secret`` headers), a refresh token (the stored
result of an authorization-code sign-in) and a SKOL flag. Secrets are random per sandbox instance
and never appear in reprs.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field, replace

__all__ = ["ClientRegistration", "IssuedToken", "Registry"]

# Identity labels that are registered without the SKOL role (the sandbox's default PKI has one).
NO_SKOL_LABELS = frozenset({"no_skol"})


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the registered one."""
    return given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@dataclass(frozen=True)
class ClientRegistration:
    """One API consumer: an organisation's OAuth2 client and API-gateway key."""

    label: str
    organisation_number: str
    oauth_client_id: str
    oauth_client_secret: str = field(repr=False)
    api_client_id: str = ""
    api_client_secret: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    skol: bool = True


@dataclass
class IssuedToken:
    """An access token's grant: who, for which organisation and scope, until when (sandbox clock)."""

    label: str
    oauth_client_id: str
    organisation_number: str
    scope: str
    issued_at: dt.datetime
    expires_at: dt.datetime

    def valid_at(self, now: dt.datetime) -> bool:
        """True while the token has not expired at sandbox time ``now``."""
        return now < self.expires_at


class Registry:
    """Thread-safe store of registrations, SKOL roles and issued tokens."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_label: dict[str, ClientRegistration] = {}
        self._by_oauth_id: dict[str, ClientRegistration] = {}
        self._by_api_id: dict[str, ClientRegistration] = {}
        self._by_refresh: dict[str, ClientRegistration] = {}
        self._skol_orgs: dict[str, bool] = {}
        self._tokens: dict[str, IssuedToken] = {}
        self.tokens_issued: Counter[str] = Counter()
        self.tokens_issued_by_label: Counter[str] = Counter()

    def register(self, label: str, organisation_number: str, *, skol: bool | None = None) -> ClientRegistration:
        """Register (or return the existing) consumer for identity ``label`` with fresh random secrets."""
        with self._lock:
            existing = self._by_label.get(label)
            if existing is not None:
                return existing
            has_skol = label not in NO_SKOL_LABELS if skol is None else skol
            suffix = secrets.token_hex(4)
            registration = ClientRegistration(
                label=label,
                organisation_number=organisation_number,
                oauth_client_id=f"sandbox-{label}-{suffix}",
                oauth_client_secret=secrets.token_urlsafe(24),
                api_client_id=f"sandbox-api-{label}-{suffix}",
                api_client_secret=secrets.token_urlsafe(24),
                refresh_token=secrets.token_urlsafe(32),
                skol=has_skol,
            )
            self._by_label[label] = registration
            self._by_oauth_id[registration.oauth_client_id] = registration
            self._by_api_id[registration.api_client_id] = registration
            self._by_refresh[registration.refresh_token] = registration
            # The role belongs to the organisation: any registration of it with SKOL grants it.
            self._skol_orgs[organisation_number] = self._skol_orgs.get(organisation_number, False) or has_skol
            return registration

    def set_skol(self, organisation_number: str, skol: bool) -> None:
        """Grant or revoke the SKOL role of an organisation."""
        with self._lock:
            self._skol_orgs[organisation_number] = skol

    def has_skol(self, organisation_number: str) -> bool:
        """True when the organisation holds the SKOL role."""
        with self._lock:
            return self._skol_orgs.get(organisation_number, False)

    def registrations(self) -> list[ClientRegistration]:
        """Every registration, in registration order."""
        with self._lock:
            return list(self._by_label.values())

    def by_label(self, label: str) -> ClientRegistration:
        """The registration of identity ``label``; ``KeyError`` naming the known labels otherwise."""
        with self._lock:
            try:
                return self._by_label[label]
            except KeyError:
                known = ", ".join(self._by_label)
                raise KeyError(f"No sandbox identity {label!r}; known identities: {known}") from None

    def by_oauth_client_id(self, client_id: str) -> ClientRegistration | None:
        with self._lock:
            return self._by_oauth_id.get(client_id)

    def by_api_client_id(self, client_id: str) -> ClientRegistration | None:
        with self._lock:
            return self._by_api_id.get(client_id)

    def by_refresh_token(self, refresh_token: str) -> ClientRegistration | None:
        with self._lock:
            for token, registration in self._by_refresh.items():
                if same_secret(refresh_token, token):
                    return registration
            return None

    def rotate_refresh_token(self, registration: ClientRegistration) -> str:
        """Issue a new refresh token for ``registration``'s client and invalidate its current one (rotation)."""
        new = secrets.token_urlsafe(32)
        with self._lock:
            current = self._by_label[registration.label]
            rotated = replace(current, refresh_token=new)
            self._by_refresh = {t: r for t, r in self._by_refresh.items() if r.label != current.label}
            self._by_refresh[new] = rotated
            self._by_label[current.label] = rotated
            self._by_oauth_id[current.oauth_client_id] = rotated
            self._by_api_id[current.api_client_id] = rotated
        return new

    # -- tokens ---------------------------------------------------------------------------------
    def issue_token(
        self,
        registration: ClientRegistration,
        organisation_number: str,
        scope: str,
        now: dt.datetime,
        lifetime_seconds: float,
    ) -> tuple[str, IssuedToken]:
        """A new random access token bound to ``organisation_number`` and ``scope``."""
        token = secrets.token_urlsafe(32)
        grant = IssuedToken(
            label=registration.label,
            oauth_client_id=registration.oauth_client_id,
            organisation_number=organisation_number,
            scope=scope,
            issued_at=now,
            expires_at=now + dt.timedelta(seconds=lifetime_seconds),
        )
        with self._lock:
            self._tokens[token] = grant
            self.tokens_issued[registration.oauth_client_id] += 1
            self.tokens_issued_by_label[registration.label] += 1
        return token, grant

    def token(self, token: str) -> IssuedToken | None:
        """The grant of an issued access token (expired ones included), or None."""
        with self._lock:
            return self._tokens.get(token)

    def expire_tokens(self, now: dt.datetime) -> int:
        """Make every issued token expire at ``now``; returns how many were still valid."""
        with self._lock:
            count = 0
            for grant in self._tokens.values():
                if grant.expires_at > now:
                    grant.expires_at = now
                    count += 1
            return count

    def clear_tokens(self) -> None:
        """Forget every issued token and the issue counts."""
        with self._lock:
            self._tokens.clear()
            self.tokens_issued.clear()
            self.tokens_issued_by_label.clear()

    def token_stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                "by_client": dict(self.tokens_issued),
                "by_identity": dict(self.tokens_issued_by_label),
            }
