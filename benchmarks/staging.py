"""Staged files: time and peak memory of staging an answer file as Parquet + CSV, against pyarrow.

Each run in a fresh child process (CPU and peak RSS per run):

* ours: ``stage_answer_file`` of a sandbox-generated answer file (default 20,000 principals x 50
  transactions, about 1,000,000 rows) to Parquet and CSV, streaming (parse included);
* baseline: the same rows already in memory as Python lists (parsed beforehand, not timed), written by
  pyarrow as one table to Parquet and CSV (``pq.write_table``, ``pyarrow.csv.write_csv``);
* ours on a small file (default 200 x 50): memory flatness.

Figures: time ratio ours/baseline (ours also parses; informative), peak RSS ours vs baseline (target <= 1),
peak RSS large vs small file (target <= 2x). Usage: ``python benchmarks/staging.py [--principals 20000]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, child_main, print_figures, run_child, workdir, write_json

BENCHMARK = "staging"
SCRIPT = Path(__file__).resolve()
ORDERER = "5560000167"
TARGET_FLATNESS = 2.0


def _morning() -> dt.datetime:
    from airflow_provider_skattekonto.domain.calendar import STOCKHOLM

    return dt.datetime(2026, 3, 24, 7, 0, tzinfo=STOCKHOLM)


def child_generate(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_skattekonto.sandbox.data import write_answer_file

    size, sha256 = write_answer_file(
        Path(spec["path"]),
        orderer=ORDERER,
        delivery_morning=_morning(),
        created_at=_morning() - dt.timedelta(minutes=20),
        file_id=spec["path"],
        seed=1,
        principals=spec["principals"],
        transactions_per_principal=spec["transactions_per_principal"],
    )
    return {"size": size, "sha256": sha256}


def child_ours(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_skattekonto.loading.staging import stage_answer_file

    started = time.perf_counter()
    with open(spec["path"], "rb") as stream:
        manifest = stage_answer_file(
            stream, Path(spec["out"]), file_name="bench.txt", sha256=spec["sha256"], formats=["parquet", "csv"]
        )
    return {"seconds": time.perf_counter() - started, "rows": manifest["tables"]["transactions"]["rows"]}


def child_baseline(spec: dict[str, Any]) -> dict[str, Any]:
    """The same transaction rows in memory (Python lists), then pyarrow writes Parquet and CSV."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet as pq

    from airflow_provider_skattekonto.domain.answer_file import parse_answer_file
    from airflow_provider_skattekonto.domain.records import Balance, Transaction

    columns: list[list[Any]] = [[] for _ in range(11)]
    period = ""
    with open(spec["path"], "rb") as stream:
        for rec in parse_answer_file(stream, source_name="bench.txt"):
            if isinstance(rec, Balance):
                period = rec.reconciled_on.isoformat()
            elif isinstance(rec, Transaction):
                for column, value in zip(
                    columns,
                    (
                        ORDERER,
                        rec.principal,
                        period,
                        "bench",
                        rec.sequence,
                        rec.transaction_id,
                        rec.transaction_date.isoformat(),
                        None if rec.interest_date is None else rec.interest_date.isoformat(),
                        rec.text,
                        rec.amount_skatteverket_ore,
                        rec.amount_kronofogden_ore,
                    ),
                    strict=True,
                ):
                    column.append(value)
    started = time.perf_counter()
    types = [pa.string(), pa.string(), pa.date32(), pa.string(), pa.int32(), pa.string(), pa.date32(), pa.date32()]
    types += [pa.string(), pa.int64(), pa.int64()]
    arrays = [
        pa.array(values, pa.string()).cast(kind) if kind == pa.date32() else pa.array(values, kind)
        for values, kind in zip(columns, types, strict=True)
    ]
    table = pa.table(arrays, names=[f"c{i}" for i in range(11)])
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "transactions.parquet", compression="zstd", row_group_size=100_000)
    pyarrow.csv.write_csv(table, out / "transactions.csv")
    return {"seconds": time.perf_counter() - started, "rows": table.num_rows}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--principals", type=int, default=20_000)
    parser.add_argument("--small-principals", type=int, default=200)
    parser.add_argument("--transactions-per-principal", type=int, default=50)
    parser.add_argument("--workdir", help="keep files here (default: a temporary folder)")
    parser.add_argument("--json-out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with workdir(args.workdir, "bench_staging_") as work:
        sizes = {"large": args.principals, "small": args.small_principals}
        files = {}
        for label, principals in sizes.items():
            path = work / f"{label}.txt"
            spec = {"path": str(path), "principals": principals}
            spec["transactions_per_principal"] = args.transactions_per_principal
            files[label] = {"path": str(path), **run_child(SCRIPT, "generate", spec).result}
        ours = {
            label: run_child(SCRIPT, "ours", {**files[label], "out": str(work / f"ours_{label}")}).result
            for label in sizes
        }
        base = run_child(SCRIPT, "baseline", {**files["large"], "out": str(work / "baseline")}).result
    rows = ours["large"]["rows"]
    figures = [
        Figure(
            BENCHMARK,
            f"stage {rows:,} rows (Parquet + CSV, parse included)",
            ours["large"]["seconds"],
            base["seconds"],
            "s",
            baseline_name="pyarrow writes the same rows from memory (parse not timed)",
            note="ours includes parsing and checksumming the answer file",
        ),
        Figure(
            BENCHMARK,
            "peak RSS, staging vs pyarrow from memory",
            ours["large"]["peak_rss_mb"],
            base["peak_rss_mb"],
            "MB",
            target="ratio <= 1",
        ),
        Figure(
            BENCHMARK,
            f"peak RSS, {args.principals} vs {args.small_principals} principals",
            ours["large"]["peak_rss_mb"],
            ours["small"]["peak_rss_mb"],
            "MB",
            target=f"ratio <= {TARGET_FLATNESS}",
        ),
    ]
    figures[1].met = figures[1].ratio is not None and figures[1].ratio <= 1
    figures[2].met = figures[2].ratio is not None and figures[2].ratio <= TARGET_FLATNESS
    print_figures("Staged files", figures)
    write_json(args.json_out, BENCHMARK, figures, {"rows": rows, "ours": ours, "baseline": base})
    return 0


if __name__ == "__main__":
    if not child_main({"generate": child_generate, "ours": child_ours, "baseline": child_baseline}):
        sys.exit(main())
