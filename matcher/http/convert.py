"""JSON <-> matcher.v1 protobuf messages, for the HTTP gateway.

The JSON is shaped for people and browsers rather than being protobuf's canonical JSON: a hash
is ``{"signal": "pdq", "hex": "...", "quality": 87}`` (lower-case names instead of enum
constants, hex instead of base64), states and kinds are short lower-case words, counts by
signal are objects. Only the *shape* is checked here (types, known fields, ranges a protobuf
field can hold): every rule about values (lengths, quality floors, batch limits) is the gRPC
server's, so both APIs refuse the same things with the same messages. Errors name the JSON
field (``queries[0].hashes[2].hex``); ``json_field`` turns the server's protobuf field names
into these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from matcher import contract
from matcher.errors import InvalidHash, InvalidInput
from matcher.records import QuarantineReason, ReportReason, ReviewDecision
from matcher.signals import SIGNALS
from matcher.v1 import cases_pb2, hashes_pb2, match_pb2

__all__ = [
    "BANDS",
    "DECISIONS",
    "KINDS",
    "QUARANTINE_REASONS",
    "REPORT_REASONS",
    "SIGNAL_NAMES",
    "STATES",
    "VERDICTS",
    "add_items_response",
    "case_json",
    "item_json",
    "json_field",
    "match_request",
    "match_response",
    "new_items",
    "report_request",
    "review_queue_response",
    "review_request",
]

_INT32 = 2**31 - 1

SIGNAL_NAMES: dict[str, int] = {name: contract.signal_to_pb(s) for name, s in SIGNALS.items()}
"""JSON signal names (``pdq``, ``phash``, ``md5``, ``sha256``) and their protobuf values."""
_SIGNAL_OF = {v: k for k, v in SIGNAL_NAMES.items()}
KINDS = {"image": hashes_pb2.ITEM_KIND_IMAGE, "video": hashes_pb2.ITEM_KIND_VIDEO}
_KIND_OF = {v: k for k, v in KINDS.items()}
VERDICTS = {"correct": match_pb2.VERDICT_CORRECT, "wrong": match_pb2.VERDICT_WRONG}
_VERDICT_OF = {v: k for k, v in VERDICTS.items()}
REPORT_REASONS: dict[str, int] = {r.value: contract.reason_to_pb(r) for r in ReportReason}
"""A report's reason codes (``not_the_image``, ``widely_shared``, ...) and their protobuf
values; unset in JSON is unset in protobuf (no reason given)."""
_REPORT_REASON_OF = {v: k for k, v in REPORT_REASONS.items()}
DECISIONS: dict[str, int] = {d.value: contract.review_decision_to_pb(d) for d in ReviewDecision}
"""A review's decisions (``restore``, ``withdraw``) and their protobuf values."""
QUARANTINE_REASONS: dict[int, str] = {
    cases_pb2.QuarantineReason.Value(f"QUARANTINE_REASON_{r.name}"): r.value
    for r in QuarantineReason
}
"""Why an item is quarantined, as JSON names it (``reports``, ``flood``)."""
BANDS = {match_pb2.MATCH_BAND_STRONG: "strong", match_pb2.MATCH_BAND_WEAK: "weak"}
STATES = ("active", "withdrawn")
_CASE_STATE = {cases_pb2.CASE_STATE_ACTIVE: "active", cases_pb2.CASE_STATE_WITHDRAWN: "withdrawn"}
_ITEM_STATE = {cases_pb2.ITEM_STATE_ACTIVE: "active", cases_pb2.ITEM_STATE_WITHDRAWN: "withdrawn"}


# -- reading JSON, shape only


def _object(value: Any, field: str, known: set[str], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"{field or 'the body'} must be a JSON object", field=field)
    prefix = f"{field}." if field else ""
    for name in value:
        if name not in known:
            shown = name[:64].encode("utf-8", "replace").decode()
            raise InvalidInput(f"unknown field {shown!r}", field=f"{prefix}{shown}")
    for name in required:
        if name not in value:
            raise InvalidInput(f"{name} is required", field=f"{prefix}{name}")
    return value


def _list(value: Any, field: str) -> list:
    if not isinstance(value, list):
        raise InvalidInput(f"{field} must be a JSON array", field=field)
    return value


def text(value: Any, field: str) -> str:
    """A JSON string that protobuf can hold (UTF-8: no lone surrogates from ``\\ud800``)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{field} is not valid Unicode text", field=field) from None
    return value


def integer(value: Any, field: str, low: int = -_INT32 - 1, high: int = _INT32) -> int:
    # bool is an int in Python, not in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer", field=field)
    if not low <= value <= high:
        raise InvalidInput(f"{field} must be between {low} and {high}", field=field)
    return value


def _choice(value: Any, field: str, choices: Mapping[str, int]) -> int:
    name = text(value, field)
    if name not in choices:
        raise InvalidInput(f"{field} must be one of {', '.join(choices)}", field=field)
    return choices[name]


def _hashes(value: Any, field: str) -> list[hashes_pb2.Hash]:
    out = []
    for i, h in enumerate(_list(value, field)):
        where = f"{field}[{i}]"
        h = _object(h, where, {"signal", "hex", "quality"}, ("signal", "hex"))
        signal = _choice(h["signal"], f"{where}.signal", SIGNAL_NAMES)
        hex_text = text(h["hex"], f"{where}.hex")
        try:
            value_bytes = bytes.fromhex(hex_text) if hex_text.isascii() else None
        except ValueError:
            value_bytes = None
        if value_bytes is None:
            raise InvalidHash("hex must be hexadecimal digits, two per byte", field=f"{where}.hex")
        message = hashes_pb2.Hash(signal_type=signal, value=value_bytes)  # type: ignore[arg-type]
        if "quality" in h:
            message.quality = integer(h["quality"], f"{where}.quality")
        out.append(message)
    return out


def match_request(body: Any) -> match_pb2.MatchRequest:
    body = _object(body, "", {"queries"}, ("queries",))
    queries = []
    for i, q in enumerate(_list(body["queries"], "queries")):
        where = f"queries[{i}]"
        q = _object(q, where, {"hashes", "query_id", "max_distance"}, ("hashes",))
        message = match_pb2.Query(hashes=_hashes(q["hashes"], f"{where}.hashes"))
        if "query_id" in q:
            message.query_id = text(q["query_id"], f"{where}.query_id")
        if "max_distance" in q:
            message.max_distance = integer(q["max_distance"], f"{where}.max_distance")
        queries.append(message)
    return match_pb2.MatchRequest(queries=queries)


def report_request(body: Any) -> match_pb2.ReportMatchRequest:
    body = _object(body, "", {"item_id", "verdict", "reason"}, ("item_id", "verdict"))
    message = match_pb2.ReportMatchRequest(
        item_id=text(body["item_id"], "item_id"),
        verdict=_choice(body["verdict"], "verdict", VERDICTS),  # type: ignore[arg-type]
    )
    if "reason" in body:
        message.reason = _choice(body["reason"], "reason", REPORT_REASONS)  # type: ignore[assignment]
    return message


def review_request(body: Any, name: str) -> cases_pb2.ReviewItemRequest:
    """A review decision on the item ``name`` (``cases/{number}/items/{item}``)."""
    body = _object(body, "", {"decision", "note"}, ("decision",))
    message = cases_pb2.ReviewItemRequest(
        name=name,
        decision=_choice(body["decision"], "decision", DECISIONS),  # type: ignore[arg-type]
    )
    if "note" in body:
        message.note = text(body["note"], "note")
    return message


def new_items(body: Any) -> list[cases_pb2.NewItem]:
    """The ``items`` of an enrollment body (``POST .../items``, self-service)."""
    body = _object(body, "", {"items"}, ("items",))
    out = []
    for i, item in enumerate(_list(body["items"], "items")):
        where = f"items[{i}]"
        item = _object(item, where, {"kind", "label", "hashes"}, ("kind", "hashes"))
        message = cases_pb2.NewItem(
            kind=_choice(item["kind"], f"{where}.kind", KINDS),  # type: ignore[arg-type]
            hashes=_hashes(item["hashes"], f"{where}.hashes"),
        )
        if "label" in item:
            message.label = text(item["label"], f"{where}.label")
        out.append(message)
    return out


def object_body(body: Any, known: set[str], required: tuple[str, ...] = ()) -> dict:
    """A body that must be an object of these fields (for the simple requests)."""
    return _object(body, "", known, required)


# -- writing JSON


def _time(stamp: Timestamp) -> str:
    return stamp.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _counts(counts: Any) -> dict[str, int]:
    return {_SIGNAL_OF.get(c.signal_type, "unknown"): c.count for c in counts}


def quarantine_json(q: cases_pb2.Quarantine) -> dict[str, Any]:
    return {
        "reason": QUARANTINE_REASONS.get(q.reason, "reports"),
        "description": q.description,
        "since": _time(q.since),
        "partners": q.partners,
        "matches": q.matches,
    }


def _partner_report_json(r: cases_pb2.PartnerReport) -> dict[str, Any]:
    out: dict[str, Any] = {
        "partner": r.partner,
        "verdict": _VERDICT_OF.get(r.verdict, "wrong"),
        "report_time": _time(r.report_time),
    }
    if r.reason in _REPORT_REASON_OF:
        out["reason"] = _REPORT_REASON_OF[r.reason]
    return out


def item_json(item: cases_pb2.Item, *, practitioner: bool = False) -> dict[str, Any]:
    """An item as JSON. ``practitioner``: the owning organisation's view, which adds the named
    partners' reports (the server sends them only there; a victim's view never has the key)."""
    out: dict[str, Any] = {
        "number": item.number,
        "kind": _KIND_OF.get(item.kind, "image"),
        "state": _ITEM_STATE.get(item.state, "active"),
        "label": item.label,
        "hash_count": item.hash_count,
        "hash_counts": _counts(item.hash_counts),
        "match_count": item.match_count,
        "reported_correct": item.reported_correct,
        "reported_wrong": item.reported_wrong,
        "create_time": _time(item.create_time),
    }
    if item.HasField("withdraw_time"):
        out["withdraw_time"] = _time(item.withdraw_time)
    if item.HasField("quarantine"):
        out["quarantine"] = quarantine_json(item.quarantine)
    if item.HasField("review_time"):
        out["review_time"] = _time(item.review_time)
    if practitioner:
        out["partner_reports"] = [_partner_report_json(r) for r in item.partner_reports]
    return out


def case_json(
    case: cases_pb2.Case, *, items: bool = False, practitioner: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "case_number": case.case_number,
        "state": _CASE_STATE.get(case.state, "active"),
        "item_count": case.item_count,
        "hash_count": case.hash_count,
        "hash_counts": _counts(case.hash_counts),
        "match_count": case.match_count,
        "reported_correct": case.reported_correct,
        "reported_wrong": case.reported_wrong,
        "create_time": _time(case.create_time),
    }
    if case.HasField("withdraw_time"):
        out["withdraw_time"] = _time(case.withdraw_time)
    if items:
        out["items"] = [item_json(i, practitioner=practitioner) for i in case.items]
    return out


def review_queue_response(response: cases_pb2.ListReviewQueueResponse) -> dict[str, Any]:
    entries = []
    for e in response.entries:
        entry: dict[str, Any] = {
            "case_number": e.case_number,
            "item": e.item_number,
            "label": e.label,
            "quarantine": quarantine_json(e.quarantine),
            "reported_correct": e.reported_correct,
            "reported_wrong": e.reported_wrong,
            "create_time": _time(e.create_time),
            "organization": e.organization,
        }
        if e.HasField("review_time"):
            entry["review_time"] = _time(e.review_time)
        entries.append(entry)
    out: dict[str, Any] = {"entries": entries}
    if response.next_page_token:
        out["next_page_token"] = response.next_page_token
    return out


def add_items_response(response: cases_pb2.AddItemsResponse) -> dict[str, Any]:
    return {
        "items": [item_json(i, practitioner=True) for i in response.items],
        "added": response.added,
        "existing": response.existing,
        "item_count": response.item_count,
        "hash_count": response.hash_count,
    }


def match_response(response: match_pb2.MatchResponse) -> dict[str, Any]:
    results = []
    for r in response.results:
        matches = []
        for m in r.matches:
            match: dict[str, Any] = {
                "item_id": m.item_id,
                "signal": _SIGNAL_OF.get(m.signal_type, "unknown"),
                "band": BANDS.get(m.band, "weak"),
                "hits": m.hits,
            }
            if m.HasField("distance"):
                match["distance"] = m.distance
            matches.append(match)
        results.append({"query_id": r.query_id, "matches": matches})
    return {"results": results}


# -- the server's field names, as the JSON names them

_RENAMES = (
    (re.compile(r"(^|\.)signal_type\b"), r"\1signal"),
    (re.compile(r"(^|\.)value\b"), r"\1hex"),
)


def json_field(field: str, top: Mapping[str, str] | None = None) -> str:
    """A protobuf field path from a gRPC field violation, as the JSON request names it.

    >>> json_field("queries[3].hashes[0].value")
    'queries[3].hashes[0].hex'
    >>> json_field("name", {"name": "number"})
    'number'
    """
    for pattern, repl in _RENAMES:
        field = pattern.sub(repl, field)
    if top:
        head, sep, rest = field.partition(".")
        bare, bracket, index = head.partition("[")
        if bare in top:
            field = f"{top[bare]}{bracket}{index}{sep}{rest}"
    return field
