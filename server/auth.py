"""Bearer-token authentication for every call but health, which stays open for probes, and the ORCA load reports.

A balancer's out-of-band load report stream (gRFC A51) is opened by the client's load-balancing policy itself,
which sends no per-call metadata, so it cannot carry the token; what it reads is the replica's load, no data.

The token is compared in constant time and never logged or echoed: a refused call learns only that its token
was missing or wrong.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

__all__ = ["TokenAuth"]

HEALTH_PREFIX = "/grpc.health.v1.Health/"
ORCA_PREFIX = "/xds.service.orca.v3.OpenRcaService/"
DENIED = "missing or invalid authorization token (expected metadata `authorization: Bearer <token>`)"


async def _deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)


class TokenAuth(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every call except health and ORCA load reports."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler_call_details.method.startswith((HEALTH_PREFIX, ORCA_PREFIX)) or handler is None:
            return handler
        given = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
        if hmac.compare_digest(given, self._expected):
            return handler
        # The refusal must have the shape of the method it replaces, or grpc would run it wrongly.
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny)
        return grpc.unary_unary_rpc_method_handler(_deny)
