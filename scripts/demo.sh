#!/usr/bin/env bash
# The main job: install the provider, start the sandbox, run the example DAG end to end into SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# uv (installed into .venv with pip) installs Airflow in seconds where pip takes minutes
.venv/bin/python -m pip install --quiet --disable-pip-version-check uv
.venv/bin/uv pip install --quiet --python .venv/bin/python -e ".[sqlite,parquet]"
exec .venv/bin/python scripts/run_demo.py
