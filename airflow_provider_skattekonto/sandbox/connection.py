"""One sandbox connection: reading request bodies, sending answers and drops, the client certificate.

The endpoints (:mod:`.token_endpoints`, :mod:`.bestall_endpoint`, :mod:`.etransport_endpoints`,
:mod:`.admin_endpoints`) build on :class:`ConnectionHandler`; :mod:`.handler` routes each request.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import ssl
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from airflow_provider_skattekonto.sandbox.faults import Fault
from airflow_provider_skattekonto.sandbox.protocol import ROUTE_BESTALL, ROUTE_UNKNOWN, status_body
from airflow_provider_skattekonto.sandbox.ratelimit import RateDecision

if TYPE_CHECKING:
    from airflow_provider_skattekonto.sandbox.server import Sandbox
    from airflow_provider_skattekonto.sandbox.tls_server import TlsServer

logger = logging.getLogger(__name__)

IDLE_TIMEOUT = 120.0  # seconds a keep-alive connection may sit idle (and a blocked read/write may take)
MAX_BODY = 1 << 20  # request bodies above 1 MiB are refused
NETWORK_ERRORS = (ConnectionError, TimeoutError, ssl.SSLError, OSError)


@dataclass(frozen=True)
class PeerCertificate:
    """What the client certificate of a connection proves: an organisation number, or a problem."""

    organisation_number: str | None
    problem: str | None = None


class Reply(Exception):
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


def json_body(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


def media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


class ConnectionHandler(BaseHTTPRequestHandler):
    """One connection's plumbing: reading bodies, answering (with a pending fault), the client certificate."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small answers go out at once (Nagle + delayed ACK cost ~40 ms each)
    server_version = "skattekonto-sandbox"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: TlsServer

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
        with suppress(*NETWORK_ERRORS):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise Reply(400) from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    raise Reply(400)
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise Reply(400) from None
        if length < 0 or length > MAX_BODY:
            raise Reply(400)
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
