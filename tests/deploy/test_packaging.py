"""The distribution installs one top-level package, `engine_runtime`, and never collides with a user's modules.

The wheel is built from exactly what the Dockerfile's build stage copies (symbolic links kept, as Docker keeps
them), so this is also the image's wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from engine_runtime.client import EngineClient
from tests.deploy.test_deploy import copied_sources
from tests.processes import ROOT, ServerProcess

pytestmark = pytest.mark.timeout(300)

USER_SERVER = '''
"""A user's own server.py: a name the project must not take from them."""
from collections.abc import AsyncIterator

from google.protobuf.wrappers_pb2 import StringValue

from engine_runtime.server import Context, EngineRegistry

registry = EngineRegistry()


@registry.engine("greet", request=StringValue, response=StringValue)
async def greet(request: StringValue, ctx: Context) -> AsyncIterator[StringValue]:
    from client import GREETING  # the user's client.py, beside this file

    yield StringValue(value=f"{GREETING}, {request.value}")
'''


def user_modules(folder: Path) -> None:
    """A working directory holding a user's `server.py`, `client.py` and `generated.py`."""
    (folder / "server.py").write_text(USER_SERVER)
    (folder / "client.py").write_text('GREETING = "hello"\n')
    (folder / "generated.py").write_text("USER = True\n")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = tmp_path_factory.mktemp("build-context")
    for _, source in copied_sources():
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, context / source)
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), "."],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=240,
    )
    (found,) = out.glob("*.whl")
    return found


def test_the_wheel_holds_exactly_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"engine_runtime", "engine_runtime-0.1.0.dist-info"}
    for module in ("server/app.py", "client/cli.py", "generated/engine/v1/engine_pb2.py", "server/py.typed"):
        assert f"engine_runtime/{module}" in names


def test_the_installed_wheel_imports_beside_a_users_modules(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    work = tmp_path / "work"
    work.mkdir()
    user_modules(work)
    code = (
        "import engine_runtime.server, engine_runtime.client, server, client, generated; "
        "print(engine_runtime.server.__file__); print(server.registry.names(), client.GREETING, generated.USER)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=work,
        env={**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{work}"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    installed, user = result.stdout.splitlines()
    assert installed.startswith(str(target))
    assert user == "['greet'] hello True"


@pytest.mark.asyncio
async def test_engine_server_serves_a_users_server_py(tmp_path: Path) -> None:
    user_modules(tmp_path)
    server = ServerProcess("server:registry", "--port", "0", cwd=tmp_path)
    try:
        address = server.wait_listening()
        async with EngineClient(address) as client:
            engine = await client.get("greet")
            stream = await engine.generate(StringValue(value="world"))
            assert [item.value async for item in stream] == ["hello, world"]
    finally:
        server.close()
