from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("text", "delay_s")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DELAY_S_FIELD_NUMBER: _ClassVar[int]
    text: str
    delay_s: float
    def __init__(self, text: _Optional[str] = ..., delay_s: _Optional[float] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("count", "delay_s", "size")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DELAY_S_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    count: int
    delay_s: float
    size: int
    def __init__(self, count: _Optional[int] = ..., delay_s: _Optional[float] = ..., size: _Optional[int] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("index", "payload")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    index: int
    payload: str
    def __init__(self, index: _Optional[int] = ..., payload: _Optional[str] = ...) -> None: ...

class CountError(_message.Message):
    __slots__ = ("field", "value", "limit")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    field: str
    value: int
    limit: int
    def __init__(self, field: _Optional[str] = ..., value: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...
