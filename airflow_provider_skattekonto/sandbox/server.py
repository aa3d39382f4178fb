"""The local sandbox: a real HTTPS server on loopback that behaves like Skatteverket's API.

One :class:`Sandbox` serves, on one port, with mutual TLS against its own PKI:

* the OAuth2 token endpoints ``/oauth2/v1/sysorg/token`` (client credentials) and
  ``/oauth2/v1/org/token`` (stored refresh token of the authorization-code flow): :mod:`.token_endpoints`;
* the API ``POST /beskattning/skattekonto/huvudmans-saldo-och-transaktioner/v1/bestall`` with every
  status of the service description, checked in a gateway-like order: :mod:`.bestall_endpoint`;
* E-transport (an assumed protocol: the real one is not public): ``GET /etransport/v1/files`` and
  ``GET /etransport/v1/files/{name}`` (streamed, ``Range: bytes=N-``): :mod:`.etransport_endpoints`;
* admin endpoints under ``/_sandbox/`` (loopback only, no certificate needed): clock, faults,
  orders, files, stats, config, connection, reset: :mod:`.admin_endpoints`.

:mod:`.tls_server` accepts connections, :mod:`.handler` routes each request and :mod:`.connection`
holds a connection's plumbing. This module holds the state they share and the server's lifecycle.
Every time rule reads the sandbox's :class:`SandboxClock`.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, ServiceCalendar
from airflow_provider_skattekonto.domain.certificates import organisation_number_from_certificate
from airflow_provider_skattekonto.domain.identifiers import InvalidIdentifierError, normalize_organisation_number
from airflow_provider_skattekonto.sandbox.bestall_endpoint import BESTALL_HEADERS, TRANSPORT_HEADERS
from airflow_provider_skattekonto.sandbox.clock import SandboxClock
from airflow_provider_skattekonto.sandbox.connection import PeerCertificate
from airflow_provider_skattekonto.sandbox.etransport import (
    AcceptedOrder,
    AnswerFile,
    FileProduction,
    GenerationSettings,
)
from airflow_provider_skattekonto.sandbox.faults import FaultInjector
from airflow_provider_skattekonto.sandbox.pki import Identity, SandboxPki, ensure_pki
from airflow_provider_skattekonto.sandbox.protocol import (
    ETRANSPORT_PREFIX,
    ORG_TOKEN_PATH,
    ROUTE_ADMIN,
    SCOPE,
    SYSORG_TOKEN_PATH,
)
from airflow_provider_skattekonto.sandbox.ratelimit import RateLimiter
from airflow_provider_skattekonto.sandbox.registry import ClientRegistration, Registry
from airflow_provider_skattekonto.sandbox.tls_server import TlsServer

__all__ = ["Sandbox", "SandboxSettings"]

logger = logging.getLogger(__name__)


@dataclass
class SandboxSettings:
    """Tunable behaviour of a running sandbox (``Sandbox.configure`` / ``POST /_sandbox/config``)."""

    seed: int = 1
    principals_per_orderer: int = 25
    transactions_per_principal: int = 8
    rate_limit_per_second: float = 20.0
    rate_limit_burst: float | None = None
    token_lifetime_seconds: float = 3600.0
    retention_days: float = 30.0
    # Refresh-token rotation: each refresh answers a new refresh token and invalidates the one used.
    rotate_refresh_tokens: bool = False

    def generation(self) -> GenerationSettings:
        return GenerationSettings(
            seed=self.seed,
            principals_per_orderer=self.principals_per_orderer,
            transactions_per_principal=self.transactions_per_principal,
            retention_days=self.retention_days,
        )


# -- the sandbox ---------------------------------------------------------------------------------


class Sandbox:
    """A running sandbox (use :meth:`start`; a context manager that stops it on exit)."""

    def __init__(
        self,
        directory: Path,
        *,
        pki: SandboxPki,
        clock: SandboxClock,
        settings: SandboxSettings,
        calendar: ServiceCalendar,
    ) -> None:
        self.directory = directory
        self.pki = pki
        self.clock = clock
        self.calendar = calendar
        self.settings = settings
        self._initial_settings = SandboxSettings(**asdict(settings))
        self.registry = Registry()
        self.faults = FaultInjector(expire_tokens=self._expire_tokens)
        self.limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.production = FileProduction(
            directory / "etransport", calendar, self.faults, lambda: self.settings.generation()
        )
        self._stats_lock = threading.Lock()
        # set by reset() and stop(): ends the slow-fault pauses of the requests accepted before (see slow_pause)
        self._pauses_over = threading.Event()
        self._requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._bytes_served = 0
        self._unexpected_headers: Counter[str] = Counter()
        self._seen_correlation_ids: set[str] = set()
        self._reused_correlation_ids = 0
        self._clock_reads = 0
        self._ca_cert = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
        for identity in pki.identities.values():
            self.register_identity(identity)
        self._planted: list[tuple[Any, bytes | None]] = []
        self._server: TlsServer | None = None
        self._thread: threading.Thread | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        directory: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: SandboxClock | None = None,
        seed: int = 1,
        principals_per_orderer: int = 25,
        transactions_per_principal: int = 8,
        rate_limit_per_second: float = 20.0,
        rate_limit_burst: float | None = None,
        token_lifetime_seconds: float = 3600,
        retention_days: float = 30,
        calendar: ServiceCalendar | None = None,
    ) -> Sandbox:
        """Create the PKI in ``directory/pki`` if needed, bind ``host:port`` (0: a free port) and serve."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        settings = SandboxSettings(
            seed=int(seed),
            principals_per_orderer=int(principals_per_orderer),
            transactions_per_principal=int(transactions_per_principal),
            rate_limit_per_second=float(rate_limit_per_second),
            rate_limit_burst=rate_limit_burst,
            token_lifetime_seconds=float(token_lifetime_seconds),
            retention_days=float(retention_days),
        )
        sandbox = cls(
            directory,
            pki=ensure_pki(directory / "pki"),
            clock=clock or SandboxClock(),
            settings=settings,
            calendar=calendar or ServiceCalendar(),
        )
        sandbox._serve(host, port)
        return sandbox

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.pki.server_cert_path, self.pki.server_key_path)
        context.load_verify_locations(cafile=str(self.pki.ca_cert_path))
        # The foreign CA is accepted by TLS only so that its certificates reach the application, which
        # refuses them with a proper 401 (like a gateway) instead of a failed handshake.
        foreign = self.pki.foreign_ca_cert_path
        if foreign.exists():
            context.load_verify_locations(cafile=str(foreign))
        # Expiry is checked by the application too (401 instead of a handshake failure).
        context.verify_flags |= ssl.VerifyFlags(0x200000)  # X509_V_FLAG_NO_CHECK_TIME
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def _serve(self, host: str, port: int) -> None:
        server = TlsServer((host, int(port)), self._server_context(), self)
        self._server = server
        self.host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"sandbox-{self.port}", daemon=True
        )
        self._thread.start()
        logger.info("Skattekonto sandbox listening on %s", self.base_url)

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:<port>``: the API, token, E-transport and admin base URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def server_stopping(self) -> bool:
        return self._server is None or self._server.stopping.is_set()

    def slow_pause(self, seconds: float) -> bool:
        """Hold a request for a slow fault; False when a reset (or stop) ended the pause: the request belongs
        to an earlier test, which is over, so it is dropped unprocessed instead of landing in the next one."""
        return not self._pauses_over.wait(seconds)

    def stop(self) -> None:
        """Stop serving, close every connection and wait for the accept loop to end. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        self._pauses_over.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=10)
        logger.info("Skattekonto sandbox on port %s stopped", self.port)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._server is None else self.base_url
        return f"Sandbox({state}, clock={self.clock!r})"

    # -- identities -----------------------------------------------------------------------------
    def register_identity(self, identity: Identity, *, skol: bool | None = None) -> ClientRegistration:
        """Register an OAuth client and API key for ``identity`` (e.g. one made by ``issue_identity``).

        ``skol`` defaults to True except for the ``no_skol`` label.
        """
        registration = self.registry.register(identity.label, identity.organisation_number, skol=skol)
        if identity.label not in self.pki.identities:
            self.pki.identities[identity.label] = identity
        return registration

    def registration(self, identity: str = "orderer") -> ClientRegistration:
        """The OAuth client, API key and refresh token of identity ``identity``."""
        return self.registry.by_label(identity)

    def _check_certificate(self, connection: ssl.SSLSocket) -> PeerCertificate:
        try:
            der = connection.getpeercert(binary_form=True)
        except (ValueError, OSError):
            der = None
        if not der:
            return PeerCertificate(None, "no client certificate was presented")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return PeerCertificate(None, "the client certificate cannot be parsed")
        try:
            cert.verify_directly_issued_by(self._ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return PeerCertificate(None, "the client certificate is not issued by a trusted CA")
        real_now = dt.datetime.now(dt.timezone.utc)
        if cert.not_valid_after_utc < real_now:
            return PeerCertificate(None, "the client certificate has expired")
        if cert.not_valid_before_utc > real_now:
            return PeerCertificate(None, "the client certificate is not valid yet")
        organisation_number = organisation_number_from_certificate(cert)
        if not organisation_number:
            return PeerCertificate(None, "the client certificate carries no organisation number")
        return PeerCertificate(organisation_number)

    def client_ssl_context(self, identity: str | None = "orderer") -> ssl.SSLContext:
        """A client SSL context trusting the sandbox CA, presenting ``identity``'s certificate (None: none)."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert_path))
        if identity is not None:
            chosen = self.pki.identity(identity)
            context.load_cert_chain(chosen.cert_pem_path, chosen.key_pem_path)
        return context

    # -- orders and files -----------------------------------------------------------------------
    def _organisation(self, orderer: str) -> tuple[str, str | None]:
        """(organisation number, identity label) for an identity label or an organisation number."""
        if orderer in self.pki.identities:
            return self.pki.identities[orderer].organisation_number, orderer
        try:
            number = normalize_organisation_number(orderer)
        except InvalidIdentifierError as exc:
            raise ValueError(
                f"orderer {orderer!r} is neither a sandbox identity nor an organisation number: {exc}"
            ) from None
        label = next((i.label for i in self.pki.identities.values() if i.organisation_number == number), None)
        return number, label

    def _record_order(
        self,
        orderer: str,
        received_at: dt.datetime,
        *,
        client_correlation_id: str | None,
        correlation_id: str,
        identity: str | None,
    ) -> AcceptedOrder:
        if client_correlation_id is not None:
            with self._stats_lock:
                if client_correlation_id in self._seen_correlation_ids:
                    self._reused_correlation_ids += 1
                self._seen_correlation_ids.add(client_correlation_id)
        return self.production.place_order(
            orderer,
            received_at,
            client_correlation_id=client_correlation_id,
            correlation_id=correlation_id,
            identity=identity,
        )

    def place_order(self, orderer: str = "orderer", received_at: dt.datetime | None = None) -> AcceptedOrder:
        """Record an accepted order directly (no API call); ``orderer`` is a label or org number."""
        number, label = self._organisation(orderer)
        moment = received_at.astimezone(STOCKHOLM) if received_at is not None else self.clock.now()
        return self.production.place_order(number, moment, identity=label, source="admin")

    def orders(self) -> list[AcceptedOrder]:
        """Every accepted order since the last reset, oldest first."""
        return self.production.orders()

    def produce_file(
        self,
        morning: dt.date,
        orderer: str = "orderer",
        *,
        delivered_at: dt.datetime | None = None,
    ) -> AnswerFile:
        """Produce (and write) an answer file for ``orderer`` on business morning ``morning`` now."""
        number, _ = self._organisation(orderer)
        return self.production.produce(number, morning, delivered_at=delivered_at)

    def files(self) -> list[AnswerFile]:
        """Every planned answer file (all orderers, delivered or not); due mornings are planned first."""
        self.production.plan_due(self.clock.now())
        return self.production.all_files()

    def plant_listing_entry(self, entry: Any, content: bytes | None = None) -> None:
        """Put ``entry`` verbatim at the top of every E-transport listing (hostile-input tests).

        ``entry`` may be anything JSON can carry (a malformed entry too); when it is an object with a
        string ``name`` and ``content`` is given, ``GET files/<name>`` serves ``content`` to anyone.
        """
        with self._stats_lock:
            self._planted.append((entry, content))

    def planted_entries(self) -> list[tuple[Any, bytes | None]]:
        """The planted listing entries, oldest first."""
        with self._stats_lock:
            return list(self._planted)

    def planted_content(self, name: str) -> bytes | None:
        """The bytes served for a planted entry called ``name``, if any."""
        for entry, content in self.planted_entries():
            if content is not None and isinstance(entry, dict) and entry.get("name") == name:
                return content
        return None

    # -- settings, faults, stats ----------------------------------------------------------------
    def configure(self, **changes: Any) -> SandboxSettings:
        """Change settings at run time (``rate_limit_per_second=0.001, rate_limit_burst=1``, ...)."""
        unknown = sorted(set(changes) - set(asdict(self.settings)))
        if unknown:
            raise ValueError(
                f"Unknown sandbox setting(s) {', '.join(unknown)}; known: {', '.join(asdict(self.settings))}"
            )
        updated = SandboxSettings(**{**asdict(self.settings), **changes})
        if updated.token_lifetime_seconds <= 0 or updated.retention_days <= 0:
            raise ValueError("token_lifetime_seconds and retention_days must be > 0")
        if updated.principals_per_orderer < 1 or updated.transactions_per_principal < 0:
            raise ValueError("principals_per_orderer must be >= 1 and transactions_per_principal >= 0")
        if "rate_limit_per_second" in changes or "rate_limit_burst" in changes:
            self.limiter.configure(updated.rate_limit_per_second, updated.rate_limit_burst)
        self.settings = updated
        return updated

    def _expire_tokens(self) -> None:
        self.registry.expire_tokens(self.clock.now())

    def _count(self, route: str, status: int | str) -> None:
        if route == ROUTE_ADMIN:  # the admin endpoints are not part of the service's traffic
            return
        with self._stats_lock:
            self._requests[route][str(status)] += 1

    def count_clock_read(self) -> None:
        """A ``GET /_sandbox/clock`` answered (an admin call, so not in the service's request counts)."""
        with self._stats_lock:
            self._clock_reads += 1

    def _count_bytes(self, sent: int) -> None:
        with self._stats_lock:
            self._bytes_served += sent

    def _note_headers(self, names: Iterator[str] | list[str]) -> None:
        unexpected = [n.lower() for n in names if n.lower() not in BESTALL_HEADERS | TRANSPORT_HEADERS]
        if unexpected:
            with self._stats_lock:
                self._unexpected_headers.update(unexpected)

    def stats(self) -> dict[str, Any]:
        """Requests per route and status, tokens issued per client, orders, files, bytes, faults."""
        with self._stats_lock:
            requests = {route: dict(counts) for route, counts in self._requests.items()}
            bytes_served = self._bytes_served
            unexpected = dict(self._unexpected_headers)
            reused = self._reused_correlation_ids
            clock_reads = self._clock_reads
        tokens = self.registry.token_stats()
        server = self._server
        return {
            "requests": requests,
            "tokens_issued": tokens["by_client"],
            "tokens_issued_by_identity": tokens["by_identity"],
            "orders": len(self.production.orders()),
            "files_generated": self.production.files_generated,
            "bytes_served": bytes_served,
            "faults_applied": self.faults.applied_counts(),
            "unexpected_headers": unexpected,
            "reused_client_correlation_ids": reused,
            "clock_reads": clock_reads,
            "connections_open": server.connections_open if server else 0,
            "connections_total": server.connections_total if server else 0,
        }

    def reset(self, *, now: dt.datetime | None = None, speed: float = 1.0) -> None:
        """Clear faults, orders, files, tokens, rate-limit buckets, stats and settings changes.

        The PKI and the registered clients (ids, secrets, refresh tokens) are kept, so connections
        stay valid. The clock goes back to real time (or ``now``) at ``speed``. Requests still held by a slow
        fault are dropped unprocessed: a request from before the reset never changes the state after it.
        """
        self._pauses_over.set()  # requests still held by a slow fault are dropped, not processed after the reset
        self._pauses_over = threading.Event()
        self.faults.reset()
        self.production.reset()
        self.registry.clear_tokens()
        self.settings = SandboxSettings(**asdict(self._initial_settings))
        self.limiter.configure(self.settings.rate_limit_per_second, self.settings.rate_limit_burst)
        with self._stats_lock:
            self._requests.clear()
            self._bytes_served = 0
            self._unexpected_headers.clear()
            self._seen_correlation_ids.clear()
            self._reused_correlation_ids = 0
            self._clock_reads = 0
            self._planted.clear()
        self.clock.reset(now=now, speed=speed)

    # -- Airflow connection ---------------------------------------------------------------------
    def airflow_connection(
        self, identity: str = "orderer", *, grant_type: str = "client_credentials", **extra_overrides: Any
    ) -> dict[str, Any]:
        """The Airflow connection (JSON form, for ``AIRFLOW_CONN_<ID>``) of ``identity`` on this sandbox.

        ``extra_overrides`` replace extras; an override of ``None`` removes that extra.
        """
        if grant_type not in ("client_credentials", "refresh_token"):
            raise ValueError(f"grant_type must be client_credentials or refresh_token, got {grant_type!r}")
        registration = self.registration(identity)
        chosen = self.pki.identity(identity)
        extra: dict[str, Any] = {
            "api_client_id": registration.api_client_id,
            "api_client_secret": registration.api_client_secret,
            "grant_type": grant_type,
            "token_url": self.base_url + (SYSORG_TOKEN_PATH if grant_type == "client_credentials" else ORG_TOKEN_PATH),
            "scope": SCOPE,
            "certificate_p12_path": str(chosen.p12_path),
            "certificate_password": chosen.p12_password,
            "ca_bundle_path": str(self.pki.ca_cert_path),
            "orderer_organisation_number": chosen.organisation_number,
            "timeout": 5,
            "retry_max_seconds": 10,
            "retry_delay_seconds": 0.2,
            "etransport_url": self.base_url + ETRANSPORT_PREFIX,
            "sandbox_clock": True,
        }
        if grant_type == "refresh_token":
            extra["refresh_token"] = registration.refresh_token
        for key, value in extra_overrides.items():
            if value is None:
                extra.pop(key, None)
            else:
                extra[key] = value
        return {
            "conn_type": "skattekonto",
            "host": self.base_url,
            "login": registration.oauth_client_id,
            "password": registration.oauth_client_secret,
            "extra": extra,
        }
