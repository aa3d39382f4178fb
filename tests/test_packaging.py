"""The distributions as users get them: metadata, LICENSE, ``twine check --strict``, an sdist that tests itself."""

from __future__ import annotations

import email
import email.message
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINTERS = ("ruff", "mypy", "flake8", "black", "pylint")

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel and the sdist, built from this checkout (no isolation: the build backend is installed)."""
    if not (REPO / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    out = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("build-src")
    # Build from a snapshot of the tracked files: build/ and egg-info never land in the checkout, and files that
    # other tests create or remove meanwhile (caches, temp folders) cannot race the sdist's file walk.
    snapshot = _snapshot_of_sources(tmp_path_factory.mktemp("snapshot") / REPO.name)
    _build("--sdist", "--outdir", str(out), str(snapshot))
    (sdist,) = out.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(work, filter="data")
    (source,) = work.iterdir()
    _build("--wheel", "--outdir", str(out), str(source))
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel, "source": source}


def _snapshot_of_sources(dest: Path) -> Path:
    """Copy the files git tracks (or, in an unpacked sdist, the tree without caches and virtualenvs) to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0 and listed.stdout:
        for name in filter(None, listed.stdout.decode().split("\0")):
            source = REPO / name
            if source.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / name)
    else:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv*", ".*cache", "build", "dist", "*.egg-info")
        shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def _build(*args: str) -> None:
    """``python -m build`` with its output in the failure message."""
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def test_wheel_and_sdist_carry_the_license(dists: dict[str, Path]) -> None:
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    with zipfile.ZipFile(dists["wheel"]) as archive:
        licenses = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert licenses, "the wheel has no LICENSE"
        assert archive.read(licenses[0]).decode() == license_text
    with tarfile.open(dists["sdist"]) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    assert "LICENSE" in names


def test_metadata_a_package_index_shows(dists: dict[str, Path]) -> None:
    meta = _wheel_metadata(dists["wheel"])
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.11"
    urls = dict(value.split(", ", 1) for value in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
    keywords = {k.strip() for k in (meta["Keywords"] or "").split(",")}
    assert {"airflow-provider", "apache-airflow", "skatteverket"} <= keywords
    classifiers = meta.get_all("Classifier") or []
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert "Framework :: Apache Airflow :: Provider" in classifiers
    minimum = meta["Requires-Python"].removeprefix(">=")
    assert f"Programming Language :: Python :: {minimum}" in classifiers
    assert meta["Author"] or meta["Author-email"]
    # the test extra installs what the tests need, never the linters (they live in the `dev` extra)
    requires = meta.get_all("Requires-Dist") or []
    test_extra = [r for r in requires if 'extra == "test"' in r]
    assert test_extra and not [r for r in test_extra if r.split()[0].split(">")[0] in LINTERS]


def test_mypy_checks_the_lowest_supported_python() -> None:
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    minimum = config["project"]["requires-python"].removeprefix(">=")
    assert config["tool"]["mypy"]["python_version"] == minimum
    assert config["tool"]["ruff"]["target-version"] == "py" + minimum.replace(".", "")
    assert sys.version_info[:2] >= tuple(int(p) for p in minimum.split("."))


def test_twine_check_strict_passes(dists: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dists["wheel"]), str(dists["sdist"])],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


@pytest.mark.timeout(1500)
def test_sdist_runs_its_own_tests(dists: dict[str, Path]) -> None:
    """Unpacked sdist: every test module collects, and a sample (pure rules and a DAG run) passes."""
    source = dists["source"]
    for needed in ("example_dags", "tests", "docs", "LICENSE", "README.md", "CHANGELOG.md", "CONTRIBUTING.md"):
        assert (source / needed).exists(), f"the sdist lacks {needed}"
    # the unpacked copy is imported, not this checkout (pytest puts the rootdir first on sys.path)
    where = subprocess.run(
        [sys.executable, "-c", "import airflow_provider_skattekonto as p; print(p.__file__)"],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    )
    assert Path(where.stdout.strip()).is_relative_to(source)
    pytest_cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "0"]
    collected = subprocess.run(
        [*pytest_cmd, "--collect-only"], cwd=source, capture_output=True, text=True, timeout=600, env=_env()
    )
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert "error" not in collected.stdout.lower().splitlines()[-1], collected.stdout[-2000:]
    sample = [
        "tests/domain/test_identifiers.py",
        "tests/docs",
        "tests/test_example_dags.py::test_daily_dag_orders_waits_and_loads",
    ]
    ran = subprocess.run([*pytest_cmd, *sample], cwd=source, capture_output=True, text=True, timeout=900, env=_env())
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-3000:]
    assert " passed" in ran.stdout.splitlines()[-1]
