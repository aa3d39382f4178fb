"""Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_provider_skattekonto import __version__
from airflow_provider_skattekonto.hooks._connection import UI_FIELD_BEHAVIOUR, conn_fields


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow."""
    return {
        "package-name": "airflow-provider-skattekonto",
        "name": "Skatteverket Skattekonto",
        "description": "Order, wait for and load Skatteverket's Skattekonto answer files (scope skahmst).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Skatteverket Skattekonto",
                "external-doc-url": "https://www7.skatteverket.se/portal/apier-och-oppna-data/utvecklarportalen",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Skatteverket Skattekonto",
                "python-modules": [
                    "airflow_provider_skattekonto.hooks.skattekonto",
                    "airflow_provider_skattekonto.hooks.etransport",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": "Skatteverket Skattekonto",
                "python-modules": [
                    "airflow_provider_skattekonto.operators.bestall",
                    "airflow_provider_skattekonto.operators.load",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Skatteverket Skattekonto",
                "python-modules": ["airflow_provider_skattekonto.sensors.etransport"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Skatteverket Skattekonto",
                "python-modules": [
                    "airflow_provider_skattekonto.triggers.service_time",
                    "airflow_provider_skattekonto.triggers.etransport",
                ],
            }
        ],
        "extra-links": [
            "airflow_provider_skattekonto.links.SkattekontoOrderLink",
            "airflow_provider_skattekonto.links.ArchivedFileLink",
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_skattekonto.hooks.skattekonto.SkattekontoHook",
                "hook-name": "Skatteverket Skattekonto",
                "connection-type": "skattekonto",
                "conn-fields": conn_fields(),
                "ui-field-behaviour": {key.replace("_", "-"): value for key, value in UI_FIELD_BEHAVIOUR.items()},
            }
        ],
    }
