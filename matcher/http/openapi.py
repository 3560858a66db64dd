"""The OpenAPI 3 description of the HTTP API, served at ``/api/v1/openapi.json``.

Built from the gateway's route table (``gateway.ROUTES``: paths, methods, auth, statuses), so
no route can be served undocumented or documented unserved; the schemas below are written
here, next to ``convert`` which reads and writes the same shapes, with the matcher.v1 proto's
comments where a field is the proto's. The tests fuzz the server against
this description (schemathesis: no server error, every response as described) and validate
their own responses against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from matcher import __version__
from matcher.http import convert
from matcher.v1 import cases_pb2, match_pb2

if TYPE_CHECKING:
    from matcher.http.gateway import Route

__all__ = ["QUERY_PARAMETERS", "SCHEMAS", "document"]


def _proto_doc(message: Any, field: str) -> str:
    """The proto comment of ``message.field``, as copied below (generated Python descriptors
    carry no comments); the lookup fails loudly if the proto drops or renames the field."""
    assert field in message.DESCRIPTOR.fields_by_name, (message, field)
    return _FIELD_DOCS[f"{message.DESCRIPTOR.name}.{field}"]


# The proto's own comments (shortened), for the fields the JSON keeps as they are.
_FIELD_DOCS = {
    "Case.case_number": "The case number given to the victim, e.g. `K7QP-2MXR-9TDA`.",
    "Case.hash_count": "Hashes held for the case, over all its active items (0 once withdrawn).",
    "Case.match_count": "Matches partners have reported on so far (right or wrong).",
    "Case.item_count": "Active items held (0 once withdrawn).",
    "Item.number": "Its number within the case: 1, 2, ... in enrollment order.",
    "Item.label": "The practitioner's own label, if one was given.",
    "MatchResult.item_id": "An opaque, stable id of the matched item (not a hash, not a "
    "case). Use it to report feedback.",
    "MatchResult.hits": "How many of the query's hashes matched the item.",
    "Query.query_id": "The caller's own label for this query (e.g. an upload id), echoed.",
    "Query.max_distance": "Only for keys granted exact distances: a stricter match distance.",
}


def _str(description: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": "string", **({"description": description} if description else {}), **extra}


def _int(description: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": "integer", **({"description": description} if description else {}), **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(
    properties: Mapping[str, Any], required: Iterable[str] = (), description: str = ""
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": dict(properties),
        "additionalProperties": False,
    }
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


_SIGNALS = list(convert.SIGNAL_NAMES)
_COUNT = _int(minimum=0)
_TIME = _str(format="date-time")
_COUNTS = {
    "type": "object",
    "description": "Hashes held, by signal.",
    "additionalProperties": _COUNT,
}
_INT32 = {"minimum": -(2**31), "maximum": 2**31 - 1}

SCHEMAS: dict[str, Any] = {
    "Hash": _object(
        {
            "signal": {"type": "string", "enum": _SIGNALS, "description": "The signal type."},
            "hex": _str(
                "The hash bits, big-endian, as hex: 64 digits for PDQ and SHA-256, 16 for "
                "pHash, 32 for MD5.",
                pattern="^[0-9a-fA-F]*$",
            ),
            "quality": _int(
                "PDQ's quality (0-100): required when enrolling PDQ hashes (at least 50), "
                "ignored when matching.",
                **_INT32,
            ),
        },
        ["signal", "hex"],
        "One hash value of one signal type.",
    ),
    "Query": _object(
        {
            "hashes": {"type": "array", "items": _ref("Hash"), "minItems": 1},
            "query_id": _str(_proto_doc(match_pb2.Query, "query_id")),
            "max_distance": _int(_proto_doc(match_pb2.Query, "max_distance"), **_INT32),
        },
        ["hashes"],
        "One image to look up, given as one or more of its hashes.",
    ),
    "MatchRequest": _object(
        {"queries": {"type": "array", "items": _ref("Query"), "minItems": 1}},
        ["queries"],
    ),
    "Match": _object(
        {
            "item_id": _str(_proto_doc(match_pb2.MatchResult, "item_id")),
            "signal": {"type": "string", "enum": _SIGNALS},
            "band": {
                "type": "string",
                "enum": ["strong", "weak"],
                "description": "strong: almost surely a re-upload; weak: check before acting.",
            },
            "hits": _int(_proto_doc(match_pb2.MatchResult, "hits"), minimum=0),
            "distance": _int("Only for keys granted exact distances.", minimum=0),
        },
        ["item_id", "signal", "band", "hits"],
        "One enrolled item that matched.",
    ),
    "QueryResult": _object(
        {
            "query_id": _str(),
            "matches": {"type": "array", "items": _ref("Match")},
        },
        ["query_id", "matches"],
    ),
    "MatchResponse": _object(
        {"results": {"type": "array", "items": _ref("QueryResult")}}, ["results"]
    ),
    "ReportRequest": _object(
        {
            "item_id": _str("The `item_id` of a match."),
            "verdict": {"type": "string", "enum": list(convert.VERDICTS)},
            "reason": {
                "type": "string",
                "enum": list(convert.REPORT_REASONS),
                "description": "Why, optionally (a code, never free text): not_the_image (a "
                "different picture), widely_shared (a meme, a celebrity photo), featureless (a "
                "flat colour, a grid), other.",
            },
        },
        ["item_id", "verdict"],
    ),
    "Quarantine": _object(
        {
            "reason": {
                "type": "string",
                "enum": list(convert.QUARANTINE_REASONS.values()),
                "description": "reports: enough distinct partners reported its matches wrong; "
                "flood: its match rate jumped far above its own history and the bank's norm.",
            },
            "description": _str("The reason in plain words, for practitioners and victims."),
            "since": _TIME,
            "partners": _int(
                "Reason `reports`: distinct partners whose current verdict was wrong.", minimum=0
            ),
            "matches": _int(
                "Reason `flood`: uploads that returned it within the last hour.", minimum=0
            ),
        },
        ["reason", "description", "since", "partners", "matches"],
        "Set while the item is quarantined: it is held but matches nothing until a "
        "practitioner of its organisation reviews it.",
    ),
    "PartnerReport": _object(
        {
            "partner": _str("The partner's name (the name of its API key)."),
            "verdict": {"type": "string", "enum": list(convert.VERDICTS)},
            "reason": {"type": "string", "enum": list(convert.REPORT_REASONS)},
            "report_time": _TIME,
        },
        ["partner", "verdict", "report_time"],
        "One named partner's current verdict (only partners who agreed to be named).",
    ),
    "ReviewRequest": _object(
        {
            "decision": {
                "type": "string",
                "enum": list(convert.DECISIONS),
                "description": "restore: it is the victim's image, match it again; withdraw: "
                "it should not be in the bank (its hashes are deleted).",
            },
            "note": _str("Optional note for the audit trail (at most 100 characters)."),
        },
        ["decision"],
    ),
    "ReviewQueueEntry": _object(
        {
            "case_number": _str("The case number."),
            "item": _int("The item's number within the case.", minimum=1),
            "label": _str("The practitioner's label, if any."),
            "quarantine": _ref("Quarantine"),
            "reported_correct": _COUNT,
            "reported_wrong": _COUNT,
            "create_time": _TIME,
            "review_time": _str(
                "When it was last restored from quarantine, if ever.", format="date-time"
            ),
            "organization": _str("Its organisation, `organizations/{id}`."),
        },
        [
            "case_number",
            "item",
            "label",
            "quarantine",
            "reported_correct",
            "reported_wrong",
            "create_time",
            "organization",
        ],
        "One quarantined item waiting for review.",
    ),
    "ReviewQueue": _object(
        {
            "entries": {"type": "array", "items": _ref("ReviewQueueEntry")},
            "next_page_token": _str("Pass as `page_token` for the next page; absent on the last."),
        },
        ["entries"],
    ),
    "Session": _object(
        {
            "role": {"type": "string", "enum": ["partner", "practitioner", "admin"]},
            "key_name": _str("The key's label."),
            "organization": _object(
                {
                    "name": _str("`organizations/{id}`"),
                    "display_name": _str("Its name for people."),
                },
                ["name", "display_name"],
            ),
        },
        ["role", "key_name"],
    ),
    "CreateCaseRequest": _object(
        {
            "organization": _str(
                "Admins only: the owning organisation, `organizations/{id}`; practitioners "
                "leave it out (their own)."
            )
        }
    ),
    "Item": _object(
        {
            "number": _int(_proto_doc(cases_pb2.Item, "number"), minimum=1),
            "kind": {"type": "string", "enum": list(convert.KINDS)},
            "state": {"type": "string", "enum": list(convert.STATES)},
            "label": _str(_proto_doc(cases_pb2.Item, "label")),
            "hash_count": _COUNT,
            "hash_counts": _COUNTS,
            "match_count": _COUNT,
            "reported_correct": _COUNT,
            "reported_wrong": _COUNT,
            "create_time": _TIME,
            "withdraw_time": _TIME,
            "quarantine": _ref("Quarantine"),
            "review_time": _str(
                "When a practitioner last restored it from quarantine, if ever.",
                format="date-time",
            ),
            "partner_reports": {
                "type": "array",
                "items": _ref("PartnerReport"),
                "description": "The current verdicts of partners who agreed to be named; only "
                "in the owning organisation's views, never the victim's. Other partners' "
                "verdicts are in the counts only.",
            },
        },
        [
            "number",
            "kind",
            "state",
            "label",
            "hash_count",
            "hash_counts",
            "match_count",
            "reported_correct",
            "reported_wrong",
            "create_time",
        ],
        "One enrolled image (or video). Never a hash value.",
    ),
    "Case": _object(
        {
            "case_number": _str(_proto_doc(cases_pb2.Case, "case_number")),
            "state": {"type": "string", "enum": list(convert.STATES)},
            "item_count": _int(_proto_doc(cases_pb2.Case, "item_count"), minimum=0),
            "hash_count": _int(_proto_doc(cases_pb2.Case, "hash_count"), minimum=0),
            "hash_counts": _COUNTS,
            "match_count": _int(_proto_doc(cases_pb2.Case, "match_count"), minimum=0),
            "reported_correct": _COUNT,
            "reported_wrong": _COUNT,
            "create_time": _TIME,
            "withdraw_time": _TIME,
            "items": {
                "type": "array",
                "items": _ref("Item"),
                "description": "Every item ever enrolled, withdrawn ones included, in "
                "enrollment order (in a case's status, not after a withdrawal).",
            },
        },
        [
            "case_number",
            "state",
            "item_count",
            "hash_count",
            "hash_counts",
            "match_count",
            "reported_correct",
            "reported_wrong",
            "create_time",
        ],
        "A case: the items of one person, owned by one organisation.",
    ),
    "NewCase": _object(
        {
            "case_number": _str("The case number, for the victim."),
            "secret": _str("The withdrawal secret for the victim: shown once, never again."),
            "case": _ref("Case"),
        },
        ["case_number", "secret", "case"],
    ),
    "NewItem": _object(
        {
            "kind": {"type": "string", "enum": list(convert.KINDS)},
            "label": _str("Optional label for people (at most 200 characters); never a file name."),
            "hashes": {"type": "array", "items": _ref("Hash"), "minItems": 1},
        },
        ["kind", "hashes"],
        "One item to enroll, with all of its hashes.",
    ),
    "AddItemsRequest": _object(
        {"items": {"type": "array", "items": _ref("NewItem"), "minItems": 1}}, ["items"]
    ),
    "AddItemsResponse": _object(
        {
            "items": {"type": "array", "items": _ref("Item")},
            "added": _COUNT,
            "existing": _COUNT,
            "item_count": _COUNT,
            "hash_count": _COUNT,
        },
        ["items", "added", "existing", "item_count", "hash_count"],
    ),
    "VictimRequest": _object(
        {
            "case_number": _str("The case number, as given to the victim."),
            "secret": _str("The withdrawal secret, as given to the victim."),
        },
        ["case_number", "secret"],
    ),
    "VictimWithdrawRequest": _object(
        {
            "case_number": _str("The case number, as given to the victim."),
            "secret": _str("The withdrawal secret, as given to the victim."),
            "item": _int(
                "One item's number (as the status lists them); absent: the whole case.",
                **_INT32,
            ),
        },
        ["case_number", "secret"],
    ),
    "VictimWithdrawResponse": _object(
        {"case": _ref("Case"), "item": _ref("Item")},
        description="`case` when the whole case was withdrawn, `item` for one item.",
    ),
    "Features": _object(
        {"self_service": {"type": "boolean", "description": "`POST /api/v1/victim/cases` is on."}},
        ["self_service"],
    ),
    "Health": _object({"status": {"type": "string", "enum": ["SERVING"]}}, ["status"]),
    "OpenApi": {"type": "object", "description": "An OpenAPI 3 document."},
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "properties": {
            "type": _str("`urn:matcher:problem:<kind>`"),
            "title": _str(),
            "status": _int(minimum=400, maximum=599),
            "detail": _str("What went wrong, in words; never a hash value."),
            "code": _str("The gRPC status code name, e.g. `INVALID_ARGUMENT`."),
            "errors": {
                "type": "array",
                "description": "For 400: the fields at fault, as the request names them.",
                "items": _object(
                    {"field": _str("e.g. `queries[0].hashes[2].hex`"), "description": _str()},
                    ["field", "description"],
                ),
            },
            "retry_after": _int(
                "For 429 and 503: seconds to wait (also `Retry-After`).", minimum=1
            ),
        },
        "required": ["type", "title", "status", "detail"],
    },
}

QUERY_PARAMETERS: dict[str, dict[str, Any]] = {
    "page_size": {
        "description": "At most this many entries (default 100, at most 1000).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
    "page_token": {
        "description": "The `next_page_token` of the previous page.",
        "schema": {"type": "string"},
    },
    "organization": {
        "description": "Admins only: one organisation's items, `organizations/{id}`.",
        "schema": {"type": "string"},
    },
}
"""The query parameters routes take (``Route.query``)."""

_REASONS = {
    400: "The request is not valid (`errors` names the fields)",
    401: "No API key, or an unknown or revoked one",
    403: "The key's role may not do this, or the key is suspended",
    404: "Not found (for victims: a wrong case number or secret)",
    409: "Not possible in the current state (e.g. the case is withdrawn)",
    413: "The body is too large",
    415: "The body is not JSON",
    429: "Over a rate limit: wait `Retry-After` seconds",
    503: "Not available right now",
}


def _problem(description: str, *, retry: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }
    if retry:
        out["headers"] = {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
        }
    return out


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": route.description,
        "tags": [route.tag],
    }
    params = []
    if "{number}" in route.path:
        params.append(
            {
                "name": "number",
                "in": "path",
                "required": True,
                "description": "The case number, e.g. `K7QP-2MXR-9TDA`.",
                "schema": {"type": "string", "pattern": "^[^/]+$"},
            }
        )
    if "{item}" in route.path:
        params.append(
            {
                "name": "item",
                "in": "path",
                "required": True,
                "description": "The item's number within the case.",
                "schema": {"type": "integer", "minimum": 1},
            }
        )
    params += [{"name": name, "in": "query", **QUERY_PARAMETERS[name]} for name in route.query]
    if params:
        op["parameters"] = params
    if route.request:
        op["requestBody"] = {
            "required": route.operation_id != "createCase",
            "content": {"application/json": {"schema": _ref(route.request)}},
        }
    responses: dict[str, Any] = {}
    for status, schema in route.responses.items():
        if schema is None:
            responses[str(status)] = {"description": "Done (no body)."}
        else:
            responses[str(status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": _ref(schema)}},
            }
    statuses = set(route.errors)
    if route.request:
        statuses |= {400, 413, 415}
    if route.method == "POST" and route.path.startswith("/api/"):
        statuses.add(503)
    for status in sorted(statuses):
        responses[str(status)] = _problem(_REASONS[status], retry=status in (429, 503))
    responses["default"] = _problem("Another error")
    op["responses"] = responses
    op["security"] = [{"apiKey": []}] if route.auth else []
    return op


def document(routes: Iterable[Route]) -> dict[str, Any]:
    """The OpenAPI 3.0 document of ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "matcher HTTP API",
            "version": __version__,
            "description": (
                "JSON over HTTP beside the gRPC API (matcher.v1), with the same keys, roles, "
                "limits and errors: each request is one call to the gRPC service. Send "
                "`Authorization: Bearer <key>`; victims send their case number and secret in "
                "the body instead. Errors are problem details (RFC 9457). Only hashes are "
                "ever sent: images are hashed on the caller's device."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key made by `matcher keys create`.",
                }
            },
        },
    }
