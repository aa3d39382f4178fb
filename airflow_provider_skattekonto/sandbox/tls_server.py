"""The sandbox's listener: a threading HTTP server over TLS whose handshakes run in each connection's thread,
so a slow or broken client never blocks the others; it tracks open connections to close them on stop."""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
from contextlib import suppress
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from airflow_provider_skattekonto.sandbox.connection import NETWORK_ERRORS
from airflow_provider_skattekonto.sandbox.handler import Handler

if TYPE_CHECKING:
    from airflow_provider_skattekonto.sandbox.server import Sandbox

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # seconds a client gets to finish the TLS handshake


class TlsServer(ThreadingHTTPServer):
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
        super().__init__(address, Handler)

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
            except (*NETWORK_ERRORS, ValueError) as exc:
                logger.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
            self._track(tls, replaces=raw)
            try:
                Handler(tls, client_address, self)
            except NETWORK_ERRORS as exc:
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
