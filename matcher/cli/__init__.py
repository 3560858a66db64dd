"""The ``matcher`` command: a package of thin commands over the library.

One module per command group (``hash``, ``serve`` and ``health``, ``keys``, ``case``,
``enroll``, ``match``, ``review``, ``scan``, ``victim``, ``backup`` with ``restore``,
``rotate-key`` and ``ledger``).
Each command parses its arguments, opens one library object, calls it and prints; a library
error (``MatcherError``) becomes a one-line message and exit status 1 in one place
(``_common.MatcherGroup``); bad usage exits 2. Every command's help ends with an example, and a
test checks that each one is in the README.

Each module imports only what it uses, and heavy libraries (gRPC, the index, tqdm) only inside
the commands that need them: ``matcher hash`` on one file starts in a fraction of the time the
service commands take.
"""

from __future__ import annotations

import os

# No command of matcher uses BLAS, but OpenBLAS (loaded with numpy) starts a spinning thread per
# core at import: ~0.1 CPU-s per process, a third of `matcher hash`'s start-up on one file.
# Set before anything imports numpy; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click

from matcher import __version__
from matcher.cli._common import MatcherGroup

__all__ = ["main"]

# Command name -> "module:object". A command's module is imported only when it runs (or when
# --help lists it), so `matcher hash` never builds the options of `scan` or `serve`.
_COMMANDS = {
    "allowlist": "matcher.cli.allowlist:allowlist_group",
    "backup": "matcher.cli.backup:backup_command",
    "case": "matcher.cli.case:case_group",
    "enroll": "matcher.cli.enroll:enroll_command",
    "hash": "matcher.cli.hash:hash_command",
    "health": "matcher.cli.serve:health_command",
    "keys": "matcher.cli.keys:keys_group",
    "ledger": "matcher.cli.backup:ledger_group",
    "match": "matcher.cli.match:match_command",
    "restore": "matcher.cli.backup:restore_command",
    "review": "matcher.cli.review:review_group",
    "rotate-key": "matcher.cli.backup:rotate_key_command",
    "scan": "matcher.cli.scan:scan_command",
    "serve": "matcher.cli.serve:serve_command",
    "status": "matcher.cli.victim:status_command",
    "withdraw": "matcher.cli.victim:withdraw_command",
}


class _LazyGroup(MatcherGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = _COMMANDS.get(name)
        if target is None:
            return None
        import importlib

        module, _, attr = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="matcher")
def main() -> None:
    """matcher: find re-uploads of intimate images shared without consent, from hashes alone.

    Images are hashed on your own machine; only hashes ever leave it.

    \b
    Example:
      matcher hash ~/Pictures/to-protect
    """
