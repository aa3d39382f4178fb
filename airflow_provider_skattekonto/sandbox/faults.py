"""Fault injection: make the sandbox fail the way a real service and network do, on purpose.

A fault has a ``kind``, a ``target`` and a number of ``times`` it strikes (``None``: until cleared).

Targets: a route (``bestall``, ``token`` (both token endpoints), ``token_sysorg``, ``token_org``,
``etransport_list``, ``etransport_download``), ``*`` (every non-admin request) or a path prefix
starting with ``/``.

Kinds:

* ``status``: answer ``status`` (any status of the service's table, e.g. 429/500/503/504) with the
  spec's exact body, optionally with ``retry_after`` seconds.
* ``slow``: wait ``seconds`` before handling the request (then answer normally).
* ``drop``: close the connection without answering.
* ``drop_mid_response``: send the headers and part of the body (``send_bytes``, default half), close.
* ``truncate`` (downloads): send fewer bytes than Content-Length (``send_bytes``, default half), close.
* ``corrupt`` (downloads): flip ``count`` bytes (default 1) in the middle of the body, same length;
  the ``x-checksum-sha256`` header still names the true checksum.
* ``late`` (file production): the file of a morning is delivered ``minutes`` after 07:00.
* ``missing`` (file production): no file is produced for a morning.
* ``wrong_balance`` (file production): the file of a morning states the first principal's Skatteverket
  balance ``ore`` öre off (the file is otherwise valid: its trailer does not cover balances); the balance
  continuity check must catch it.
* ``duplicate_listing``: the listing names the same file twice.
* ``expire_tokens``: every access token issued so far expires now (applied at once, not stored).

``status``, ``drop`` and ``drop_mid_response`` take ``after=True`` to strike *after* the request was
processed: an order is recorded (or a token issued) but the client sees the failure.
``late``, ``missing`` and ``wrong_balance`` may be limited to one ``morning`` (a date) and/or one
``orderer`` (org number); each produced file consumes one use.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_provider_skattekonto.sandbox.protocol import (
    ROUTE_ADMIN,
    ROUTE_BESTALL,
    ROUTE_ETRANSPORT_DOWNLOAD,
    ROUTE_ETRANSPORT_LIST,
    ROUTE_TOKEN_ORG,
    ROUTE_TOKEN_SYSORG,
    STATUS_MESSAGES,
)

__all__ = [
    "DOWNLOAD_KINDS",
    "FAULT_KINDS",
    "PRODUCTION_KINDS",
    "REQUEST_KINDS",
    "Fault",
    "FaultError",
    "FaultInjector",
]

REQUEST_KINDS = frozenset({"status", "slow", "drop", "drop_mid_response"})
DOWNLOAD_KINDS = frozenset({"truncate", "corrupt"})
PRODUCTION_KINDS = frozenset({"late", "missing", "wrong_balance"})
FAULT_KINDS = (
    "status",
    "slow",
    "drop",
    "drop_mid_response",
    "truncate",
    "corrupt",
    "late",
    "missing",
    "wrong_balance",
    "duplicate_listing",
    "expire_tokens",
)
ROUTE_TARGETS = frozenset(
    {
        ROUTE_BESTALL,
        "token",
        ROUTE_TOKEN_SYSORG,
        ROUTE_TOKEN_ORG,
        ROUTE_ETRANSPORT_LIST,
        ROUTE_ETRANSPORT_DOWNLOAD,
        "etransport",
        "*",
    }
)
_DEFAULT_TARGET = {
    "truncate": ROUTE_ETRANSPORT_DOWNLOAD,
    "corrupt": ROUTE_ETRANSPORT_DOWNLOAD,
    "late": "etransport",
    "missing": "etransport",
    "wrong_balance": "etransport",
    "duplicate_listing": ROUTE_ETRANSPORT_LIST,
    "expire_tokens": "token",
}
FAULT_STATUSES = frozenset(status for status in (*STATUS_MESSAGES, 503) if status >= 400)


class FaultError(ValueError):
    """A fault description that cannot be applied (unknown kind, bad target or parameter)."""


@dataclass
class Fault:
    """One injected fault; ``remaining`` uses left (``None``: until cleared)."""

    kind: str
    target: str
    times: int | None = 1
    status: int | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    send_bytes: int | None = None
    count: int = 1
    minutes: float = 0.0
    ore: int = 0
    morning: dt.date | None = None
    orderer: str | None = None
    after: bool = False
    id: int = 0
    remaining: int | None = field(default=None, repr=False)
    applied: int = 0

    def matches_request(self, route: str, path: str) -> bool:
        """True when this fault's target covers a request to ``route`` at ``path``."""
        target = self.target
        if route == ROUTE_ADMIN:
            return False
        if target == "*":
            return True
        if target.startswith("/"):
            return path.startswith(target)
        if target == "token":
            return route in (ROUTE_TOKEN_SYSORG, ROUTE_TOKEN_ORG)
        if target == "etransport":
            return route in (ROUTE_ETRANSPORT_LIST, ROUTE_ETRANSPORT_DOWNLOAD)
        return target == route

    def matches_production(self, morning: dt.date, orderer: str) -> bool:
        """True when this production fault covers the file of ``orderer`` for ``morning``."""
        return (self.morning is None or self.morning == morning) and (self.orderer is None or self.orderer == orderer)

    def to_json(self) -> dict[str, Any]:
        """JSON-simple description (admin endpoint)."""
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "target": self.target,
            "times": self.times,
            "remaining": self.remaining,
            "applied": self.applied,
        }
        optional: dict[str, Any] = {
            "status": self.status,
            "retry_after": self.retry_after,
            "seconds": self.seconds or None,
            "send_bytes": self.send_bytes,
            "count": self.count if self.kind == "corrupt" else None,
            "minutes": self.minutes or None,
            "ore": self.ore or None,
            "morning": self.morning.isoformat() if self.morning else None,
            "orderer": self.orderer,
            "after": self.after or None,
        }
        data.update({key: value for key, value in optional.items() if value is not None})
        return data


def _number(value: Any, name: str, *, minimum: float = 0.0, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FaultError(f"Fault parameter {name!r} must be a number, got {value!r}") from None
    if number < minimum:
        raise FaultError(f"Fault parameter {name!r} must be >= {minimum}, got {value!r}")
    return number


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).lstrip("-").isdigit():
        raise FaultError(f"Fault parameter {name!r} must be a whole number, got {value!r}")
    return int(value)


def _validated(fault: Fault) -> Fault:
    if fault.kind not in FAULT_KINDS:
        raise FaultError(f"Unknown fault kind {fault.kind!r}; known kinds: {', '.join(FAULT_KINDS)}")
    if not (fault.target in ROUTE_TARGETS or fault.target.startswith("/")):
        raise FaultError(
            f"Unknown fault target {fault.target!r}; use one of {', '.join(sorted(ROUTE_TARGETS))} "
            "or a path prefix starting with '/'"
        )
    if fault.times is not None and (not isinstance(fault.times, int) or fault.times < 1):
        raise FaultError(f"Fault 'times' must be an integer >= 1 or null (until cleared), got {fault.times!r}")
    if fault.kind == "status":
        if fault.status not in FAULT_STATUSES:
            raise FaultError(
                f"Fault 'status' must be one of {', '.join(map(str, sorted(FAULT_STATUSES)))}, got {fault.status!r}"
            )
    elif fault.status is not None:
        raise FaultError(f"Fault parameter 'status' only applies to kind 'status', not {fault.kind!r}")
    if fault.kind == "slow" and not fault.seconds > 0:
        raise FaultError("Fault kind 'slow' needs 'seconds' > 0")
    if fault.kind == "late" and not fault.minutes > 0:
        raise FaultError("Fault kind 'late' needs 'minutes' > 0")
    if fault.kind == "wrong_balance" and not fault.ore:
        raise FaultError("Fault kind 'wrong_balance' needs 'ore' (a non-zero whole number of öre)")
    if fault.ore and fault.kind != "wrong_balance":
        raise FaultError(f"Fault parameter 'ore' only applies to kind 'wrong_balance', not {fault.kind!r}")
    download_targets = (ROUTE_ETRANSPORT_DOWNLOAD, "etransport", "*")
    if fault.kind in DOWNLOAD_KINDS and fault.target not in download_targets and not fault.target.startswith("/"):
        raise FaultError(f"Fault kind {fault.kind!r} only applies to downloads (target etransport_download)")
    if fault.kind == "corrupt" and fault.count < 1:
        raise FaultError("Fault kind 'corrupt' needs 'count' >= 1 (bytes to flip)")
    if fault.send_bytes is not None and fault.send_bytes < 0:
        raise FaultError("Fault parameter 'send_bytes' must be >= 0")
    if fault.after and fault.kind not in ("status", "drop", "drop_mid_response"):
        raise FaultError("Fault parameter 'after' only applies to kinds status, drop and drop_mid_response")
    return fault


_FIELDS = {
    "kind",
    "target",
    "times",
    "status",
    "retry_after",
    "seconds",
    "send_bytes",
    "bytes",
    "count",
    "minutes",
    "ore",
    "morning",
    "orderer",
    "after",
}


def fault_from_json(payload: Mapping[str, Any]) -> Fault:
    """A validated :class:`Fault` from its JSON description (``{"kind": ..., "target": ..., ...}``)."""
    if not isinstance(payload, Mapping):
        raise FaultError(f"A fault must be a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - _FIELDS)
    if unknown:
        raise FaultError(f"Unknown fault field(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}")
    kind = payload.get("kind")
    if not isinstance(kind, str):
        raise FaultError(f"Fault 'kind' is required; one of {', '.join(FAULT_KINDS)}")
    target = payload.get("target") or _DEFAULT_TARGET.get(kind, ROUTE_BESTALL)
    times = payload.get("times", 1)
    morning = payload.get("morning")
    try:
        morning_date = dt.date.fromisoformat(str(morning)[:10]) if morning else None
    except ValueError:
        raise FaultError(f"Fault 'morning' must be an ISO date (2026-03-10), got {morning!r}") from None
    send_bytes = payload.get("send_bytes", payload.get("bytes"))
    status = payload.get("status")
    fault = Fault(
        kind=kind,
        target=str(target),
        times=times,
        status=int(status) if isinstance(status, (int, str)) and str(status).isdigit() else status,
        retry_after=_number(payload.get("retry_after"), "retry_after", allow_none=True),
        seconds=_number(payload.get("seconds", 0), "seconds") or 0.0,
        send_bytes=int(_number(send_bytes, "send_bytes") or 0) if send_bytes is not None else None,
        count=int(_number(payload.get("count", 1), "count") or 0),
        minutes=_number(payload.get("minutes", 0), "minutes") or 0.0,
        ore=_whole(payload.get("ore", 0), "ore"),
        morning=morning_date,
        orderer=str(payload["orderer"]) if payload.get("orderer") else None,
        after=bool(payload.get("after", False)),
    )
    return _validated(fault)


class FaultInjector:
    """Thread-safe store of active faults. The server consults it on every non-admin request.

    :param expire_tokens: called when an ``expire_tokens`` fault is added (expires every issued token).
    """

    def __init__(self, expire_tokens: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._expire_tokens = expire_tokens
        self.applied: Counter[str] = Counter()

    # -- adding ---------------------------------------------------------------------------------
    def add(self, kind: str, target: str | None = None, *, times: int | None = 1, **params: Any) -> Fault:
        """Add a fault: ``add("status", "bestall", status=503)``, ``add("slow", "token", seconds=2)``...

        ``params`` are the JSON fields (``status``, ``retry_after``, ``seconds``, ``send_bytes``,
        ``count``, ``minutes``, ``ore``, ``morning``, ``orderer``, ``after``). Returns the stored fault.
        """
        payload: dict[str, Any] = {"kind": kind, "times": times, **params}
        if target is not None:
            payload["target"] = target
        if isinstance(payload.get("morning"), dt.date):
            payload["morning"] = payload["morning"].isoformat()
        return self.add_fault(fault_from_json(payload))

    def add_fault(self, fault: Fault) -> Fault:
        """Store a validated fault (``expire_tokens`` is applied at once instead)."""
        fault = _validated(replace(fault))
        with self._lock:
            fault.id = next(self._ids)
            fault.remaining = fault.times
            if fault.kind == "expire_tokens":
                fault.applied = 1
                fault.remaining = 0
                self.applied[fault.kind] += 1
            else:
                self._faults.append(fault)
        if fault.kind == "expire_tokens" and self._expire_tokens is not None:
            self._expire_tokens()
        return fault

    def add_json(self, payload: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[Fault]:
        """Add one fault or a list of faults from JSON (all validated before any is added)."""
        items = [payload] if isinstance(payload, Mapping) else list(payload)
        faults = [fault_from_json(item) for item in items]
        return [self.add_fault(fault) for fault in faults]

    # convenience helpers for tests and benchmarks
    def status(
        self,
        target: str,
        status: int,
        *,
        times: int | None = 1,
        retry_after: float | None = None,
        after: bool = False,
    ) -> Fault:
        """Answer ``status`` with the spec's body on ``target``."""
        return self.add("status", target, times=times, status=status, retry_after=retry_after, after=after)

    def slow(self, target: str, seconds: float, *, times: int | None = 1) -> Fault:
        """Delay answers on ``target`` by ``seconds``."""
        return self.add("slow", target, times=times, seconds=seconds)

    def drop(self, target: str, *, times: int | None = 1, after: bool = False) -> Fault:
        """Close the connection without answering."""
        return self.add("drop", target, times=times, after=after)

    def expire_tokens(self) -> Fault:
        """Expire every access token issued so far."""
        return self.add("expire_tokens")

    # -- querying -------------------------------------------------------------------------------
    def active(self) -> list[Fault]:
        """Active faults (copies)."""
        with self._lock:
            return [replace(fault) for fault in self._faults]

    def clear(self, fault_id: int | None = None) -> int:
        """Remove one fault (by id) or all; returns how many were removed."""
        with self._lock:
            before = len(self._faults)
            if fault_id is None:
                self._faults.clear()
            else:
                self._faults = [fault for fault in self._faults if fault.id != fault_id]
            return before - len(self._faults)

    def reset(self) -> None:
        """Remove every fault and forget the applied counts."""
        with self._lock:
            self._faults.clear()
            self.applied.clear()

    def _consume(self, fault: Fault) -> Fault:
        fault.applied += 1
        self.applied[fault.kind] += 1
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
        return replace(fault)

    def take(self, kinds: Iterable[str], route: str, path: str) -> Fault | None:
        """Consume one use of the first active fault of one of ``kinds`` covering this request."""
        wanted = set(kinds)
        with self._lock:
            for fault in self._faults:
                if fault.kind in wanted and fault.matches_request(route, path):
                    return self._consume(fault)
        return None

    def take_production(self, kind: str, morning: dt.date, orderer: str) -> Fault | None:
        """Consume one use of the first production fault of ``kind`` covering ``orderer``'s ``morning`` file."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.matches_production(morning, orderer):
                    return self._consume(fault)
        return None

    def applied_counts(self) -> dict[str, int]:
        """How often each kind has struck since the last reset."""
        with self._lock:
            return dict(self.applied)
