"""Generate ``matcher/v1`` from ``proto/matcher/v1`` (developer tool; needs ``grpcio-tools``).

``python -m matcher._codegen`` regenerates; ``--check`` regenerates into a temporary folder and
fails on any difference from the committed code (``make proto-check``, and a test).
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
PACKAGE = ROOT / "matcher" / "v1"
_INIT = '"""Generated code for matcher.v1 (``make proto``; never edit by hand)."""\n'


def generate(out_root: Path) -> list[Path]:
    """Run protoc on every ``.proto`` of the contract, writing ``matcher/v1`` under ``out_root``."""
    import grpc_tools
    from grpc_tools import protoc

    sources = sorted(PROTO.glob("matcher/v1/*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *map(str, sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package = out_root / "matcher" / "v1"
    (package / "__init__.py").write_text(_INIT)
    return sorted(package.glob("*.py*"))


def stale() -> list[str]:
    """Names of generated files that differ from (or are missing in) ``matcher/v1``."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return [
            f.name
            for f in fresh
            if not (PACKAGE / f.name).exists() or not filecmp.cmp(f, PACKAGE / f.name, False)
        ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        bad = stale()
        if bad:
            print(f"generated code is stale: {', '.join(bad)} (run `make proto`)", file=sys.stderr)
            return 1
        print("generated code is up to date")
        return 0
    for path in generate(ROOT):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
