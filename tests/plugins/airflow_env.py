"""Pytest plugin (loaded with ``-p tests.plugins.airflow_env`` before any test module imports Airflow).

Gives each pytest(-xdist) worker its own AIRFLOW_HOME with a SQLite metadata database, migrated once
per worker on first use by the ``airflow_db`` fixture, so ``dag.test()`` runs real Airflow.
"""

from __future__ import annotations

import base64
import functools
import gc
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
_HOME = Path(tempfile.mkdtemp(prefix=f"skattekonto-airflow-{_WORKER}-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME / 'airflow.db'}"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_HOME / "dags")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
# Like a deployment: a Fernet key, so Airflow encrypts connections and Variables at rest in the metadata database.
os.environ.setdefault("AIRFLOW__CORE__FERNET_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
# Operators take `deferrable` from this setting (default False in Airflow): the tests run the example DAGs the
# way the README recommends, with their waits in the triggerer (dag.test() runs triggers inline).
os.environ.setdefault("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")


# Set by the garbage collector after each full collection, read after each test.
_full_collection_done = False


def _note_full_collection(phase: str, info: dict[str, Any]) -> None:
    global _full_collection_done
    if phase == "stop" and info["generation"] == 2:
        _full_collection_done = True


gc.callbacks.append(_note_full_collection)


@pytest.fixture(autouse=True)
def _long_lived_objects_frozen() -> Iterator[None]:
    """After a test in which Python ran a full garbage collection, what survived it is frozen (``gc.freeze``).

    A worker builds Airflow's API apps once (a million objects; the suite's processes start at 0.2 million), and
    each later full collection walked all of them again: 0.5-0.9 s each on two cores, some twenty per worker.
    Frozen objects are left out of later collections; what a test leaves behind is still collected.
    """
    global _full_collection_done
    yield
    if _full_collection_done:
        _full_collection_done = False
        gc.freeze()


@pytest.fixture(autouse=True)
def _secrets_masked_per_test() -> Iterator[None]:
    """Each test masks its own secrets, as a task process does: what a test adds is dropped after it.

    Airflow's masker keeps every secret it is given for the life of the process and compiles all of them into
    one regular expression again on each new one. A test worker lives for hundreds of tests, each with fresh
    tokens and passwords, so without this the suite spends a third of its time compiling that expression.
    Secrets registered before the test (Airflow's configuration) stay masked.
    """
    from airflow_provider_skattekonto.version_compat import SECRETS_MASKER_HOMES

    maskers = []
    for name in (*SECRETS_MASKER_HOMES, "airflow._shared.secrets_masker"):  # and core's own masker (3.1+)
        module = sys.modules.get(name)
        get_masker = getattr(module, "_secrets_masker", None)
        if get_masker is None:
            continue
        try:
            masker = get_masker()
        except RuntimeError:  # no masker configured yet in this process
            continue
        if isinstance(getattr(masker, "patterns", None), set) and all(masker is not seen for seen, _, _ in maskers):
            maskers.append((masker, set(masker.patterns), getattr(masker, "replacer", None)))
    yield
    for masker, patterns, replacer in maskers:
        if masker.patterns != patterns:
            masker.patterns = patterns
            masker.replacer = replacer


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database for this worker (for ``dag.test()``)."""
    marker = _HOME / ".migrated"
    if not marker.exists():
        # What `airflow db migrate` runs, in this process: the CLI would import Airflow once more.
        from airflow.utils.db import upgradedb

        upgradedb()
        marker.touch()
    _one_execution_api_per_process()
    return _HOME


def _one_execution_api_per_process() -> None:
    """``dag.test()`` on Airflow 3.0 builds the in-process execution API again for every task it runs.

    Building it takes seconds (its versioned routes). Airflow 3.1 and later keep one per process
    (``functools.lru_cache`` on ``in_process_api_server``); the tests do the same on 3.0.
    """
    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)


@pytest.fixture
def run_dag_file(airflow_db: Path) -> Iterator[Callable[..., dict[str, tuple[str, Any]]]]:
    """Run a DAG written as a file into the dags folder with ``dag.test()`` (triggers run inline).

    Airflow 3.3's ``dag.test()`` serializes the DAG from its bundle (the dags folder), so a DAG built only
    in memory cannot run: the test passes the DAG's source, written as ``<dag_id>.py`` (module-level name
    ``dag``). Extra keyword arguments go to ``dag.test()``. Returns ``{task_id: (state, return value)}``;
    mapped tasks appear as ``task_id[map_index]``. The files are removed afterwards.
    """
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def run(dag_id: str, source: str, **test_kwargs: Any) -> dict[str, tuple[str, Any]]:
        import importlib.util

        from airflow.models.taskinstance import TaskInstance
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        path = folder / f"{dag_id}.py"
        path.write_text(source)
        written.append(path)
        spec = importlib.util.spec_from_file_location(f"_dag_{dag_id}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _register_like_the_dag_processor(path)
        dag_run = module.dag.test(**test_kwargs)
        results: dict[str, tuple[str, Any]] = {}
        with create_session() as session:
            tis = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=dag_run.run_id).all()
            for ti in tis:
                value = (
                    session.query(XComModel.value)
                    .filter_by(
                        dag_id=dag_id,
                        run_id=dag_run.run_id,
                        task_id=ti.task_id,
                        map_index=ti.map_index,
                        key="return_value",
                    )
                    .scalar()
                )
                key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
                results[key] = (str(ti.state), None if value is None else XComModel.deserialize_value(_Row(value)))
        return results

    yield run
    for path in written:
        path.unlink(missing_ok=True)


def _register_like_the_dag_processor(path: Path) -> None:
    """Write the DAG file's DAGs and their assets to the metadata database, as a DAG processor would.

    Newer Airflow's ``dag.test()`` does this itself (its DagBag has no ``sync_to_db`` any more); Airflow 3.0's
    does not, and then a task with an asset outlet fails as "inactive asset".
    """
    from airflow.models.dagbag import DagBag

    if not hasattr(DagBag, "sync_to_db"):
        return
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()
    DagBag(dag_folder=str(path)).sync_to_db(bundle_name="dags-folder", bundle_version=None)


class _Row:
    def __init__(self, value: Any) -> None:
        self.value = value
