"""A rotated refresh token is never lost: kept (masked, encrypted at rest) in an Airflow Variable that the next
run prefers, or the run fails at once saying what to do. Real HTTPS against a rotating sandbox, real Airflow
metadata database and REST API."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_skattekonto.exceptions import TokenError
from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook
from tests.rest_api import api_client

pytestmark = pytest.mark.airflow_db

VARIABLE = SkattekontoHook.refresh_token_variable("skattekonto_default")


@pytest.fixture
def rotating(sandbox: Any, use_connection: Any, airflow_db: Any) -> Iterator[dict[str, Any]]:
    """A refresh-token connection on a sandbox that rotates refresh tokens; no Variable left from before."""
    from airflow.models.variable import Variable

    Variable.delete(VARIABLE)
    sandbox.configure(rotate_refresh_tokens=True)
    connection = use_connection(grant_type="refresh_token")
    yield connection
    Variable.delete(VARIABLE)


def test_the_next_run_uses_the_rotated_refresh_token(
    sandbox: Any, rotating: dict[str, Any], logs: Callable[[], str]
) -> None:
    original = rotating["extra"]["refresh_token"]
    assert SkattekontoHook().get_token()  # run 1: the connection's token, rotated by the endpoint
    rotated = sandbox.registration("orderer").refresh_token
    assert rotated != original

    assert SkattekontoHook().get_token()  # run 2: the old token no longer works; the stored one does
    assert SkattekontoHook().get_token()  # run 3: rotated again, and again found
    text = logs()
    assert f"stored (masked) in Airflow Variable {VARIABLE}" in text
    assert original not in text and rotated not in text
    assert sandbox.registration("orderer").refresh_token not in text

    with api_client() as client:  # what Airflow's REST API shows of the Variable: masked
        answer = client.get(f"/api/v2/variables/{VARIABLE}")
    assert answer.status_code == 200, answer.text
    assert sandbox.registration("orderer").refresh_token not in answer.text


def test_a_new_token_in_the_connection_wins_over_the_stored_one(
    sandbox: Any, rotating: dict[str, Any], use_connection: Any
) -> None:
    SkattekontoHook().get_token()
    # Someone signs in again and puts a fresh refresh token into the connection: it must be used.
    fresh = sandbox.registry.rotate_refresh_token(sandbox.registration("orderer"))
    use_connection(grant_type="refresh_token", refresh_token=fresh)
    assert SkattekontoHook().get_token()


def test_a_rotation_that_cannot_be_stored_fails_at_once(
    sandbox: Any, rotating: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An environment variable shadows the Variable: writing succeeds, but the next run would read the old value.
    monkeypatch.setenv(f"AIRFLOW_VAR_{VARIABLE.upper()}", json.dumps({"refresh_token": "stale"}))
    tokens_before = sum(sandbox.stats()["tokens_issued"].values())
    with pytest.raises(TokenError) as caught:
        SkattekontoHook().get_token()
    text = str(caught.value)
    assert "rotated the refresh token" in text and VARIABLE in text and "shadows it" in text
    assert "put the new refresh token into the connection" in text
    assert sandbox.registration("orderer").refresh_token not in text
    assert not caught.value.retryable
    assert sum(sandbox.stats()["tokens_issued"].values()) == tokens_before + 1  # failed at once, no retries


def test_without_rotation_nothing_is_stored(sandbox: Any, use_connection: Any, airflow_db: Any) -> None:
    from airflow.models.variable import Variable

    Variable.delete(VARIABLE)
    use_connection(grant_type="refresh_token")
    assert SkattekontoHook().get_token()
    assert Variable.get(VARIABLE, default_var=None) is None


def _token_dag(dag_id: str) -> str:
    return f"""
import datetime as dt

from airflow.sdk import DAG, task

from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:

    @task
    def fetch_token() -> str:
        hook = SkattekontoHook()
        hook.get_token()
        return "token fetched"

    fetch_token()
"""


def test_rotation_inside_tasks_goes_through_the_task_sdk(
    sandbox: Any, rotating: dict[str, Any], run_dag_file: Any
) -> None:
    """Three DAG runs in a row (dag.test(): the task SDK and its supervisor): each finds the token the last stored."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    original = rotating["extra"]["refresh_token"]
    for run in range(3):
        dag_id = f"rotation_{run}_{uuid.uuid4().hex[:8]}"
        state, value = run_dag_file(dag_id, _token_dag(dag_id))["fetch_token"]
        assert (state, value) == ("success", "token fetched"), f"run {run + 1}"
    current = sandbox.registration("orderer").refresh_token
    assert current != original
    with create_session() as session:
        stored = session.query(Variable).filter(Variable.key == VARIABLE).one()
        assert stored.is_encrypted  # encrypted at rest (the tests configure a Fernet key, as a deployment does)
        assert current not in str(stored._val)
    assert json.loads(Variable.get(VARIABLE))["refresh_token"] == current
