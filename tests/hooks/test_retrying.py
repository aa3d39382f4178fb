"""The one retry mechanism (RetryPolicy.start() -> Retrying) that the API calls and the downloads use."""

from __future__ import annotations

from airflow_provider_skattekonto.exceptions import SkattekontoApiError, SkattekontoError
from airflow_provider_skattekonto.hooks._protocol import RetryPolicy


def _error(status: int | None, *, retryable: bool = True, retry_after: float | None = None) -> SkattekontoApiError:
    return SkattekontoApiError("x", status=status, retryable=retryable, retry_after=retry_after)


class _Broken(SkattekontoError):
    retryable = True


def test_not_retryable_is_never_retried() -> None:
    retrying = RetryPolicy().start()
    assert retrying.next_delay(_error(403, retryable=False)) is None


def test_the_spec_minute_and_retry_after() -> None:
    retrying = RetryPolicy(max_seconds=300, delay_seconds=60).start()
    assert retrying.next_delay(_error(503)) == 60
    assert retrying.next_delay(_error(503, retry_after=5)) == 5


def test_rate_limits_back_off_exponentially_below_the_delay() -> None:
    retrying = RetryPolicy(max_seconds=300, delay_seconds=60, rate_limit_base_seconds=1).start()
    waits = [retrying.next_delay(_error(429)) for _ in range(4)]
    assert all(w is not None for w in waits)
    assert [round(w or 0) for w in waits] == sorted(round(w or 0) for w in waits)
    assert 1 <= (waits[0] or 0) <= 1.2 and 8 <= (waits[3] or 0) <= 9.6


def test_the_time_budget_ends_retries() -> None:
    retrying = RetryPolicy(max_seconds=100, delay_seconds=60).start()
    assert retrying.next_delay(_error(500)) == 60
    assert retrying.next_delay(_error(500, retry_after=101)) is None


def test_attempt_cap_for_operations_that_count_attempts() -> None:
    retrying = RetryPolicy(max_seconds=300, delay_seconds=0, max_attempts=3).start()
    assert [retrying.next_delay(_Broken("download broke")) for _ in range(3)] == [0, 0, None]
    assert retrying.attempt == 3


def test_a_401_refreshes_the_token_once() -> None:
    retrying = RetryPolicy().start()
    assert retrying.refresh_token() is True
    assert retrying.refresh_token() is False
