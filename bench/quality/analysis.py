"""Brute-force matching of view sets, recall with Wilson intervals, and the false-match tail.

Matching is exact and brute force (every query hash against every enrolled hash, in numpy): the
bank here is 300 originals, so nothing cleverer is needed, and the benchmark does not depend on the
service's index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.quality.collect import HashSet

__all__ = [
    "PairStats",
    "fit_lower_tail",
    "min_distances",
    "own_min_distance",
    "wilson",
]

_CHUNK = 4096


def _popcount_xor(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances (uint16) between every row of ``a`` and every row of ``b``."""
    x = a[:, None, :] ^ b[None, :, :]
    return np.bitwise_count(x).sum(axis=2, dtype=np.uint16)


def own_min_distance(queries: HashSet, bank: HashSet, origin: np.ndarray) -> np.ndarray:
    """For each query picture, the smallest distance from any of its views to any view of the
    original it was made from (257 where a picture has no view left)."""
    out = np.full(queries.pictures, 257, dtype=np.int32)
    bank_order = np.argsort(bank.owner, kind="stable")
    bank_sorted = bank.hashes[bank_order]
    starts = np.searchsorted(bank.owner[bank_order], np.arange(bank.pictures + 1))
    q_order = np.argsort(queries.owner, kind="stable")
    q_starts = np.searchsorted(queries.owner[q_order], np.arange(queries.pictures + 1))
    for p in range(queries.pictures):
        qs = queries.hashes[q_order[q_starts[p] : q_starts[p + 1]]]
        o = origin[p]
        es = bank_sorted[starts[o] : starts[o + 1]]
        if len(qs) and len(es):
            out[p] = int(_popcount_xor(qs, es).min())
    return out


@dataclass
class PairStats:
    """All query pictures against all bank pictures.

    ``pair_min[q, o]``: the smallest distance between any view of query picture ``q`` and any view
    of bank picture ``o`` (257 where either has no view). ``histogram[d]``: how many single hash
    pairs (one query view, one enrolled view) are at distance ``d``.
    """

    pair_min: np.ndarray
    histogram: np.ndarray

    @property
    def hash_pairs(self) -> int:
        return int(self.histogram.sum())


def min_distances(queries: HashSet, bank: HashSet) -> PairStats:
    """Every query view against every enrolled view, reduced to per-picture-pair minima."""
    b_order = np.argsort(bank.owner, kind="stable")
    b_hashes = bank.hashes[b_order]
    b_owner = bank.owner[b_order]
    b_starts = np.searchsorted(b_owner, np.arange(bank.pictures))
    b_present = np.isin(np.arange(bank.pictures), b_owner)
    q_order = np.argsort(queries.owner, kind="stable")
    q_hashes = queries.hashes[q_order]
    q_owner = queries.owner[q_order]

    pair_min = np.full((queries.pictures, bank.pictures), 257, dtype=np.uint16)
    histogram = np.zeros(257, dtype=np.int64)
    # Work in slices of whole query pictures so each slice reduces to complete rows.
    q_starts = np.searchsorted(q_owner, np.arange(queries.pictures + 1))
    rows_per_slice = max(1, (_CHUNK * 256) // max(1, len(b_hashes)))
    p = 0
    while p < queries.pictures:
        end_p = p
        while end_p < queries.pictures and q_starts[end_p + 1] - q_starts[p] <= rows_per_slice:
            end_p += 1
        end_p = max(end_p, p + 1)
        lo, hi = q_starts[p], q_starts[end_p]
        if hi > lo and len(b_hashes):
            d = _popcount_xor(q_hashes[lo:hi], b_hashes)
            histogram += np.bincount(d.ravel(), minlength=257)[:257]
            by_bank = np.minimum.reduceat(d, b_starts[b_present], axis=1)
            owners_here = q_owner[lo:hi]
            row_starts = np.searchsorted(owners_here, np.unique(owners_here))
            by_pair = np.minimum.reduceat(by_bank, row_starts, axis=0)
            block = pair_min[np.unique(owners_here)]
            block[:, b_present] = by_pair
            pair_min[np.unique(owners_here)] = block
        p = end_p
    return PairStats(pair_min, histogram)


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval for a proportion."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class TailFit:
    """A normal fitted to the lower tail of a distance distribution (in probit space).

    ``rate(d)`` is the fitted probability of a distance at or below ``d``.
    """

    mean: float
    sd: float
    fitted_from: tuple[float, float]  # the probability range of the points used

    def rate(self, d: float) -> float:
        return 0.5 * math.erfc(-((d + 0.5 - self.mean) / self.sd) / math.sqrt(2))


def fit_lower_tail(histogram: np.ndarray, lo: float = 1e-6, hi: float = 1e-2) -> TailFit:
    """Fit ``Phi((d - mean) / sd)`` to the empirical CDF where it lies between ``lo`` and ``hi``.

    The lower tail of a sum of many weakly dependent bits is close to normal; fitting only the
    tail (not the bulk) follows its actual slope, which is what the extrapolation down to the
    match threshold needs. Least squares of the probit of the CDF against the distance.
    """
    from statistics import NormalDist

    total = histogram.sum()
    cdf = np.cumsum(histogram) / total
    ds = np.arange(len(histogram))
    use = (cdf >= lo) & (cdf <= hi) & (histogram > 0)
    if use.sum() < 3:
        # Too few tail points (a small sample): widen to the bulk below the median.
        use = (cdf > 0) & (cdf <= 0.5) & (histogram > 0)
    z = np.array([NormalDist().inv_cdf(float(c)) for c in cdf[use]])
    x = ds[use] + 0.5
    slope, intercept = np.polyfit(x, z, 1)
    sd = 1 / slope
    mean = -intercept * sd
    return TailFit(float(mean), float(sd), (float(cdf[use].min()), float(cdf[use].max())))
