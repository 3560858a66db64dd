"""Client-side hashing: image files in, hashes out, on the user's own machine.

This package never touches the network and never imports server code; the service never
imports it (rule 1 of DESIGN.md: no images in the service).

>>> from matcher.hashing import hash_file
>>> result = hash_file("photo.jpg")          # doctest: +SKIP
>>> result.hashes["pdq"].quality             # doctest: +SKIP
100
"""

from matcher.hashing.compute import DIHEDRAL_NAMES, digests, pdq, pdq_dihedral, phash
from matcher.hashing.decode import (
    DEFAULT_MAX_PIXELS,
    JPEG_DRAFT_MIN_SIDE,
    REDUCE_MIN_SIDE,
    decode_image,
)
from matcher.hashing.files import (
    DEFAULT_SIGNALS,
    FileHashes,
    check_signals,
    hash_bytes,
    hash_file,
    hash_files,
    hash_stream_digests,
    iter_files,
    read_hash_lines,
)
from matcher.hashing.pool import WorkerDied, ordered_map
from matcher.hashing.views import (
    MATCH_DISTANCE,
    PROFILES,
    enroll_views,
    matches,
    query_views,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SIGNALS",
    "DIHEDRAL_NAMES",
    "JPEG_DRAFT_MIN_SIDE",
    "MATCH_DISTANCE",
    "PROFILES",
    "REDUCE_MIN_SIDE",
    "FileHashes",
    "WorkerDied",
    "check_signals",
    "decode_image",
    "digests",
    "enroll_views",
    "hash_bytes",
    "hash_file",
    "hash_files",
    "hash_stream_digests",
    "iter_files",
    "matches",
    "ordered_map",
    "pdq",
    "pdq_dihedral",
    "phash",
    "query_views",
    "read_hash_lines",
]
