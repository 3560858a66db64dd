"""The public surface is what was meant: each public package's ``__all__``, pinned exactly.

A name added to or dropped from a package's ``__all__`` fails here until this file says so, so
the surface changes only on purpose (and the README's "Changes to matcher.v1" can say what
changed). Every listed name must exist, and the SDK must offer the same methods sync and async.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC: dict[str, set[str]] = {
    "matcher": {
        "MD5",
        "PDQ",
        "PHASH",
        "SHA256",
        "SIGNALS",
        "Allowlisted",
        "CaseState",
        "CaseStatus",
        "Conflict",
        "CorruptImage",
        "EnrollResult",
        "Hash",
        "ImageError",
        "ImageTooLarge",
        "InvalidDistance",
        "InvalidHash",
        "InvalidInput",
        "ItemKind",
        "ItemMatch",
        "ItemState",
        "ItemStatus",
        "LowQuality",
        "MatcherError",
        "NewItem",
        "NotFound",
        "PermissionDenied",
        "Query",
        "QueryResult",
        "RateLimited",
        "SignalType",
        "Unauthenticated",
        "Unavailable",
        "UnsupportedImage",
        "__version__",
        "signal_type",
    },
    "matcher.errors": {
        "Allowlisted",
        "Conflict",
        "CorruptImage",
        "ImageError",
        "ImageTooLarge",
        "InvalidDistance",
        "InvalidHash",
        "InvalidInput",
        "LowQuality",
        "MatcherError",
        "NotFound",
        "PermissionDenied",
        "RateLimited",
        "Unauthenticated",
        "Unavailable",
        "UnsupportedImage",
    },
    "matcher.signals": {
        "Hash",
        "MD5",
        "PDQ",
        "PHASH",
        "SHA256",
        "SIGNALS",
        "SignalType",
        "signal_type",
    },
    "matcher.records": {
        "ALLOWLIST_LABEL_LENGTH",
        "ITEM_BITS",
        "MAX_ITEM_HASHES",
        "MAX_LABEL_LENGTH",
        "AllowlistAdded",
        "AllowlistCodes",
        "AllowlistEntry",
        "AllowlistSource",
        "ApiKeyRecord",
        "AuditEntry",
        "BankStats",
        "CaseRecord",
        "CaseState",
        "CaseStatus",
        "Change",
        "ChangeBatch",
        "CodeChunk",
        "EnrollResult",
        "ItemKind",
        "ItemMatch",
        "ItemRecord",
        "ItemState",
        "ItemStatus",
        "KeyPolicy",
        "MatchBand",
        "NewApiKey",
        "NewCase",
        "NewItem",
        "Organisation",
        "PartnerReport",
        "Quarantine",
        "QuarantineReason",
        "Query",
        "QueryResult",
        "ReportReason",
        "ReviewDecision",
        "ReviewEntry",
        "VerdictRecord",
        "entry_ids",
        "item_ids_of",
    },
    "matcher.principal": {"Principal", "Role"},
    "matcher.audit": {"Action", "check_detail", "encode_detail"},
    "matcher.index": {"ExactIndex", "HammingIndex", "Index", "codes_of", "one_thread", "warm_up"},
    "matcher.store": {
        "DEFAULT_DATA_DIR",
        "DEFAULT_POOL_SIZE",
        "AccountStore",
        "AddedItems",
        "AllowlistStore",
        "AuditReader",
        "CaseStore",
        "ChangeFeed",
        "MatchStore",
        "SQLiteStore",
        "Snapshot",
        "Store",
        "open_store",
    },
    "matcher.bank": {"Accounts", "Bank", "IndexFollower"},
    "matcher.hashing": {
        "DEFAULT_MAX_PIXELS",
        "DEFAULT_SIGNALS",
        "DIHEDRAL_NAMES",
        "JPEG_DRAFT_MIN_SIDE",
        "MATCH_DISTANCE",
        "PROFILES",
        "REDUCE_MIN_SIDE",
        "FileHashes",
        "WorkerDied",
        "check_signals",
        "decode_image",
        "digests",
        "enroll_views",
        "hash_bytes",
        "hash_file",
        "hash_files",
        "hash_stream_digests",
        "iter_files",
        "matches",
        "ordered_map",
        "pdq",
        "pdq_dihedral",
        "phash",
        "query_views",
        "read_hash_lines",
    },
    "matcher.scan": {
        "COLUMNS",
        "Entry",
        "HashOptions",
        "Interrupted",
        "Journal",
        "RetryPolicy",
        "ScanJob",
        "ScanSummary",
        "Service",
        "Totals",
        "count_in_background",
        "entry_of",
        "hash_item",
        "is_url",
        "iter_inputs",
        "match_batches",
        "query_of",
        "read_hash_records",
        "read_lines",
        "run_interruptibly",
        "scan",
        "scan_dask",
        "scan_partition",
        "skip_done",
    },
    "matcher.service": {
        "Server",
        "ServerConfig",
        "ServiceLimits",
        "TlsConfig",
        "configure_logging",
        "serve",
    },
    "matcher.cli": {"main"},
    "matcher.client": {
        "DEFAULT_TARGET",
        "MAX_ITEMS_PER_CALL",
        "AllowlistAdded",
        "AllowlistEntry",
        "ApiKeyRecord",
        "AsyncClient",
        "BankStats",
        "CaseStatus",
        "Client",
        "EnrollResult",
        "ItemMatch",
        "ItemStatus",
        "NewApiKey",
        "NewCase",
        "NewItem",
        "Organisation",
        "Query",
        "QueryResult",
        "as_dict",
    },
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_is_exactly_the_intended_surface(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == PUBLIC[module]
    assert len(mod.__all__) == len(set(mod.__all__)), "a name is listed twice"
    for name in mod.__all__:
        assert getattr(mod, name, None) is not None or name == "__version__", name


def test_the_facade_reexports_the_same_objects() -> None:
    import matcher
    from matcher import errors, records, signals

    for name in matcher.__all__:
        if name == "__version__":
            continue
        home = next(m for m in (errors, records, signals) if name in m.__all__)
        assert getattr(matcher, name) is getattr(home, name), name


def _public_methods(cls: type) -> set[str]:
    return {n for n, v in inspect.getmembers(cls) if not n.startswith("_") and callable(v)}


def test_sync_and_async_clients_offer_the_same_methods() -> None:
    from matcher.client import AsyncClient, Client

    assert _public_methods(Client) == _public_methods(AsyncClient)
    for name in _public_methods(Client):
        sync, async_ = getattr(Client, name), getattr(AsyncClient, name)
        assert list(inspect.signature(sync).parameters) == list(
            inspect.signature(async_).parameters
        ), name
