"""How many real photos the allowlist would refuse: ``python -m bench.allowlist_photos [N]``.

Hashes each photo of the shared data (``photos/``: BSDS500 and the clothing set; then ``pdq/``,
Meta's conformance pictures, some of them nearly blank) with the shipped ``enroll`` profile, as a
practitioner would, and asks the bank's own allowlist (a fresh store, seeded) whether the item
would be refused. Prints a line per refused file and, at the end, the counts and the smallest
distances seen (PDQ and pHash) to any seed entry. ``N``: stop after N photos (a random sample,
fixed seed); default all of them. About a second per photo on one core.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time

import numpy as np

from bench.conftest import DATA
from matcher.bank import Bank
from matcher.hashing.files import hash_file
from matcher.signals import SIGNALS

_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tiff"}


def _nearest(bank: Bank, signal: str, values: list[bytes]) -> int | None:
    # Smallest distance from any of ``values`` to any allowlist entry of ``signal`` (a brute
    # force over the store's codes: for the report, not the product path).
    st = SIGNALS[signal]
    entries = [c.codes for c in bank.store.allowlist_codes().chunks if c.signal == signal]
    if not entries or not values:
        return None
    table = np.concatenate(entries)
    codes = np.frombuffer(b"".join(values), np.uint8).reshape(len(values), st.byte_length)
    return int(np.bitwise_count(codes[:, None, :] ^ table[None, :, :]).sum(-1).min())


def main(limit: int | None) -> None:
    files = {
        part: sorted(p for p in (DATA / part).rglob("*") if p.suffix.lower() in _EXTENSIONS)
        for part in ("photos", "pdq")
    }
    for part in files.values():
        random.Random(11).shuffle(part)
    with tempfile.TemporaryDirectory() as folder, Bank.open(folder, load=False) as bank:
        bank.load()
        print(f"allowlist: {len(bank.allowlist)} seed entries", flush=True)
        for part, paths in files.items():
            done = refused = 0
            closest: dict[str, int] = {}
            started = time.time()
            for path in paths[:limit]:
                hashed = hash_file(path, profile="enroll")
                if not hashed.ok:
                    continue
                try:
                    item = hashed.to_item()
                except ValueError:
                    continue
                done += 1
                for name in ("pdq", "phash"):
                    d = _nearest(
                        bank, name, [h.value for h in item.hashes if h.signal.name == name]
                    )
                    if d is not None:
                        closest[name] = min(closest.get(name, 10**6), d)
                if bank.allowlist.first_near(item.hashes) is not None:
                    refused += 1
                    print(f"refused: {path.relative_to(DATA)}", flush=True)
                if done % 100 == 0:
                    print(f"{part}: {done} done, {refused} refused", flush=True)
            print(
                f"{part}: {refused} of {done} refused in {time.time() - started:.0f} s; "
                f"nearest seed entry: {closest}",
                flush=True,
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
