"""Per-API-client token buckets, on real (monotonic) time like a gateway's limiter."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

__all__ = ["RateDecision", "RateLimiter"]


@dataclass(frozen=True)
class RateDecision:
    """Whether a call may pass, what is left in the bucket and, if refused, when to retry (seconds)."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int = 0


class RateLimiter:
    """Token bucket per key: ``rate`` calls per second refill, ``burst`` calls at most at once.

    ``burst`` defaults to ``max(1, rate)``. A tiny rate (e.g. ``0.001``) with ``burst=1`` allows exactly
    one call, which makes the 429 path testable without timing.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, monotonic stamp)
        self.rate = 0.0
        self.burst = 0.0
        self.configure(rate, burst)

    def configure(self, rate: float, burst: float | None = None) -> None:
        """Change the limit; existing buckets are emptied."""
        if not rate > 0:
            raise ValueError(f"rate_limit_per_second must be > 0, got {rate!r}")
        capacity = max(1.0, rate) if burst is None else float(burst)
        if capacity < 1:
            raise ValueError(f"rate_limit_burst must be >= 1, got {burst!r}")
        with self._lock:
            self.rate = float(rate)
            self.burst = capacity
            self._buckets.clear()

    def reset(self) -> None:
        """Refill every bucket."""
        with self._lock:
            self._buckets.clear()

    def _level(self, key: str, now: float) -> float:
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - stamp) * self.rate)

    @property
    def limit(self) -> int:
        """The advertised limit (``x-ratelimit-limit``): calls per second, at least the burst."""
        return max(1, math.floor(self.rate)) if self.rate >= 1 else max(1, int(self.burst))

    def peek(self, key: str | None) -> RateDecision:
        """The bucket's state without taking from it (``key`` None: a full bucket)."""
        with self._lock:
            level = self.burst if key is None else self._level(key, time.monotonic())
            return RateDecision(True, self.limit, int(level))

    def acquire(self, key: str) -> RateDecision:
        """Take one call from ``key``'s bucket, or refuse with the seconds until one is available."""
        with self._lock:
            now = time.monotonic()
            level = self._level(key, now)
            if level >= 1.0:
                level -= 1.0
                self._buckets[key] = (level, now)
                return RateDecision(True, self.limit, int(level))
            self._buckets[key] = (level, now)
            wait = (1.0 - level) / self.rate
            return RateDecision(False, self.limit, 0, max(1, math.ceil(wait)))
