"""`python -m engine_runtime.server.healthcheck` against a real server in this process, run as a subprocess."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2

from engine_runtime.server.app import EngineServer, ServerConfig
from engine_runtime.server.examples import registry

ROOT = Path(__file__).resolve().parents[2]


async def probe(*args: str) -> tuple[int, str, str]:
    """Run the probe as a container runtime would; asynchronously, so the server in this loop keeps answering."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine_runtime.server.healthcheck",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest_asyncio.fixture
async def server() -> AsyncIterator[EngineServer]:
    async with EngineServer(registry, ServerConfig(port=0)) as running:
        yield running


@pytest.fixture
def refused_address() -> Iterator[str]:
    """A port that is bound but not listening: connections to it are refused, and no other test can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.asyncio
async def test_serving_server_exits_0(server: EngineServer) -> None:
    code, out, err = await probe("--target", server.addresses[0])
    assert (code, out.strip(), err) == (0, "SERVING", "")


@pytest.mark.asyncio
async def test_an_engine_name_is_a_service(server: EngineServer) -> None:
    code, out, _ = await probe("--target", server.addresses[0], "--service", "echo")
    assert (code, out.strip()) == (0, "SERVING")


@pytest.mark.asyncio
async def test_unknown_service_exits_1(server: EngineServer) -> None:
    code, out, err = await probe("--target", server.addresses[0], "--service", "no-such-engine")
    assert (code, out) == (1, "")
    assert_one_line_error(err, "does not know the service 'no-such-engine'")


@pytest.mark.asyncio
async def test_not_serving_exits_1(server: EngineServer) -> None:
    await server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    code, out, _ = await probe("--target", server.addresses[0])
    assert (code, out.strip()) == (1, "NOT_SERVING")


@pytest.mark.asyncio
async def test_nothing_listening_exits_1_with_one_line(refused_address: str) -> None:
    code, out, err = await probe("--target", refused_address, "--timeout", "10")
    assert (code, out) == (1, "")
    assert_one_line_error(err, f"cannot reach {refused_address}")


@pytest.mark.asyncio
async def test_unix_socket_target(tmp_path: Path) -> None:
    socket_path = tmp_path / "engine.sock"
    config = ServerConfig(uds=str(socket_path), no_tcp=True)
    async with EngineServer(registry, config):
        code, out, _ = await probe("--target", f"unix:{socket_path}")
    assert (code, out.strip()) == (0, "SERVING")


@pytest.mark.asyncio
async def test_missing_unix_socket_exits_1(tmp_path: Path) -> None:
    code, _, err = await probe("--target", f"unix:{tmp_path / 'absent.sock'}")
    assert code == 1
    assert_one_line_error(err, "cannot reach unix:")


@pytest.mark.asyncio
async def test_a_bad_option_exits_1_not_2() -> None:
    # Docker reserves a health check's exit code 2; click's usual usage-error code must not leak out.
    code, _, err = await probe("--no-such-option")
    assert code == 1
    assert "No such option" in err


@pytest.mark.asyncio
async def test_unreadable_tls_ca_exits_1(tmp_path: Path) -> None:
    code, _, err = await probe("--tls-ca", str(tmp_path / "absent.pem"))
    assert code == 1
    assert_one_line_error(err, "cannot read --tls-ca")


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate to test TLS with")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.asyncio
async def test_tls_with_the_ca(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    config = ServerConfig(port=0, tls_cert=str(cert), tls_key=str(key))
    async with EngineServer(registry, config) as server:
        trusted = await probe("--target", server.addresses[0], "--tls-ca", str(cert))
        plaintext = await probe("--target", server.addresses[0], "--timeout", "2")
    assert (trusted[0], trusted[1].strip()) == (0, "SERVING")
    assert plaintext[0] == 1
    assert_one_line_error(plaintext[2])
