"""Accepted orders and the answer files they turn into on the sandbox's E-transport.

On each business morning (``ServiceCalendar``) at 07:00 on the sandbox clock, every orderer with at
least one accepted order in that morning's order window gets one answer file named
``SKAHMST_<orgnr10>_<YYYYMMDD>_<NNN>.txt``. Files are planned when first observed after their
morning (listing, download) and written lazily by ``sandbox.data.write_answer_file`` the first time
they are listed or downloaded after their delivery time; the bytes stay cached on disk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, ServiceCalendar
from airflow_provider_skattekonto.sandbox.faults import FaultInjector
from airflow_provider_skattekonto.sandbox.protocol import FILE_KIND

__all__ = ["AcceptedOrder", "AnswerFile", "FileProduction", "GenerationSettings"]


@dataclass(frozen=True)
class AcceptedOrder:
    """An order the sandbox accepted (HTTP 202) or an admin placed directly."""

    orderer: str  # 10-digit organisation number of the orderer (from its certificate)
    received_at: dt.datetime  # sandbox clock, Europe/Stockholm
    client_correlation_id: str | None
    correlation_id: str  # the server's skv_correlation_id
    delivery_morning: dt.datetime  # the 07:00 whose file covers this order
    identity: str | None = None  # PKI label of the consumer, when known
    source: str = "api"  # "api" or "admin"

    def to_json(self) -> dict[str, Any]:
        """JSON-simple form (admin endpoint)."""
        return {
            "orderer": self.orderer,
            "received_at": self.received_at.isoformat(),
            "client_correlation_id": self.client_correlation_id,
            "correlation_id": self.correlation_id,
            "delivery_morning": self.delivery_morning.isoformat(),
            "identity": self.identity,
            "source": self.source,
        }


@dataclass
class AnswerFile:
    """One answer file on E-transport (generated on first use)."""

    name: str
    orderer: str
    delivery_morning: dt.datetime  # 07:00 Stockholm of a business day
    delivered_at: dt.datetime  # when it appears on E-transport (later than 07:00 with a 'late' fault)
    created_at: dt.datetime  # the creation time written in the file's header
    file_id: str
    sequence: int
    path: Path
    seed: int
    size: int | None = None
    sha256: str | None = None
    balance_offset_ore: int = 0  # a 'wrong_balance' fault: the first principal's balance is this far off
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def generated(self) -> bool:
        return self.sha256 is not None and self.path.exists()

    def listing_json(self) -> dict[str, Any]:
        """The file's entry in an E-transport listing."""
        return {
            "name": self.name,
            "kind": FILE_KIND,
            "size": self.size,
            "sha256": self.sha256,
            "delivered_at": self.delivered_at.isoformat(),
            "delivery_morning": self.delivery_morning.isoformat(),
            "orderer": self.orderer,
        }

    def admin_json(self) -> dict[str, Any]:
        """Listing entry plus what only the admin view shows."""
        return {
            **self.listing_json(),
            "created_at": self.created_at.isoformat(),
            "file_id": self.file_id,
            "generated": self.generated,
            **({"balance_offset_ore": self.balance_offset_ore} if self.balance_offset_ore else {}),
        }


@dataclass
class GenerationSettings:
    """What answer files hold: the seed and the size of the data."""

    seed: int = 1
    principals_per_orderer: int = 25
    transactions_per_principal: int = 8
    retention_days: float = 30.0


def _stable_int(*parts: object) -> int:
    digest = hashlib.sha256("|".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


class FileProduction:
    """Thread-safe store of accepted orders and of the answer files planned from them."""

    def __init__(
        self,
        directory: Path,
        calendar: ServiceCalendar,
        faults: FaultInjector,
        settings: Callable[[], GenerationSettings],
    ) -> None:
        self.directory = directory
        self.calendar = calendar
        self._faults = faults
        self._settings = settings
        self._lock = threading.Lock()
        self._orders: list[AcceptedOrder] = []
        # (orderer, delivery morning) -> number of orders; planned keys are never planned again
        self._groups: dict[tuple[str, dt.datetime], int] = {}
        self._planned: set[tuple[str, dt.datetime]] = set()
        self._files: dict[str, AnswerFile] = {}
        self.files_generated = 0
        self.directory.mkdir(parents=True, exist_ok=True)

    # -- orders ---------------------------------------------------------------------------------
    def place_order(
        self,
        orderer: str,
        received_at: dt.datetime,
        *,
        client_correlation_id: str | None = None,
        correlation_id: str | None = None,
        identity: str | None = None,
        source: str = "api",
    ) -> AcceptedOrder:
        """Record an accepted order; it lands in ``calendar.delivery_for(received_at)``'s file."""
        received = received_at.astimezone(STOCKHOLM)
        order = AcceptedOrder(
            orderer=orderer,
            received_at=received,
            client_correlation_id=client_correlation_id,
            correlation_id=correlation_id or str(uuid.uuid4()),
            delivery_morning=self.calendar.delivery_for(received),
            identity=identity,
            source=source,
        )
        with self._lock:
            self._orders.append(order)
            key = (orderer, order.delivery_morning)
            self._groups[key] = self._groups.get(key, 0) + 1
        return order

    def orders(self) -> list[AcceptedOrder]:
        """Every recorded order, oldest first."""
        with self._lock:
            return list(self._orders)

    # -- planning -------------------------------------------------------------------------------
    def _new_file_locked(
        self, orderer: str, morning: dt.datetime, delivered_at: dt.datetime, *, delay_minutes: float = 0.0
    ) -> AnswerFile:
        settings = self._settings()
        day = morning.date()
        sequence = 1 + sum(1 for f in self._files.values() if f.orderer == orderer and f.delivery_morning == morning)
        name = f"SKAHMST_{orderer}_{day:%Y%m%d}_{sequence:03d}.txt"
        # Created some time in 06:30-06:50 (or half an hour before a late delivery), stable per name.
        jitter = dt.timedelta(seconds=_stable_int(settings.seed, name) % (20 * 60))
        base = morning - dt.timedelta(minutes=30)
        if delay_minutes:
            base = delivered_at - dt.timedelta(minutes=30)
        created_at = min(base + jitter, delivered_at)
        answer = AnswerFile(
            name=name,
            orderer=orderer,
            delivery_morning=morning,
            delivered_at=delivered_at,
            created_at=created_at,
            file_id=str(uuid.uuid4()),
            sequence=sequence,
            path=self.directory / name,
            seed=settings.seed,
        )
        wrong = self._faults.take_production("wrong_balance", day, orderer)
        if wrong is not None:
            answer.balance_offset_ore = wrong.ore
        self._files[name] = answer
        return answer

    def plan_due(self, now: dt.datetime) -> None:
        """Plan the files of every morning that has come (07:00 <= now) and is not yet planned.

        ``missing`` and ``late`` faults are consumed here, once per (orderer, morning).
        """
        with self._lock:
            due = sorted(
                (morning, orderer)
                for (orderer, morning) in self._groups
                if morning <= now and (orderer, morning) not in self._planned
            )
            for morning, orderer in due:
                self._planned.add((orderer, morning))
                if self._faults.take_production("missing", morning.date(), orderer) is not None:
                    continue
                late = self._faults.take_production("late", morning.date(), orderer)
                minutes = late.minutes if late is not None else 0.0
                delivered = morning + dt.timedelta(minutes=minutes)
                self._new_file_locked(orderer, morning, delivered, delay_minutes=minutes)

    def produce(
        self, orderer: str, day: dt.date, *, delivered_at: dt.datetime | None = None, generate: bool = True
    ) -> AnswerFile:
        """Produce a file for ``orderer`` on business morning ``day`` now, orders or not (admin).

        It is delivered at 07:00 that morning unless ``delivered_at`` says otherwise, and written at
        once when ``generate``. Another call for the same morning produces the next sequence number.
        """
        morning = self.calendar.delivery_morning(day)  # ValueError on a non-business day
        with self._lock:
            answer = self._new_file_locked(
                orderer, morning, delivered_at.astimezone(STOCKHOLM) if delivered_at else morning
            )
            self._planned.add((orderer, morning))
        if generate:
            self.ensure_generated(answer)
        return answer

    # -- serving --------------------------------------------------------------------------------
    def retained(self, answer: AnswerFile, now: dt.datetime) -> bool:
        """True while E-transport still keeps ``answer`` (retention counted from its delivery)."""
        return now < answer.delivered_at + dt.timedelta(days=self._settings().retention_days)

    def visible(self, orderer: str, now: dt.datetime, *, day: dt.date | None = None) -> list[AnswerFile]:
        """``orderer``'s delivered, retained files (generated), optionally of one delivery day."""
        self.plan_due(now)
        with self._lock:
            chosen = [
                answer
                for answer in self._files.values()
                if answer.orderer == orderer
                and answer.delivered_at <= now
                and self.retained(answer, now)
                and (day is None or answer.delivery_morning.date() == day)
            ]
        chosen.sort(key=lambda answer: (answer.delivered_at, answer.name))
        for answer in chosen:
            self.ensure_generated(answer)
        return chosen

    def lookup(self, name: str, now: dt.datetime) -> AnswerFile | None:
        """The file called ``name`` (planning due mornings first), delivered or not."""
        self.plan_due(now)
        with self._lock:
            return self._files.get(name)

    def all_files(self) -> list[AnswerFile]:
        """Every planned file, any orderer, delivered or not (admin view)."""
        with self._lock:
            return sorted(self._files.values(), key=lambda answer: (answer.delivered_at, answer.name))

    def ensure_generated(self, answer: AnswerFile) -> AnswerFile:
        """Write ``answer``'s bytes if they are not on disk yet; fills ``size`` and ``sha256``."""
        with answer.lock:
            if answer.generated:
                return answer
            from airflow_provider_skattekonto.sandbox.data import write_answer_file

            settings = self._settings()
            size, sha256 = write_answer_file(
                answer.path,
                orderer=answer.orderer,
                delivery_morning=answer.delivery_morning,
                created_at=answer.created_at,
                file_id=answer.file_id,
                seed=answer.seed,
                principals=settings.principals_per_orderer,
                transactions_per_principal=settings.transactions_per_principal,
                balance_offset_ore=answer.balance_offset_ore,
            )
            answer.size, answer.sha256 = size, sha256
            with self._lock:
                self.files_generated += 1
            return answer

    def reset(self) -> None:
        """Forget every order and file, and delete the generated files."""
        with self._lock:
            self._orders.clear()
            self._groups.clear()
            self._planned.clear()
            self._files.clear()
            self.files_generated = 0
            if self.directory.exists():
                shutil.rmtree(self.directory, ignore_errors=True)
            self.directory.mkdir(parents=True, exist_ok=True)
