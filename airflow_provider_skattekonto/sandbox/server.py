"""The local sandbox: a real HTTPS server on loopback that behaves like Skatteverket's API.

One :class:`Sandbox` serves, on one port, with mutual TLS against its own PKI:

* the OAuth2 token endpoints ``/oauth2/v1/sysorg/token`` (client credentials) and
  ``/oauth2/v1/org/token`` (stored refresh token of the authorization-code flow);
* the API ``POST /beskattning/skattekonto/huvudmans-saldo-och-transaktioner/v1/bestall`` with every
  status of the service description, checked in a gateway-like order;
* E-transport (an assumed protocol: the real one is not public): ``GET /etransport/v1/files`` and
  ``GET /etransport/v1/files/{name}`` (streamed, ``Range: bytes=N-``);
* admin endpoints under ``/_sandbox/`` (loopback only, no certificate needed): clock, faults,
  orders, files, stats, config, connection, reset.

Every time rule reads the sandbox's :class:`SandboxClock`. TLS handshakes run in the per-connection
thread, so a slow or broken client never blocks the others.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import logging
import math
import socket
import socketserver
import ssl
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, ServiceCalendar, parse_moment
from airflow_provider_skattekonto.domain.certificates import organisation_number_from_certificate
from airflow_provider_skattekonto.domain.identifiers import InvalidIdentifierError, normalize_organisation_number
from airflow_provider_skattekonto.sandbox.clock import SandboxClock
from airflow_provider_skattekonto.sandbox.etransport import (
    AcceptedOrder,
    AnswerFile,
    FileProduction,
    GenerationSettings,
)
from airflow_provider_skattekonto.sandbox.faults import Fault, FaultError, FaultInjector
from airflow_provider_skattekonto.sandbox.pki import Identity, SandboxPki, ensure_pki
from airflow_provider_skattekonto.sandbox.protocol import (
    ADMIN_PREFIX,
    BESTALL_PATH,
    ETRANSPORT_FILES_PATH,
    ETRANSPORT_PREFIX,
    FILE_KIND,
    ISSUABLE_SCOPES,
    ORG_TOKEN_PATH,
    ROUTE_ADMIN,
    ROUTE_BESTALL,
    ROUTE_ETRANSPORT_DOWNLOAD,
    ROUTE_ETRANSPORT_LIST,
    ROUTE_TOKEN_ORG,
    ROUTE_TOKEN_SYSORG,
    ROUTE_UNKNOWN,
    SCOPE,
    SYSORG_TOKEN_PATH,
    status_body,
)
from airflow_provider_skattekonto.sandbox.ratelimit import RateDecision, RateLimiter
from airflow_provider_skattekonto.sandbox.registry import ClientRegistration, Registry, same_secret

__all__ = ["Sandbox", "SandboxSettings"]

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # seconds a client gets to finish the TLS handshake
IDLE_TIMEOUT = 120.0  # seconds a keep-alive connection may sit idle (and a blocked read/write may take)
MAX_BODY = 1 << 20  # request bodies above 1 MiB are refused
CHUNK = 256 * 1024  # download chunk size
MAX_CORRELATION_ID = 36
# Headers a client may send on bestall besides transport headers; anything else is counted in stats.
_BESTALL_HEADERS = frozenset({"accept", "authorization", "client_id", "client_secret", "skv_client_correlation_id"})
_TRANSPORT_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "connection",
        "accept-encoding",
        "user-agent",
        "transfer-encoding",
        "expect",
        "te",
    }
)
_NETWORK_ERRORS = (ConnectionError, TimeoutError, ssl.SSLError, OSError)


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

    def generation(self) -> GenerationSettings:
        return GenerationSettings(
            seed=self.seed,
            principals_per_orderer=self.principals_per_orderer,
            transactions_per_principal=self.transactions_per_principal,
            retention_days=self.retention_days,
        )


@dataclass(frozen=True)
class PeerCertificate:
    """What the client certificate of a connection proves: an organisation number, or a problem."""

    organisation_number: str | None
    problem: str | None = None


# -- the TLS server ------------------------------------------------------------------------------


class _TlsServer(ThreadingHTTPServer):
    """ThreadingHTTPServer over TLS; the handshake happens in each connection's own thread."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], ssl_context: ssl.SSLContext, sandbox: Sandbox) -> None:
        self.ssl_context = ssl_context
        self.sandbox = sandbox
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.connections_total = 0
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can hang without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def _track(self, sock: socket.socket, replaces: socket.socket | None = None) -> None:
        with self._connections_lock:
            if replaces is not None:
                self._connections.discard(replaces)
            else:
                self.connections_total += 1
            self._connections.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(sock)

    @property
    def connections_open(self) -> int:
        with self._connections_lock:
            return len(self._connections)

    def finish_request(self, request: Any, client_address: Any) -> None:
        raw: socket.socket = request
        self._track(raw)
        try:
            if self.stopping.is_set():
                return
            raw.settimeout(HANDSHAKE_TIMEOUT)
            try:
                tls = self.ssl_context.wrap_socket(raw, server_side=True)
            except (*_NETWORK_ERRORS, ValueError) as exc:
                logger.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
            self._track(tls, replaces=raw)
            try:
                _Handler(tls, client_address, self)
            except _NETWORK_ERRORS as exc:
                logger.debug("Connection from %s ended: %s", client_address, exc)
            finally:
                self._untrack(tls)
                with suppress(OSError):
                    tls.close()
        finally:
            self._untrack(raw)

    def shutdown_request(self, request: Any) -> None:
        with suppress(OSError):
            request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not self.stopping.is_set():
            logger.exception("Unexpected error serving %s", client_address)

    def close_connections(self) -> None:
        """Wake every connection thread by shutting its socket down (used when stopping)."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with suppress(OSError, ValueError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


# -- the request handler -------------------------------------------------------------------------


class _Reply(Exception):
    """Raised inside a route to answer at once: ``status`` with the spec body (or ``body``)."""

    def __init__(
        self,
        status: int,
        body: bytes | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = dict(headers or {})


def _json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


def _oauth_error(status: int, error: str, description: str) -> _Reply:
    return _Reply(
        status,
        _json({"error": error, "error_description": description}),
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _resolve(path: str) -> tuple[str, str | None]:
    """(route name, file name for downloads) of a request path."""
    if path == BESTALL_PATH:
        return ROUTE_BESTALL, None
    if path == SYSORG_TOKEN_PATH:
        return ROUTE_TOKEN_SYSORG, None
    if path == ORG_TOKEN_PATH:
        return ROUTE_TOKEN_ORG, None
    if path in (ETRANSPORT_FILES_PATH, ETRANSPORT_FILES_PATH + "/"):
        return ROUTE_ETRANSPORT_LIST, None
    if path.startswith(ETRANSPORT_FILES_PATH + "/"):
        name = unquote(path[len(ETRANSPORT_FILES_PATH) + 1 :])
        if name and "/" not in name and "\\" not in name and name not in (".", ".."):
            return ROUTE_ETRANSPORT_DOWNLOAD, name
        return ROUTE_UNKNOWN, None
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        return ROUTE_ADMIN, None
    return ROUTE_UNKNOWN, None


_ALLOWED_METHODS = {
    ROUTE_BESTALL: ("POST",),
    ROUTE_TOKEN_SYSORG: ("POST",),
    ROUTE_TOKEN_ORG: ("POST",),
    ROUTE_ETRANSPORT_LIST: ("GET",),
    ROUTE_ETRANSPORT_DOWNLOAD: ("GET", "HEAD"),
}


class _Handler(BaseHTTPRequestHandler):
    """One connection. Statistics are counted before the answer's last bytes go out, so a client that
    has its answer also sees it in ``/_sandbox/stats``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small answers go out at once (Nagle + delayed ACK cost ~40 ms each)
    server_version = "skattekonto-sandbox"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: _TlsServer

    # per-connection state
    _peer: PeerCertificate | None = None

    # per-request state (set in _dispatch)
    _route: str = ROUTE_UNKNOWN
    _path: str = "/"
    _extra_headers: dict[str, str]
    _after_fault: Fault | None = None
    _rate: RateDecision | None = None
    _replied: bool = False

    @property
    def sandbox(self) -> Sandbox:
        return self.server.sandbox

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests (answered by the base class) get the service's JSON bodies too."""

        if code == 501:  # unknown method
            code = 405
        self.close_connection = True
        path = getattr(self, "_path", "/")
        body, content_type = status_body(code if code in (400, 404, 405, 500, 503) else 400, path)
        self.sandbox._count(getattr(self, "_route", ROUTE_UNKNOWN), code)
        with suppress(*_NETWORK_ERRORS):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # -- plumbing -------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _Reply(400) from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    raise _Reply(400)
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise _Reply(400) from None
        if length < 0 or length > MAX_BODY:
            raise _Reply(400)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer with ``body`` (Content-Length always set), applying a pending ``after`` fault."""
        fault, self._after_fault = self._after_fault, None
        cut: int | None = None
        if fault is not None:
            if fault.kind == "drop":
                self._drop()
                return
            if fault.kind == "status":
                assert fault.status is not None
                status = fault.status
                body, content_type = status_body(status, self._path)
                headers = {"Retry-After": str(math.ceil(fault.retry_after))} if fault.retry_after else {}
            elif fault.kind == "drop_mid_response":
                cut = fault.send_bytes if fault.send_bytes is not None else len(body) // 2
                cut = min(cut, max(len(body) - 1, 0))
        self.sandbox._count(self._route, status)
        self._start_response(status, content_type, len(body), headers)
        if self.command != "HEAD":
            self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self._drop(counted=False)

    def _start_response(
        self, status: int, content_type: str, length: int, headers: Mapping[str, str] | None = None
    ) -> None:
        self._replied = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in {**self._extra_headers, **(headers or {})}.items():
            self.send_header(name, value)
        if self._route == ROUTE_BESTALL:
            rate = self._rate or self.sandbox.limiter.peek(None)
            self.send_header("x-ratelimit-limit", str(rate.limit))
            self.send_header("x-ratelimit-remaining", str(rate.remaining))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _drop(self, *, counted: bool = True) -> None:
        """Close the connection now, answering nothing more."""
        self._replied = True
        self.close_connection = True
        if counted:
            self.sandbox._count(self._route, "dropped")
        with suppress(OSError, ValueError):
            self.wfile.flush()
        with suppress(OSError, ValueError):
            socket.socket.shutdown(self.connection, socket.SHUT_RDWR)

    def _peer_certificate(self) -> PeerCertificate:
        if self._peer is None:
            self._peer = self.sandbox._check_certificate(self.connection)
        return self._peer

    # -- dispatch -------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        self._path = parts.path or "/"
        self._route, file_name = _resolve(self._path)
        self._extra_headers = {}
        self._after_fault = None
        self._rate = None
        self._replied = False
        sandbox = self.sandbox
        try:
            try:
                body = self._read_body()
            except _Reply:
                self.close_connection = True  # the rest of the body is still on the wire
                raise
            if self._route == ROUTE_ADMIN:
                self._admin(parts.query, body)
                return
            self._extra_headers["skv_correlation_id"] = str(uuid.uuid4())
            client_correlation = self.headers.get("skv_client_correlation_id")
            if client_correlation is not None:
                self._extra_headers["skv_client_correlation_id"] = client_correlation
            if self._route == ROUTE_UNKNOWN:
                raise _Reply(404)
            allowed = _ALLOWED_METHODS[self._route]
            if self.command not in allowed:
                raise _Reply(405, headers={"Allow": ", ".join(allowed)})
            if not self._apply_request_faults():
                return
            if self._route in (ROUTE_TOKEN_SYSORG, ROUTE_TOKEN_ORG):
                self._token(body)
            elif self._route == ROUTE_BESTALL:
                self._bestall(body, client_correlation)
            elif self._route == ROUTE_ETRANSPORT_LIST:
                self._etransport_list(parts.query)
            else:
                assert file_name is not None
                self._etransport_download(file_name)
        except _Reply as reply:
            if reply.body is None:
                body_bytes, content_type = status_body(reply.status, self._path)
            else:
                body_bytes, content_type = reply.body, reply.content_type
            self._send(reply.status, body_bytes, content_type, reply.headers)
        except _NETWORK_ERRORS:
            self.close_connection = True
            raise
        except Exception:
            logger.exception("Sandbox error on %s %s", self.command, self._path)
            self.close_connection = True
            if not self._replied:
                self._after_fault = None
                body_bytes, content_type = status_body(500, self._path)
                self._send(500, body_bytes, content_type)
        finally:
            if sandbox.server_stopping:
                self.close_connection = True

    def _apply_request_faults(self) -> bool:
        """Apply slow/status/drop faults; False when the request has been answered (or dropped)."""
        faults = self.sandbox.faults
        slow = faults.take(("slow",), self._route, self._path)
        if slow is not None:
            self.server.stopping.wait(slow.seconds)
        fault = faults.take(("status", "drop", "drop_mid_response"), self._route, self._path)
        if fault is None:
            return True
        if fault.after or fault.kind == "drop_mid_response":
            self._after_fault = fault
            return True
        if fault.kind == "drop":
            self._drop()
            return False
        assert fault.status is not None
        headers = {"Retry-After": str(math.ceil(fault.retry_after))} if fault.retry_after else {}
        body, content_type = status_body(fault.status, self._path)
        self._send(fault.status, body, content_type, headers)
        return False

    # -- token endpoints ------------------------------------------------------------------------
    def _token(self, body: bytes) -> None:
        sandbox = self.sandbox
        sysorg = self._route == ROUTE_TOKEN_SYSORG
        if _media_type(self.headers.get("Content-Type")) != "application/x-www-form-urlencoded":
            raise _oauth_error(400, "invalid_request", "The body must be application/x-www-form-urlencoded")
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            raise _oauth_error(400, "invalid_request", "The form body cannot be parsed") from None
        repeated = sorted(key for key, values in parsed.items() if len(values) > 1)
        if repeated:
            raise _oauth_error(400, "invalid_request", f"Parameter(s) repeated: {', '.join(repeated)}")
        form = {key: values[0] for key, values in parsed.items()}
        grant_type = form.get("grant_type")
        if not grant_type:
            raise _oauth_error(400, "invalid_request", "grant_type is required")
        expected = "client_credentials" if sysorg else "refresh_token"
        if grant_type != expected:
            raise _oauth_error(400, "unsupported_grant_type", f"This endpoint supports grant_type={expected} only")
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = self.headers.get("Authorization", "")
        if basic.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(basic[6:].strip(), validate=True).decode("utf-8")
                basic_id, _, basic_secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                raise _oauth_error(401, "invalid_client", "Malformed Basic client authentication") from None
            client_id, client_secret = unquote(basic_id), unquote(basic_secret)
        if not client_id:
            raise _oauth_error(400, "invalid_request", "client_id is required")
        registration = sandbox.registry.by_oauth_client_id(client_id)
        if registration is None:
            raise _oauth_error(401, "invalid_client", "Unknown client_id")
        if client_secret is not None and not same_secret(client_secret, registration.oauth_client_secret):
            raise _oauth_error(401, "invalid_client", "Client authentication failed")
        peer = self._peer_certificate()
        if peer.organisation_number is None:
            raise _oauth_error(401, "invalid_client", f"Client certificate refused: {peer.problem}")
        scope_text = form.get("scope")
        if sysorg:
            if client_secret is None and peer.organisation_number != registration.organisation_number:
                raise _oauth_error(
                    401,
                    "invalid_client",
                    "Without client_secret the designated certificate of the client's organisation is required",
                )
            if not scope_text:
                raise _oauth_error(400, "invalid_scope", f"scope is required ({SCOPE})")
        else:
            if client_secret is None:
                raise _oauth_error(401, "invalid_client", "client_secret is required for this flow")
            refresh_token = form.get("refresh_token")
            if not refresh_token:
                raise _oauth_error(400, "invalid_request", "refresh_token is required")
            owner = sandbox.registry.by_refresh_token(refresh_token)
            if owner is None or owner.label != registration.label:
                raise _oauth_error(
                    400, "invalid_grant", "The refresh token is unknown or was not issued to this client"
                )
            if peer.organisation_number != registration.organisation_number:
                raise _oauth_error(
                    401, "invalid_client", "The certificate belongs to another organisation than the client"
                )
            scope_text = scope_text or SCOPE
        scopes = scope_text.split()
        unknown = [scope for scope in scopes if scope not in ISSUABLE_SCOPES]
        if not scopes or unknown:
            raise _oauth_error(400, "invalid_scope", f"Unknown scope(s): {' '.join(unknown) or '(empty)'}")
        scope = " ".join(dict.fromkeys(scopes))
        lifetime = sandbox.settings.token_lifetime_seconds
        token, _ = sandbox.registry.issue_token(
            registration, peer.organisation_number, scope, sandbox.clock.now(), lifetime
        )
        answer = {"access_token": token, "expires_in": int(lifetime), "token_type": "Bearer", "scope": scope}
        self._send(200, _json(answer), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    # -- the API --------------------------------------------------------------------------------
    def _bestall(self, body: bytes, client_correlation: str | None) -> None:
        sandbox = self.sandbox
        now = sandbox.clock.now()
        sandbox._note_headers(self.headers.keys())
        if not sandbox.calendar.is_service_open(now):
            raise _Reply(503)
        accepted = [_media_type(part) for part in self.headers.get("Accept", "").split(",")]
        if "application/json" not in accepted:
            raise _Reply(406)
        if body and _media_type(self.headers.get("Content-Type")) != "application/json":
            raise _Reply(415)
        try:
            payload = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            payload = None
        if not isinstance(payload, dict):
            raise _Reply(400)
        api_client = sandbox.registry.by_api_client_id(self.headers.get("client_id") or "")
        if api_client is None or not same_secret(self.headers.get("client_secret"), api_client.api_client_secret):
            raise _Reply(401)
        self._rate = sandbox.limiter.peek(api_client.api_client_id)
        if not client_correlation or len(client_correlation) > MAX_CORRELATION_ID:
            raise _Reply(400)
        authorization = self.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        grant = sandbox.registry.token(token.strip()) if scheme.lower() == "bearer" else None
        if (
            grant is None
            or not grant.valid_at(now)
            or SCOPE not in grant.scope.split()
            or grant.label != api_client.label
        ):
            raise _Reply(401)
        peer = self._peer_certificate()
        if peer.organisation_number is None or peer.organisation_number != grant.organisation_number:
            raise _Reply(401)
        if not sandbox.registry.has_skol(peer.organisation_number):
            raise _Reply(403)
        self._rate = sandbox.limiter.acquire(api_client.api_client_id)
        if not self._rate.allowed:
            raise _Reply(429, headers={"Retry-After": str(self._rate.retry_after)})
        sandbox._record_order(
            peer.organisation_number,
            now,
            client_correlation_id=client_correlation,
            correlation_id=self._extra_headers["skv_correlation_id"],
            identity=api_client.label,
        )
        self._send(202, _json({"message": "Accepted"}))

    # -- E-transport ----------------------------------------------------------------------------
    def _etransport_peer(self) -> str:
        peer = self._peer_certificate()
        if peer.organisation_number is None:
            raise _Reply(401)
        return peer.organisation_number

    def _etransport_list(self, query: str) -> None:
        sandbox = self.sandbox
        orderer = self._etransport_peer()
        params = {key: values[0] for key, values in parse_qs(query, keep_blank_values=True).items()}
        day: dt.date | None = None
        if params.get("morning"):
            try:
                day = dt.date.fromisoformat(params["morning"])
            except ValueError:
                raise _Reply(400) from None
        kind = params.get("kind")
        now = sandbox.clock.now()
        files = [] if kind not in (None, "", FILE_KIND) else sandbox.production.visible(orderer, now, day=day)
        entries = [answer.listing_json() for answer in files]
        if entries and sandbox.faults.take(("duplicate_listing",), self._route, self._path) is not None:
            entries.insert(1, dict(entries[0]))
        entries = [entry for entry, _ in sandbox.planted_entries()] + entries
        self._send(200, _json({"files": entries}))

    def _etransport_download(self, name: str) -> None:
        sandbox = self.sandbox
        orderer = self._etransport_peer()
        now = sandbox.clock.now()
        planted = sandbox.planted_content(name)
        if planted is not None:
            self._send(200, planted, "application/octet-stream")
            return
        answer = sandbox.production.lookup(name, now)
        if answer is None or answer.orderer != orderer or answer.delivered_at > now:
            raise _Reply(404)
        if not sandbox.production.retained(answer, now):
            raise _Reply(410)
        sandbox.production.ensure_generated(answer)
        assert answer.size is not None and answer.sha256 is not None
        size = answer.size
        start, end = 0, size  # [start, end)
        status = 200
        headers = {
            "x-checksum-sha256": answer.sha256,
            "Accept-Ranges": "bytes",
            "ETag": f'"{answer.sha256}"',
            "Content-Disposition": f'attachment; filename="{answer.name}"',
        }
        range_header = self.headers.get("Range")
        if range_header:
            parsed = _parse_range(range_header, size)
            if parsed is None:
                raise _Reply(416, headers={"Content-Range": f"bytes */{size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        length = end - start
        fault = self._after_fault
        self._after_fault = None
        if fault is not None and fault.kind in ("status", "drop"):  # after=True: _send applies it
            self._after_fault = fault
            self._send(200, b"")
            return
        limit = length
        if fault is not None and fault.kind == "drop_mid_response":
            limit = fault.send_bytes if fault.send_bytes is not None else length // 2
        truncate = sandbox.faults.take(("truncate",), self._route, self._path) if self.command == "GET" else None
        if truncate is not None:
            limit = truncate.send_bytes if truncate.send_bytes is not None else length // 2
        limit = min(limit, max(length - 1, 0)) if limit < length else length
        corrupt = sandbox.faults.take(("corrupt",), self._route, self._path) if self.command == "GET" else None
        flips = _corrupt_positions(start, end, corrupt.count) if corrupt is not None else set()
        sandbox._count(self._route, status)
        self._start_response(status, "text/plain; charset=utf-8", length, headers)
        if self.command == "HEAD":
            return
        sent = 0
        with answer.path.open("rb") as handle:
            handle.seek(start)
            while sent < limit:
                chunk = handle.read(min(CHUNK, limit - sent))
                if not chunk:
                    break
                if flips:
                    chunk = _flip(chunk, start + sent, flips)
                sandbox._count_bytes(len(chunk))
                self.wfile.write(chunk)
                sent += len(chunk)
        if sent < length:
            self._drop(counted=False)

    # -- admin ----------------------------------------------------------------------------------
    def _admin(self, query: str, body: bytes) -> None:
        host = self.client_address[0] if self.client_address else ""
        try:
            loopback = ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise _Reply(403, _json({"message": "Forbidden: the admin endpoints answer loopback clients only"}))
        payload: Any = None
        if body:
            try:
                payload = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise _Reply(400, _json({"message": "Bad request: the body must be JSON"})) from None
        params = {key: values[0] for key, values in parse_qs(query).items()}
        try:
            status, answer = self.sandbox._admin(self.command, self._path, params, payload)
        except (FaultError, ValueError, KeyError, TypeError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise _Reply(400, _json({"message": f"Bad request: {message}"})) from None
        self._send(status, _json(answer))


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single ``bytes=`` range, or None when it cannot be satisfied."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                return None
            return max(0, size - suffix), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    end = min(end, size)
    if start < 0 or start >= size or end <= start:
        return None
    return start, end


def _corrupt_positions(start: int, end: int, count: int) -> set[int]:
    """``count`` byte positions in the middle of [start, end) to corrupt."""
    length = end - start
    if length <= 0:
        return set()
    middle = start + length // 2
    step = max(1, length // (4 * max(count, 1)))
    return {min(end - 1, middle + i * step) for i in range(count)}


def _flip(chunk: bytes, offset: int, positions: set[int]) -> bytes:
    """``chunk`` (at file ``offset``) with the bytes at ``positions`` changed, same length.

    A digit becomes another digit and other bytes get their lowest bit flipped, so the text stays
    parseable and only the checksum tells.
    """
    data = bytearray(chunk)
    for position in positions:
        index = position - offset
        if 0 <= index < len(data):
            value = data[index]
            if 0x30 <= value <= 0x39:
                data[index] = 0x30 + (value - 0x30 + 1) % 10
            else:
                data[index] = value ^ 0x01
    return bytes(data)


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
        self._requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._bytes_served = 0
        self._unexpected_headers: Counter[str] = Counter()
        self._seen_correlation_ids: set[str] = set()
        self._reused_correlation_ids = 0
        self._ca_cert = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
        for identity in pki.identities.values():
            self.register_identity(identity)
        self._planted: list[tuple[Any, bytes | None]] = []
        self._server: _TlsServer | None = None
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
        server = _TlsServer((host, int(port)), self._server_context(), self)
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

    def stop(self) -> None:
        """Stop serving, close every connection and wait for the accept loop to end. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
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

    def _count_bytes(self, sent: int) -> None:
        with self._stats_lock:
            self._bytes_served += sent

    def _note_headers(self, names: Iterator[str] | list[str]) -> None:
        unexpected = [n.lower() for n in names if n.lower() not in _BESTALL_HEADERS | _TRANSPORT_HEADERS]
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
            "connections_open": server.connections_open if server else 0,
            "connections_total": server.connections_total if server else 0,
        }

    def reset(self, *, now: dt.datetime | None = None, speed: float = 1.0) -> None:
        """Clear faults, orders, files, tokens, rate-limit buckets, stats and settings changes.

        The PKI and the registered clients (ids, secrets, refresh tokens) are kept, so connections
        stay valid. The clock goes back to real time (or ``now``) at ``speed``.
        """
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

    # -- admin endpoints ------------------------------------------------------------------------
    def _admin(self, method: str, path: str, params: dict[str, str], payload: Any) -> tuple[int, Any]:
        """(status, JSON answer) of an admin request. Raises ValueError/KeyError/FaultError on bad input."""
        resource = path[len(ADMIN_PREFIX) :].strip("/")
        body = payload if isinstance(payload, dict) else {}

        def allowed(*methods: str) -> None:
            if method not in methods:
                raise _Reply(405, headers={"Allow": ", ".join(methods)})

        if resource == "clock":
            allowed("GET", "POST")
            if method == "POST":
                now = parse_moment(body["now"]) if body.get("now") else None
                speed = float(body["speed"]) if body.get("speed") is not None else None
                if now is not None or speed is not None:
                    self.clock.set(now=now, speed=speed)
                if body.get("advance_seconds"):
                    self.clock.advance(float(body["advance_seconds"]))
            return 200, self.clock.to_json()
        if resource == "faults":
            allowed("GET", "POST", "DELETE")
            if method == "POST":
                items = (
                    payload.get("faults", payload) if isinstance(payload, dict) and "kind" not in payload else payload
                )
                if items is None:
                    raise ValueError("POST a fault object, a list of them or {'faults': [...]}")
                added = self.faults.add_json(items)
                return 201, {"faults": [fault.to_json() for fault in added]}
            if method == "DELETE":
                fault_id = params.get("id")
                return 200, {"removed": self.faults.clear(int(fault_id) if fault_id else None)}
            return 200, {
                "faults": [fault.to_json() for fault in self.faults.active()],
                "applied": self.faults.applied_counts(),
            }
        if resource == "orders":
            allowed("GET", "POST")
            if method == "POST":
                received = parse_moment(body["received_at"]) if body.get("received_at") else None
                order = self.place_order(str(body.get("orderer") or "orderer"), received)
                return 201, order.to_json()
            return 200, {"orders": [order.to_json() for order in self.orders()]}
        if resource == "files":
            allowed("GET", "POST")
            if method == "POST":
                if not body.get("morning"):
                    raise ValueError("'morning' (YYYY-MM-DD, a business day) is required")
                delivered = parse_moment(body["delivered_at"]) if body.get("delivered_at") else None
                answer = self.produce_file(
                    dt.date.fromisoformat(str(body["morning"])[:10]),
                    str(body.get("orderer") or "orderer"),
                    delivered_at=delivered,
                )
                return 201, answer.admin_json()
            return 200, {"files": [answer.admin_json() for answer in self.files()]}
        if resource == "stats":
            allowed("GET")
            return 200, self.stats()
        if resource == "config":
            allowed("GET", "POST")
            if method == "POST":
                self.configure(**body)
            return 200, asdict(self.settings)
        if resource == "connection":
            allowed("GET")
            return 200, self.airflow_connection(
                params.get("identity", "orderer"), grant_type=params.get("grant_type", "client_credentials")
            )
        if resource == "reset":
            allowed("POST")
            now = parse_moment(body["now"]) if body.get("now") else None
            self.reset(now=now, speed=float(body.get("speed", 1.0)))
            return 200, {"reset": True, "clock": self.clock.to_json()}
        if resource in ("", "health"):
            allowed("GET")
            return 200, {"status": "ok", "base_url": self.base_url}
        raise _Reply(404)
