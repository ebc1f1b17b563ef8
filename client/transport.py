"""Channels to one or more servers: targets, TLS, bearer tokens, connect timeout, round-robin.

The only client module that speaks grpc.aio besides the remote stream.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from engine_runtime.server.errors import Code, EngineError

__all__ = ["Transport"]

# A `dns:///` name may resolve to several replicas (a headless Service): spread calls over all of them.
_ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


class Transport:
    """One channel per target; calls are spread over the targets in turn (client-side round-robin)."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        token: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not targets:
            raise ValueError("at least one target is needed")
        self.targets = list(targets)
        credentials = _credentials(tls_ca, tls_cert, tls_key)
        channel_options = [
            ("grpc.service_config", _ROUND_ROBIN),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            *options,
        ]
        self.channels = [
            grpc.aio.secure_channel(t, credentials, options=channel_options)
            if credentials is not None
            else grpc.aio.insecure_channel(t, options=channel_options)
            for t in self.targets
        ]
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._turn = itertools.cycle(range(len(self.channels)))

    def next_channel(self) -> grpc.aio.Channel:
        return self.channels[next(self._turn)]

    async def connect(self, timeout: float) -> None:
        """Wait until every target accepts a connection, or raise UNAVAILABLE naming those that did not."""

        async def ready(target: str, channel: grpc.aio.Channel) -> str | None:
            try:
                await asyncio.wait_for(channel.channel_ready(), timeout)
            except TimeoutError:
                return target
            return None

        failed = [t for t in await asyncio.gather(*map(ready, self.targets, self.channels)) if t]
        if failed:
            raise EngineError(Code.UNAVAILABLE, f"cannot connect to {', '.join(failed)} within {timeout:g}s")

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels))


def _credentials(ca: str | None, cert: str | None, key: str | None) -> grpc.ChannelCredentials | None:
    if not (ca or cert or key):
        return None
    if bool(cert) != bool(key):
        raise ValueError("a client certificate needs both tls_cert and tls_key")
    try:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes() if ca else None,
            private_key=Path(key).read_bytes() if key else None,
            certificate_chain=Path(cert).read_bytes() if cert else None,
        )
    except OSError as error:
        raise ValueError(f"cannot read a TLS file: {error}") from None
