from matcher.v1 import hashes_pb2 as _hashes_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MatchBand(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MATCH_BAND_UNSPECIFIED: _ClassVar[MatchBand]
    MATCH_BAND_STRONG: _ClassVar[MatchBand]
    MATCH_BAND_WEAK: _ClassVar[MatchBand]

class ReportReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_REASON_UNSPECIFIED: _ClassVar[ReportReason]
    REPORT_REASON_NOT_THE_IMAGE: _ClassVar[ReportReason]
    REPORT_REASON_WIDELY_SHARED: _ClassVar[ReportReason]
    REPORT_REASON_FEATURELESS: _ClassVar[ReportReason]
    REPORT_REASON_OTHER: _ClassVar[ReportReason]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_CORRECT: _ClassVar[Verdict]
    VERDICT_WRONG: _ClassVar[Verdict]
MATCH_BAND_UNSPECIFIED: MatchBand
MATCH_BAND_STRONG: MatchBand
MATCH_BAND_WEAK: MatchBand
REPORT_REASON_UNSPECIFIED: ReportReason
REPORT_REASON_NOT_THE_IMAGE: ReportReason
REPORT_REASON_WIDELY_SHARED: ReportReason
REPORT_REASON_FEATURELESS: ReportReason
REPORT_REASON_OTHER: ReportReason
VERDICT_UNSPECIFIED: Verdict
VERDICT_CORRECT: Verdict
VERDICT_WRONG: Verdict

class Query(_message.Message):
    __slots__ = ("hashes", "max_distance", "query_id")
    HASHES_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.Hash]
    max_distance: int
    query_id: str
    def __init__(self, hashes: _Optional[_Iterable[_Union[_hashes_pb2.Hash, _Mapping]]] = ..., max_distance: _Optional[int] = ..., query_id: _Optional[str] = ...) -> None: ...

class MatchResult(_message.Message):
    __slots__ = ("item_id", "signal_type", "distance", "hits", "band")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    BAND_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    signal_type: _hashes_pb2.SignalType
    distance: int
    hits: int
    band: MatchBand
    def __init__(self, item_id: _Optional[str] = ..., signal_type: _Optional[_Union[_hashes_pb2.SignalType, str]] = ..., distance: _Optional[int] = ..., hits: _Optional[int] = ..., band: _Optional[_Union[MatchBand, str]] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("query_id", "matches")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    matches: _containers.RepeatedCompositeFieldContainer[MatchResult]
    def __init__(self, query_id: _Optional[str] = ..., matches: _Optional[_Iterable[_Union[MatchResult, _Mapping]]] = ...) -> None: ...

class MatchRequest(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    def __init__(self, queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryResult]
    def __init__(self, results: _Optional[_Iterable[_Union[QueryResult, _Mapping]]] = ...) -> None: ...

class StreamMatchRequest(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    def __init__(self, queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ...) -> None: ...

class StreamMatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryResult]
    def __init__(self, results: _Optional[_Iterable[_Union[QueryResult, _Mapping]]] = ...) -> None: ...

class ReportMatchRequest(_message.Message):
    __slots__ = ("item_id", "verdict", "reason")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    verdict: Verdict
    reason: ReportReason
    def __init__(self, item_id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., reason: _Optional[_Union[ReportReason, str]] = ...) -> None: ...

class ReportMatchResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
