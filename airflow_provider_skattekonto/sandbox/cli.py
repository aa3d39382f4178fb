"""``skattekonto-sandbox serve``: run the local sandbox until SIGINT/SIGTERM.

It prints the base URL, the ready Airflow connection (JSON) and an ``export AIRFLOW_CONN_...`` line,
and writes the connection to ``<dir>/connection.json``. The sandbox's secrets are throwaway values of
this sandbox only; they are printed on purpose.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (``serve`` is the only command)."""
    parser = argparse.ArgumentParser(
        prog="skattekonto-sandbox",
        description="A local HTTPS sandbox of Skatteverket's Skattekonto API, token endpoints and E-transport.",
    )
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the sandbox until Ctrl+C / SIGTERM")
    serve.add_argument("--dir", type=Path, default=Path(".sandbox"), help="state folder (PKI, files); default .sandbox")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind; default 127.0.0.1")
    serve.add_argument("--port", type=int, default=8443, help="port; 0 picks a free one; default 8443")
    serve.add_argument("--start", help="sandbox clock start, ISO 8601 (naive: Europe/Stockholm); default now")
    serve.add_argument("--speed", type=float, default=1.0, help="sandbox seconds per real second; 0 freezes")
    serve.add_argument("--seed", type=int, default=1, help="seed of the generated answer files")
    serve.add_argument("--principals", type=int, default=25, help="principals per orderer in a file")
    serve.add_argument("--transactions-per-principal", type=int, default=8, help="transactions per principal")
    serve.add_argument("--rate-limit", type=float, default=20.0, help="bestall calls per second per API client")
    serve.add_argument("--token-lifetime", type=float, default=3600.0, help="access token lifetime, seconds")
    serve.add_argument(
        "--rotate-refresh-tokens",
        action="store_true",
        help="refresh-token grant: answer a new refresh token each time and invalidate the one used",
    )
    serve.add_argument("--retention-days", type=float, default=30.0, help="days E-transport keeps a file")
    serve.add_argument("--identity", default="orderer", help="identity of the printed connection")
    serve.add_argument(
        "--grant-type",
        choices=("client_credentials", "refresh_token"),
        default="client_credentials",
        help="OAuth2 flow of the printed connection",
    )
    serve.add_argument("--conn-id", default="skattekonto_default", help="connection id of the export line")
    serve.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def serve(args: argparse.Namespace) -> int:
    """Start the sandbox, print how to connect, and block until SIGINT/SIGTERM."""
    from airflow_provider_skattekonto.sandbox.clock import SandboxClock
    from airflow_provider_skattekonto.sandbox.server import Sandbox

    try:
        start = dt.datetime.fromisoformat(args.start) if args.start else None  # naive: Stockholm time
    except ValueError:
        raise ValueError(f"--start {args.start!r} is not an ISO 8601 time (e.g. 2026-03-10T10:00)") from None
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sandbox = Sandbox.start(
        args.dir,
        host=args.host,
        port=args.port,
        clock=SandboxClock(start=start, speed=args.speed),
        seed=args.seed,
        principals_per_orderer=args.principals,
        transactions_per_principal=args.transactions_per_principal,
        rate_limit_per_second=args.rate_limit,
        token_lifetime_seconds=args.token_lifetime,
        retention_days=args.retention_days,
    )
    if args.rotate_refresh_tokens:
        sandbox.configure(rotate_refresh_tokens=True)
    try:
        connection = sandbox.airflow_connection(args.identity, grant_type=args.grant_type)
        text = json.dumps(connection, indent=2, ensure_ascii=False)
        target = args.dir / "connection.json"
        _write_private(target, text + "\n")
        env_name = "AIRFLOW_CONN_" + args.conn_id.upper()
        compact = json.dumps(connection, separators=(",", ":"), ensure_ascii=False)
        clock = sandbox.clock.to_json()
        print(f"Skattekonto sandbox listening on {sandbox.base_url}", flush=True)
        print(f"Sandbox clock: {clock['now']} (speed {clock['speed']})", flush=True)
        print(f"Airflow connection for identity {args.identity!r} (also in {target}):", flush=True)
        print(text, flush=True)
        print(f"export {env_name}={_shell_quote(compact)}", flush=True)
        print("Press Ctrl+C to stop.", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    print("Sandbox stopped.", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``skattekonto-sandbox`` and ``python -m airflow_provider_skattekonto.sandbox``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0].startswith("-") and arguments[0] not in ("-h", "--help")):
        arguments.insert(0, "serve")
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command != "serve":
        parser.print_help()
        return 2
    try:
        return serve(args)
    except (OSError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"skattekonto-sandbox: {message}", file=sys.stderr)
        return 1
