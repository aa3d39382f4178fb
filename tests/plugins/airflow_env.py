"""Pytest plugin (loaded with ``-p tests.plugins.airflow_env`` before any test module imports Airflow).

Gives each pytest(-xdist) worker its own AIRFLOW_HOME with a SQLite metadata database, migrated once
per worker on first use by the ``airflow_db`` fixture, so ``dag.test()`` runs real Airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
_HOME = Path(tempfile.mkdtemp(prefix=f"skattekonto-airflow-{_WORKER}-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME / 'airflow.db'}"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_HOME / "dags")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database for this worker (for ``dag.test()``)."""
    marker = _HOME / ".migrated"
    if not marker.exists():
        airflow = Path(sys.executable).with_name("airflow")
        subprocess.run(
            [str(airflow), "db", "migrate"], check=True, env=os.environ.copy(), capture_output=True, timeout=300
        )
        marker.touch()
    return _HOME
