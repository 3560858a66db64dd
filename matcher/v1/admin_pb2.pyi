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

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_PARTNER: _ClassVar[Role]
    ROLE_PRACTITIONER: _ClassVar[Role]
    ROLE_ADMIN: _ClassVar[Role]

class AllowlistSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALLOWLIST_SOURCE_UNSPECIFIED: _ClassVar[AllowlistSource]
    ALLOWLIST_SOURCE_SEED: _ClassVar[AllowlistSource]
    ALLOWLIST_SOURCE_ADMIN: _ClassVar[AllowlistSource]
ROLE_UNSPECIFIED: Role
ROLE_PARTNER: Role
ROLE_PRACTITIONER: Role
ROLE_ADMIN: Role
ALLOWLIST_SOURCE_UNSPECIFIED: AllowlistSource
ALLOWLIST_SOURCE_SEED: AllowlistSource
ALLOWLIST_SOURCE_ADMIN: AllowlistSource

class ApiKey(_message.Message):
    __slots__ = ("name", "display_name", "role", "organization", "key_prefix", "create_time", "revoke_time", "policy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    role: Role
    organization: str
    key_prefix: str
    create_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    policy: KeyPolicy
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., organization: _Optional[str] = ..., key_prefix: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy: _Optional[_Union[KeyPolicy, _Mapping]] = ...) -> None: ...

class KeyPolicy(_message.Message):
    __slots__ = ("exact_distances", "max_distances", "daily_hash_budget", "suspend_time", "suspend_reason", "named_in_reports")
    EXACT_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    DAILY_HASH_BUDGET_FIELD_NUMBER: _ClassVar[int]
    SUSPEND_TIME_FIELD_NUMBER: _ClassVar[int]
    SUSPEND_REASON_FIELD_NUMBER: _ClassVar[int]
    NAMED_IN_REPORTS_FIELD_NUMBER: _ClassVar[int]
    exact_distances: bool
    max_distances: _containers.RepeatedCompositeFieldContainer[SignalDistance]
    daily_hash_budget: int
    suspend_time: _timestamp_pb2.Timestamp
    suspend_reason: str
    named_in_reports: bool
    def __init__(self, exact_distances: _Optional[bool] = ..., max_distances: _Optional[_Iterable[_Union[SignalDistance, _Mapping]]] = ..., daily_hash_budget: _Optional[int] = ..., suspend_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., suspend_reason: _Optional[str] = ..., named_in_reports: _Optional[bool] = ...) -> None: ...

class SignalDistance(_message.Message):
    __slots__ = ("signal_type", "distance")
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    signal_type: _hashes_pb2.SignalType
    distance: int
    def __init__(self, signal_type: _Optional[_Union[_hashes_pb2.SignalType, str]] = ..., distance: _Optional[int] = ...) -> None: ...

class UpdateApiKeyPolicyRequest(_message.Message):
    __slots__ = ("name", "exact_distances", "max_distances", "set_max_distances", "daily_hash_budget", "named_in_reports")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXACT_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    SET_MAX_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    DAILY_HASH_BUDGET_FIELD_NUMBER: _ClassVar[int]
    NAMED_IN_REPORTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    exact_distances: bool
    max_distances: _containers.RepeatedCompositeFieldContainer[SignalDistance]
    set_max_distances: bool
    daily_hash_budget: int
    named_in_reports: bool
    def __init__(self, name: _Optional[str] = ..., exact_distances: _Optional[bool] = ..., max_distances: _Optional[_Iterable[_Union[SignalDistance, _Mapping]]] = ..., set_max_distances: _Optional[bool] = ..., daily_hash_budget: _Optional[int] = ..., named_in_reports: _Optional[bool] = ...) -> None: ...

class UpdateApiKeyPolicyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class RestoreApiKeyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RestoreApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class Organization(_message.Message):
    __slots__ = ("name", "display_name", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("display_name", "role", "organization")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    role: Role
    organization: str
    def __init__(self, display_name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., organization: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "key")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    key: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., key: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys", "next_page_token")
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_page_token: str
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class CreateOrganizationRequest(_message.Message):
    __slots__ = ("display_name",)
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    def __init__(self, display_name: _Optional[str] = ...) -> None: ...

class CreateOrganizationResponse(_message.Message):
    __slots__ = ("organization",)
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    organization: Organization
    def __init__(self, organization: _Optional[_Union[Organization, _Mapping]] = ...) -> None: ...

class ListOrganizationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOrganizationsResponse(_message.Message):
    __slots__ = ("organizations", "next_page_token")
    ORGANIZATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    organizations: _containers.RepeatedCompositeFieldContainer[Organization]
    next_page_token: str
    def __init__(self, organizations: _Optional[_Iterable[_Union[Organization, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetBankStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBankStatsResponse(_message.Message):
    __slots__ = ("ready", "indexed", "active_cases", "withdrawn_cases", "index_load_seconds", "active_items")
    READY_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_CASES_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_CASES_FIELD_NUMBER: _ClassVar[int]
    INDEX_LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    indexed: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.SignalCount]
    active_cases: int
    withdrawn_cases: int
    index_load_seconds: float
    active_items: int
    def __init__(self, ready: _Optional[bool] = ..., indexed: _Optional[_Iterable[_Union[_hashes_pb2.SignalCount, _Mapping]]] = ..., active_cases: _Optional[int] = ..., withdrawn_cases: _Optional[int] = ..., index_load_seconds: _Optional[float] = ..., active_items: _Optional[int] = ...) -> None: ...

class AllowlistEntry(_message.Message):
    __slots__ = ("name", "signal_type", "label", "source", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    signal_type: _hashes_pb2.SignalType
    label: str
    source: AllowlistSource
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., signal_type: _Optional[_Union[_hashes_pb2.SignalType, str]] = ..., label: _Optional[str] = ..., source: _Optional[_Union[AllowlistSource, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AddAllowlistEntriesRequest(_message.Message):
    __slots__ = ("hashes", "label")
    HASHES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedCompositeFieldContainer[_hashes_pb2.Hash]
    label: str
    def __init__(self, hashes: _Optional[_Iterable[_Union[_hashes_pb2.Hash, _Mapping]]] = ..., label: _Optional[str] = ...) -> None: ...

class AddAllowlistEntriesResponse(_message.Message):
    __slots__ = ("entries", "existing_count")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    EXISTING_COUNT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AllowlistEntry]
    existing_count: int
    def __init__(self, entries: _Optional[_Iterable[_Union[AllowlistEntry, _Mapping]]] = ..., existing_count: _Optional[int] = ...) -> None: ...

class ListAllowlistRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAllowlistResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AllowlistEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[AllowlistEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RemoveAllowlistEntryRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveAllowlistEntryResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: AllowlistEntry
    def __init__(self, entry: _Optional[_Union[AllowlistEntry, _Mapping]] = ...) -> None: ...

class SeedAllowlistRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SeedAllowlistResponse(_message.Message):
    __slots__ = ("added_count", "existing_count")
    ADDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXISTING_COUNT_FIELD_NUMBER: _ClassVar[int]
    added_count: int
    existing_count: int
    def __init__(self, added_count: _Optional[int] = ..., existing_count: _Optional[int] = ...) -> None: ...
