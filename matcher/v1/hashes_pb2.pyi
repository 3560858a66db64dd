from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignalType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_TYPE_UNSPECIFIED: _ClassVar[SignalType]
    SIGNAL_TYPE_PDQ: _ClassVar[SignalType]
    SIGNAL_TYPE_PHASH: _ClassVar[SignalType]
    SIGNAL_TYPE_MD5: _ClassVar[SignalType]
    SIGNAL_TYPE_SHA256: _ClassVar[SignalType]

class ItemKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_KIND_UNSPECIFIED: _ClassVar[ItemKind]
    ITEM_KIND_IMAGE: _ClassVar[ItemKind]
    ITEM_KIND_VIDEO: _ClassVar[ItemKind]
SIGNAL_TYPE_UNSPECIFIED: SignalType
SIGNAL_TYPE_PDQ: SignalType
SIGNAL_TYPE_PHASH: SignalType
SIGNAL_TYPE_MD5: SignalType
SIGNAL_TYPE_SHA256: SignalType
ITEM_KIND_UNSPECIFIED: ItemKind
ITEM_KIND_IMAGE: ItemKind
ITEM_KIND_VIDEO: ItemKind

class Hash(_message.Message):
    __slots__ = ("signal_type", "value", "quality")
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    signal_type: SignalType
    value: bytes
    quality: int
    def __init__(self, signal_type: _Optional[_Union[SignalType, str]] = ..., value: _Optional[bytes] = ..., quality: _Optional[int] = ...) -> None: ...

class SignalCount(_message.Message):
    __slots__ = ("signal_type", "count")
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    signal_type: SignalType
    count: int
    def __init__(self, signal_type: _Optional[_Union[SignalType, str]] = ..., count: _Optional[int] = ...) -> None: ...
