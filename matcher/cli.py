"""The ``matcher`` command: a thin layer over the library.

Each command parses its arguments, calls one library function, and turns a library exception into
a one-line message with a non-zero exit status (1 for a failure of the work, 2 for bad usage).
Every command's help ends with an example; a test checks that each one is in the README.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import click

from matcher import __version__
from matcher.errors import InvalidInput, MatcherError

__all__ = ["main"]


def _progress_enabled(flag: bool | None) -> bool:
    # A bar on a terminal, nothing in a pipe or a log file, unless the user says otherwise.
    return sys.stderr.isatty() if flag is None else flag


def _read_paths(paths: Iterable[str]) -> Iterator[str]:
    for p in paths:
        if p == "-":
            for line in sys.stdin:
                line = line.rstrip("\r\n")
                if line:
                    yield line
        else:
            yield p


class _Writer:
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


def _local_hashing_options(fn: Any) -> Any:
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="matcher")
def main() -> None:
    """matcher: find re-uploads of intimate images shared without consent, from hashes alone.

    Images are hashed on your own machine; only hashes ever leave it.

    \b
    Example:
      matcher hash ~/Pictures/to-protect
    """


@main.command("hash")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="Output format: one JSON object per line, or CSV with a header.",
)
@click.option(
    "--signals",
    default="pdq,phash,md5,sha256",
    show_default=True,
    help="Comma-separated signals to compute.",
)
@click.option(
    "--dihedral", is_flag=True, help="Also output the PDQ hashes of the 8 rotations/flips."
)
@click.option(
    "--profile",
    type=click.Choice(["plain", "enroll", "query"]),
    default="plain",
    show_default=True,
    help="Also output named PDQ views (pdq_views) that survive crops, flips, borders and "
    "screenshots: 'enroll' for images to protect, 'query' for uploads to check.",
)
@_local_hashing_options
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8", lazy=False),
    default="-",
    help="Write here instead of standard output.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Force the progress bar on or off (default: on when stderr is a terminal).",
)
def hash_command(
    paths: tuple[str, ...],
    fmt: str,
    signals: str,
    dihedral: bool,
    profile: str,
    jobs: int | None,
    max_pixels: int | None,
    all_files: bool,
    output: IO[str],
    progress: bool | None,
) -> None:
    """Hash image files (and folders, recursively) on this machine.

    Writes one line per file: its path, each signal's hex, the PDQ quality (0-100) and, with
    --dihedral, the PDQ hashes of its rotations and flips. With --profile enroll or query, it
    also writes "pdq_views": named PDQ hashes of crops, rotations, trimmed borders and tiles
    (see README, "Detection profiles"). A file that cannot be hashed gets a
    line with an "error" field; the others go on, and the exit status is 1 at the end. Use "-"
    to read paths from standard input, one per line. Videos get MD5 and SHA-256 only.

    \b
    Examples:
      matcher hash photo.jpg
      matcher hash --dihedral -j 4 ~/Pictures > hashes.jsonl
      matcher hash --profile enroll ~/Pictures/to-protect > enroll.jsonl
      find /data -name '*.jpg' | matcher hash --format csv - > hashes.csv
    """
    from tqdm import tqdm

    from matcher.hashing import DEFAULT_MAX_PIXELS, DIHEDRAL_NAMES, check_signals, hash_files

    try:
        wanted = check_signals(signals.split(","))
    except MatcherError as exc:
        raise click.BadParameter(str(exc), param_hint="--signals") from None
    columns = ["path"]
    for name in wanted:
        columns.append(name)
        if name == "pdq":
            columns.append("pdq_quality")
    if dihedral:
        columns += [f"pdq_{n}" for n in DIHEDRAL_NAMES if n != "original"]
    if profile != "plain":
        columns.append("pdq_views")
    columns += ["error", "error_kind"]
    writer = _Writer(output, fmt, columns)

    show = _progress_enabled(progress)
    todo: Iterable[str] = _read_paths(paths)
    total = None
    if show:
        # Knowing the total gives the bar a rate and an ETA; only worth the memory on a terminal.
        from matcher.hashing import iter_files

        todo = list(iter_files(todo, all_files=all_files))
        total = len(todo)
    results = hash_files(
        todo,
        signals=wanted,
        dihedral=dihedral,
        profile=profile,
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
        jobs=jobs or os.cpu_count() or 1,
        all_files=all_files,
    )
    failed = done = 0
    with tqdm(
        total=total, disable=not show, unit="img", file=sys.stderr, dynamic_ncols=True
    ) as bar:
        for result in results:
            writer.write(result.to_record())
            done += 1
            failed += not result.ok
            bar.update()
    if failed:
        click.echo(f"matcher hash: {failed} of {done} files could not be hashed", err=True)
        sys.exit(1)
    if done == 0:
        click.echo("matcher hash: no files found", err=True)
        sys.exit(1)


# -- the service and its operators


def _data_option(fn: Any) -> Any:
    return click.option(
        "--data",
        type=click.Path(file_okay=False),
        default="./matcher-data",
        show_default=True,
        envvar="MATCHER_DATA",
        help="Data folder of the embedded SQLite store.",
    )(fn)


def _fail(exc: MatcherError) -> None:
    """Turn a library error into a one-line message and exit status 1."""
    where = f" ({exc.field})" if isinstance(exc, InvalidInput) and exc.field else ""
    click.echo(f"matcher: {exc}{where}", err=True)
    sys.exit(1)


def _echo_json(record: dict[str, Any]) -> None:
    click.echo(json.dumps(record, default=str))


@main.command("serve")
@_data_option
@click.option("--address", default="127.0.0.1:50051", show_default=True, help="gRPC host:port.")
@click.option(
    "--metrics-address",
    default="127.0.0.1:9464",
    show_default=True,
    help="host:port for Prometheus /metrics; 'off' to disable.",
)
@click.option("--rate", type=float, default=20_000, show_default=True, help="Queries/s per key.")
@click.option("--burst", type=float, default=40_000, show_default=True, help="Burst per key.")
@click.option(
    "--max-batch",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Most queries per Match request or stream message.",
)
@click.option(
    "--grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds in-flight calls get to finish on SIGTERM/SIGINT.",
)
@click.option(
    "--require-deadline/--no-require-deadline",
    default=True,
    show_default=True,
    help="Refuse Match calls that set no deadline.",
)
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False, exists=True), help="Server certificate (PEM)."
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, exists=True), help="Server private key (PEM)."
)
@click.option(
    "--tls-client-ca",
    type=click.Path(dir_okay=False, exists=True),
    help="Require client certificates signed by this CA (mutual TLS).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text or JSON lines.",
)
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING...")
def serve_command(
    data: str,
    address: str,
    metrics_address: str,
    rate: float,
    burst: float,
    max_batch: int,
    grace: float,
    require_deadline: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    log_format: str,
    log_level: str,
) -> None:
    """Run the matcher gRPC service on the bank in a data folder.

    The port opens at once; health reports NOT_SERVING until the index is loaded from the store,
    then SERVING. SIGTERM or SIGINT stops it gracefully (exit status 0).

    \b
    Examples:
      matcher serve --data ./matcher-data
      matcher serve --address 0.0.0.0:50051 --log-format json --tls-cert s.pem --tls-key s.key
    """
    import asyncio
    from pathlib import Path

    from matcher.bank import Bank
    from matcher.principal import Principal
    from matcher.service import ServerConfig, ServiceLimits, TlsConfig, configure_logging, serve

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    configure_logging(json_lines=log_format == "json", level=log_level)
    tls = (
        TlsConfig(
            cert=Path(tls_cert),
            key=Path(tls_key),
            client_ca=Path(tls_client_ca) if tls_client_ca else None,
        )
        if tls_cert and tls_key
        else None
    )
    config = ServerConfig(
        address=address,
        metrics_address=None if metrics_address == "off" else metrics_address,
        limits=ServiceLimits(max_batch=max_batch, require_deadline=require_deadline),
        rate=rate,
        burst=burst,
        grace_seconds=grace,
        tls=tls,
    )
    try:
        bank = Bank.open(data, load=False)
    except MatcherError as exc:
        _fail(exc)
    if not any(k.active for k in bank.list_api_keys(by=Principal.operator("cli"))):
        click.echo(
            "matcher: no API keys yet. Create a first one (shown once) with:\n"
            f"  matcher keys create --role admin --name ops --data {data}",
            err=True,
        )
    try:
        asyncio.run(serve(bank, config))
    except OSError as exc:
        click.echo(f"matcher: cannot serve on {address}: {exc}", err=True)
        sys.exit(1)
    finally:
        bank.close()


@main.group("keys")
def keys_group() -> None:
    """Create, list and revoke API keys, directly in the data folder (operators).

    \b
    Example:
      matcher keys create --role partner --name acme
    """


def _local_bank(data: str) -> Any:
    from matcher.bank import Bank

    return Bank.open(data, load=False, progress=False)


@keys_group.command("create")
@_data_option
@click.option(
    "--role",
    type=click.Choice(["partner", "practitioner", "admin"]),
    required=True,
    help="What the key may do.",
)
@click.option("--name", required=True, help="A label for people, e.g. the partner's name.")
@click.option("--org", help="Organisation name (required for practitioners; created if new).")
def keys_create(data: str, role: str, name: str, org: str | None) -> None:
    """Create an API key and print it once: only its hash is stored.

    The key alone goes to standard output (so it can be captured); the advice goes to stderr.

    \b
    Examples:
      matcher keys create --role admin --name ops
      matcher keys create --role practitioner --name helpline-a --org "Helpline A"
      KEY=$(matcher keys create --role partner --name acme)
    """
    from matcher.principal import Principal, Role

    me = Principal.operator("cli")
    with _local_bank(data) as bank:
        try:
            org_id = None
            if org:
                found = [o for o in bank.list_organisations(by=me) if o.name == org.strip()]
                org_id = found[0].id if found else bank.create_organisation(org, by=me).id
            new = bank.create_api_key(name, Role(role), org_id=org_id, by=me)
        except MatcherError as exc:
            _fail(exc)
    click.echo(new.key)
    click.echo(
        f"API key {new.record.id} ({role}, {name}) created. It is shown once: store it now, "
        "and send it as 'authorization: Bearer <key>' (or MATCHER_API_KEY for the CLI).",
        err=True,
    )


@keys_group.command("list")
@_data_option
def keys_list(data: str) -> None:
    """List API keys as JSON lines (never the keys themselves).

    \b
    Example:
      matcher keys list --data ./matcher-data
    """
    from matcher.principal import Principal

    with _local_bank(data) as bank:
        for k in bank.list_api_keys(by=Principal.operator("cli")):
            _echo_json(
                {
                    "id": k.id,
                    "name": k.name,
                    "role": str(k.role),
                    "organisation": k.org_id,
                    "prefix": k.prefix,
                    "created": k.created_at.isoformat(),
                    "revoked": k.revoked_at.isoformat() if k.revoked_at else None,
                }
            )


@keys_group.command("revoke")
@_data_option
@click.argument("key_id", type=int)
def keys_revoke(data: str, key_id: int) -> None:
    """Revoke an API key by id; a running server refuses it within seconds.

    \b
    Example:
      matcher keys revoke 3
    """
    from matcher.principal import Principal

    with _local_bank(data) as bank:
        try:
            bank.revoke_api_key(key_id, by=Principal.operator("cli"))
        except MatcherError as exc:
            _fail(exc)
    click.echo(f"API key {key_id} revoked", err=True)


# -- clients of a running service


def _remote_options(fn: Any) -> Any:
    fn = click.option(
        "--server",
        default="127.0.0.1:50051",
        show_default=True,
        envvar="MATCHER_SERVER",
        help="The service's host:port (or MATCHER_SERVER).",
    )(fn)
    fn = click.option(
        "--api-key", envvar="MATCHER_API_KEY", help="Your API key (better: MATCHER_API_KEY)."
    )(fn)
    fn = click.option(
        "--timeout", type=float, default=30.0, show_default=True, help="Deadline per call (s)."
    )(fn)
    fn = click.option(
        "--tls-ca",
        type=click.Path(dir_okay=False, exists=True),
        help="Connect with TLS, trusting this CA certificate (PEM).",
    )(fn)
    return fn


def _client(server: str, api_key: str | None, timeout: float, tls_ca: str | None) -> Any:
    from pathlib import Path

    from matcher.client import Client

    roots = Path(tls_ca).read_bytes() if tls_ca else None
    return Client(server, api_key, timeout=timeout, root_certificates=roots)


def _remote(server: str, api_key: str | None, timeout: float, tls_ca: str | None, call: Any) -> Any:
    """Run ``call(client)`` against the service; a library error becomes a one-line exit."""
    with _client(server, api_key, timeout, tls_ca) as client:
        try:
            return call(client)
        except MatcherError as exc:
            _fail(exc)


def _hash_lines(path: str) -> Iterator[dict[str, Any]]:
    """Records from `matcher hash` JSON Lines output ('-' for stdin)."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    with stream:
        for n, line in enumerate(stream, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    raise click.UsageError(f"{path}:{n}: not a JSON line") from None


def _record_hashes(record: dict[str, Any], *, variants: bool) -> list[Any]:
    """The Hash objects of one `matcher hash` record (PDQ variants too when asked)."""
    from matcher.signals import Hash

    hashes = []
    for name in ("pdq", "phash", "md5", "sha256"):
        if record.get(name):
            quality = record.get("pdq_quality") if name == "pdq" else None
            hashes.append(Hash.from_hex(name, record[name], quality=quality))
    if variants:
        for value in (record.get("pdq_dihedral") or {}).values():
            hashes.append(Hash.from_hex("pdq", value, quality=record.get("pdq_quality")))
    # A profile's views (kept only at or above the quality floor when hashed).
    for value in (record.get("pdq_views") or {}).values():
        hashes.append(Hash.from_hex("pdq", value, quality=record.get("pdq_quality")))
    return hashes


def _records(
    paths: tuple[str, ...], hashes_file: str | None, *, dihedral: bool, profile: str = "plain"
) -> Iterator[dict]:
    if hashes_file:
        if paths:
            raise click.UsageError("give image paths or --hashes, not both")
        yield from _hash_lines(hashes_file)
        return
    if not paths:
        raise click.UsageError("give image paths (or --hashes FILE)")
    from matcher.hashing import hash_files

    jobs = os.cpu_count() or 1
    for result in hash_files(_read_paths(paths), dihedral=dihedral, jobs=jobs, profile=profile):
        yield result.to_record()


@main.command("enroll")
@_remote_options
@click.argument("case")
@click.argument("paths", nargs=-1)
@click.option(
    "--hashes", "hashes_file", help="Enroll the JSON lines of `matcher hash` ('-': stdin)."
)
@click.option(
    "--profile",
    type=click.Choice(["plain", "enroll"]),
    default="plain",
    show_default=True,
    help="enroll: also the detection views of each image (crops, turns; ~223 PDQ hashes).",
)
def enroll_command(
    server: str,
    api_key: str | None,
    timeout: float,
    tls_ca: str | None,
    case: str,
    paths: tuple[str, ...],
    hashes_file: str | None,
    profile: str,
) -> None:
    """Hash images on this machine and enroll only their hashes into a case (practitioners).

    Each image gives its PDQ hash (when its quality is at least 50), pHash, MD5 and SHA-256.
    Nothing is sent if any file cannot be hashed: fix or remove it and run again (re-sending is
    safe: hashes already in the case are skipped).

    \b
    Examples:
      matcher enroll K7QP-2MXR-9TDA photo1.jpg photo2.heic
      matcher hash ~/to-protect > h.jsonl && matcher enroll K7QP-2MXR-9TDA --hashes h.jsonl
    """
    from matcher.signals import PDQ

    hashes, failed, low = [], 0, 0
    for record in _records(paths, hashes_file, dihedral=False, profile=profile):
        if record.get("error"):
            failed += 1
            click.echo(f"matcher: {record['path']}: {record['error']}", err=True)
            continue
        quality = record.get("pdq_quality")
        if record.get("pdq") and quality is not None and quality < (PDQ.quality_floor or 0):
            # A flat image's PDQ collides with others: enroll its other signals only.
            low += 1
            record = {k: v for k, v in record.items() if k != "pdq"}
        try:
            hashes += _record_hashes(record, variants=False)
        except MatcherError as exc:
            _fail(exc)
    if failed:
        click.echo(f"matcher: {failed} files could not be hashed; nothing was enrolled", err=True)
        sys.exit(1)
    if low:
        click.echo(
            f"matcher: {low} images too flat for PDQ; their other hashes are enrolled", err=True
        )
    if not hashes:
        raise click.UsageError("no hashes to enroll")
    with _client(server, api_key, timeout, tls_ca) as client:
        try:
            for start in range(0, len(hashes), 1000):
                result = client.add_hashes(case, hashes[start : start + 1000])
        except MatcherError as exc:
            _fail(exc)
    _echo_json({"case": case, "hash_count": result.hash_count, "sent": len(hashes)})


@main.command("match")
@_remote_options
@click.argument("paths", nargs=-1)
@click.option(
    "--hashes", "hashes_file", help="Match the JSON lines of `matcher hash` ('-': stdin)."
)
@click.option("--max-distance", type=int, help="A stricter match distance for every hash.")
@click.option(
    "--profile",
    type=click.Choice(["plain", "query"]),
    default="plain",
    show_default=True,
    help="query: also ask about each image's detection views (trimmed borders, tiles; ~25).",
)
def match_command(
    server: str,
    api_key: str | None,
    timeout: float,
    tls_ca: str | None,
    paths: tuple[str, ...],
    hashes_file: str | None,
    max_distance: int | None,
    profile: str,
) -> None:
    """Hash images on this machine and ask the service whether they match (partners).

    Each image is sent as its PDQ hash with its 8 rotations and flips, its pHash and its file
    digests. Writes one JSON line per image: its path and its matches (opaque ids, signal,
    distance), best first.

    \b
    Examples:
      matcher match upload.jpg
      matcher hash --dihedral uploads/ | matcher match --hashes -
    """
    from matcher.client import Query

    records = list(_records(paths, hashes_file, dihedral=True, profile=profile))
    with _client(server, api_key, timeout, tls_ca) as client:
        batch: list[tuple[dict, Any]] = []

        def flush() -> None:
            results = client.match([q for _, q in batch])
            for (record, _), result in zip(batch, results, strict=True):
                _echo_json({"path": record.get("path"), "matches": [
                    {"match_id": m.match_id, "signal": m.signal, "distance": m.distance}
                    for m in result.matches]})  # fmt: skip
            batch.clear()

        try:
            for record in records:
                if record.get("error"):
                    _echo_json({"path": record.get("path"), "error": record["error"]})
                    continue
                batch.append((record, Query(_record_hashes(record, variants=True), max_distance)))
                if len(batch) == 500:
                    flush()
            if batch:
                flush()
        except MatcherError as exc:
            _fail(exc)


def _interruptible(
    work: Callable[[], Any], on_interrupt: Callable[[], None], grace: float = 15.0
) -> Any:
    """Run ``work`` in a thread and wait for it, so that Ctrl-C (or SIGTERM) lands here, in the
    main thread, never half-way through one of the work's steps (a commit to the report).

    On a signal: call ``on_interrupt`` (which makes the work wind down), give the work
    ``grace`` seconds to finish (a second Ctrl-C cuts that short), then raise
    ``KeyboardInterrupt(signal number, whether the work finished)``.
    """
    import contextlib
    import threading

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    thread = threading.Thread(target=target, name="matcher-work", daemon=True)
    try:
        thread.start()
        try:
            while thread.is_alive():
                thread.join(0.2)
        except KeyboardInterrupt as exc:
            signum = exc.args[0] if exc.args else signal.SIGINT
            on_interrupt()
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop waiting
                thread.join(grace)
            raise KeyboardInterrupt(signum, not thread.is_alive()) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _count_in_background(count: Callable[[], int], bar: Any) -> None:
    """Set the bar's total once ``count`` returns: the bar gets an ETA without the file list
    ever being held in memory (the count walks the inputs a second time, in a thread)."""
    import threading

    def run() -> None:
        try:
            bar.total = count()
            bar.refresh()
        except Exception:  # a count is a nicety: never let it disturb the scan
            pass

    threading.Thread(target=run, name="matcher-scan-count", daemon=True).start()


@main.command("scan")
@_remote_options
@click.argument("paths", nargs=-1)
@click.option(
    "--files-from",
    type=click.File("r", encoding="utf-8"),
    help="Also scan the paths or URLs listed in FILE, one per line ('-': standard input).",
)
@click.option(
    "--hashes",
    "hashes_file",
    type=click.File("r", encoding="utf-8"),
    help="Scan the JSON lines of `matcher hash` instead of images ('-': standard input).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the report to FILE (resumable) instead of standard output.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="Report format: JSON Lines, or CSV with a header.",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False),
    help="The state file that makes the job resumable (default: OUTPUT.state).",
)
@click.option("--restart", is_flag=True, help="Discard an earlier run's report and state.")
@click.option(
    "--clean-rows", is_flag=True, help="Also write a row for each file that matched nothing."
)
@click.option(
    "--signals",
    default="pdq,phash,md5,sha256",
    show_default=True,
    help="Comma-separated signals to compute and send.",
)
@click.option(
    "--dihedral/--no-dihedral",
    default=True,
    show_default=True,
    help="Also send the PDQ hashes of the 7 other rotations and flips (finds mirrored copies).",
)
@click.option("--max-distance", type=int, help="A stricter match distance for every hash.")
@click.option(
    "--profile",
    type=click.Choice(["plain", "query"]),
    default="plain",
    show_default=True,
    help="query: also ask about each image's detection views (trimmed borders, tiles; ~25).",
)
@_local_hashing_options
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    default=256,
    show_default=True,
    help="Images per StreamMatch message.",
)
@click.option(
    "--dask",
    "dask_address",
    metavar="ADDRESS",
    help="Hash and match on the Dask cluster with this scheduler (e.g. tcp://10.0.0.5:8786).",
)
@click.option(
    "--partition-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="With --dask: files per task.",
)
@click.option(
    "--summary-json",
    type=click.File("w", encoding="utf-8"),
    help="Also write the summary as one JSON object to FILE ('-': standard output).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Force the progress bar on or off (default: on when stderr is a terminal).",
)
def scan_command(
    server: str,
    api_key: str | None,
    timeout: float,
    tls_ca: str | None,
    paths: tuple[str, ...],
    files_from: IO[str] | None,
    hashes_file: IO[str] | None,
    output: str | None,
    fmt: str,
    state: str | None,
    restart: bool,
    clean_rows: bool,
    signals: str,
    dihedral: bool,
    max_distance: int | None,
    profile: str,
    jobs: int | None,
    max_pixels: int | None,
    all_files: bool,
    batch_size: int,
    dask_address: str | None,
    partition_size: int,
    summary_json: IO[str] | None,
    progress: bool | None,
) -> None:
    """Scan a back catalogue: hash images where they live, ask the service, report matches.

    PATHS are files, folders (recursive), fsspec URLs (file://, s3://... with the fsspec
    backend installed) or "-" (paths from standard input); --files-from reads a listing;
    --hashes takes `matcher hash` output instead. Only hashes are sent. The report has one row
    per match (path, match_id, signal, distance) and one per file that could not be hashed
    (error); the summary goes to stderr. With -o, the job is resumable: after Ctrl-C or a
    crash, run the same command again and it continues where it stopped, with no file
    reported twice and none skipped.

    \b
    Examples:
      matcher scan -o report.jsonl /data/photos
      find /data -name '*.jpg' | matcher scan -j 8 -o report.csv --format csv -
      matcher scan --dask tcp://10.0.0.5:8786 -o report.jsonl s3://bucket/uploads/
      matcher hash uploads/ > h.jsonl && matcher scan --hashes h.jsonl -o report.jsonl
    """
    import itertools

    from tqdm import tqdm

    from matcher.hashing import DEFAULT_MAX_PIXELS, check_signals
    from matcher.scan import (
        HashOptions,
        Journal,
        RetryPolicy,
        Service,
        iter_inputs,
        read_hash_records,
        read_lines,
        scan,
        scan_dask,
    )

    try:
        wanted = tuple(check_signals(signals.split(",")))
    except MatcherError as exc:
        raise click.BadParameter(str(exc), param_hint="--signals") from None
    if hashes_file is not None and (paths or files_from is not None):
        raise click.UsageError("give image paths (or --files-from) or --hashes, not both")
    if hashes_file is None and not paths and files_from is None:
        raise click.UsageError("give image paths, --files-from FILE or --hashes FILE")
    if hashes_file is not None and dask_address:
        raise click.UsageError("--hashes has nothing to hash: run it without --dask")
    if state and not output:
        raise click.UsageError("--state needs -o/--output: only a report file can be resumed")
    options = HashOptions(
        signals=wanted,
        dihedral=dihedral,
        max_distance=max_distance,
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
        profile=profile,
    )
    # What the job computes: a later run continues it only if all of this is the same.
    job = {
        "paths": list(paths),
        "files_from": getattr(files_from, "name", None),
        "hashes": getattr(hashes_file, "name", None),
        "signals": list(wanted),
        "dihedral": dihedral,
        "max_distance": max_distance,
        "profile": profile,
        "max_pixels": options.max_pixels,
        "all_files": all_files,
        "clean_rows": clean_rows,
    }
    try:
        journal = Journal(output or sys.stdout, fmt=fmt, job=job, state=state, restart=restart)
    except MatcherError as exc:
        _fail(exc)

    def inputs() -> Iterator[str]:
        listed = itertools.chain(
            _read_paths(paths), read_lines(files_from) if files_from is not None else ()
        )
        return iter_inputs(listed, all_files=all_files)

    show = _progress_enabled(progress)
    bar = tqdm(
        disable=not show,
        unit="img",
        file=sys.stderr,
        dynamic_ncols=True,
        initial=journal.totals.scanned,
    )
    # Standard input can be read once only: no total (and no ETA) for "-".
    countable = "-" not in paths and (files_from is None or files_from.name != "-")
    if show and hashes_file is None and countable:
        count_files = files_from.name if files_from is not None else None

        def count() -> int:
            n = sum(1 for _ in iter_inputs(paths, all_files=all_files))
            if count_files:
                with open(count_files, encoding="utf-8") as listing:
                    n += sum(1 for _ in iter_inputs(read_lines(listing), all_files=all_files))
            return n

        _count_in_background(count, bar)

    def retried(exc: Exception, wait: float) -> None:
        bar.clear()
        click.echo(f"matcher scan: {exc}; retrying in {wait:.1f} s", err=True)

    retry = RetryPolicy()

    def run() -> Any:
        if dask_address:
            try:
                from distributed import Client as DaskClient
            except ImportError:
                raise click.UsageError("--dask needs Dask: pip install 'matcher[dask]'") from None
            from pathlib import Path

            roots = Path(tls_ca).read_bytes() if tls_ca else None
            try:
                with DaskClient(dask_address, timeout=timeout) as dask_client:
                    return scan_dask(
                        dask_client,
                        inputs(),
                        Service(server, api_key, roots),
                        journal,
                        options=options,
                        partition_size=partition_size,
                        batch_size=batch_size,
                        clean_rows=clean_rows,
                        retry=retry,
                        on_commit=bar.update,
                    )
            except MatcherError:
                raise
            except Exception as exc:
                # The cluster's own failures (scheduler unreachable, a task that killed its
                # workers too often): one line, as for any other stop.
                raise MatcherError(f"the Dask job failed: {type(exc).__name__}: {exc}") from exc
        with _client(server, api_key, timeout, tls_ca) as client:
            return scan(
                None if hashes_file is not None else inputs(),
                client,
                journal,
                options=options,
                hashed=read_hash_records(hashes_file, hashes_file.name)
                if hashes_file is not None
                else None,
                jobs=jobs or os.cpu_count() or 1,
                batch_size=batch_size,
                clean_rows=clean_rows,
                retry=retry,
                on_commit=bar.update,
                on_retry=retried,
            )

    try:
        # On Ctrl-C the journal is abandoned first: a commit in progress finishes, none starts
        # after it, so the report ends on a whole commit and the state agrees with it.
        summary = _interruptible(run, journal.abandon)
    except KeyboardInterrupt as stop:
        signum, finished = stop.args
        bar.close()
        where = f" (-o {output}): run the same command to continue" if output else ""
        click.echo(
            f"matcher scan: interrupted; {journal.totals.scanned} files are in the report{where}",
            err=True,
        )
        if not finished:
            # Work still stuck after the grace period (a hung read, say): nothing it holds is
            # needed any more, the report and the state are closed.
            sys.stderr.flush()
            os._exit(128 + signum)
        sys.exit(128 + signum)
    except MatcherError as exc:
        bar.close()
        journal.close()
        if output:
            click.echo(
                f"matcher scan: stopped after {journal.totals.scanned} files; the state is "
                "saved: run the same command to continue",
                err=True,
            )
        _fail(exc)
    bar.close()
    journal.close()
    click.echo(
        f"matcher scan: {summary.scanned} files scanned, {summary.matched} matched, "
        f"{summary.failed} failed, {summary.images_per_second:,.1f} images/s"
        + (f"; {summary.skipped} already done by an earlier run" if summary.skipped else ""),
        err=True,
    )
    if summary_json is not None:
        summary_json.write(json.dumps(summary.as_dict()) + "\n")
        summary_json.flush()


@main.group("case")
def case_group() -> None:
    """Open cases, follow them and withdraw them (practitioners).

    \b
    Example:
      matcher case create
    """


@case_group.command("create")
@_remote_options
@click.option("--org", type=int, help="Admins only: the owning organisation's id.")
def case_create(server: str, api_key: str | None, timeout: float, tls_ca: str | None,
                org: int | None) -> None:  # fmt: skip
    """Open a case; prints its number and the withdrawal secret (shown once).

    Give both to the person the images belong to: with them they can withdraw the case
    themselves, at any time (`matcher withdraw`).

    \b
    Example:
      matcher case create
    """
    new = _remote(server, api_key, timeout, tls_ca, lambda c: c.create_case(org))
    _echo_json({"case": new.case.number, "secret": new.secret})
    click.echo("The secret is shown once: give it, with the case number, to the person.", err=True)


@case_group.command("status")
@_remote_options
@click.argument("case")
def case_status(server: str, api_key: str | None, timeout: float, tls_ca: str | None,
                case: str) -> None:  # fmt: skip
    """Show a case: state, hashes stored, matches reported so far.

    \b
    Example:
      matcher case status K7QP-2MXR-9TDA
    """
    from matcher.client import as_dict

    _echo_json(as_dict(_remote(server, api_key, timeout, tls_ca, lambda c: c.get_case(case))))


@case_group.command("withdraw")
@_remote_options
@click.argument("case")
def case_withdraw(server: str, api_key: str | None, timeout: float, tls_ca: str | None,
                  case: str) -> None:  # fmt: skip
    """Withdraw a case for its owner organisation: its hashes are deleted, matching stops now.

    \b
    Example:
      matcher case withdraw K7QP-2MXR-9TDA
    """
    from matcher.client import as_dict

    _echo_json(as_dict(_remote(server, api_key, timeout, tls_ca, lambda c: c.withdraw(case))))


@main.command("withdraw")
@click.option(
    "--server",
    default="127.0.0.1:50051",
    show_default=True,
    envvar="MATCHER_SERVER",
    help="The service's host:port (or MATCHER_SERVER).",
)
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Deadline (s).")
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, exists=True),
    help="Connect with TLS, trusting this CA certificate (PEM).",
)
@click.argument("case_number")
@click.option(
    "--secret",
    prompt="Withdrawal secret",
    hide_input=True,
    envvar="MATCHER_CASE_SECRET",
    help="The secret you were given (asked for when not set; or MATCHER_CASE_SECRET).",
)
def withdraw_command(server: str, timeout: float, tls_ca: str | None, case_number: str,
                     secret: str) -> None:  # fmt: skip
    """Withdraw your case with its number and secret (no API key needed).

    Once this says "withdrawn", no partner gets a match for your images any more, and their
    hashes are deleted. Wrong attempts are limited.

    \b
    Example:
      matcher withdraw K7QP-2MXR-9TDA
    """
    state = _remote(
        server, None, timeout, tls_ca, lambda c: c.withdraw_with_secret(case_number, secret)
    )
    click.echo(f"case {case_number}: {state}")


if __name__ == "__main__":  # pragma: no cover
    main()
