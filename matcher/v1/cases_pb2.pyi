import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from matcher.v1 import hashes_pb2 as _hashes_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaseState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CASE_STATE_UNSPECIFIED: _ClassVar[CaseState]
    CASE_STATE_ACTIVE: _ClassVar[CaseState]
    CASE_STATE_WITHDRAWN: _ClassVar[CaseState]
CASE_STATE_UNSPECIFIED: CaseState
CASE_STATE_ACTIVE: CaseState
CASE_STATE_WITHDRAWN: CaseState

class Case(_message.Message):
    __slots__ = ("name", "case_number", "state", "hash_count", "hash_counts", "match_count", "reported_correct", "reported_wrong", "create_time", "withdraw_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HASH_COUNT_FIELD_NUMBER: _ClassVar[int]
    HASH_COUNTS_FIELD_NUMBER: _ClassVar[int]
    MATCH_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPORTED_CORRECT_FIELD_NUMBER: _ClassVar[int]
    REPORTED_WRONG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    WITHDRAW_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    case_number: str
    state: CaseState
    hash_count: int
    hash_counts: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.SignalCount]
    match_count: int
    reported_correct: int
    reported_wrong: int
    create_time: _timestamp_pb2.Timestamp
    withdraw_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., case_number: _Optional[str] = ..., state: _Optional[_Union[CaseState, str]] = ..., hash_count: _Optional[int] = ..., hash_counts: _Optional[_Iterable[_Union[_hashes_pb2.SignalCount, _Mapping]]] = ..., match_count: _Optional[int] = ..., reported_correct: _Optional[int] = ..., reported_wrong: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., withdraw_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateCaseRequest(_message.Message):
    __slots__ = ("organization",)
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    organization: str
    def __init__(self, organization: _Optional[str] = ...) -> None: ...

class CreateCaseResponse(_message.Message):
    __slots__ = ("case", "withdrawal_secret")
    CASE_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWAL_SECRET_FIELD_NUMBER: _ClassVar[int]
    case: Case
    withdrawal_secret: str
    def __init__(self, case: _Optional[_Union[Case, _Mapping]] = ..., withdrawal_secret: _Optional[str] = ...) -> None: ...

class AddHashesRequest(_message.Message):
    __slots__ = ("name", "hashes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    name: str
    hashes: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.Hash]
    def __init__(self, name: _Optional[str] = ..., hashes: _Optional[_Iterable[_Union[_hashes_pb2.Hash, _Mapping]]] = ...) -> None: ...

class AddHashesResponse(_message.Message):
    __slots__ = ("added", "duplicates", "hash_count")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    HASH_COUNT_FIELD_NUMBER: _ClassVar[int]
    added: int
    duplicates: int
    hash_count: int
    def __init__(self, added: _Optional[int] = ..., duplicates: _Optional[int] = ..., hash_count: _Optional[int] = ...) -> None: ...

class GetCaseRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCaseResponse(_message.Message):
    __slots__ = ("case",)
    CASE_FIELD_NUMBER: _ClassVar[int]
    case: Case
    def __init__(self, case: _Optional[_Union[Case, _Mapping]] = ...) -> None: ...

class WithdrawCaseRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WithdrawCaseResponse(_message.Message):
    __slots__ = ("case",)
    CASE_FIELD_NUMBER: _ClassVar[int]
    case: Case
    def __init__(self, case: _Optional[_Union[Case, _Mapping]] = ...) -> None: ...

class WithdrawCaseWithSecretRequest(_message.Message):
    __slots__ = ("case_number", "secret")
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    case_number: str
    secret: str
    def __init__(self, case_number: _Optional[str] = ..., secret: _Optional[str] = ...) -> None: ...

class WithdrawCaseWithSecretResponse(_message.Message):
    __slots__ = ("state", "withdraw_time")
    STATE_FIELD_NUMBER: _ClassVar[int]
    WITHDRAW_TIME_FIELD_NUMBER: _ClassVar[int]
    state: CaseState
    withdraw_time: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[CaseState, str]] = ..., withdraw_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
