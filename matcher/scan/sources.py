"""Where a scan's images come from, and what it asks the service about each one.

Inputs are local paths (files, folders walked recursively) or fsspec URLs (``file://``, and
``s3://``, ``gs://``... once the matching fsspec backend is installed). Everything here is
lazy: a folder of ten million files is walked one directory at a time, never listed whole.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from matcher.errors import InvalidInput
from matcher.hashing import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_SIGNALS,
    FileHashes,
    hash_file,
    iter_files,
    read_hash_lines,
)
from matcher.hashing.files import _image_extensions, _is_media_name
from matcher.records import Query

__all__ = [
    "HashOptions",
    "hash_item",
    "is_url",
    "iter_inputs",
    "query_of",
    "read_hash_records",
    "read_lines",
]


def is_url(item: str) -> bool:
    """True for an fsspec URL (``proto://...``); a Windows drive path is not one."""
    scheme, sep, _ = item.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()


# The fsspec backends of the usual URL schemes, to name the package in the error.
_BACKENDS = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "hf": "huggingface_hub",
    "sftp": "paramiko",
}


@functools.lru_cache(maxsize=16)
def _filesystem(protocol: str) -> Any:
    """The fsspec filesystem of ``protocol``; ``InvalidInput`` naming the missing backend
    package (e.g. s3fs for s3://) or the unknown scheme, instead of fsspec's traceback."""
    import fsspec

    try:
        return fsspec.filesystem(protocol)
    except ImportError:
        package = _BACKENDS.get(protocol, f"the fsspec backend for {protocol}://")
        raise InvalidInput(
            f"{protocol}:// URLs need {package}, which is not installed (pip install {package})"
            if protocol in _BACKENDS
            else f"{protocol}:// URLs need {package}, which is not installed",
            field="paths",
        ) from None
    except ValueError:
        raise InvalidInput(f"unknown URL scheme {protocol}://", field="paths") from None


def _split(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of a URL and the path inside it (with its protocol kept)."""
    from fsspec.core import split_protocol

    protocol, _ = split_protocol(url)
    return _filesystem(protocol or "file"), url


def _walk_url(url: str, all_files: bool) -> Iterator[str]:
    fs, _ = _split(url)
    protocol = url.partition("://")[0]
    if not fs.isdir(url):
        yield url
        return
    extensions = None if all_files else _image_extensions()
    # fs.walk yields one directory at a time (lazy, like os.walk); sorting each level keeps the
    # order stable from one run to the next.
    for root, dirs, files in fs.walk(url):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            if extensions is None or _is_media_name(name, extensions):
                full = f"{root.rstrip('/')}/{name}"
                yield full if "://" in full else f"{protocol}://{full}"


def iter_inputs(items: Iterable[str], *, all_files: bool = False) -> Iterator[str]:
    """Expand inputs into the files to scan, lazily and in a stable order.

    Local folders are walked with ``iter_files`` (image and video names only, unless
    ``all_files``); URLs that name a folder (prefix) are walked with fsspec the same way.
    """
    for item in items:
        if is_url(item):
            yield from _walk_url(item, all_files)
        else:
            yield from iter_files([item], all_files=all_files)


def read_lines(stream: IO[str]) -> Iterator[str]:
    """Non-empty lines of a listing (one path or URL per line), without their line ends."""
    for line in stream:
        line = line.rstrip("\r\n")
        if line.strip():
            yield line


@dataclass(frozen=True, slots=True)
class HashOptions:
    """How each file is hashed and queried. Part of a job's identity (see ``Journal``)."""

    signals: tuple[str, ...] = DEFAULT_SIGNALS
    dihedral: bool = True
    """Also ask about the PDQ hashes of the 7 other rotations and flips (mirrored re-uploads)."""
    max_distance: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    profile: str = "plain"
    """``query`` adds the detection views (crops, trimmed borders, tiles) to every query."""


def hash_item(item: str, options: HashOptions) -> FileHashes:
    """Hash one local path or URL; never raises for a problem with the file."""
    fs = None
    if is_url(item):
        try:
            fs, _ = _split(item)
        except (ImportError, ValueError) as exc:
            # An unknown protocol, or its backend (s3fs, gcsfs...) not installed.
            return FileHashes(item, error=str(exc), error_kind="unreadable")
    return hash_file(
        item,
        signals=options.signals,
        dihedral=options.dihedral and "pdq" in options.signals,
        max_pixels=options.max_pixels,
        fs=fs,
        profile=options.profile,
    )


def query_of(result: FileHashes, options: HashOptions) -> Query | None:
    """The query for one hashed file, or None when there is nothing to ask
    (``FileHashes.to_query``: the quality rule leaves out flat PDQ hashes and views)."""
    return result.to_query(dihedral=options.dihedral, max_distance=options.max_distance)


read_hash_records = read_hash_lines
"""The JSON Lines of ``matcher hash`` as hashed files (``matcher.hashing.read_hash_lines``)."""
