"""TLS, mutual TLS and bearer tokens, against a real server; certificates are made fresh by openssl."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.examples_pb2 import EchoRequest, EchoResponse
from engine_runtime.server import Code, EngineError
from engine_runtime.server.app import EngineServer, ServerConfig, StartupError
from tests.conftest import ServerFactory
from tests.engines import registry

pytestmark = pytest.mark.asyncio


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost, and a client certificate, all signed by the CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=engine-runtime test CA", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ext in (("server", "server.ext"), ("client", "client.ext")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", ext, cwd=d)  # fmt: skip
    return d


async def echo_via(client: EngineClient) -> list[str]:
    echo = (await client.get("echo")).downcast(EchoRequest, EchoResponse)
    assert echo is not None
    return [item.text async for item in await echo.generate(EchoRequest(text="over tls"))]


async def test_tls(make_server: ServerFactory, pki: Path) -> None:
    server = await make_server(tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"))
    async with EngineClient(server.addresses[0], tls_ca=str(pki / "ca.pem")) as client:
        assert await echo_via(client) == ["over", "tls"]
    # A plaintext client cannot talk to a TLS server.
    with pytest.raises(EngineError) as info:
        async with EngineClient(server.addresses[0], connect_timeout=1):
            pass
    assert info.value.code is Code.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate(make_server: ServerFactory, pki: Path) -> None:
    server = await make_server(
        tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"), tls_client_ca=str(pki / "ca.pem")
    )
    address = server.addresses[0]
    async with EngineClient(
        address, tls_ca=str(pki / "ca.pem"), tls_cert=str(pki / "client.pem"), tls_key=str(pki / "client.key")
    ) as client:
        assert await echo_via(client) == ["over", "tls"]
    with pytest.raises(EngineError) as info:
        async with EngineClient(address, tls_ca=str(pki / "ca.pem"), connect_timeout=1):
            pass
    assert info.value.code is Code.UNAVAILABLE


async def test_token_through_the_client(make_server: ServerFactory, tmp_path: Path) -> None:
    server = await make_server(auth_token="tok-123")
    token_file = tmp_path / "token"
    token_file.write_text("tok-123\n")
    async with EngineClient(server.addresses[0], token_file=str(token_file)) as client:
        assert await echo_via(client) == ["over", "tls"]
    async with EngineClient(server.addresses[0], token="wrong") as client:
        with pytest.raises(EngineError) as info:
            await client.get("echo")
        assert info.value.code is Code.UNAUTHENTICATED and "tok-123" not in info.value.message


async def test_unreadable_tls_files_are_a_startup_error(tmp_path: Path) -> None:
    server = EngineServer(
        registry, ServerConfig(port=0, tls_cert=str(tmp_path / "x.pem"), tls_key=str(tmp_path / "x.key"))
    )
    with pytest.raises(StartupError, match="cannot read a TLS file"):
        await server.start()
    half = EngineServer(registry, ServerConfig(port=0, tls_cert=str(tmp_path / "x.pem")))
    with pytest.raises(StartupError, match="both --tls-cert and --tls-key"):
        await half.start()


async def test_unix_socket_is_owner_only(make_server: ServerFactory, tmp_path: Path) -> None:
    path = tmp_path / "engine.sock"
    server = await make_server(uds=str(path), no_tcp=True)
    assert server.addresses == [f"unix:{path}"]
    assert path.stat().st_mode & 0o777 == 0o600
    async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
        await channel.channel_ready()
