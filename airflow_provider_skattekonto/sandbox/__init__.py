"""The local sandbox: a real HTTPS server on loopback behaving like Skatteverket's API.

It serves the OAuth2 token endpoints, the ``bestall`` API and an E-transport file channel with mutual
TLS against its own PKI, a controllable clock and fault injection. Start it in-process with
``Sandbox.start(directory)`` or from a shell with ``skattekonto-sandbox serve``.

Names are imported lazily, so importing a submodule (``sandbox.pki``, ``sandbox.data``) does not
start loading the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_skattekonto.sandbox.clock import SandboxClock
    from airflow_provider_skattekonto.sandbox.etransport import AcceptedOrder, AnswerFile
    from airflow_provider_skattekonto.sandbox.faults import Fault, FaultError, FaultInjector
    from airflow_provider_skattekonto.sandbox.server import Sandbox, SandboxSettings

__all__ = [
    "AcceptedOrder",
    "AnswerFile",
    "Fault",
    "FaultError",
    "FaultInjector",
    "Sandbox",
    "SandboxClock",
    "SandboxSettings",
]

_WHERE = {
    "AcceptedOrder": "etransport",
    "AnswerFile": "etransport",
    "Fault": "faults",
    "FaultError": "faults",
    "FaultInjector": "faults",
    "Sandbox": "server",
    "SandboxClock": "clock",
    "SandboxSettings": "server",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
