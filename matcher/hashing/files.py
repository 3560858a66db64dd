"""Files to hashes: walk folders, hash each file, in one process or several.

A file that cannot be hashed gives a result with an ``error`` (and an ``error_kind``) instead of
hashes: one bad file never stops a folder. Videos and other non-image files with a video
extension get their exact digests (MD5, SHA-256) only.
"""

from __future__ import annotations

import functools
import hashlib
import mimetypes
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from PIL import Image

from matcher.errors import ImageError, ImageTooLarge, InvalidInput, MatcherError
from matcher.hashing.compute import digests, pdq, pdq_dihedral, phash
from matcher.hashing.decode import DEFAULT_MAX_PIXELS, decode_image
from matcher.hashing.pool import ordered_map
from matcher.hashing.views import check_profile
from matcher.signals import MD5, SHA256, Hash

if TYPE_CHECKING:
    # Imported where used: matcher.records costs ~10 ms, and `matcher hash` never needs it.
    from matcher.records import NewItem, Query

__all__ = [
    "DEFAULT_SIGNALS",
    "FileHashes",
    "check_signals",
    "hash_bytes",
    "hash_file",
    "hash_files",
    "hash_stream_digests",
    "iter_files",
    "read_hash_lines",
]

DEFAULT_SIGNALS: tuple[str, ...] = ("pdq", "phash", "md5", "sha256")
_IMAGE_SIGNALS = frozenset({"pdq", "phash"})

# Images above this size are refused before they are read into memory; digests of larger files
# (videos) are computed in a streaming pass instead.
MAX_IMAGE_FILE_BYTES = 512 * 1024 * 1024
_CHUNK = 4 * 1024 * 1024


@dataclass(slots=True)
class FileHashes:
    """What hashing one file gave: its hashes by signal name, or an error."""

    path: str
    hashes: dict[str, Hash] = field(default_factory=dict)
    dihedral: dict[str, Hash] | None = None
    views: list[tuple[str, Hash]] | None = None
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_record(self) -> dict[str, Any]:
        """A flat dict for JSON Lines or CSV: path, each signal's hex, PDQ quality, variants."""
        record: dict[str, Any] = {"path": self.path}
        if self.error is not None:
            record["error"] = self.error
            record["error_kind"] = self.error_kind
            return record
        for name, h in self.hashes.items():
            record[name] = h.hex
            if name == "pdq":
                record["pdq_quality"] = h.quality
        if self.dihedral is not None:
            record["pdq_dihedral"] = {
                name: h.hex for name, h in self.dihedral.items() if name != "original"
            }
        if self.views is not None:
            record["pdq_views"] = {name: h.hex for name, h in self.views}
            # Each view's own score: the quality rule applies to each (``to_item``), and a view
            # can pass the floor where the whole picture does not.
            record["pdq_views_quality"] = {name: h.quality for name, h in self.views}
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FileHashes:
        """The inverse of ``to_record``: parse a line of ``matcher hash`` output.

        Raises ``InvalidInput`` (an ``InvalidHash``) for a malformed hash; the message names the
        field, never the value.
        """
        path = str(record.get("path", ""))
        if record.get("error"):
            return cls(path, error=str(record["error"]), error_kind=record.get("error_kind"))
        quality = _quality(record.get("pdq_quality"), "pdq_quality")
        hashes = {
            name: Hash.from_hex(
                name,
                _hex(record[name], name),
                quality=quality if name == "pdq" else None,
                field=name,
            )
            for name in DEFAULT_SIGNALS
            if record.get(name)
        }
        variants = _mapping(record.get("pdq_dihedral"), "pdq_dihedral")
        dihedral = None
        if variants:
            dihedral = {
                name: Hash.from_hex(
                    "pdq",
                    _hex(value, f"pdq_dihedral.{name}"),
                    quality=quality,
                    field=f"pdq_dihedral.{name}",
                )
                for name, value in variants.items()
            }
            if "pdq" in hashes:
                dihedral = {"original": hashes["pdq"], **dihedral}
        # Lines written before ``pdq_views_quality`` existed: the views carry the picture's.
        scores = _mapping(record.get("pdq_views_quality"), "pdq_views_quality")
        views = [
            (
                name,
                Hash.from_hex(
                    "pdq",
                    _hex(value, f"pdq_views.{name}"),
                    quality=_quality(scores.get(name, quality), f"pdq_views_quality.{name}"),
                    field=f"pdq_views.{name}",
                ),
            )
            for name, value in _mapping(record.get("pdq_views"), "pdq_views").items()
        ] or None
        return cls(path, hashes, dihedral, views)

    @property
    def flat(self) -> bool:
        """True when the picture's PDQ hash fails the quality rule (a flat or tiny picture):
        it is enrolled and queried by its other signals only."""
        pdq = self.hashes.get("pdq")
        return pdq is not None and not pdq.signal.meets_floor(pdq.quality)

    def to_item(self, *, label: str | None = None) -> NewItem:
        """This file as one item to enroll: every hash the quality rule lets in.

        The picture's PDQ hash and each view's are kept when their own quality
        ``SignalType.meets_floor``; pHash and the digests always. So a flat picture is enrolled
        by its other signals. The same value twice (the ``full`` view is the PDQ hash) is sent
        once. Raises ``InvalidInput`` for a file that could not be hashed or kept no hash.
        """
        from matcher.records import NewItem

        if not self.ok:
            raise InvalidInput(f"could not be hashed: {self.error}", field="path")
        hashes = _unique(
            [*self.hashes.values(), *(h for _, h in self.views or ())],
            keep=lambda h: h.signal.meets_floor(h.quality),
        )
        if not hashes:
            raise InvalidInput("no hash of this file can be enrolled", field="path")
        return NewItem(hashes, label=label)

    def to_query(
        self,
        *,
        dihedral: bool = True,
        max_distance: int | None = None,
        query_id: str = "",
    ) -> Query | None:
        """This file as one query, or None when there is nothing to ask.

        The PDQ hash (and with ``dihedral`` its 7 other rotations and flips, when hashed) and
        the views are asked only when they meet the quality floor: flat hashes sit close to
        many unrelated ones and the bank never stores them, so asking only risks false matches.
        pHash and the digests are always asked. Each value is asked once, so that ``hits``
        counts distinct hashes.
        """
        from matcher.records import Query

        if not self.ok:
            return None
        pdq = self.hashes.get("pdq")
        first: list[Hash] = []
        if pdq is not None:
            first = list(self.dihedral.values()) if dihedral and self.dihedral else [pdq]
        hashes = _unique(
            [
                *first,
                *(h for name, h in self.hashes.items() if name != "pdq"),
                *(h for _, h in self.views or ()),
            ],
            keep=lambda h: h.signal.meets_floor(h.quality),
        )
        return Query(hashes, max_distance, query_id) if hashes else None


def _unique(hashes: Iterable[Hash], *, keep: Callable[[Hash], bool]) -> list[Hash]:
    seen: set[tuple[str, bytes]] = set()
    out = []
    for h in hashes:
        key = (h.signal.name, h.value)
        if key not in seen and keep(h):
            seen.add(key)
            out.append(h)
    return out


def _quality(value: object, field: str) -> int | None:
    """A PDQ quality score from a line: none, or a whole number from 0 to 100."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise InvalidInput("must be a whole number from 0 to 100", field=field)
    return value


def _hex(value: object, field: str) -> str:
    """A hash's hex text from a line (a JSON string)."""
    if not isinstance(value, str):
        raise InvalidInput("must be a hex string", field=field)
    return value


def _mapping(value: object, field: str) -> dict[str, Any]:
    """An object of a line (views, variants, their scores): none, or a JSON object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("must be a JSON object", field=field)
    return value


def read_hash_lines(lines: Iterable[str], source: str = "hashes") -> Iterator[FileHashes]:
    """Parse the JSON Lines of ``matcher hash``: the one reader of that format (``matcher
    enroll --hashes``, ``matcher match --hashes`` and ``matcher scan --hashes`` all use it).

    A line that cannot be read becomes a failed file (``error_kind`` "invalid") whose error
    names the line and the field, never a hash value; the other lines go on.
    """
    import json

    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record: Any = None
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise InvalidInput("not a JSON object")
            yield FileHashes.from_record(record)
        except (ValueError, MatcherError) as exc:
            path = record.get("path") if isinstance(record, dict) else None
            reason = exc.reason if isinstance(exc, InvalidInput) else "not a JSON line"
            where = f" ({exc.field})" if isinstance(exc, InvalidInput) and exc.field else ""
            yield FileHashes(
                str(path or f"{source}:{n}"),
                error=f"{source}:{n}: {reason}{where}",
                error_kind="invalid",
            )


def _image_extensions() -> frozenset[str]:
    from matcher.hashing.decode import _register_heif

    _register_heif()
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def _is_video(path: str) -> bool:
    kind, _ = mimetypes.guess_type(path)
    return kind is not None and kind.startswith("video/")


def _is_media_name(name: str, image_extensions: frozenset[str]) -> bool:
    if Path(name).suffix.lower() in image_extensions:
        return True
    kind, _ = mimetypes.guess_type(name)
    return kind is not None and kind.startswith(("image/", "video/"))


def check_signals(signals: Iterable[str]) -> list[str]:
    """Return the signal names asked for, deduplicated, or raise ``InvalidInput``."""
    wanted = list(dict.fromkeys(s.strip().lower() for s in signals))
    unknown = [s for s in wanted if s not in DEFAULT_SIGNALS]
    if unknown or not wanted:
        raise InvalidInput(
            f"signals must be some of {', '.join(DEFAULT_SIGNALS)}; got {', '.join(wanted)}",
            field="signals",
        )
    return wanted


def hash_bytes(
    data: bytes,
    *,
    signals: Iterable[str] = DEFAULT_SIGNALS,
    dihedral: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[dict[str, Hash], dict[str, Hash] | None]:
    """Hash one image file's bytes. Raises an ``ImageError`` when the image cannot be decoded.

    Returns the hashes by signal name (in the order asked for) and, with ``dihedral``, the eight
    PDQ variants by ``DIHEDRAL_NAMES``.
    """
    hashes, variants, _ = _hash_bytes(
        data, signals=signals, dihedral=dihedral, max_pixels=max_pixels, profile="plain"
    )
    return hashes, variants


def _hash_bytes(
    data: bytes,
    *,
    signals: Iterable[str],
    dihedral: bool,
    max_pixels: int,
    profile: str,
) -> tuple[dict[str, Hash], dict[str, Hash] | None, list[tuple[str, Hash]] | None]:
    # hash_bytes plus the named PDQ views of a profile: one decode serves both.
    wanted = check_signals(signals)
    view_fn = check_profile(profile)
    result: dict[str, Hash] = {}
    variants: dict[str, Hash] | None = None
    views: list[tuple[str, Hash]] | None = None
    if _IMAGE_SIGNALS.intersection(wanted) or dihedral or view_fn is not None:
        image = decode_image(data, max_pixels=max_pixels)
        if dihedral:
            variants = pdq_dihedral(image)
        if view_fn is not None:
            views = view_fn(image)
        for name in wanted:
            if name == "pdq":
                result["pdq"] = variants["original"] if variants else pdq(image)
            elif name == "phash":
                result["phash"] = phash(image)
    if "md5" in wanted or "sha256" in wanted:
        md5, sha256 = digests(data)
        result.update({k: v for k, v in (("md5", md5), ("sha256", sha256)) if k in wanted})
    return {name: result[name] for name in wanted if name in result}, variants, views


def hash_stream_digests(stream: IO[bytes], signals: Iterable[str]) -> dict[str, Hash]:
    """The exact digests (MD5, SHA-256, as asked for in ``signals``) of a binary stream, read
    in chunks so that a large video never sits in memory."""
    wanted = check_signals(signals)
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        md5.update(chunk)
        sha256.update(chunk)
    out = {"md5": Hash(MD5, md5.digest()), "sha256": Hash(SHA256, sha256.digest())}
    return {name: out[name] for name in wanted if name in out}


def hash_file(
    path: str | os.PathLike[str],
    *,
    signals: Iterable[str] = DEFAULT_SIGNALS,
    dihedral: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fs: Any = None,
    profile: str = "plain",
) -> FileHashes:
    """Hash one file. Never raises for a problem with the file: the result carries the error.

    ``fs`` reads the file from elsewhere than the local disk: any object with fsspec's
    ``open(path, "rb")`` and ``size(path)`` (an ``fsspec`` filesystem; this module does not
    import fsspec, the caller chooses where bytes come from).
    """
    name = os.fspath(path)
    wanted = check_signals(signals)
    opener = fs.open if fs is not None else open
    view_fn = check_profile(profile)
    try:
        if _is_video(name):
            with opener(name, "rb") as f:
                return FileHashes(name, hash_stream_digests(f, wanted))
        size = fs.size(name) if fs is not None else os.path.getsize(name)
        needs_image = _IMAGE_SIGNALS.intersection(wanted) or dihedral or view_fn is not None
        if size > MAX_IMAGE_FILE_BYTES and needs_image:
            raise ImageTooLarge(f"file is {size:,} bytes, above {MAX_IMAGE_FILE_BYTES:,}")
        with opener(name, "rb") as f:
            data = f.read()
        hashes, variants, views = _hash_bytes(
            data, signals=wanted, dihedral=dihedral, max_pixels=max_pixels, profile=profile
        )
        return FileHashes(name, hashes, variants, views)
    except ImageError as exc:
        return FileHashes(name, error=str(exc), error_kind=exc.kind)
    except OSError as exc:
        # Unreadable file (permissions, vanished, a directory...): report, don't stop.
        return FileHashes(name, error=exc.strerror or str(exc), error_kind="unreadable")


def iter_files(
    paths: Iterable[str | os.PathLike[str]], *, all_files: bool = False
) -> Iterator[str]:
    """Expand paths: files as given, folders walked recursively in sorted order.

    In folders, only files with an image or video extension are taken (so a README beside the
    photos is not reported as a broken image), unless ``all_files``. Files named explicitly are
    always taken. Hidden files and folders (dot names) inside folders are skipped.
    """
    extensions: frozenset[str] | None = None
    for raw in paths:
        path = os.fspath(raw)
        if not os.path.isdir(path):
            yield path
            continue
        if extensions is None and not all_files:
            extensions = _image_extensions()
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for fname in sorted(files):
                if fname.startswith("."):
                    continue
                full = os.path.join(root, fname)
                if all_files or _is_media_name(fname, extensions or frozenset()):
                    yield full


def hash_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    signals: Iterable[str] = DEFAULT_SIGNALS,
    dihedral: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    jobs: int = 1,
    all_files: bool = False,
    profile: str = "plain",
) -> Iterator[FileHashes]:
    """Hash every file under ``paths`` (see ``iter_files``) in ``jobs`` processes, in order."""
    check_profile(profile)
    fn = functools.partial(
        hash_file,
        signals=tuple(signals),
        dihedral=dihedral,
        max_pixels=max_pixels,
        profile=profile,
    )
    yield from ordered_map(fn, iter_files(paths, all_files=all_files), jobs=jobs)
