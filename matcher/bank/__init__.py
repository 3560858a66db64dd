"""The bank: the domain of matcher, split along its dependencies.

- ``Accounts`` (``matcher.bank.accounts``): organisations, API keys, authentication. Needs the
  store only, so ``matcher keys create`` never imports the index or compiles a kernel.
- ``IndexFollower`` (``matcher.bank.follower``): the one code path that changes the in-memory
  index: snapshot load, then catch-up from the store's change log (after every commit of this
  process, and later in a replica's follow loop).
- ``Bank`` (``matcher.bank.matching``): cases and items, enrollment, matching (one result per
  matched item), withdrawal, feedback, status, audit.

The names are loaded lazily, so importing ``Accounts`` does not import the index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matcher.bank.accounts import Accounts

if TYPE_CHECKING:
    from matcher.bank.follower import IndexFollower
    from matcher.bank.matching import Bank

__all__ = ["Accounts", "Bank", "IndexFollower"]


def __getattr__(name: str) -> Any:
    if name == "Bank":
        from matcher.bank.matching import Bank

        return Bank
    if name == "IndexFollower":
        from matcher.bank.follower import IndexFollower

        return IndexFollower
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
