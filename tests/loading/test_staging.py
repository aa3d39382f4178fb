"""Staged files: Parquet reads back with pyarrow, CSV loads into PostgreSQL with COPY; counts and sums equal
the answer file's trailer; the manifest's checksums are the files'."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.loading import FileChecksumError, ddl_statements
from airflow_provider_skattekonto.loading import staging as staging_module
from airflow_provider_skattekonto.loading.staging import MANIFEST_NAME, StagingError, stage_answer_file
from airflow_provider_skattekonto.sandbox import data

from .conftest import PG_DSN, require_postgres

ORDERER = "5560000167"
MORNING = dt.datetime(2026, 3, 24, 7, 0, tzinfo=STOCKHOLM)


@pytest.fixture(scope="module")
def answer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("answer")
    path = folder / "SKAHMST_5560000167_20260324_001.txt"
    size, sha = data.write_answer_file(
        path,
        orderer=ORDERER,
        delivery_morning=MORNING,
        created_at=MORNING - dt.timedelta(minutes=20),
        file_id="SKV-20260324",
        seed=5,
        principals=60,
        transactions_per_principal=30,
    )
    return {"path": path, "size": size, "sha256": sha}


def stage(answer: dict[str, Any], target: Any, **kw: Any) -> dict[str, Any]:
    with answer["path"].open("rb") as stream:
        return stage_answer_file(
            stream,
            target,
            file_name=answer["path"].name,
            sha256=answer["sha256"],
            size=answer["size"],
            delivery_morning=MORNING,
            **kw,
        )


def test_parquet_reads_back_and_adds_up_to_the_trailer(answer: dict[str, Any], tmp_path: Path) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    manifest = stage(answer, tmp_path / "staged")
    trailer = manifest["trailer"]
    assert manifest["answer_file"] == {"name": answer["path"].name, "sha256": answer["sha256"], "bytes": answer["size"]}
    tx = pq.read_table(tmp_path / "staged" / "transactions.parquet")
    assert tx.num_rows == trailer["transaction_count"] == manifest["tables"]["transactions"]["rows"]
    sv = pc.sum(tx["amount_skatteverket_ore"]).as_py() or 0
    kf = pc.sum(tx["amount_kronofogden_ore"]).as_py() or 0
    assert sv + kf == trailer["amount_sum_ore"]
    assert manifest["tables"]["transactions"]["sums"] == {"amount_skatteverket_ore": sv, "amount_kronofogden_ore": kf}
    balances = pq.read_table(tmp_path / "staged" / "balances.parquet")
    assert balances.num_rows == trailer["principal_count"]
    assert str(balances.schema.field("last_updated").type) == "timestamp[us, tz=UTC]"
    [files_row] = pq.read_table(tmp_path / "staged" / "files.parquet").to_pylist()
    assert files_row["sha256"] == answer["sha256"] and files_row["file_id"] == "SKV-20260324"
    assert files_row["delivery_morning"] == MORNING
    # the manifest on disk is the returned one, and its checksums are the staged files'
    assert json.loads((tmp_path / "staged" / MANIFEST_NAME).read_text()) == manifest
    for table in ("transactions", "balances", "files"):
        for fmt in ("csv", "parquet"):
            described = manifest["tables"][table][fmt]
            content = (tmp_path / "staged" / described["name"]).read_bytes()
            assert (len(content), hashlib.sha256(content).hexdigest()) == (described["bytes"], described["sha256"])


def _copy_into_postgres(folder: Path, manifest: dict[str, Any]) -> tuple[int, int, int, int]:
    """COPY the staged CSVs into fresh warehouse tables; (transactions, amount sum, principals, files)."""
    require_postgres()
    import psycopg

    schema = f"test_stage_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            for statement in ddl_statements(dialect="postgresql", schema=schema):
                conn.execute(statement)
            copies = {
                "files": "skattekonto_files",
                "balances": "skattekonto_balances",
                "transactions": "skattekonto_transactions",
            }
            for table, target in copies.items():
                columns = ", ".join(manifest["tables"][table]["columns"])
                if table == "files":  # the staged file row has no load counters: fill them
                    conn.execute(
                        f'ALTER TABLE "{schema}"."{target}" ALTER COLUMN loaded_at SET DEFAULT now(),'
                        " ALTER COLUMN principals_loaded SET DEFAULT 0, ALTER COLUMN principals_replaced SET DEFAULT 0,"
                        " ALTER COLUMN principals_skipped_older SET DEFAULT 0,"
                        " ALTER COLUMN transactions_inserted SET DEFAULT 0"
                    )
                with conn.cursor().copy(
                    f'COPY "{schema}"."{target}" ({columns}) FROM STDIN (FORMAT csv, HEADER true)'
                ) as copy:
                    copy.write((folder / f"{table}.csv").read_bytes())
            [(count, total)] = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(COALESCE(amount_skatteverket_ore, 0)"
                " + COALESCE(amount_kronofogden_ore, 0)), 0)"
                f' FROM "{schema}"."skattekonto_transactions"'
            ).fetchall()
            [(principals,)] = conn.execute(f'SELECT COUNT(*) FROM "{schema}"."skattekonto_balances"').fetchall()
            [(files,)] = conn.execute(f'SELECT COUNT(*) FROM "{schema}"."skattekonto_files"').fetchall()
            return int(count), int(total), int(principals), int(files)
        finally:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.postgres
@pytest.mark.parametrize("writer", ["arrow", "python csv"])
def test_csv_loads_into_postgres_with_copy(
    answer: dict[str, Any], tmp_path: Path, writer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if writer == "python csv":  # what an installation without the [parquet] extra writes
        monkeypatch.setattr(staging_module, "_arrow_available", lambda: False)
    manifest = stage(answer, tmp_path, formats=["csv"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "balances.csv",
        "files.csv",
        MANIFEST_NAME,
        "transactions.csv",
    ]
    trailer = manifest["trailer"]
    assert _copy_into_postgres(tmp_path, manifest) == (
        trailer["transaction_count"],
        trailer["amount_sum_ore"],
        trailer["principal_count"],
        1,
    )


def test_both_csv_writers_write_the_same_values(
    answer: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage(answer, tmp_path / "arrow", formats=["csv"])
    monkeypatch.setattr(staging_module, "_arrow_available", lambda: False)
    stage(answer, tmp_path / "python", formats=["csv"])

    def rows(folder: Path) -> list[list[str]]:
        with (folder / "transactions.csv").open(newline="", encoding="utf-8") as handle:
            return list(csv.reader(handle))

    assert rows(tmp_path / "arrow") == rows(tmp_path / "python")


def test_wrong_checksum_writes_no_manifest(answer: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(FileChecksumError), answer["path"].open("rb") as stream:
        stage_answer_file(stream, tmp_path, file_name="x.txt", sha256="0" * 64, formats=["csv", "parquet"])
    assert not (tmp_path / MANIFEST_NAME).exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_refused(answer: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="formats"):
        stage(answer, tmp_path, formats=["xlsx"])


def test_object_storage_path(answer: dict[str, Any], tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    target = ObjectStoragePath((tmp_path / "o").as_uri())
    manifest = stage(answer, target)
    assert (tmp_path / "o" / MANIFEST_NAME).exists()
    assert manifest["tables"]["balances"]["rows"] == manifest["trailer"]["principal_count"]
