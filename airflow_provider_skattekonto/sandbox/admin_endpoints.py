"""The admin API under ``/_sandbox/`` (loopback clients only, no certificate needed): clock, faults,
orders, files, stats, config, connection, reset, health."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from airflow_provider_skattekonto.domain.calendar import parse_moment
from airflow_provider_skattekonto.sandbox.connection import ConnectionHandler, Reply, json_body
from airflow_provider_skattekonto.sandbox.faults import FaultError
from airflow_provider_skattekonto.sandbox.protocol import ADMIN_PREFIX

if TYPE_CHECKING:
    from airflow_provider_skattekonto.sandbox.server import Sandbox


class AdminEndpoints(ConnectionHandler):
    """Refuses non-loopback clients, parses the JSON body and answers with :func:`admin_answer`."""

    def _admin(self, query: str, body: bytes) -> None:
        host = self.client_address[0] if self.client_address else ""
        try:
            loopback = ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise Reply(403, json_body({"message": "Forbidden: the admin endpoints answer loopback clients only"}))
        payload: Any = None
        if body:
            try:
                payload = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise Reply(400, json_body({"message": "Bad request: the body must be JSON"})) from None
        params = {key: values[0] for key, values in parse_qs(query).items()}
        try:
            status, answer = admin_answer(self.sandbox, self.command, self._path, params, payload)
        except (FaultError, ValueError, KeyError, TypeError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise Reply(400, json_body({"message": f"Bad request: {message}"})) from None
        self._send(status, json_body(answer))


def admin_answer(sandbox: Sandbox, method: str, path: str, params: dict[str, str], payload: Any) -> tuple[int, Any]:
    """(status, JSON answer) of an admin request. Raises ValueError/KeyError/FaultError on bad input."""
    resource = path[len(ADMIN_PREFIX) :].strip("/")
    body = payload if isinstance(payload, dict) else {}

    def allowed(*methods: str) -> None:
        if method not in methods:
            raise Reply(405, headers={"Allow": ", ".join(methods)})

    if resource == "clock":
        allowed("GET", "POST")
        if method == "POST":
            now = parse_moment(body["now"]) if body.get("now") else None
            speed = float(body["speed"]) if body.get("speed") is not None else None
            if now is not None or speed is not None:
                sandbox.clock.set(now=now, speed=speed)
            if body.get("advance_seconds"):
                sandbox.clock.advance(float(body["advance_seconds"]))
        else:
            sandbox.count_clock_read()
        return 200, sandbox.clock.to_json()
    if resource == "faults":
        allowed("GET", "POST", "DELETE")
        if method == "POST":
            items = payload.get("faults", payload) if isinstance(payload, dict) and "kind" not in payload else payload
            if items is None:
                raise ValueError("POST a fault object, a list of them or {'faults': [...]}")
            added = sandbox.faults.add_json(items)
            return 201, {"faults": [fault.to_json() for fault in added]}
        if method == "DELETE":
            fault_id = params.get("id")
            return 200, {"removed": sandbox.faults.clear(int(fault_id) if fault_id else None)}
        return 200, {
            "faults": [fault.to_json() for fault in sandbox.faults.active()],
            "applied": sandbox.faults.applied_counts(),
        }
    if resource == "orders":
        allowed("GET", "POST")
        if method == "POST":
            received = parse_moment(body["received_at"]) if body.get("received_at") else None
            order = sandbox.place_order(str(body.get("orderer") or "orderer"), received)
            return 201, order.to_json()
        return 200, {"orders": [order.to_json() for order in sandbox.orders()]}
    if resource == "files":
        allowed("GET", "POST")
        if method == "POST":
            if not body.get("morning"):
                raise ValueError("'morning' (YYYY-MM-DD, a business day) is required")
            delivered = parse_moment(body["delivered_at"]) if body.get("delivered_at") else None
            answer = sandbox.produce_file(
                dt.date.fromisoformat(str(body["morning"])[:10]),
                str(body.get("orderer") or "orderer"),
                delivered_at=delivered,
            )
            return 201, answer.admin_json()
        return 200, {"files": [answer.admin_json() for answer in sandbox.files()]}
    if resource == "stats":
        allowed("GET")
        return 200, sandbox.stats()
    if resource == "config":
        allowed("GET", "POST")
        if method == "POST":
            sandbox.configure(**body)
        return 200, asdict(sandbox.settings)
    if resource == "connection":
        allowed("GET")
        return 200, sandbox.airflow_connection(
            params.get("identity", "orderer"), grant_type=params.get("grant_type", "client_credentials")
        )
    if resource == "reset":
        allowed("POST")
        now = parse_moment(body["now"]) if body.get("now") else None
        sandbox.reset(now=now, speed=float(body.get("speed", 1.0)))
        return 200, {"reset": True, "clock": sandbox.clock.to_json()}
    if resource in ("", "health"):
        allowed("GET")
        return 200, {"status": "ok", "base_url": sandbox.base_url}
    raise Reply(404)
