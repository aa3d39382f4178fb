"""The connection's fields are declared once (``ConnectionExtras``): the UI's form, the validation and the
README's table agree with it, on every supported Airflow (3.0/3.1 build the form from the hook's widgets,
3.2+ from the provider info's ``conn-fields``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.exceptions import ConfigurationError
from airflow_provider_skattekonto.get_provider_info import get_provider_info
from airflow_provider_skattekonto.hooks._connection import (
    DEPRECATED_EXTRAS,
    KNOWN_EXTRAS,
    SECRET_EXTRAS,
    UI_FIELD_BEHAVIOUR,
    ConnectionExtras,
    form_widgets,
    parse_connection,
)
from tests.rest_api import api_client

README = Path(__file__).resolve().parents[2] / "README.md"
STANDARD_FIELDS = {"host", "login", "password"}
FORM_EXTRAS = KNOWN_EXTRAS - DEPRECATED_EXTRAS
BASE_EXTRA = {"api_client_id": "gw", "api_client_secret": "gw-secret", "certificate_p12_path": "/c.p12"}


def test_every_extra_has_a_label_and_a_description() -> None:
    for name, info in ConnectionExtras.model_fields.items():
        assert info.title and info.description, name
    assert {"api_client_secret", "refresh_token", "certificate_password"} <= SECRET_EXTRAS


def test_provider_info_declares_exactly_the_model() -> None:
    (connection,) = get_provider_info()["connection-types"]
    fields = connection["conn-fields"]
    assert set(fields) == FORM_EXTRAS
    for name, spec in fields.items():
        assert spec["schema"].get("format") == ("password" if name in SECRET_EXTRAS else None), name
    assert fields["grant_type"]["schema"]["enum"] == ["client_credentials", "refresh_token"]
    assert fields["timeout"]["schema"] == {"type": ["number", "null"], "default": 30.0}
    assert fields["sandbox_clock"]["schema"] == {"type": ["boolean", "null"], "default": False}
    assert connection["ui-field-behaviour"]["hidden-fields"] == UI_FIELD_BEHAVIOUR["hidden_fields"]


def test_hook_widgets_for_older_airflow_match_the_model() -> None:
    pytest.importorskip("wtforms")
    from wtforms import BooleanField, PasswordField

    widgets = form_widgets()
    assert set(widgets) == FORM_EXTRAS
    for name, widget in widgets.items():
        assert (widget.field_class is PasswordField) == (name in SECRET_EXTRAS), name
    assert widgets["sandbox_clock"].field_class is BooleanField


def readme_connection_table() -> list[str]:
    """The first cells of the rows of the README's connection table."""
    lines = README.read_text().split("## The connection", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| field |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1])
    return rows


def test_readme_connection_table_names_every_field_and_no_other() -> None:
    named: set[str] = set()
    for cell in readme_connection_table():
        named |= set(re.findall(r"`([a-z0-9_]+)`", cell)) | (set(re.findall(r"[a-z]+", cell)) & STANDARD_FIELDS)
    expected = FORM_EXTRAS | STANDARD_FIELDS
    assert named == expected, f"missing in README: {sorted(expected - named)}, unknown: {sorted(named - expected)}"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"timeout": "-1"}, "'timeout' is invalid"),
        ({"sandbox_clock": "maybe"}, "'sandbox_clock' is invalid"),
        ({"closed_dates": 7}, "'closed_dates' is invalid"),
    ],
)
def test_the_model_validates_the_extras(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_connection("skv", host=None, login="client", password=None, extra=BASE_EXTRA | extra)
    assert "Expected:" in str(caught.value)


def test_a_bad_secret_is_named_without_its_value() -> None:
    with pytest.raises(ConfigurationError, match="'certificate_password' is invalid") as caught:
        parse_connection(
            "skv", host=None, login="client", password=None, extra=BASE_EXTRA | {"certificate_password": ["PIN-1234"]}
        )
    assert "PIN-1234" not in str(caught.value)


def test_blank_values_take_the_defaults_and_numbers_become_text() -> None:
    config = parse_connection(
        "skv",
        host=None,
        login="client",
        password=None,
        extra=BASE_EXTRA | {"scope": " ", "timeout": "", "orderer_organisation_number": 5560000167},
    )
    assert config.scope == "skahmst" and config.timeout == 30.0
    assert config.orderer_organisation_number == "5560000167"


@pytest.mark.airflow_db
def test_the_ui_api_serves_our_connection_form(airflow_db: Path) -> None:
    """What the Airflow UI renders: the api-server's ``/ui/connections/hook_meta`` for ``skattekonto``."""
    with api_client() as client:
        answer = client.get("/ui/connections/hook_meta")
    assert answer.status_code == 200, answer.text
    (meta,) = [m for m in answer.json() if m["connection_type"] == "skattekonto"]
    assert meta["hook_name"] == "Skatteverket Skattekonto"

    fields = meta["extra_fields"]
    assert set(fields) == FORM_EXTRAS
    for name, param in fields.items():
        schema = param["schema"]
        assert schema["title"] == ConnectionExtras.model_fields[name].title, name
        assert (schema.get("format") == "password") == (name in SECRET_EXTRAS), name
    assert fields["scope"]["value"] == "skahmst"
    assert fields["grant_type"]["schema"]["enum"] == ["client_credentials", "refresh_token"]

    standard = meta["standard_fields"]
    assert standard["host"]["title"] == "API base URL"
    assert standard["login"]["title"] == "OAuth2 client id"
    assert standard["url_schema"]["hidden"] is True and standard["port"]["hidden"] is True
