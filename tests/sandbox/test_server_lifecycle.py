"""Starting, stopping, many connections and stalled clients."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx
import pytest

from airflow_provider_skattekonto.sandbox.server import Sandbox


def _raw_get(connection: ssl.SSLSocket, path: str) -> bytes:
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return head.split(b"\r\n", 1)[0] + b"\r\n" + body


def test_stop_closes_keep_alive_connections_and_the_port(tmp_path: Path) -> None:
    sandbox = Sandbox.start(tmp_path / "own")
    base_url, ca = sandbox.base_url, str(sandbox.pki.ca_cert_path)
    client = httpx.Client(verify=sandbox.client_ssl_context("orderer"), base_url=base_url)
    try:
        assert client.get("/_sandbox/health").status_code == 200
        assert sandbox.stats()["connections_open"] >= 1
        sandbox.stop()
        sandbox.stop()  # idempotent
        with pytest.raises(httpx.TransportError):
            client.get("/_sandbox/health")
        with pytest.raises(httpx.ConnectError):
            httpx.get(base_url + "/_sandbox/health", verify=ca)
    finally:
        client.close()
        sandbox.stop()


def test_context_manager_stops(tmp_path: Path) -> None:
    with Sandbox.start(tmp_path / "cm", port=0) as sandbox:
        base_url = sandbox.base_url
        assert base_url.startswith("https://127.0.0.1:")
        assert "stopped" not in repr(sandbox)
    assert "stopped" in repr(sandbox)
    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url + "/_sandbox/health", verify=str(sandbox.pki.ca_cert_path))


def test_stalled_clients_do_not_block_others(sandbox: Sandbox) -> None:
    stalled = []
    try:
        for _ in range(5):
            # Connected, but never starts the TLS handshake; and one that sends half a ClientHello.
            stalled.append(socket.create_connection((sandbox.host, sandbox.port)))
        stalled[-1].sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        response = httpx.get(sandbox.base_url + "/_sandbox/health", verify=str(sandbox.pki.ca_cert_path))
        assert response.status_code == 200
    finally:
        for sock in stalled:
            sock.close()


def test_plain_http_on_the_tls_port_is_refused_and_server_keeps_serving(sandbox: Sandbox) -> None:
    with socket.create_connection((sandbox.host, sandbox.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = sock.recv(100)
        except OSError:
            answer = b""
        assert not answer.startswith(b"HTTP/")
    assert httpx.get(sandbox.base_url + "/_sandbox/health", verify=str(sandbox.pki.ca_cert_path)).status_code == 200


def test_many_concurrent_keep_alive_connections(sandbox: Sandbox) -> None:
    context = sandbox.client_ssl_context("orderer")
    connections: list[ssl.SSLSocket] = []
    try:
        for _ in range(200):
            raw = socket.create_connection((sandbox.host, sandbox.port), timeout=30)
            connections.append(context.wrap_socket(raw, server_hostname="127.0.0.1"))
        for connection in connections:
            assert _raw_get(connection, "/_sandbox/health").startswith(b"HTTP/1.1 200")
        assert sandbox.stats()["connections_open"] >= 200
        # Every connection is still usable (keep-alive).
        for connection in connections[:20]:
            assert _raw_get(connection, "/etransport/v1/files").startswith(b"HTTP/1.1 200")
    finally:
        for connection in connections:
            connection.close()


def test_malformed_request_gets_a_json_error(sandbox: Sandbox) -> None:
    context = sandbox.client_ssl_context(None)
    with (
        socket.create_connection((sandbox.host, sandbox.port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as connection,
    ):
        connection.sendall(b"BREW /coffee HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := connection.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 405")
    assert data.endswith(b'{"message": "Method not allowed"}')
