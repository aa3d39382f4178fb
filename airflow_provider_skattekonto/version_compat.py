"""The one place that knows how the supported Airflow versions (3.0.6 up to the newest 3.x) differ.

No other module of this provider tests Airflow's version: they import from here. What each version gives:

* 3.0.6+: everything works; ``BaseHook`` and the task exceptions come from their pre-SDK homes.
* 3.1+: ``BaseHook.aget_connection`` (before: the sync API in a worker thread, via common-compat);
  manual runs get their id from the timetable, which names the delivery morning (before: Airflow's own
  ``manual__<time>_<random>``).
* 3.2+: the UI reads the declarative ``conn-fields`` of the provider info (before: the hook's
  ``get_connection_form_widgets``).
* 3.3+: ``amask_secret`` (before: the sync masker in a worker thread); the task state store (before:
  :func:`task_state` keeps the same records in an Airflow Variable per task instance) and
  ``start_from_trigger`` with templated trigger arguments (before: ignored, with a
  warning; the sensor starts on a worker and defers at once).

Importing this module imports nothing from Airflow: the names below are resolved on first use, so the
package's ``__init__`` can refuse an unsupported Airflow before anything else is imported.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import BaseHook as BaseHook
    from airflow.sdk.exceptions import AirflowFailException as AirflowFailException
    from airflow.sdk.exceptions import AirflowSkipException as AirflowSkipException
    from airflow.sdk.exceptions import TaskDeferred as TaskDeferred

MIN_AIRFLOW_VERSION = (3, 0, 6)
FIRST_UNSUPPORTED_MAJOR = 4


def installed_airflow_version() -> str | None:
    """The installed Airflow's version string, without importing Airflow when it is not imported yet."""
    airflow = sys.modules.get("airflow")
    version = getattr(airflow, "__version__", None)
    if isinstance(version, str):
        return version
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    for distribution in ("apache-airflow-core", "apache-airflow"):
        try:
            return dist_version(distribution)
        except PackageNotFoundError:
            continue
    return None


def version_tuple(version: str) -> tuple[int, int, int]:
    """``"3.1.0rc2"`` -> ``(3, 1, 0)``: the release a (pre-)release version belongs to."""
    from packaging.version import Version

    parsed = Version(version)
    return parsed.major, parsed.minor, parsed.micro


def unsupported_airflow_reason(version: str | None) -> str | None:
    """Why this provider cannot run on Airflow ``version``, or ``None`` when it can."""
    if version is None:
        return None  # no Airflow installed (e.g. only the sandbox is used): nothing to refuse
    supported = "Apache Airflow 3.0.6 or newer 3.x"
    try:
        release = version_tuple(version)
    except ValueError:
        return f"cannot read the installed Airflow version {version!r}; airflow-provider-skattekonto needs {supported}"
    if release < MIN_AIRFLOW_VERSION or release[0] >= FIRST_UNSUPPORTED_MAJOR:
        return (
            f"airflow-provider-skattekonto needs {supported}, but Airflow {version} is installed. Upgrade "
            "Airflow (pip install 'apache-airflow>=3.0.6,<4'), or use a platform image with Airflow 3.0.6+."
        )
    return None


def require_supported_airflow() -> None:
    """Raise :class:`RuntimeError` with a clear message when the installed Airflow is not supported."""
    reason = unsupported_airflow_reason(installed_airflow_version())
    if reason:
        raise RuntimeError(reason)


_RELEASE = version_tuple(installed_airflow_version() or "3.0.6")
AIRFLOW_V_3_1_PLUS: bool = _RELEASE >= (3, 1, 0)
AIRFLOW_V_3_2_PLUS: bool = _RELEASE >= (3, 2, 0)
AIRFLOW_V_3_3_PLUS: bool = _RELEASE >= (3, 3, 0)

#: What the running Airflow gives; the README's "which version gives what" table names the same features.
HAS_TASK_STATE_STORE = AIRFLOW_V_3_3_PLUS
HAS_START_FROM_TRIGGER = AIRFLOW_V_3_3_PLUS
HAS_DECLARATIVE_CONN_FIELDS = AIRFLOW_V_3_2_PLUS
HAS_ASYNC_MASK_SECRET = AIRFLOW_V_3_3_PLUS
HAS_ASYNC_CONNECTION = AIRFLOW_V_3_1_PLUS
HAS_TIMETABLE_MANUAL_RUN_IDS = AIRFLOW_V_3_1_PLUS

# Names imported on first use, newest home first (apache-airflow-providers-common-compat's shims).
_LAZY = {
    "BaseHook": "airflow.providers.common.compat.sdk",
    "AirflowFailException": "airflow.providers.common.compat.sdk",
    "AirflowSkipException": "airflow.providers.common.compat.sdk",
    "TaskDeferred": "airflow.providers.common.compat.sdk",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable`` (the official providers' convention for ``deferrable``)."""
    from airflow.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


# Where the task SDK keeps its secrets masker (``_secrets_masker()``): 3.1+ moved it; its old home warns there.
SECRETS_MASKER_HOMES = ("airflow.sdk._shared.secrets_masker", "airflow.sdk.execution_time.secrets_masker")


def mask_secret(value: Any) -> None:
    """Register ``value`` with Airflow's secrets masker, in this process and in the task's supervisor.

    The task SDK of Airflow 3.0 tells the supervisor before it masks locally, and its debug log of that
    message shows the value: mask locally first (newer Airflow does the same itself).
    """
    import importlib

    from airflow.providers.common.compat.sdk import mask_secret as _mask_secret

    for home in SECRETS_MASKER_HOMES:
        try:
            masker = importlib.import_module(home)._secrets_masker
        except (ImportError, AttributeError):
            continue
        masker().add_mask(value)
        break
    _mask_secret(value)


async def amask_secret(value: Any) -> None:
    """Register ``value`` with the secrets masker from async code (triggers) without blocking the loop."""
    if HAS_ASYNC_MASK_SECRET:
        from airflow.sdk.log import amask_secret as _amask_secret

        await _amask_secret(value)
        return
    from asgiref.sync import sync_to_async

    await sync_to_async(mask_secret)(value)


async def aget_connection_and_extra(hook: Any, conn_id: str) -> tuple[Any, dict[str, Any]]:
    """A connection and its extras from async code: ``aget_connection`` where Airflow has a safe one,
    else the sync API in a worker thread (common-compat decides, including 3.3.0/3.3.1's sync masking)."""
    from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

    conn = await get_async_connection(conn_id, hook=hook)
    return conn, await get_async_extra_dejson(conn)


class _VariableTaskState:
    """Stand-in for Airflow 3.3's task state store before 3.3: one Airflow Variable per task instance.

    It survives task retries (XCom does not: Airflow clears a task's XCom when a new try starts). The
    Variable is named ``skattekonto_task_state_<hash>`` and describes the task instance it belongs to. A
    first try has nothing to find, so it does not read (and Airflow logs no "Variable not found" for it).
    """

    def __init__(self, context: Any) -> None:
        ti = context["ti"]
        identity = (ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
        self.description = "airflow-provider-skattekonto task state of dag_id={} run_id={} task_id={} map_index={}"
        self.description = self.description.format(*identity)
        self.variable = "skattekonto_task_state_" + hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
        self._written: dict[str, Any] | None = {} if (getattr(ti, "try_number", 2) or 2) <= 1 else None

    def _load(self) -> dict[str, Any]:
        if self._written is not None:
            return dict(self._written)
        from airflow.sdk import Variable

        raw = Variable.get(self.variable, default=None)
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def get(self, key: str, default: Any = None) -> Any:
        return self._load().get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._save(self._load() | {key: value})

    def delete(self, key: str) -> None:
        stored = self._load()
        stored.pop(key, None)
        self._save(stored)

    def _save(self, stored: dict[str, Any]) -> None:
        from airflow.sdk import Variable

        Variable.set(self.variable, json.dumps(stored), description=self.description)
        self._written = stored


def task_state(context: Any) -> Any:
    """The task instance's state that survives its retries: Airflow's task state store (3.3+), else a
    Variable-backed stand-in with the same ``get``/``set``/``delete``. ``None`` outside a task instance."""
    store = context.get("task_state_store")
    if store is not None or HAS_TASK_STATE_STORE:
        return store
    return _VariableTaskState(context) if context.get("ti") is not None else None
