"""`scan_dask` on a real LocalCluster of two worker processes, against a real server.

A worker is SIGKILLed while it runs a partition: Dask runs the partition again elsewhere, and
the report still has every file exactly once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from matcher.cli import main
from matcher.scan import Journal, Service, scan_dask
from tests.service_fixtures import Running
from tests.test_scan import _jsonl, assert_each_file_once, enroll_files, make_photos

distributed = pytest.importorskip("distributed", reason="Dask is an optional extra")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster


def test_a_worker_killed_mid_job_loses_no_file_and_duplicates_none(
    cluster, service: Running, tmp_path: Path
) -> None:
    photos = make_photos(tmp_path / "p", 120)
    enroll_files(service, photos[::20])
    killed: dict[str, object] = {}
    with distributed.Client(cluster) as dc:
        pids = dc.run(os.getpid)

        def kill_a_busy_worker(_: int) -> None:
            # At the first partition in the report, the other worker is mid-partition: kill it.
            if killed:
                return
            for worker, keys in dc.processing().items():
                if keys:
                    killed.update(worker=worker, key=next(iter(keys)))
                    os.kill(pids[worker], signal.SIGKILL)
                    return

        with Journal(tmp_path / "r.jsonl") as journal:
            summary = scan_dask(
                dc,
                map(str, photos),
                Service(service.target, service.keys["exact"]),
                journal,
                partition_size=8,
                clean_rows=True,
                on_commit=kill_a_busy_worker,
            )
        assert killed, "no worker was busy to kill"
        assert killed["worker"] not in dc.run(os.getpid)  # it is gone (the nanny made another)
        story = dc.run_on_scheduler(lambda dask_scheduler, key=killed["key"]: [
            t[2] for t in dask_scheduler.story(key) if len(t) > 2])  # fmt: skip
        assert story.count("processing") >= 2, "the killed worker's task was not run again"
    assert summary.scanned == len(photos)
    assert_each_file_once(_jsonl((tmp_path / "r.jsonl").read_text()), photos, photos[::20])


def test_cli_dask_option_resumes_a_finished_job_as_a_no_op(
    cluster, service: Running, tmp_path: Path
) -> None:
    photos = make_photos(tmp_path / "p", 30)
    enroll_files(service, photos[:2])
    report = tmp_path / "r.csv"
    args = [
        "scan", "--server", service.target, "--api-key", service.keys["partner"],
        "--dask", cluster.scheduler_address, "--partition-size", "7", "--format", "csv",
        "-o", str(report), str(tmp_path / "p"),
    ]  # fmt: skip
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "30 files scanned, 2 matched, 0 failed" in first.stderr
    text = report.read_text()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "30 already done" in again.stderr
    assert report.read_text() == text
    hashes_too = CliRunner().invoke(main, [*args[:-1], "--hashes", "-"], input="")
    assert hashes_too.exit_code == 2
