"""The API ``POST .../v1/bestall``: every status of the service description, checked in a gateway-like order."""

from __future__ import annotations

import json

from airflow_provider_skattekonto.sandbox.connection import ConnectionHandler, Reply, json_body, media_type
from airflow_provider_skattekonto.sandbox.protocol import SCOPE
from airflow_provider_skattekonto.sandbox.registry import same_secret

MAX_CORRELATION_ID = 36
# Headers a client may send on bestall besides transport headers; anything else is counted in stats.
BESTALL_HEADERS = frozenset({"accept", "authorization", "client_id", "client_secret", "skv_client_correlation_id"})
TRANSPORT_HEADERS = frozenset(
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


class BestallEndpoint(ConnectionHandler):
    """Accepts an order (202) or answers the first status that applies."""

    def _bestall(self, body: bytes, client_correlation: str | None) -> None:
        sandbox = self.sandbox
        now = sandbox.clock.now()
        sandbox._note_headers(self.headers.keys())
        if not sandbox.calendar.is_service_open(now):
            raise Reply(503)
        accepted = [media_type(part) for part in self.headers.get("Accept", "").split(",")]
        if "application/json" not in accepted:
            raise Reply(406)
        if body and media_type(self.headers.get("Content-Type")) != "application/json":
            raise Reply(415)
        try:
            payload = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            payload = None
        if not isinstance(payload, dict):
            raise Reply(400)
        api_client = sandbox.registry.by_api_client_id(self.headers.get("client_id") or "")
        if api_client is None or not same_secret(self.headers.get("client_secret"), api_client.api_client_secret):
            raise Reply(401)
        self._rate = sandbox.limiter.peek(api_client.api_client_id)
        if not client_correlation or len(client_correlation) > MAX_CORRELATION_ID:
            raise Reply(400)
        authorization = self.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        grant = sandbox.registry.token(token.strip()) if scheme.lower() == "bearer" else None
        if (
            grant is None
            or not grant.valid_at(now)
            or SCOPE not in grant.scope.split()
            or grant.label != api_client.label
        ):
            raise Reply(401)
        peer = self._peer_certificate()
        if peer.organisation_number is None or peer.organisation_number != grant.organisation_number:
            raise Reply(401)
        if not sandbox.registry.has_skol(peer.organisation_number):
            raise Reply(403)
        self._rate = sandbox.limiter.acquire(api_client.api_client_id)
        if not self._rate.allowed:
            raise Reply(429, headers={"Retry-After": str(self._rate.retry_after)})
        sandbox._record_order(
            peer.organisation_number,
            now,
            client_correlation_id=client_correlation,
            correlation_id=self._extra_headers["skv_correlation_id"],
            identity=api_client.label,
        )
        self._send(202, json_body({"message": "Accepted"}))
