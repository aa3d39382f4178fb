"""Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_provider_skattekonto import __version__


def _text(label: str, description: str, default: Any = None, *, secret: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if default is not None:
        schema["default"] = default
    if secret:
        schema["format"] = "password"
    return {"label": label, "description": description, "schema": schema}


def _number(label: str, description: str, default: float) -> dict[str, Any]:
    return {
        "label": label,
        "description": description,
        "schema": {"type": ["number", "null"], "default": default},
    }


def _flag(label: str, description: str, default: bool = False) -> dict[str, Any]:
    return {
        "label": label,
        "description": description,
        "schema": {"type": ["boolean", "null"], "default": default},
    }


CONN_FIELDS: dict[str, dict[str, Any]] = {
    "api_client_id": _text("API client id", "API-gateway key sent in the client_id header of API calls"),
    "api_client_secret": _text("API client secret", "API-gateway secret sent in the client_secret header", secret=True),
    "grant_type": {
        "label": "OAuth2 grant type",
        "description": "client_credentials (unattended, mutual TLS) or refresh_token (authorization code)",
        "schema": {
            "type": ["string", "null"],
            "default": "client_credentials",
            "enum": ["client_credentials", "refresh_token"],
        },
    },
    "token_url": _text("Token URL", "OAuth2 token endpoint; default derived from the host and grant type"),
    "scope": _text("Scope", "OAuth2 scope", "skahmst"),
    "refresh_token": _text("Refresh token", "Stored refresh token for the refresh_token grant", secret=True),
    "certificate_p12_path": _text("Certificate (.p12) path", "Organisation certificate as PKCS#12 file"),
    "certificate_p12_secret_base64": _text(
        "Certificate (.p12) base64",
        "Organisation certificate as base64 PKCS#12, instead of a path (masked by Airflow)",
        secret=True,
    ),
    "certificate_password": _text("Certificate PIN", "Password (PIN) of the PKCS#12 file or PEM key", secret=True),
    "certificate_pem_path": _text("Certificate PEM path", "Certificate (and chain) as PEM, with a PEM key"),
    "private_key_pem_path": _text("Private key PEM path", "Private key of the PEM certificate"),
    "ca_bundle_path": _text("CA bundle path", "CA certificates to verify the server; default: system/certifi"),
    "orderer_organisation_number": _text(
        "Orderer organisation number", "Expected bestallareId; the certificate must carry this number"
    ),
    "timeout": _number("Timeout (s)", "Per-request timeout; the service answers within 30 s", 30),
    "retry_max_seconds": _number("Retry budget (s)", "Total time spent retrying 429/5xx/timeouts", 300),
    "retry_delay_seconds": _number("Retry delay (s)", "Wait before retrying 500/503/504 (spec: 60)", 60),
    "closed_dates": _text("Extra closed dates", "Comma-separated ISO dates with no file, beyond holidays"),
    "etransport_url": _text("E-transport URL", "HTTPS base URL of the E-transport file source"),
    "etransport_inbox": _text(
        "E-transport inbox", "Directory or object-storage URL where your E-transport client drops files"
    ),
    "archive_url": _text(
        "Archive URL", "Object-storage URL (file://, s3://...) where answer files are archived before loading"
    ),
    "sandbox_clock": _flag("Sandbox clock", "Local sandbox only: take 'now' from the sandbox's clock"),
}


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
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "API base URL",
                        "login": "OAuth2 client id",
                        "password": "OAuth2 client secret",
                    },
                    "placeholders": {
                        "host": "https://api.skatteverket.se",
                        "login": "client id from Skatteverket's developer portal",
                        "password": "empty for a designated certificate (no secret)",
                    },
                },
            }
        ],
    }
