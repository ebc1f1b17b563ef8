"""engine-runtime: streaming engines with stop/kill cancellation, served over gRPC.

The runtime (this package's top level) is plain asyncio and protobuf::

    from engine_runtime.server import Context, EngineRegistry, EngineError, AnyEngine, ResponseStream

The gRPC server built on it lives in :mod:`.app` (and the ``engine-server`` command).
"""

from .context import Context, Controller, Link
from .engine import AnyEngine, Engine, LocalEngine
from .errors import (
    Aborted,
    AlreadyExists,
    Code,
    DataLoss,
    EngineError,
    EngineFailed,
    EngineNotFound,
    InvalidRequest,
    ResourceExhausted,
    Unavailable,
)
from .registry import EngineRegistry
from .stream import FinishReason, ResponseStream

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AnyEngine",
    "Code",
    "Context",
    "Controller",
    "DataLoss",
    "Engine",
    "EngineError",
    "EngineFailed",
    "EngineNotFound",
    "EngineRegistry",
    "FinishReason",
    "InvalidRequest",
    "Link",
    "LocalEngine",
    "ResourceExhausted",
    "ResponseStream",
    "Unavailable",
]
