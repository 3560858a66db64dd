"""`matcher scan` and the scan library against a real server, on real files.

The story: a scan reports matches (mirrored copies too) and failures; its report is exact
(every file once) even when the job is SIGKILLed and resumed, when the server rate-limits it,
and when the server goes away and comes back mid-stream.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from matcher.cli import main
from matcher.hashing import hash_file
from matcher.principal import Principal, Role
from matcher.scan import HashOptions, Journal, RetryPolicy, iter_inputs, scan
from matcher.scan.journal import Entry
from matcher.service import ServerConfig
from tests.service_fixtures import Running, start_server, stop_server


def real_photos(folder: Path) -> list[Path]:
    """Six real photos bundled with scikit-image, as JPEGs."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry"]
    paths = []
    for i, name in enumerate(names):
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB").save(path, quality=90)
        paths.append(path)
    return paths


def make_photos(folder: Path, n: int) -> list[Path]:
    """``n`` distinct small JPEGs (smooth random colour fields: PDQ quality 100, and ~128
    bits apart, so none matches another), in sub-folders of 50."""
    rng = np.random.default_rng(len(str(folder)))
    paths = []
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        path = folder / f"{i // 50:02d}" / f"img{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        small.resize((160, 120), Image.Resampling.BICUBIC).save(path, quality=85)
        paths.append(path)
    return paths


def enroll_files(running: Running, paths: list[Path]) -> None:
    """Enroll ``paths`` into a new case, one item (PDQ and pHash) per photo, as a
    practitioner would."""
    me = Principal.key(0, Role.PRACTITIONER, org_id=running.org_ids["Helpline A"])
    case = running.bank.create_case(by=me)
    items = [hash_file(p, signals=["pdq", "phash"]).to_item() for p in paths]
    running.bank.enroll(case.number, items, by=me)


def assert_each_file_once(rows: list[dict], photos: list[Path], enrolled: list[Path]) -> None:
    """A --clean-rows report: every photo's row exactly once. An enrolled photo's row is its
    own item (closest by PDQ, and hit by its PDQ and its pHash at least), any other one's has no
    match."""
    per_file = Counter(r["path"] for r in rows)
    assert set(per_file) == {str(p) for p in photos}, "a file is missing"
    assert dict(per_file) == {str(p): 1 for p in photos}, "a file is in the report twice"
    for p in enrolled:
        (row,) = [r for r in rows if r["path"] == str(p)]
        assert row["item_id"] and row["signal"] == "pdq" and row["distance"] == 0
        assert row["hits"] >= 2


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def catalogue(tmp_path: Path, service: Running) -> dict:
    """A folder of 6 real photos and a broken file; two photos are in the bank, one of them is
    also in the folder mirrored."""
    folder = tmp_path / "catalogue"
    photos = real_photos(folder)
    enroll_files(service, photos[:2])
    mirrored = folder / "mirrored.jpg"
    ImageOps.mirror(Image.open(photos[0])).save(mirrored, quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return {"folder": folder, "photos": photos, "mirrored": mirrored}


def _scan_args(service: Running, *args: str) -> list[str]:
    # A key granted exact distances: the report's distances are checked (with a default
    # partner key they are null: partners get bands).
    return ["scan", "--server", service.target, "--api-key", service.keys["exact"], *args]


def test_scan_reports_matches_mirrored_copies_and_failures(
    service: Running, catalogue: dict, tmp_path: Path
) -> None:
    report = tmp_path / "report.jsonl"
    summary = tmp_path / "summary.json"
    result = CliRunner().invoke(
        main,
        [
            *_scan_args(service, "-j", "1", "-o", str(report), "--summary-json", str(summary)),
            str(catalogue["folder"]),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = _jsonl(report.read_text())
    matched = [Path(r["path"]).name for r in rows if r.get("item_id")]
    # One row per matched image, however many of its hashes hit.
    assert sorted(matched) == ["img0000.jpg", "img0001.jpg", "mirrored.jpg"]
    signals = {r["signal"] for r in rows if r.get("item_id")}
    assert signals == {"pdq"}  # the closest hash of each; the mirror via its dihedral variants
    assert all(r["distance"] <= 31 and r["hits"] >= 1 for r in rows if r.get("item_id"))
    (mirror,) = [r for r in rows if Path(r["path"]).name == "mirrored.jpg"]
    (original,) = [r for r in rows if Path(r["path"]).name == "img0000.jpg"]
    assert mirror["item_id"] == original["item_id"]
    (broken,) = [r for r in rows if r.get("error")]
    assert Path(broken["path"]).name == "broken.jpg" and broken["error_kind"] == "corrupt"
    assert "8 files scanned, 3 matched, 1 failed" in result.stderr
    stats = json.loads(summary.read_text())
    assert (stats["scanned"], stats["matched"], stats["failed"]) == (8, 3, 1)
    # No hash value ever reaches the report: only opaque ids and distances.
    assert hash_file(catalogue["photos"][0]).hashes["pdq"].hex not in report.read_text()


def test_forced_progress_bar_goes_to_stderr_with_a_total(service: Running, catalogue: dict) -> None:
    args = _scan_args(service, "-j", "1", "--progress", "--clean-rows", str(catalogue["folder"]))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "img" in result.stderr and "/8" in result.stderr  # the total was counted
    assert len(_jsonl(result.stdout)) >= 8


def test_without_dihedral_the_mirrored_copy_is_not_found_by_pdq(
    service: Running, catalogue: dict
) -> None:
    result = CliRunner().invoke(
        main, _scan_args(service, "-j", "1", "--no-dihedral", str(catalogue["mirrored"]))
    )
    assert result.exit_code == 0, result.output
    assert [r for r in _jsonl(result.stdout) if r.get("signal") == "pdq"] == []


def test_csv_clean_rows_and_hashes_input_agree_with_image_input(
    service: Running, catalogue: dict, tmp_path: Path
) -> None:
    args = _scan_args(service, "-j", "1", "--format", "csv", "--clean-rows")
    from_images = CliRunner().invoke(main, [*args, str(catalogue["folder"])])
    assert from_images.exit_code == 0, from_images.output
    rows = list(csv.DictReader(io.StringIO(from_images.stdout)))
    assert list(rows[0]) == [
        "path", "item_id", "signal", "distance", "hits", "error", "error_kind"
    ]  # fmt: skip
    assert {r["path"] for r in rows} == {
        str(p) for p in iter_inputs([str(catalogue["folder"])])
    }  # every file, once or more (one row per match)
    hashes = CliRunner().invoke(main, ["hash", "--dihedral", str(catalogue["folder"])])
    lines = tmp_path / "hashes.jsonl"
    lines.write_text(hashes.stdout + "not json\n")
    from_hashes = CliRunner().invoke(
        main, _scan_args(service, "--format", "csv", "--clean-rows", "--hashes", str(lines))
    )
    assert from_hashes.exit_code == 0, from_hashes.output
    again = list(csv.DictReader(io.StringIO(from_hashes.stdout)))
    bad = [r for r in again if r["error_kind"] == "invalid"]
    assert len(bad) == 1 and "not a JSON line" in bad[0]["error"]

    def key(rows: list[dict]) -> list[tuple]:
        return sorted((r["path"], r["item_id"], r["distance"], r["error_kind"]) for r in rows)

    assert key(again) == key(rows + bad)


def test_file_urls_are_read_through_fsspec(service: Running, catalogue: dict) -> None:
    local = CliRunner().invoke(main, _scan_args(service, "-j", "1", str(catalogue["folder"])))
    url = CliRunner().invoke(main, _scan_args(service, "-j", "1", f"file://{catalogue['folder']}"))
    assert url.exit_code == 0, url.output

    def key(rows: list[dict]) -> list[tuple]:
        return sorted((Path(r["path"]).name, r.get("item_id"), r.get("error_kind")) for r in rows)

    assert key(_jsonl(url.stdout)) == key(_jsonl(local.stdout))
    assert all(r["path"].startswith("file://") for r in _jsonl(url.stdout))


def test_a_report_is_not_mixed_with_another_job_or_overwritten(
    service: Running, catalogue: dict, tmp_path: Path
) -> None:
    report = tmp_path / "r.jsonl"
    base = _scan_args(service, "-j", "1", "-o", str(report))
    first = CliRunner().invoke(main, [*base, str(catalogue["photos"][0])])
    assert first.exit_code == 0, first.output
    other = CliRunner().invoke(main, [*base, str(catalogue["photos"][1])])
    assert other.exit_code == 1 and "belongs to a different scan" in other.stderr
    Path(f"{report}.state").unlink()
    orphan = CliRunner().invoke(main, [*base, str(catalogue["photos"][0])])
    assert orphan.exit_code == 1 and "--restart" in orphan.stderr
    restarted = CliRunner().invoke(main, [*base, "--restart", str(catalogue["photos"][1])])
    assert restarted.exit_code == 0, restarted.output
    assert {Path(r["path"]).name for r in _jsonl(report.read_text())} == {"img0001.jpg"}


def test_rows_written_after_the_last_commit_are_dropped_on_resume(tmp_path: Path) -> None:
    report = tmp_path / "r.csv"
    with Journal(report, fmt="csv", job={"j": 1}) as journal:
        journal.commit([Entry("a.jpg", [{"path": "a.jpg", "item_id": "m_1"}], matched=True)])
    with open(report, "a") as f:  # a crash between writing rows and marking files done
        f.write("b.jpg,m_2,pdq,3,,\n")
    with Journal(report, fmt="csv", job={"j": 1}) as journal:
        assert journal.pending(["a.jpg", "b.jpg"]) == ["b.jpg"]
        assert journal.totals.scanned == 1
        journal.commit([Entry("b.jpg", [{"path": "b.jpg", "item_id": "m_2"}], matched=True)])
        journal.commit([Entry("b.jpg", [{"path": "b.jpg", "item_id": "m_2"}], matched=True)])
    rows = list(csv.DictReader(report.open()))
    assert [(r["path"], r["item_id"]) for r in rows] == [("a.jpg", "m_1"), ("b.jpg", "m_2")]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_stopped_mid_job_then_the_same_command_finishes_with_every_file_once(
    service: Running, tmp_path: Path, stop: signal.Signals
) -> None:
    photos = make_photos(tmp_path / "many", 240)
    enroll_files(service, photos[::40])
    report = tmp_path / "report.jsonl"
    command = [
        sys.executable, "-m", "matcher.cli", "scan", "--server", service.target,
        "-j", "2", "--batch-size", "4", "--clean-rows", "-o", str(report), str(tmp_path / "many"),
    ]  # fmt: skip
    env = {**os.environ, "MATCHER_API_KEY": service.keys["exact"]}
    proc = subprocess.Popen(command, env=env, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if report.exists() and report.read_bytes().count(b"\n") >= 40:
            break
        time.sleep(0.01)
    # To the whole group, as a terminal does: the scan and its hashing processes.
    os.killpg(proc.pid, stop)
    _, stderr = proc.communicate(timeout=30)
    if stop == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, "the scan finished before it could be killed"
    else:
        assert proc.returncode == 130, stderr
        assert b"interrupted" in stderr and b"Traceback" not in stderr
    before = report.read_bytes().count(b"\n")
    assert 0 < before < len(photos)

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "already done by an earlier run" in again.stderr
    rows = _jsonl(report.read_text())
    assert_each_file_once(rows, photos, enrolled=photos[::40])

    third = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "0 files scanned" in third.stderr
    assert third.stderr.count("\n") == 1  # in a pipe: the summary, no progress bar
    assert _jsonl(report.read_text()) == rows


def _peak_rss(command: list[str], env: dict[str, str]) -> int:
    """Run ``command``; return its peak resident memory (bytes), sampled every 20 ms."""
    import psutil

    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watch.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
    return peak


def test_memory_stays_flat_when_the_job_is_ten_times_longer(
    service: Running, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    env = {**os.environ, "MATCHER_API_KEY": service.keys["exact"]}
    peaks = {}
    for n in (3_000, 30_000):
        hashes = tmp_path / f"h{n}.jsonl"
        with hashes.open("w") as f:
            for i in range(n):
                value = rng.integers(0, 256, 8, dtype=np.uint8).tobytes().hex()
                f.write(json.dumps({"path": f"/catalogue/{i:08d}.jpg", "phash": value}) + "\n")
        command = [
            sys.executable, "-m", "matcher.cli", "scan", "--server", service.target,
            "--batch-size", "1000", "--clean-rows", "-o", str(tmp_path / f"r{n}.jsonl"),
            "--hashes", str(hashes),
        ]  # fmt: skip
        peaks[n] = _peak_rss(command, env)
        assert (tmp_path / f"r{n}.jsonl").read_text().count("\n") == n
    assert peaks[30_000] < peaks[3_000] + 20 * 2**20, peaks


def test_rate_limited_streams_wait_and_resend_exactly_the_unanswered_batches(
    tmp_path: Path,
) -> None:
    # 30 hashes/s with a burst of 30, batches of 4 images (4 hashes each): the stream is cut
    # again and again.
    config = ServerConfig(address="127.0.0.1:0", metrics_address=None, rate=30, burst=30)
    running, thread = start_server(tmp_path / "data", config)
    try:
        assert running.bank.wait_ready(30)
        photos = make_photos(tmp_path / "p", 60)
        enroll_files(running, photos[:3])
        waits: list[float] = []
        with running.client("exact") as client, Journal(tmp_path / "r.jsonl") as journal:
            summary = scan(
                map(str, photos),
                client,
                journal,
                options=HashOptions(dihedral=False),
                batch_size=4,
                clean_rows=True,
                on_retry=lambda exc, wait: waits.append(wait),
            )
        assert summary.retries > 0 and all(w < 2 for w in waits)
        assert_each_file_once(_jsonl((tmp_path / "r.jsonl").read_text()), photos, photos[:3])
    finally:
        stop_server(running, thread)


def test_server_gone_mid_stream_and_back_loses_and_repeats_nothing(
    service: Running, tmp_path: Path
) -> None:
    photos = make_photos(tmp_path / "p", 80)
    enroll_files(service, photos[::10])
    port = service.server.port
    restarted = threading.Event()

    def bounce() -> None:
        # Stop the server under the stream, then start a new one on the same port and bank.
        from matcher.service import Server

        service.run(service.server.stop(grace=0, drain=0))
        time.sleep(0.5)
        config = ServerConfig(address=f"127.0.0.1:{port}", metrics_address=None)
        service.server = service.run(Server.start(service.bank, config, load=False))
        restarted.set()

    commits = 0

    def on_commit(n: int) -> None:
        nonlocal commits
        commits += 1
        if commits == 3:
            threading.Thread(target=bounce).start()

    retry = RetryPolicy(attempts=20, initial=0.1, maximum=0.5)
    with service.client("exact") as client, Journal(tmp_path / "r.jsonl") as journal:
        summary = scan(
            map(str, photos),
            client,
            journal,
            batch_size=4,
            clean_rows=True,
            retry=retry,
            on_commit=on_commit,
        )
    assert restarted.is_set() and summary.retries > 0
    assert_each_file_once(_jsonl((tmp_path / "r.jsonl").read_text()), photos, photos[::10])


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_kill_9_of_the_scan_leaves_no_process_behind(service: Running, tmp_path: Path) -> None:
    from tests.test_hashing_pool import alive, children_of, wait_until

    make_photos(tmp_path / "many", 600)
    command = [
        sys.executable, "-m", "matcher.cli", "scan", "--server", service.target, "-j", "2",
        "-o", str(tmp_path / "r.jsonl"), str(tmp_path / "many"),
    ]  # fmt: skip
    env = {**os.environ, "MATCHER_API_KEY": service.keys["exact"]}
    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: len(children_of(proc.pid)) >= 2, 60), "no hashing workers"
        children = children_of(proc.pid)
    finally:
        proc.kill()  # the scan alone, as `kill -9 PID` does: not its process group
        proc.wait()
    assert wait_until(lambda: not alive(children), 5), f"left running: {alive(children)}"
