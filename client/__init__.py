"""The Python client: remote engines that behave like local ones.

Example::

    from engine_runtime.client import EngineClient

    async with EngineClient("127.0.0.1:50051") as client:
        names = await client.list_engines()
        echo = (await client.get("echo")).downcast(EchoRequest, EchoResponse)
        stream = await echo.generate(EchoRequest(text="a b"))
        async for item in stream:
            ...
"""

from .client import EngineClient
from .remote import RemoteEngine, RemoteStream

__all__ = ["EngineClient", "RemoteEngine", "RemoteStream"]
