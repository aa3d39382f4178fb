"""``python -m airflow_provider_skattekonto.sandbox serve ...``: same as ``skattekonto-sandbox``."""

from __future__ import annotations

import sys

from airflow_provider_skattekonto.sandbox.cli import main

if __name__ == "__main__":
    sys.exit(main())
