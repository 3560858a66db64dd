"""Exceptions -> ``grpc.Status`` for the servicers, through the contract's one error table.

The table and the rich details (``ErrorInfo``, ``BadRequest`` field violations, ``RetryInfo``)
live in ``matcher.contract``, beside the SDK's reading of them, so both sides use one table.
Anything unexpected becomes ``INTERNAL`` with a fixed message: its text (which could hold
anything) goes to the log, not to the caller.
"""

from __future__ import annotations

import grpc
from grpc_status import rpc_status

from matcher.contract import code_of, status_of

__all__ = ["code_of", "to_status"]


def to_status(exc: BaseException) -> grpc.Status:
    """A ``grpc.Status`` (code, message, details) for an exception raised by a handler."""
    return rpc_status.to_status(status_of(exc))
