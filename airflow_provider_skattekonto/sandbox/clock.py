"""The sandbox's controllable clock: every time rule of the sandbox reads it.

``now()`` is ``start + (monotonic seconds elapsed) * speed`` in Europe/Stockholm. ``speed=0`` freezes
the clock; ``speed=60`` runs one sandbox minute per real second. Thread-safe.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM

__all__ = ["SandboxClock"]


def _aware(moment: dt.datetime) -> dt.datetime:
    """``moment`` in Stockholm time; a naive datetime is taken as Stockholm local time."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=STOCKHOLM)
    return moment.astimezone(STOCKHOLM)


def _checked_speed(speed: float) -> float:
    value = float(speed)
    if value < 0 or value != value:  # negative or NaN
        raise ValueError(f"Clock speed must be a number >= 0 (0 freezes the clock), got {speed!r}")
    return value


class SandboxClock:
    """A clock that starts at ``start`` (default: real now) and runs at ``speed`` times real time.

    :param start: the sandbox time at construction; naive datetimes are Europe/Stockholm local time.
    :param speed: sandbox seconds per real second (``0`` freezes the clock).
    """

    def __init__(self, start: dt.datetime | None = None, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._start = _aware(start) if start is not None else dt.datetime.now(STOCKHOLM)
        self._origin = time.monotonic()
        self._speed = _checked_speed(speed)

    def _now_locked(self) -> dt.datetime:
        elapsed = (time.monotonic() - self._origin) * self._speed
        return (self._start + dt.timedelta(seconds=elapsed)).astimezone(STOCKHOLM)

    def now(self) -> dt.datetime:
        """The sandbox time now, timezone-aware in Europe/Stockholm."""
        with self._lock:
            return self._now_locked()

    @property
    def speed(self) -> float:
        """Sandbox seconds per real second."""
        with self._lock:
            return self._speed

    def set(self, now: dt.datetime | None = None, speed: float | None = None) -> dt.datetime:
        """Jump to ``now`` and/or change the speed (from the current sandbox time); returns the new now."""
        with self._lock:
            new_speed = self._speed if speed is None else _checked_speed(speed)
            self._start = _aware(now) if now is not None else self._now_locked()
            self._origin = time.monotonic()
            self._speed = new_speed
            return self._start

    def advance(self, seconds: float) -> dt.datetime:
        """Move the clock ``seconds`` forward (negative: backward); returns the new now."""
        with self._lock:
            self._start = self._now_locked() + dt.timedelta(seconds=float(seconds))
            self._origin = time.monotonic()
            return self._start

    def reset(self, now: dt.datetime | None = None, speed: float = 1.0) -> dt.datetime:
        """Back to real time (or ``now``) at ``speed`` (default 1.0); returns the new now."""
        return self.set(now=now if now is not None else dt.datetime.now(STOCKHOLM), speed=speed)

    def to_json(self) -> dict[str, object]:
        """``{"now": "<ISO 8601 with offset>", "speed": x}``, as the admin endpoint answers."""
        with self._lock:
            return {"now": self._now_locked().isoformat(), "speed": self._speed}

    def __repr__(self) -> str:
        state = self.to_json()
        return f"SandboxClock(now={state['now']}, speed={state['speed']})"
