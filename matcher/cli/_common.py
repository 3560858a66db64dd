"""What the commands share: options, output writers, and the one place where a library error
becomes a one-line message and a non-zero exit.

Nothing heavy is imported here: this module is loaded by every command, including
``matcher hash`` on one file, whose start-up is measured (README, "Hashing speed").
"""

from __future__ import annotations

import csv
import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import click

from matcher.errors import Allowlisted, InvalidInput, MatcherError

if TYPE_CHECKING:
    from matcher.client import Client
    from matcher.hashing import FileHashes

__all__ = [
    "DEFAULT_DATA",
    "INPUT_FILE",
    "MatcherGroup",
    "Remote",
    "Writer",
    "data_options",
    "echo_json",
    "error_message",
    "hashed_files",
    "local_hashing_options",
    "program_name",
    "progress_enabled",
    "progress_option",
    "read_paths",
    "remote_options",
]

DEFAULT_DATA = "./matcher-data"

INPUT_FILE = click.Path(dir_okay=False, exists=True, allow_dash=True)
"""A file the command reads (checked before the command runs), or "-" for standard input."""

F = Callable[..., Any]


def error_message(exc: MatcherError) -> str:
    """The one line a library error prints as: its message, and the field it is about."""
    field = exc.field if isinstance(exc, InvalidInput | Allowlisted) else ""
    where = f" ({field})" if field else ""
    return f"matcher: {exc}{where}"


class MatcherGroup(click.Group):
    """A command group that turns every library error of its commands (``MatcherError``) into
    one line on stderr and exit status 1, so commands never catch errors themselves.

    Bad usage stays Click's (exit status 2); anything else is a bug and keeps its traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MatcherError as exc:
            click.echo(error_message(exc), err=True)
            ctx.exit(1)


def program_name() -> str:
    """How to run matcher again from this shell, for hints: ``matcher`` when that is on the
    PATH, else the path this process was started by (``.venv/bin/matcher`` after ``make run``,
    whose virtual environment is not activated)."""
    import os
    import shutil

    started = sys.argv[0] if sys.argv else ""
    if os.path.basename(started) != "matcher" or os.sep not in started:
        return "matcher"
    on_path = shutil.which("matcher")
    if on_path and os.path.realpath(on_path) == os.path.realpath(started):
        return "matcher"
    return started


def progress_enabled(flag: bool | None) -> bool:
    """A bar on a terminal, nothing in a pipe or a log file, unless the user says otherwise."""
    return sys.stderr.isatty() if flag is None else flag


def progress_option(fn: F) -> F:
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Force the progress bar on or off (default: on when stderr is a terminal).",
    )(fn)


def read_paths(paths: Iterable[str]) -> Iterator[str]:
    """Paths as given, with "-" replaced by the lines of standard input (one path a line)."""
    for p in paths:
        if p == "-":
            for line in sys.stdin:
                line = line.rstrip("\r\n")
                if line:
                    yield line
        else:
            yield p


def hashed_files(
    paths: tuple[str, ...],
    hashes_file: str | None,
    *,
    dihedral: bool = False,
    profile: str = "plain",
    jobs: int | None = None,
) -> Iterator[FileHashes]:
    """The files a command works on: hashed here from ``paths`` (files, folders, "-"), or read
    from ``matcher hash`` lines (``--hashes FILE``, "-" for standard input) by the one parser
    of that format, ``matcher.hashing.read_hash_lines``."""
    import os

    if hashes_file is not None:
        if paths:
            raise click.UsageError("give image paths or --hashes, not both")
        from matcher.hashing.files import read_hash_lines

        if hashes_file == "-":
            yield from read_hash_lines(sys.stdin, "-")
            return
        with open(hashes_file, encoding="utf-8") as lines:
            yield from read_hash_lines(lines, hashes_file)
        return
    if not paths:
        raise click.UsageError("give image paths (or --hashes FILE)")
    from matcher.hashing.files import hash_files

    yield from hash_files(
        read_paths(paths), dihedral=dihedral, profile=profile, jobs=jobs or os.cpu_count() or 1
    )


def echo_json(record: dict[str, Any]) -> None:
    click.echo(json.dumps(record, default=str))


class Writer:
    """Writes records as JSON Lines or CSV, flushing each line so a pipe sees progress."""

    def __init__(self, out: IO[str], fmt: str, columns: list[str]) -> None:
        self.out = out
        self.fmt = fmt
        self.columns = columns
        self._csv: csv.DictWriter[str] | None = None
        if fmt == "csv":
            self._csv = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
            self._csv.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        if self._csv is not None:
            flat = dict(record)
            for name, value in flat.pop("pdq_dihedral", {}).items():
                flat[f"pdq_{name}"] = value
            if "pdq_views" in flat:
                # A profile's views vary in number (flat crops are dropped): one cell of
                # space-separated name=hex pairs keeps the CSV rectangular.
                flat["pdq_views"] = " ".join(f"{k}={v}" for k, v in flat["pdq_views"].items())
            self._csv.writerow(flat)
        else:
            self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.out.flush()


def local_hashing_options(fn: F) -> F:
    """-j, --max-pixels and --all-files: how files are hashed here (hash and scan share them)."""
    fn = click.option(
        "--all-files", is_flag=True, help="In folders, try every file, not only image/video names."
    )(fn)
    fn = click.option(
        "--max-pixels",
        type=click.IntRange(min=1),
        default=None,
        help="Refuse images with more pixels than this (decompression-bomb guard; default 150M).",
    )(fn)
    return click.option(
        "-j",
        "--jobs",
        type=click.IntRange(min=1),
        default=None,
        help="Hash in N processes (default: number of CPUs).",
    )(fn)


def data_options(fn: F) -> F:
    """--data and --store: where the commands that open the store directly find it."""
    fn = click.option(
        "--store",
        "store_url",
        metavar="URL",
        envvar="MATCHER_STORE",
        help="The store to open: a folder, sqlite:///abs/path or postgresql://... "
        "(default: SQLite in --data; or MATCHER_STORE).",
    )(fn)
    return click.option(
        "--data",
        type=click.Path(file_okay=False),
        default=DEFAULT_DATA,
        show_default=True,
        envvar="MATCHER_DATA",
        help="Data folder of the embedded SQLite store (or MATCHER_DATA).",
    )(fn)


@dataclass(frozen=True, slots=True)
class Remote:
    """How to reach a running service: the options every client command shares."""

    server: str
    api_key: str | None = field(repr=False)
    timeout: float
    tls_ca: str | None

    def client(self) -> Client:
        from pathlib import Path

        from matcher.client import Client

        roots = Path(self.tls_ca).read_bytes() if self.tls_ca else None
        return Client(self.server, self.api_key, timeout=self.timeout, root_certificates=roots)

    def call(self, fn: Callable[[Client], Any]) -> Any:
        """``fn(client)`` on a fresh connection, closed afterwards."""
        with self.client() as client:
            return fn(client)


def remote_options(fn: F | None = None, *, api_key: bool = True) -> Any:
    """--server, --api-key, --timeout and --tls-ca, handed to the command as one ``remote``
    (``api_key=False``: no --api-key, for the victim's commands)."""
    with_key = api_key

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(
            *args: Any,
            server: str,
            timeout: float,
            tls_ca: str | None,
            api_key: str | None = None,
            **kwargs: Any,
        ) -> Any:
            return fn(*args, remote=Remote(server, api_key, timeout, tls_ca), **kwargs)

        wrapper = click.option(
            "--tls-ca",
            type=click.Path(dir_okay=False, exists=True),
            help="Connect with TLS, trusting this CA certificate (PEM).",
        )(wrapper)
        wrapper = click.option(
            "--timeout", type=float, default=30.0, show_default=True, help="Deadline per call (s)."
        )(wrapper)
        if with_key:
            wrapper = click.option(
                "--api-key",
                envvar="MATCHER_API_KEY",
                help="Your API key (better: MATCHER_API_KEY).",
            )(wrapper)
        return click.option(
            "--server",
            default="127.0.0.1:50051",
            show_default=True,
            envvar="MATCHER_SERVER",
            help="The service's host:port (or MATCHER_SERVER).",
        )(wrapper)

    return decorate(fn) if fn is not None else decorate
