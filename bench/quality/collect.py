"""Hash the originals, their edits and the distractors, in processes, into arrays.

Every picture yields a list of named views (``matcher.hashing.views``); the arrays keep them all,
and the analysis picks a configuration (a subset of view names) afterwards. Nothing is written to
the repository: generated pictures live only in memory, inside the worker processes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench.quality.edits import EDITS, Edit, apply_edit
from matcher.hashing import decode_image, ordered_map
from matcher.hashing.views import EnrollConfig, QueryConfig, enroll_views, query_views

__all__ = ["HashSet", "collect_distractors", "collect_edits", "collect_originals"]


@dataclass
class HashSet:
    """Views of many pictures: ``owner[i]`` is the picture of view ``i``, ``name[i]`` its name."""

    hashes: np.ndarray  # (n, 4) uint64: one 256-bit PDQ hash per row
    owner: np.ndarray  # (n,) int: index of the picture the view belongs to
    name: np.ndarray  # (n,) int: index into ``names``
    names: list[str]
    pictures: int
    seconds: list[float] = field(default_factory=list)  # hashing time per picture

    def select(self, keep: Callable[[str], bool]) -> HashSet:
        """Only the views whose name ``keep`` accepts."""
        wanted = np.array([keep(n) for n in self.names], dtype=bool)
        mask = wanted[self.name]
        return HashSet(
            self.hashes[mask], self.owner[mask], self.name[mask], self.names, self.pictures
        )

    def views_per_picture(self) -> float:
        return len(self.owner) / max(1, self.pictures)


Views = list[tuple[str, bytes]]


def _pack(views: Sequence[tuple[str, object]]) -> Views:
    return [(name, h.value) for name, h in views]  # type: ignore[attr-defined]


def _build(results: Sequence[tuple[Views, float]]) -> HashSet:
    vocab: dict[str, int] = {}
    rows, owners, names, seconds = [], [], [], []
    for i, (views, sec) in enumerate(results):
        seconds.append(sec)
        for name, value in views:
            rows.append(value)
            owners.append(i)
            names.append(vocab.setdefault(name, len(vocab)))
    hashes = np.frombuffer(b"".join(rows), dtype=">u8").astype(np.uint64).reshape(-1, 4)
    return HashSet(
        hashes,
        np.asarray(owners, dtype=np.int64),
        np.asarray(names, dtype=np.int64),
        list(vocab),
        len(results),
        seconds,
    )


def _enroll_one(path: Path, config: EnrollConfig) -> tuple[Views, float]:
    image = decode_image(path.read_bytes())
    start = time.perf_counter()
    views = _pack(enroll_views(image, config))
    return views, time.perf_counter() - start


def _query_bytes(data: bytes, config: QueryConfig) -> tuple[Views, float]:
    image = decode_image(data)
    start = time.perf_counter()
    views = _pack(query_views(image, config))
    return views, time.perf_counter() - start


def _query_path(path: Path, config: QueryConfig) -> tuple[Views, float]:
    return _query_bytes(path.read_bytes(), config)


def _edits_of(
    args: tuple[int, Sequence[Path]], edits: Sequence[int], config: QueryConfig, seed: int
) -> list[tuple[Views, float]]:
    # Edits travel as indices into EDITS: their functions are closures, which do not pickle.
    index, paths = args
    return [_query_bytes(data, config) for _, data in edited(index, paths, edits, seed)]


def edited(
    index: int, paths: Sequence[Path], edits: Sequence[int], seed: int
) -> Iterator[tuple[int, bytes]]:
    """Each edit ``k`` of original ``index`` as ``(k, encoded bytes)``, with the benchmark's seed
    per (original, edit): every study that redoes the edits gets the very same queries."""
    image = decode_image(paths[index].read_bytes())
    # Collage partners: three other originals, chosen by the edit's own seeded generator.
    others = _Lazy(paths, index)
    for k in edits:
        yield k, apply_edit(EDITS[k], image, seed * 1_000_003 + index * 101 + k, others)


class _Lazy(Sequence[Image.Image]):
    """The other originals, decoded only when a collage asks for one."""

    def __init__(self, paths: Sequence[Path], skip: int) -> None:
        self.paths = [p for i, p in enumerate(paths) if i != skip]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Image.Image:  # type: ignore[override]
        return decode_image(self.paths[int(i)].read_bytes())


def collect_originals(paths: Sequence[Path], config: EnrollConfig, jobs: int) -> HashSet:
    """Enrollment views of every original."""
    fn = functools.partial(_enroll_one, config=config)
    return _build(list(ordered_map(fn, paths, jobs=jobs)))


def collect_edits(
    paths: Sequence[Path],
    config: QueryConfig,
    jobs: int,
    seed: int,
    edits: Sequence[Edit] = EDITS,
    progress: Callable[[int], None] | None = None,
) -> tuple[HashSet, np.ndarray, np.ndarray]:
    """Query views of every edit of every original.

    Returns the views, then for each query picture its original's index and its edit's index.
    """
    fn = functools.partial(
        _edits_of, edits=tuple(EDITS.index(e) for e in edits), config=config, seed=seed
    )
    results: list[tuple[Views, float]] = []
    origin, edit_index = [], []
    for i, per_edit in enumerate(
        ordered_map(fn, [(i, paths) for i in range(len(paths))], jobs=jobs)
    ):
        results += per_edit
        origin += [i] * len(per_edit)
        edit_index += [EDITS.index(e) for e in edits]
        if progress:
            progress(i + 1)
    return _build(results), np.asarray(origin), np.asarray(edit_index)


def collect_distractors(paths: Sequence[Path], config: QueryConfig, jobs: int) -> HashSet:
    """Query views of every distractor photo."""
    fn = functools.partial(_query_path, config=config)
    return _build(list(ordered_map(fn, paths, jobs=jobs)))
