"""Images or `matcher hash` lines in, hash records out (for enroll and match)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from matcher.cli._common import read_paths


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


def record_hashes(record: dict[str, Any], *, variants: bool) -> list[Any]:
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


def records(
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
    for result in hash_files(read_paths(paths), dihedral=dihedral, jobs=jobs, profile=profile):
        yield result.to_record()
