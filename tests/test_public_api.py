"""The public API is what the docs promise, and the runtime core stays free of gRPC."""

from __future__ import annotations

import subprocess
import sys

from engine_runtime import client, server


def test_server_exports() -> None:
    # The README and docs/concepts.md name these; the rest are the error tree and the typed engine.
    promised = {"Context", "EngineRegistry", "EngineError", "AnyEngine", "ResponseStream"}
    assert promised <= set(server.__all__)
    assert set(server.__all__) == {
        *promised,
        "Aborted",
        "AlreadyExists",
        "Code",
        "Controller",
        "DataLoss",
        "Engine",
        "EngineFailed",
        "EngineNotFound",
        "FinishReason",
        "InvalidRequest",
        "Link",
        "LocalEngine",
        "ResourceExhausted",
        "Unavailable",
    }
    assert all(hasattr(server, name) for name in server.__all__)


def test_client_exports() -> None:
    assert set(client.__all__) == {"EngineClient", "RemoteEngine", "RemoteStream"}
    assert all(hasattr(client, name) for name in client.__all__)


def test_the_runtime_core_does_not_import_grpc() -> None:
    code = (
        "import sys, engine_runtime.server, engine_runtime.server.examples; "
        "assert not [m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')], sorted(sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
