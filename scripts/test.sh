#!/usr/bin/env bash
# Install the provider with its test dependencies into .venv, then run lint, type checks and the tests.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,dev]"

# PostgreSQL tests must run under CI: start the local server if it is installed but stopped.
if [ -n "${CI:-}" ] && command -v pg_ctlcluster >/dev/null 2>&1; then
  if ! .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', 5432), 2)" 2>/dev/null; then
    echo "PostgreSQL is not answering on 127.0.0.1:5432; starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  fi
fi

PYTHON_DIRS=()
for dir in airflow_provider_skattekonto tests scripts example_dags benchmarks; do
  [ -d "$dir" ] && PYTHON_DIRS+=("$dir")
done
.venv/bin/ruff check "${PYTHON_DIRS[@]}"
.venv/bin/ruff format --check "${PYTHON_DIRS[@]}"
.venv/bin/mypy
.venv/bin/python -m pytest -n 2 --dist loadgroup -q "$@"

# System tests: real scheduler, dag-processor, triggerer and api-server processes (tests/system).
# They run after the unit suite when no pytest arguments were given, or when SKATTEKONTO_SYSTEM_TESTS=1.
if [ $# -eq 0 ] || [ -n "${SKATTEKONTO_SYSTEM_TESTS:-}" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,system]"
  if [ -n "${CI:-}" ] && command -v redis-server >/dev/null 2>&1 \
    && ! .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', 6379), 2)" 2>/dev/null; then
    echo "Redis is not answering on 127.0.0.1:6379; starting it"
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes
  fi
  .venv/bin/python -m pytest -m system -p no:xdist -q tests/system
fi
