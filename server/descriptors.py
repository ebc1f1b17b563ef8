"""What `ListEngines` ships: each engine's types and their descriptors, so a client without `.proto` files works.

Example::

    fds = file_descriptor_set([EchoRequest, EchoResponse])
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.Add(file)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

from engine_runtime.generated.engine.v1 import engine_pb2 as pb

from .engine import LocalEngine

__all__ = ["engine_info", "file_descriptor_set"]


def file_descriptor_set(classes: Iterable[type[Message] | None]) -> descriptor_pb2.FileDescriptorSet:
    """The files defining ``classes`` with all their imports, each after the files it imports."""
    ordered: list[Any] = []
    seen: set[str] = set()

    def visit(file: Any) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    for cls in classes:
        if cls is not None:
            visit(cls.DESCRIPTOR.file)
    fds = descriptor_pb2.FileDescriptorSet()
    for file in ordered:
        file.CopyToProto(fds.file.add())
    return fds


def engine_info(engine: LocalEngine) -> pb.EngineInfo:
    """What `ListEngines` says of ``engine``: name, types, unary, resumable, and the descriptors of its types."""
    return pb.EngineInfo(
        name=engine.name,
        description=engine.description,
        request_type=engine.request_type,
        response_type=engine.response_type,
        error_type=engine.error_type or "",
        unary=engine.unary,
        resumable=engine.resumable,
        descriptors=file_descriptor_set([engine.request_class, engine.response_class, engine.error_class]),
    )
