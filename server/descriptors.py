"""Descriptors of engine types, shipped in `ListEngines` so that a client without `.proto` files can work.

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

__all__ = ["file_descriptor_set"]


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
