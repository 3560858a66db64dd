"""``matcher backup``, ``matcher restore`` and ``matcher rotate-key``: the SQLite store's
operator commands for its encrypted snapshots and its key (see ``matcher.store.backup`` and
``matcher.store.crypto``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from matcher.cli._common import data_options
from matcher.errors import InvalidInput

__all__ = [
    "backup_command",
    "key_file_option",
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
    """Seal the store under a new key (stop `matcher serve` first).

    The new key is written to the key file first (the old ones kept), then every sealed value
    is sealed again in one transaction: a crash at any point leaves a store the key file
    opens. Not for MATCHER_STORE_KEY: rotate the variable's keyring yourself.

    \b
    Example:
      matcher rotate-key --data ./matcher-data --forget-old
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
