"""``matcher serve`` for the benchmarks, with the match dispatch chosen: ``workers`` threads
(``default``: one per core), or ``0`` for the behaviour before issue 15 (every match inline on
the event loop), so both run against the same bank in the same benchmark run.

Usage: ``python bench/match_server.py DATA HOST:PORT WORKERS``.
"""

from __future__ import annotations

import asyncio
import sys

from matcher.bank import Bank
from matcher.service import ServerConfig, ServiceLimits, configure_logging, serve


def main(data: str, address: str, workers: str) -> None:
    configure_logging(level="WARNING")
    limits = ServiceLimits(match_workers=None if workers == "default" else int(workers))
    config = ServerConfig(
        address=address,
        metrics_address="127.0.0.1:0",
        limits=limits,
        rate=1e9,
        burst=1e9,
        grace_seconds=1.0,
        drain_seconds=0.0,
    )
    bank = Bank.open(data, load=False)
    try:
        asyncio.run(serve(bank, config))
    finally:
        bank.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
