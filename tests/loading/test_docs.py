"""docs/warehouse-schema.md shows the DDL the code creates."""

from __future__ import annotations

import re
from pathlib import Path

from airflow_provider_skattekonto.loading import ddl_statements

DOC = Path(__file__).resolve().parents[2] / "docs" / "warehouse-schema.md"


def test_documented_postgresql_ddl_is_the_created_ddl() -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    documented = next(block for block in blocks if 'CREATE TABLE "skattekonto_files"' in block)
    statements = [s.strip() for s in documented.split(";") if s.strip()]
    assert statements == ddl_statements(dialect="postgresql")
