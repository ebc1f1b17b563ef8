"""How the client's transport names a call's failure: grpc-core's own lost-transport error is UNAVAILABLE."""

from __future__ import annotations

import grpc
import pytest

from engine_runtime.client.transport import SessionCall
from engine_runtime.server.errors import Code, EngineFailed, Unavailable


class _FailedCall:
    """A call whose read fails with the error grpc.aio raises (the real AioRpcError), nothing else."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    async def read(self) -> object:
        raise self.error


@pytest.mark.asyncio
async def test_grpc_cores_internal_error_is_a_lost_connection() -> None:
    # What a call gets when its server is SIGKILLed while this side writes on it (an in-band stop): a resumable
    # stream must move on, as for UNAVAILABLE, and a consumer is told the connection was lost.
    call = SessionCall(_FailedCall(grpc.StatusCode.INTERNAL, "Internal error from Core"), "count", None)
    with pytest.raises(Unavailable, match="engine 'count': the connection was lost"):
        await call.read()


@pytest.mark.asyncio
async def test_the_servers_own_internal_error_stays_internal() -> None:
    call = SessionCall(_FailedCall(grpc.StatusCode.INTERNAL, "engine 'count' failed (request id r1)"), "count", None)
    with pytest.raises(EngineFailed) as info:
        await call.read()
    assert info.value.code is Code.INTERNAL
