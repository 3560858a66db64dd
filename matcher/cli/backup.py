"""``matcher backup``, ``matcher restore``, ``matcher rotate-key`` and ``matcher ledger
apply``: the operator commands for the store's encrypted snapshots (SQLite), its key (both
stores) and its withdrawal ledgers (see ``matcher.store.backup``, ``matcher.store.crypto``
and ``matcher.store.ledger``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from matcher.cli._common import data_options
from matcher.errors import InvalidInput

__all__ = [
    "backup_command",
    "key_file_option",
    "ledger_group",
    "restore_command",
    "rotate_key_command",
    "sqlite_folder",
]

F = Any


def key_file_option(fn: F) -> F:
    """--key-file: where the store key is (MATCHER_STORE_KEY, the key itself, wins)."""
    return click.option(
        "--key-file",
        type=click.Path(dir_okay=False),
        envvar="MATCHER_KEY_FILE",
        help="The store key file (default: <data folder>.key beside the folder; or "
        "MATCHER_KEY_FILE). MATCHER_STORE_KEY, the key itself, wins over any file.",
    )(fn)


def sqlite_folder(data: str, store_url: str | None) -> Path:
    """The SQLite data folder that --data / --store name; ``InvalidInput`` for another store."""
    if store_url is None or "://" not in store_url:
        return Path(store_url or data)
    if store_url.startswith("sqlite://") and store_url[len("sqlite://") :]:
        return Path(store_url[len("sqlite://") :])
    raise InvalidInput(
        "this command is for the SQLite store (PostgreSQL has its own backup tools)",
        field="store",
    )


@click.command("backup")
@data_options
@key_file_option
@click.option(
    "--to",
    "dest",
    required=True,
    type=click.Path(dir_okay=False),
    help="The backup file to write (mode 0600; replaced atomically).",
)
def backup_command(data: str, store_url: str | None, key_file: str | None, dest: str) -> None:
    """Write a consistent, encrypted snapshot of the store, safe while `matcher serve` runs.

    The file is sealed with the store key (keep the key apart from the backups). Withdrawals
    made after it are re-applied by `matcher restore` from the folder's withdrawal ledger.

    \b
    Example:
      matcher backup --data ./matcher-data --to /backups/matcher-$(date +%F).mbk
    """
    from matcher.store import SQLiteStore
    from matcher.store.backup import take_backup

    with SQLiteStore(sqlite_folder(data, store_url), key_file=key_file) as store:
        info = take_backup(store, dest)
    click.echo(
        f"backup {info.path}: {info.bytes:,} bytes of schema {info.schema_version}, "
        f"sealed with store key {info.key_id}"
    )


@click.command("restore")
@data_options
@key_file_option
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The backup file to restore.",
)
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False),
    help="Withdrawal ledger to re-apply (default: withdrawals.jsonl in the data folder).",
)
def restore_command(
    data: str, store_url: str | None, key_file: str | None, source: str, ledger: str | None
) -> None:
    """Put a backup back as the store of a data folder (stop `matcher serve` first).

    Every withdrawal of the ledger made after the backup is applied again, so a restore never
    brings back an image or case that was withdrawn.

    \b
    Example:
      matcher restore --data ./matcher-data --from /backups/matcher-2026-12-01.mbk
    """
    from matcher.store.backup import restore

    info = restore(sqlite_folder(data, store_url), source, key_file=key_file, ledger=ledger)
    click.echo(
        f"restored a backup of schema {info.schema_version} (now {info.schema_version}); "
        f"{info.reapplied} later withdrawal(s) applied again"
    )


@click.command("rotate-key")
@data_options
@key_file_option
@click.option(
    "--forget-old",
    is_flag=True,
    help="Drop the old keys from the key file afterwards (older backups then need a copy of "
    "the old key file).",
)
def rotate_key_command(
    data: str, store_url: str | None, key_file: str | None, forget_old: bool
) -> None:
    """Seal the store under a new key (SQLite: stop `matcher serve` first).

    The new key is written to the key file first (the old ones kept), then every sealed value
    is sealed again in one transaction: a crash at any point leaves a store the key file
    opens. Not for MATCHER_STORE_KEY: rotate the variable's keyring yourself. On PostgreSQL
    the replicas may keep serving (their writes wait for the rotation); then copy the key
    file to every replica (README, "Deployment": the runbook).

    \b
    Examples:
      matcher rotate-key --data ./matcher-data --forget-old
      matcher rotate-key --store postgresql://matcher@db/matcher --key-file /etc/matcher/store.key
    """
    import os

    from matcher.errors import Unavailable
    from matcher.store import SQLiteStore
    from matcher.store.crypto import KEY_ENV, default_key_file, load_keyring, write_keyring
    from matcher.store.lock import FolderLock

    if os.environ.get(KEY_ENV):
        raise Unavailable(
            f"the store key comes from {KEY_ENV}: put a new key first in its keyring "
            "(see the README), or use a key file"
        )
    if store_url and store_url.startswith(("postgresql://", "postgres://")):
        from matcher.store.postgres import PostgresStore

        if not key_file:
            raise InvalidInput(
                "a PostgreSQL store's key file must be named (--key-file or MATCHER_KEY_FILE)",
                field="key_file",
            )
        if forget_old:
            raise InvalidInput(
                "--forget-old is for SQLite only: replicas not yet restarted still seal new "
                "items under the old key, so a PostgreSQL store's keyring keeps it",
                field="forget_old",
            )
        ring = load_keyring(key_file, create=False).rotated()
        write_keyring(key_file, ring)
        with PostgresStore(store_url, keyring=ring) as pg:
            resealed = pg.rotate_key(ring)
        click.echo(
            f"store key {ring.current} now seals {resealed} item(s); old keys kept ({key_file}): "
            "copy this file to every replica"
        )
        return
    folder = sqlite_folder(data, store_url)
    path = Path(key_file) if key_file else default_key_file(folder)
    with FolderLock.acquire(folder, "matcher rotate-key"):
        ring = load_keyring(path, create=False).rotated()
        write_keyring(path, ring)
        with SQLiteStore(folder, keyring=ring) as store:
            resealed = store.rotate_key(ring)
        if forget_old:
            write_keyring(path, ring.only_current())
    kept = "old keys dropped" if forget_old else "old keys kept for older backups"
    click.echo(f"store key {ring.current} now seals {resealed} item(s); {kept} ({path})")


@click.group("ledger")
def ledger_group() -> None:
    """Withdrawal ledgers: re-apply them to a restored database.

    \b
    Example:
      matcher ledger apply --store postgresql://matcher@db/matcher /var/lib/matcher/*.jsonl
    """


@ledger_group.command("apply")
@data_options
@key_file_option
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
def ledger_apply(data: str, store_url: str | None, key_file: str | None, files: tuple[str]) -> None:
    """Withdraw again what the ledgers FILES (one per replica) say was withdrawn.

    For a database restored to an earlier point (pg_dump, pg_basebackup, point-in-time
    recovery): run it with every replica's ledger before the replicas start again. Idempotent:
    what is already withdrawn stays as it is; ids the database never saw (enrolled after the
    restore point) are skipped, and new items get ids above every id the ledgers name.

    \b
    Example:
      matcher ledger apply --store postgresql://matcher@db/matcher ledger-a.jsonl ledger-b.jsonl
    """
    from matcher.principal import Principal
    from matcher.store import ledger, open_store

    entries = ledger.read_all(files)
    with open_store(store_url or data, key_file=key_file) as store:
        done = ledger.apply(store, entries, actor=Principal.operator("ledger"))  # type: ignore[arg-type]
        items = [int(e["item"]) for e in entries if e.get("item") is not None]
        raise_floor = getattr(store, "raise_item_floor", None)
        if items and raise_floor is not None:
            raise_floor(max(items))
    named = "; ".join(
        f"{kind} {', '.join(map(str, ids))}"
        for kind, ids in (("items", done.items), ("cases", done.cases))
        if ids
    )
    click.echo(
        f"{done.count} withdrawal(s) took effect again{': ' + named if named else ''}; "
        f"{done.unchanged} of {len(entries)} ledger line(s) changed nothing"
    )
