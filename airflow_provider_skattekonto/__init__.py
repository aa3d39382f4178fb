"""Apache Airflow provider for Skatteverket's Skattekonto bulk service (scope ``skahmst``).

Supports Apache Airflow 3.0.6 up to the newest 3.x; importing it under any other Airflow fails at once
with a message saying what to install (see ``version_compat``).
"""

from airflow_provider_skattekonto.version_compat import require_supported_airflow

__version__ = "0.1.0"

require_supported_airflow()
