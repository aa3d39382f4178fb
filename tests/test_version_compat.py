"""The supported Airflow range, and that only ``version_compat`` knows about Airflow versions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_skattekonto import version_compat
from airflow_provider_skattekonto.version_compat import unsupported_airflow_reason, version_tuple

PACKAGE = Path(version_compat.__file__).resolve().parent


@pytest.mark.parametrize("version", ["3.0.6", "3.0.6rc1", "3.1.0", "3.2.2", "3.3.2", "3.9.0.dev0"])
def test_supported_versions(version: str) -> None:
    assert unsupported_airflow_reason(version) is None


@pytest.mark.parametrize("version", ["2.10.5", "2.11.0", "3.0.0", "3.0.5", "4.0.0", "not-a-version"])
def test_unsupported_versions_are_refused_with_what_to_do(version: str) -> None:
    reason = unsupported_airflow_reason(version)
    assert reason is not None
    assert version in reason and "3.0.6" in reason


def test_no_airflow_installed_is_not_refused() -> None:
    assert unsupported_airflow_reason(None) is None


def test_version_tuple_ignores_pre_and_dev_releases() -> None:
    assert version_tuple("3.1.0rc2") == (3, 1, 0)
    assert version_tuple("3.2.0.dev0+local") == (3, 2, 0)


def test_importing_under_an_unsupported_airflow_fails_with_the_reason() -> None:
    """The package's ``__init__`` refuses Airflow 2 before any module of ours imports Airflow."""
    code = (
        "import sys, types\n"
        "fake = types.ModuleType('airflow'); fake.__version__ = '2.11.0'; sys.modules['airflow'] = fake\n"
        "try:\n"
        "    import airflow_provider_skattekonto\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "needs Apache Airflow 3.0.6 or newer 3.x, but Airflow 2.11.0 is installed" in out


def test_the_running_airflow_is_supported_and_its_flags_are_consistent() -> None:
    import airflow

    assert unsupported_airflow_reason(airflow.__version__) is None
    release = version_tuple(airflow.__version__)
    assert (release >= (3, 1, 0)) == version_compat.AIRFLOW_V_3_1_PLUS
    assert (release >= (3, 3, 0)) == version_compat.AIRFLOW_V_3_3_PLUS
    # What the flags promise is really there (or really missing) in this Airflow.
    import airflow.sdk.log as sdk_log

    assert hasattr(sdk_log, "amask_secret") == version_compat.HAS_ASYNC_MASK_SECRET
    assert hasattr(version_compat.BaseHook, "aget_connection") == version_compat.HAS_ASYNC_CONNECTION


VERSION_TESTS = re.compile(
    r"AIRFLOW_V_\d|airflow import __version__|airflow\.__version__|packaging\.version|importlib\.metadata"
    r"|task_state_store|airflow\.sdk\.exceptions|from airflow\.sdk import BaseHook|airflow\.hooks\.base"
)


def test_no_other_module_tests_airflow_versions() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "version_compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if VERSION_TESTS.search(line) and "version_compat import" not in line:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "version-dependent code outside version_compat:\n" + "\n".join(offenders)
