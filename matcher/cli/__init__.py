"""The ``matcher`` command: a package of thin commands over the library.

One module per command group (``hash``, ``serve``, ``keys``, ``case``, ``enroll``, ``match``,
``scan``, ``victim``). Each command parses its arguments, opens one library object, calls it
and prints; a library error (``MatcherError``) becomes a one-line message and exit status 1
in one place (``_common.MatcherGroup``); bad usage exits 2. Every command's help ends with an
example, and a test checks that each one is in the README.

Each module imports only what it uses, and heavy libraries (gRPC, the index, tqdm) only inside
the commands that need them: ``matcher hash`` on one file starts in a fraction of the time the
service commands take.
"""

from __future__ import annotations

import click

from matcher import __version__
from matcher.cli._common import MatcherGroup
from matcher.cli.case import case_group
from matcher.cli.enroll import enroll_command
from matcher.cli.hash import hash_command
from matcher.cli.keys import keys_group
from matcher.cli.match import match_command
from matcher.cli.scan import scan_command
from matcher.cli.serve import serve_command
from matcher.cli.victim import withdraw_command

__all__ = ["main"]


@click.group(cls=MatcherGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="matcher")
def main() -> None:
    """matcher: find re-uploads of intimate images shared without consent, from hashes alone.

    Images are hashed on your own machine; only hashes ever leave it.

    \b
    Example:
      matcher hash ~/Pictures/to-protect
    """


for _command in (
    hash_command,
    serve_command,
    keys_group,
    case_group,
    enroll_command,
    match_command,
    scan_command,
    withdraw_command,
):
    main.add_command(_command)
