"""The shape docs/architecture.md promises: gRPC only at the edges, one import root, small modules and functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "client")
CODE = [path for folder in (*PACKAGES, "benchmarks", "examples") for path in sorted((ROOT / folder).glob("*.py"))]
PROJECT = CODE + sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "scripts").glob("*.py"))

# The edges: the servicer, the server and its auth, the health probe (a client), and the client's transport.
GRPC_EDGES = {
    "server/service.py",
    # The unary calls of the same service (Stop, ListEngines) and the one function that sets a call's status.
    "server/admin_service.py",
    "server/app.py",
    "server/auth.py",
    "server/health_service.py",
    # The ORCA load reports (gRFC A51): a second service, served beside the engine service.
    "server/orca_service.py",
    "server/healthcheck.py",
    "client/transport.py",
}
GRPC_MODULES = ("grpc", "grpc_reflection", "grpc_status", "grpc_health.v1.health")
MAX_MODULE_LINES = 310
MAX_FUNCTION_LINES = 60


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", [p for p in CODE if p.parent.name in PACKAGES], ids=name)
def test_grpc_is_imported_only_at_the_edges(path: Path) -> None:
    grpc = sorted(m for m in imports(path) if any(m == g or m.startswith(g + ".") for g in GRPC_MODULES))
    if name(path) not in GRPC_EDGES:
        assert not grpc, f"{name(path)} imports {grpc}: gRPC belongs in {sorted(GRPC_EDGES)}"


@pytest.mark.parametrize("path", PROJECT, ids=name)
def test_everything_imports_through_the_one_root(path: Path) -> None:
    stray = sorted(m for m in imports(path) if m.split(".")[0] in ("server", "client", "generated"))
    assert not stray, f"{name(path)} imports {stray}: write engine_runtime.{stray[0]}"


@pytest.mark.parametrize("path", CODE, ids=name)
def test_modules_and_functions_stay_small(path: Path) -> None:
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{name(path)} has over {MAX_MODULE_LINES} lines: split it"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{name(path)}:{node.lineno} {node.name} is {length} lines long"
