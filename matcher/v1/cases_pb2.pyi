import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from matcher.v1 import hashes_pb2 as _hashes_pb2
from matcher.v1 import match_pb2 as _match_pb2
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

class ItemState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_STATE_UNSPECIFIED: _ClassVar[ItemState]
    ITEM_STATE_ACTIVE: _ClassVar[ItemState]
    ITEM_STATE_WITHDRAWN: _ClassVar[ItemState]

class QuarantineReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUARANTINE_REASON_UNSPECIFIED: _ClassVar[QuarantineReason]
    QUARANTINE_REASON_REPORTS: _ClassVar[QuarantineReason]
    QUARANTINE_REASON_FLOOD: _ClassVar[QuarantineReason]

class ReviewDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVIEW_DECISION_UNSPECIFIED: _ClassVar[ReviewDecision]
    REVIEW_DECISION_RESTORE: _ClassVar[ReviewDecision]
    REVIEW_DECISION_WITHDRAW: _ClassVar[ReviewDecision]
CASE_STATE_UNSPECIFIED: CaseState
CASE_STATE_ACTIVE: CaseState
CASE_STATE_WITHDRAWN: CaseState
ITEM_STATE_UNSPECIFIED: ItemState
ITEM_STATE_ACTIVE: ItemState
ITEM_STATE_WITHDRAWN: ItemState
QUARANTINE_REASON_UNSPECIFIED: QuarantineReason
QUARANTINE_REASON_REPORTS: QuarantineReason
QUARANTINE_REASON_FLOOD: QuarantineReason
REVIEW_DECISION_UNSPECIFIED: ReviewDecision
REVIEW_DECISION_RESTORE: ReviewDecision
REVIEW_DECISION_WITHDRAW: ReviewDecision

class Case(_message.Message):
    __slots__ = ("name", "case_number", "state", "hash_count", "hash_counts", "match_count", "reported_correct", "reported_wrong", "create_time", "withdraw_time", "item_count", "items")
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
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
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
    item_count: int
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, name: _Optional[str] = ..., case_number: _Optional[str] = ..., state: _Optional[_Union[CaseState, str]] = ..., hash_count: _Optional[int] = ..., hash_counts: _Optional[_Iterable[_Union[_hashes_pb2.SignalCount, _Mapping]]] = ..., match_count: _Optional[int] = ..., reported_correct: _Optional[int] = ..., reported_wrong: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., withdraw_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., item_count: _Optional[int] = ..., items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("name", "number", "kind", "state", "label", "hash_count", "hash_counts", "match_count", "reported_correct", "reported_wrong", "create_time", "withdraw_time", "quarantine", "review_time", "partner_reports")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    HASH_COUNT_FIELD_NUMBER: _ClassVar[int]
    HASH_COUNTS_FIELD_NUMBER: _ClassVar[int]
    MATCH_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPORTED_CORRECT_FIELD_NUMBER: _ClassVar[int]
    REPORTED_WRONG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    WITHDRAW_TIME_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    REVIEW_TIME_FIELD_NUMBER: _ClassVar[int]
    PARTNER_REPORTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    number: int
    kind: _hashes_pb2.ItemKind
    state: ItemState
    label: str
    hash_count: int
    hash_counts: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.SignalCount]
    match_count: int
    reported_correct: int
    reported_wrong: int
    create_time: _timestamp_pb2.Timestamp
    withdraw_time: _timestamp_pb2.Timestamp
    quarantine: Quarantine
    review_time: _timestamp_pb2.Timestamp
    partner_reports: _containers.RepeatedCompositeFieldContainer[PartnerReport]
    def __init__(self, name: _Optional[str] = ..., number: _Optional[int] = ..., kind: _Optional[_Union[_hashes_pb2.ItemKind, str]] = ..., state: _Optional[_Union[ItemState, str]] = ..., label: _Optional[str] = ..., hash_count: _Optional[int] = ..., hash_counts: _Optional[_Iterable[_Union[_hashes_pb2.SignalCount, _Mapping]]] = ..., match_count: _Optional[int] = ..., reported_correct: _Optional[int] = ..., reported_wrong: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., withdraw_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., quarantine: _Optional[_Union[Quarantine, _Mapping]] = ..., review_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., partner_reports: _Optional[_Iterable[_Union[PartnerReport, _Mapping]]] = ...) -> None: ...

class Quarantine(_message.Message):
    __slots__ = ("reason", "description", "since", "partners", "matches")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    PARTNERS_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    reason: QuarantineReason
    description: str
    since: _timestamp_pb2.Timestamp
    partners: int
    matches: int
    def __init__(self, reason: _Optional[_Union[QuarantineReason, str]] = ..., description: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., partners: _Optional[int] = ..., matches: _Optional[int] = ...) -> None: ...

class PartnerReport(_message.Message):
    __slots__ = ("partner", "verdict", "reason", "report_time")
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    partner: str
    verdict: _match_pb2.Verdict
    reason: _match_pb2.ReportReason
    report_time: _timestamp_pb2.Timestamp
    def __init__(self, partner: _Optional[str] = ..., verdict: _Optional[_Union[_match_pb2.Verdict, str]] = ..., reason: _Optional[_Union[_match_pb2.ReportReason, str]] = ..., report_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReviewQueueEntry(_message.Message):
    __slots__ = ("name", "case_number", "item_number", "label", "quarantine", "reported_correct", "reported_wrong", "create_time", "review_time", "organization")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ITEM_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_CORRECT_FIELD_NUMBER: _ClassVar[int]
    REPORTED_WRONG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVIEW_TIME_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    case_number: str
    item_number: int
    label: str
    quarantine: Quarantine
    reported_correct: int
    reported_wrong: int
    create_time: _timestamp_pb2.Timestamp
    review_time: _timestamp_pb2.Timestamp
    organization: str
    def __init__(self, name: _Optional[str] = ..., case_number: _Optional[str] = ..., item_number: _Optional[int] = ..., label: _Optional[str] = ..., quarantine: _Optional[_Union[Quarantine, _Mapping]] = ..., reported_correct: _Optional[int] = ..., reported_wrong: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., review_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., organization: _Optional[str] = ...) -> None: ...

class ListReviewQueueRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "organization")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    organization: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., organization: _Optional[str] = ...) -> None: ...

class ListReviewQueueResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[ReviewQueueEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[ReviewQueueEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReviewItemRequest(_message.Message):
    __slots__ = ("name", "decision", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    decision: ReviewDecision
    note: str
    def __init__(self, name: _Optional[str] = ..., decision: _Optional[_Union[ReviewDecision, str]] = ..., note: _Optional[str] = ...) -> None: ...

class ReviewItemResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: Item
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ...) -> None: ...

class NewItem(_message.Message):
    __slots__ = ("kind", "hashes", "label")
    KIND_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    kind: _hashes_pb2.ItemKind
    hashes: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.Hash]
    label: str
    def __init__(self, kind: _Optional[_Union[_hashes_pb2.ItemKind, str]] = ..., hashes: _Optional[_Iterable[_Union[_hashes_pb2.Hash, _Mapping]]] = ..., label: _Optional[str] = ...) -> None: ...

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

class AddItemsRequest(_message.Message):
    __slots__ = ("name", "items")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    items: _containers.RepeatedCompositeFieldContainer[NewItem]
    def __init__(self, name: _Optional[str] = ..., items: _Optional[_Iterable[_Union[NewItem, _Mapping]]] = ...) -> None: ...

class AddItemsResponse(_message.Message):
    __slots__ = ("items", "added", "existing", "item_count", "hash_count")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    HASH_COUNT_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    added: int
    existing: int
    item_count: int
    hash_count: int
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., added: _Optional[int] = ..., existing: _Optional[int] = ..., item_count: _Optional[int] = ..., hash_count: _Optional[int] = ...) -> None: ...

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

class WithdrawItemRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WithdrawItemResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: Item
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ...) -> None: ...

class GetCaseWithSecretRequest(_message.Message):
    __slots__ = ("case_number", "secret")
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    case_number: str
    secret: str
    def __init__(self, case_number: _Optional[str] = ..., secret: _Optional[str] = ...) -> None: ...

class GetCaseWithSecretResponse(_message.Message):
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
    __slots__ = ("state", "withdraw_time", "case")
    STATE_FIELD_NUMBER: _ClassVar[int]
    WITHDRAW_TIME_FIELD_NUMBER: _ClassVar[int]
    CASE_FIELD_NUMBER: _ClassVar[int]
    state: CaseState
    withdraw_time: _timestamp_pb2.Timestamp
    case: Case
    def __init__(self, state: _Optional[_Union[CaseState, str]] = ..., withdraw_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., case: _Optional[_Union[Case, _Mapping]] = ...) -> None: ...

class WithdrawItemWithSecretRequest(_message.Message):
    __slots__ = ("case_number", "secret", "item_number")
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    ITEM_NUMBER_FIELD_NUMBER: _ClassVar[int]
    case_number: str
    secret: str
    item_number: int
    def __init__(self, case_number: _Optional[str] = ..., secret: _Optional[str] = ..., item_number: _Optional[int] = ...) -> None: ...

class WithdrawItemWithSecretResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: Item
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ...) -> None: ...
