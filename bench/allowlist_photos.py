"""How many real photos the allowlist would refuse: ``python -m bench.allowlist_photos``.

Each photo of the shared data (``photos/``: BSDS500 and the clothing set) is checked as a
practitioner's enrollment would be under the shipped ``enroll`` profile, against the bank's own
allowlist (a fresh store, seeded): its pHash, its full-picture PDQ hashes (the picture and its
eight turns and flips) and, where ``bench.views_cache`` has hashed it (``MATCHER_BENCH_CACHE``;
CPU-hours for all of them, resumable), every one of its enroll-profile PDQ views. Prints each
refused photo, then the counts and the smallest distances seen to any seed entry.
``--pdq-set``: also Meta's conformance pictures (``pdq/``), some of them nearly blank.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.views_cache import CACHE, DATA, photos
from matcher.bank import Bank
from matcher.hashing.files import hash_file
from matcher.signals import PDQ, SIGNALS, Hash

_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tiff"}


def _nearest(table: np.ndarray | None, codes: np.ndarray) -> int | None:
    # Smallest distance from any code to any entry (brute force: for the report only).
    if table is None or not len(codes):
        return None
    return int(np.bitwise_count(codes[:, None, :] ^ table[None, :, :]).sum(-1).min())


def check(paths: list[Path], cached: dict[Path, int], bank: Bank, name: str) -> None:
    chunks = {c.signal: c.codes for c in bank.store.allowlist_codes().chunks}
    done = refused = full = 0
    closest: dict[str, int] = {}
    started = time.time()
    for path in paths:
        hashed = hash_file(path, signals=("pdq", "phash"), dihedral=True)
        if not hashed.ok:
            continue
        hashes = [h for h in (hashed.dihedral or {}).values() if PDQ.meets_floor(h.quality)]
        hashes.append(hashed.hashes["phash"])
        k = cached.get(path)
        view_file = CACHE / "enroll" / f"{k}.npy"
        if k is not None and view_file.exists():
            hashes += [Hash(PDQ, row.tobytes(), 100) for row in np.load(view_file)]
            full += 1
        done += 1
        for signal in ("pdq", "phash"):
            mine = [h.value for h in hashes if h.signal.name == signal]
            if mine:
                codes = np.frombuffer(b"".join(mine), np.uint8).reshape(
                    len(mine), SIGNALS[signal].byte_length
                )
                d = _nearest(chunks.get(signal), codes)
                if d is not None:
                    closest[signal] = min(closest.get(signal, 10**6), d)
        if bank.allowlist.first_near(hashes) is not None:
            refused += 1
            print(f"refused: {path.relative_to(DATA)}", flush=True)
    print(
        f"{name}: {refused} of {done} refused ({full} with every enroll view, the others on "
        f"their pHash and full-picture PDQ) in {time.time() - started:.0f} s; nearest seed "
        f"entry: {closest}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pdq-set", action="store_true", help="also check pdq/")
    args = parser.parse_args()
    order = photos()
    with tempfile.TemporaryDirectory() as folder, Bank.open(folder, load=False) as bank:
        bank.load()
        print(f"allowlist: {len(bank.allowlist)} seed entries", flush=True)
        check(order, {p: k for k, p in enumerate(order)}, bank, "photos")
        if args.pdq_set:
            extra = sorted(p for p in (DATA / "pdq").rglob("*") if p.suffix.lower() in _EXTENSIONS)
            check(extra, {}, bank, "pdq")


if __name__ == "__main__":
    main()
