"""Message classes for the types a server reports, with or without local generated code.

A type whose generated module is imported here is used as is (so a typed client gets its own classes back);
any other is built from the `FileDescriptorSet` that `ListEngines` returns, in a pool of its own.
"""

from __future__ import annotations

import warnings
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

__all__ = ["TypeCatalog", "descriptor_differs"]


class TypeCatalog:
    """Message classes by full name, from a server's descriptors."""

    def __init__(self, descriptors: descriptor_pb2.FileDescriptorSet) -> None:
        self._pool = descriptor_pool.DescriptorPool()
        for file in descriptors.file:
            self._pool.Add(file)
        self._classes: dict[str, type[Message]] = {}

    def message_class(self, full_name: str) -> type[Message]:
        """The class for ``full_name``: the locally generated one when imported, else a dynamic one."""
        cls = self._classes.get(full_name)
        if cls is None:
            try:
                local = descriptor_pool.Default().FindMessageTypeByName(full_name)
            except KeyError:
                cls = message_factory.GetMessageClass(self._pool.FindMessageTypeByName(full_name))
            else:
                cls = message_factory.GetMessageClass(local)
            self._classes[full_name] = cls
        return cls

    def remote_descriptor(self, full_name: str) -> Any:
        return self._pool.FindMessageTypeByName(full_name)


def descriptor_differs(local: type[Message], catalog: TypeCatalog) -> bool:
    """Whether the server describes ``local``'s full name differently (fields, numbers, types)."""
    name = local.DESCRIPTOR.full_name
    try:
        remote = catalog.remote_descriptor(name)
    except KeyError:
        return False
    ours, theirs = descriptor_pb2.DescriptorProto(), descriptor_pb2.DescriptorProto()
    local.DESCRIPTOR.CopyToProto(ours)
    remote.CopyToProto(theirs)
    if ours != theirs:
        warnings.warn(
            f"the server describes {name} differently from the local class (different fields); "
            "requests and responses may not decode as expected",
            stacklevel=3,
        )
        return True
    return False
