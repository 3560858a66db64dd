"""The ``matcher hash`` command, run for real (in-process with Click's runner, and as a process)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from matcher.cli import main


@pytest.fixture
def photos(tmp_path: Path, astronaut: Image.Image, coffee: Image.Image) -> Path:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    astronaut.save(folder / "astronaut.jpg", quality=90)
    coffee.save(folder / "nested" / "coffee.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_hash_folder_writes_one_json_line_per_file_and_fails_at_the_end(photos: Path) -> None:
    result = CliRunner().invoke(main, ["hash", "-j", "1", str(photos)])
    assert result.exit_code == 1
    records = {Path(r["path"]).name: r for r in _lines(result.stdout)}
    assert set(records) == {"astronaut.jpg", "broken.jpg", "coffee.png"}
    good = records["astronaut.jpg"]
    assert len(good["pdq"]) == 64 and len(good["phash"]) == 16
    assert len(good["md5"]) == 32 and len(good["sha256"]) == 64
    assert 0 <= good["pdq_quality"] <= 100
    assert records["broken.jpg"]["error"] and "pdq" not in records["broken.jpg"]
    assert "1 of 3 files could not be hashed" in result.stderr


def test_dihedral_and_signal_selection(photos: Path) -> None:
    result = CliRunner().invoke(
        main, ["hash", "--signals", "pdq", "--dihedral", str(photos / "astronaut.jpg")]
    )
    assert result.exit_code == 0, result.output
    (record,) = _lines(result.stdout)
    assert set(record) == {"path", "pdq", "pdq_quality", "pdq_dihedral"}
    assert set(record["pdq_dihedral"]) == {
        "rot90",
        "rot180",
        "rot270",
        "flip_v",
        "flip_h",
        "transpose",
        "transverse",
    }


def test_csv_output_has_a_header_and_error_columns(photos: Path) -> None:
    result = CliRunner().invoke(main, ["hash", "--format", "csv", "--dihedral", str(photos)])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3
    assert {"path", "pdq", "pdq_quality", "pdq_rot90", "error", "error_kind"} <= set(rows[0])
    broken = next(r for r in rows if r["path"].endswith("broken.jpg"))
    assert broken["error"] and not broken["pdq"]


def test_paths_from_stdin(photos: Path) -> None:
    paths = f"{photos / 'astronaut.jpg'}\n{photos / 'nested' / 'coffee.png'}\n"
    result = CliRunner().invoke(main, ["hash", "-"], input=paths)
    assert result.exit_code == 0
    assert [Path(r["path"]).name for r in _lines(result.stdout)] == ["astronaut.jpg", "coffee.png"]


def test_two_processes_give_the_same_lines_in_the_same_order(photos: Path) -> None:
    one = CliRunner().invoke(main, ["hash", "-j", "1", str(photos)])
    two = CliRunner().invoke(main, ["hash", "-j", "2", str(photos)])
    assert one.stdout == two.stdout


def test_bad_usage_exits_2_with_one_line() -> None:
    result = CliRunner().invoke(main, ["hash", "--signals", "dhash", "x.jpg"])
    assert result.exit_code == 2
    assert "signals must be some of" in result.stderr


def test_no_progress_bar_in_a_pipe(photos: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "matcher.cli", "hash", "-j", "2", str(photos / "astronaut.jpg")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stderr == ""
    assert len(_lines(proc.stdout)) == 1


def test_forced_progress_bar_goes_to_stderr(photos: Path) -> None:
    result = CliRunner().invoke(main, ["hash", "--progress", str(photos / "astronaut.jpg")])
    assert result.exit_code == 0
    assert "img" in result.stderr and "pdq" not in result.stderr


def test_hash_on_one_file_imports_only_what_hashing_needs(photos: Path) -> None:
    """`matcher hash` on one file starts in ~0.1 CPU-s: no scipy (imagehash's DCT), no gRPC,
    no tqdm in a pipe, no index, no worker pool, no pillow-heif for a JPEG; OpenBLAS on one
    thread. What is imported is pinned here, since CPU time itself is too noisy to test."""
    code = (
        "import os, sys\n"
        "from matcher.cli import main\n"
        f"sys.argv = ['matcher', 'hash', {str(photos / 'astronaut.jpg')!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = {'scipy', 'imagehash', 'grpc', 'tqdm', 'numba', 'pillow_heif',\n"
        "         'concurrent', 'multiprocessing'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy), file=sys.stderr)\n"
        "print(os.environ.get('OPENBLAS_NUM_THREADS'), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert proc.stderr.splitlines() == ["[]", "1"]
    assert len(_lines(proc.stdout)) == 1


def test_keys_policy_and_restore_change_a_key_in_the_data_folder(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from matcher.bank import Accounts
    from matcher.principal import Principal

    data = str(tmp_path / "data")
    runner = CliRunner()
    created = runner.invoke(
        main, ["keys", "create", "--data", data, "--role", "partner", "--name", "p"]
    )
    assert created.exit_code == 0, created.output
    shown = runner.invoke(main, ["keys", "policy", "--data", data, "1"])
    assert json.loads(shown.stdout) == {
        "id": 1, "exact_distances": False, "max_distance": {}, "daily_hashes": None,
        "suspended": None, "suspend_reason": None, "named_in_reports": False,
    }  # fmt: skip
    changed = runner.invoke(
        main,
        ["keys", "policy", "--data", data, "1", "--max-distance", "pdq=24", "--daily-hashes", "9"],
    )
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.stdout)["max_distance"] == {"pdq": 24}
    looser = runner.invoke(
        main, ["keys", "policy", "--data", data, "1", "--max-distance", "pdq=40"]
    )
    assert looser.exit_code == 1 and "stricter" in looser.output
    named = runner.invoke(main, ["keys", "policy", "--data", data, "1", "--named-in-reports"])
    assert json.loads(named.stdout)["named_in_reports"] is True
    granted = runner.invoke(main, ["keys", "policy", "--data", data, "1", "--exact-distances"])
    assert json.loads(granted.stdout)["exact_distances"] is True
    assert "RISK" in granted.stderr or "read stored hashes" in granted.stderr
    with Accounts.open(data) as accounts:
        accounts.suspend_api_key(1, reason="near", by=Principal.operator("tests"))
    listed = runner.invoke(main, ["keys", "list", "--data", data])
    assert json.loads(listed.stdout)["suspended"] <= datetime.now(UTC).isoformat()
    restored = runner.invoke(main, ["keys", "restore", "--data", data, "1"])
    assert restored.exit_code == 0, restored.output
    assert (
        json.loads(runner.invoke(main, ["keys", "list", "--data", data]).stdout)["suspended"]
        is None
    )
