"""Domain errors -> gRPC status codes, in one table, with rich details.

- ``InvalidInput`` -> ``INVALID_ARGUMENT`` with a ``google.rpc.BadRequest`` field violation;
- ``RateLimited`` -> ``RESOURCE_EXHAUSTED`` with ``google.rpc.RetryInfo``;
- anything unexpected -> ``INTERNAL`` with a fixed message: its text (which could hold anything)
  goes to the log, not to the caller.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from matcher.errors import (
    Conflict,
    InvalidInput,
    MatcherError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)

__all__ = ["code_of", "to_status"]

log = logging.getLogger("matcher.service")

# Most specific first: the first class that matches wins.
_CODES: list[tuple[type[MatcherError], grpc.StatusCode]] = [
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status code for an exception (``INTERNAL`` for anything not ours)."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def to_status(exc: BaseException) -> grpc.Status:
    """A ``grpc.Status`` (code, message, details) for an exception raised by a handler."""
    code = code_of(exc)
    message = str(exc) if code is not grpc.StatusCode.INTERNAL else "internal error"
    status = status_pb2.Status(code=code.value[0], message=message)
    if isinstance(exc, InvalidInput):
        detail = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.reason)
            ]
        )
        status.details.add().Pack(detail)
    elif isinstance(exc, RateLimited):
        delay = Duration()
        delay.FromMilliseconds(max(1, round(exc.retry_after * 1000)))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(status)
