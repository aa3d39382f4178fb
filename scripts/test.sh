#!/usr/bin/env bash
# Lint and type checks, then the tests on every supported Airflow, each in its own virtualenv:
#
#   newest   the newest Airflow 3.x the resolver picks   .venv        (the venv the README's commands use)
#   3.0.6    the oldest supported Airflow                .venv-af306  (pins: scripts/constraints/airflow-3.0.6.txt)
#   3.1.8    the last 3.1                                .venv-af318
#   3.2.2    the last 3.2                                .venv-af322  (pins: scripts/constraints/airflow-3.2.2.txt)
#
# Steps: "unit" (the whole suite without the system and the slow tests), "slow" (marker `slow`, once, on the newest
# Airflow: the wheel and sdist built, checked and the sdist's own tests run from it; the benchmark scripts at tiny
# sizes), "system" (real scheduler, dag-processor, triggerer and api-server processes, LocalExecutor and
# CeleryExecutor; tests/system) and "examples" (the example DAGs parsed and run end to end with dag.test(), the
# version checks, and the connection form as the UI's API serves it).
# Packages are installed with uv (installed into .venv with pip first), which takes seconds where pip takes minutes.
#
# Usage: scripts/test.sh                   lint + the whole matrix (what CI runs)
#        scripts/test.sh [pytest args...]  lint + only the newest Airflow's unit step with these arguments
#                                          (`-m slow` for the slow tests; and its system step too when
#                                          SKATTEKONTO_SYSTEM_TESTS=1)
# Environment: AIRFLOW_MATRIX (default "newest 3.0.6") picks the versions of the unit step, AIRFLOW_SYSTEM
# (default "newest 3.0.6") those of the system step, AIRFLOW_EXTRA (default "3.1.8 3.2.2") those of the examples
# step; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every test process (xdist workers, the Airflow processes of the system tests, the sandbox) imports the provider,
# and pytest rewrites every test module in each worker: with bytecode written once to __pycache__, they read it
# instead of compiling the same sources again in each process.
unset PYTHONDONTWRITEBYTECODE

PYTHON=${PYTHON:-python3}
AIRFLOW_MATRIX=${AIRFLOW_MATRIX:-newest 3.0.6}
AIRFLOW_EXTRA=${AIRFLOW_EXTRA-3.1.8 3.2.2}
AIRFLOW_SYSTEM=${AIRFLOW_SYSTEM-newest 3.0.6}

venv_of() { # the virtualenv of an Airflow version: .venv for the newest, .venv-af306 for 3.0.6
  if [ "$1" = newest ]; then echo .venv; else echo ".venv-af${1//./}"; fi
}

install() { # install the provider with its test dependencies for one Airflow version
  local version=$1 venv pins=() extras=test,dev
  venv=$(venv_of "$version")
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  if [ "$version" = newest ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check uv
  else
    extras=test  # the linters run once, on the newest Airflow
    if [ -f "scripts/constraints/airflow-$version.txt" ]; then
      pins=(-r "scripts/constraints/airflow-$version.txt")
    else
      pins=("apache-airflow==$version")
    fi
  fi
  case " $AIRFLOW_SYSTEM " in *" $version "*) extras=$extras,system ;; esac
  echo "== Airflow $version: installing into $venv"
  # --compile-bytecode: the .pyc files of the dependencies are written once, at install, not by the first processes.
  .venv/bin/uv pip install --quiet --compile-bytecode --python "$venv/bin/python" -e ".[$extras]" "${pins[@]}"
  echo "== Airflow $version: $("$venv/bin/python" -c 'import airflow; print(airflow.__version__)' 2>/dev/null) in $venv"
}

step() { # step VERSION unit|slow|system|examples [pytest args...]; returns pytest's status
  # Called as `step ... || failed+=(...)`, where bash ignores `set -e`: each command's status is kept by hand.
  local version=$1 name=$2 venv started status=0
  shift 2
  venv=$(venv_of "$version")
  started=$SECONDS
  echo "== Airflow $version: $name"
  case "$name" in
    unit)
      # 3 workers on 2 cores: with 2, each worker waits about half its time (the sandbox's delays, retries, locks,
      # PostgreSQL), which a third worker fills.
      "$venv/bin/python" -m pytest -n 3 --dist loadgroup -q "$@" || status=$?
      ;;
    slow)
      # loadfile: the packaging tests share one build of the distributions, the benchmark run gets the other worker
      "$venv/bin/python" -m pytest -n 2 --dist loadfile -q -m slow "$@" || status=$?
      ;;
    system)
      if [ -d tests/system ]; then
        if [ -n "${CI:-}" ] && command -v redis-server >/dev/null 2>&1 \
          && ! "$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', 6379), 2)" 2>/dev/null; then
          echo "Redis is not answering on 127.0.0.1:6379; starting it"
          redis-server --bind 127.0.0.1 --port 6379 --daemonize yes || status=$?
        fi
        "$venv/bin/python" -m pytest -m system -p no:xdist -q tests/system "$@" || status=$?
      else
        echo "(no tests/system)"
      fi
      ;;
    examples)
      "$venv/bin/python" -m pytest -n 2 -q tests/test_example_dags.py tests/test_version_compat.py \
        tests/hooks/test_connection_form.py "$@" || status=$?
      ;;
  esac
  echo "== Airflow $version: $name took $((SECONDS - started)) s (exit status $status)"
  return "$status"
}

# PostgreSQL tests must run under CI: start the local server if it is installed but stopped.
start_postgres() {
  if [ -n "${CI:-}" ] && command -v pg_ctlcluster >/dev/null 2>&1; then
    if ! "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', 5432), 2)" 2>/dev/null; then
      echo "PostgreSQL is not answering on 127.0.0.1:5432; starting it"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
    fi
  fi
}

lint() { # ruff, ruff format and mypy once, on the newest Airflow
  local dirs=()
  for dir in airflow_provider_skattekonto tests scripts example_dags benchmarks; do
    [ -d "$dir" ] && dirs+=("$dir")
  done
  .venv/bin/ruff check "${dirs[@]}"
  .venv/bin/ruff format --check "${dirs[@]}"
  .venv/bin/mypy
}

install newest
start_postgres
lint
if [ $# -gt 0 ]; then
  step newest unit "$@"
  if [ -n "${SKATTEKONTO_SYSTEM_TESTS:-}" ]; then step newest system; fi
  exit 0
fi
failed=()
run() { step "$@" || failed+=("Airflow $1: $2"); }
for version in $AIRFLOW_MATRIX; do
  [ "$version" = newest ] || install "$version"
  run "$version" unit
  case " $AIRFLOW_SYSTEM " in *" $version "*) run "$version" system ;; esac
done
run newest slow
for version in $AIRFLOW_EXTRA; do
  install "$version"
  run "$version" examples
done
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "All steps passed on Airflow: $AIRFLOW_MATRIX $AIRFLOW_EXTRA"
