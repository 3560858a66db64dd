"""The hashing pool: ordered results, errors raised for their item, no ``__main__`` guard
needed, and no worker left behind when its parent is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from matcher.hashing import WorkerDied, hash_files, ordered_map
from tests.conftest import ROOT


def _fail_on_three(n: int) -> int:
    if n == 3:
        raise ValueError("three")
    return n * 10


def test_results_come_back_in_input_order_from_several_processes() -> None:
    assert list(ordered_map(abs, range(-50, 0), jobs=3, window=4)) == list(range(50, 0, -1))


def test_an_error_is_raised_for_its_item_after_the_earlier_results() -> None:
    results = ordered_map(_fail_on_three, range(10), jobs=2)
    assert [next(results) for _ in range(3)] == [0, 10, 20]
    with pytest.raises(ValueError, match="three"):
        next(results)


def test_a_worker_that_dies_is_a_matcher_error() -> None:
    with pytest.raises(WorkerDied, match="signal 9"):
        list(ordered_map(_kill_self, range(4), jobs=2))


def _kill_self(n: int) -> None:
    if n == 1:
        os.kill(os.getpid(), signal.SIGKILL)


def test_one_item_is_hashed_in_this_process(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), "red").save(tmp_path / "one.png")
    [result] = hash_files([tmp_path / "one.png"], jobs=4)
    assert result.ok


def test_a_script_without_a_main_guard_can_hash_in_several_processes(tmp_path: Path) -> None:
    for i in range(4):
        Image.new("RGB", (64, 64), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from matcher.hashing import hash_files
            results = list(hash_files([{str(tmp_path)!r}], jobs=2))
            print(sum(r.ok for r in results))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"


def children_of(pid: int) -> set[int]:
    """Every descendant of ``pid`` (Linux /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += kids - found
            found |= kids
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.add(pid)
    return living


def wait_until(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(
        "import time\n"
        "from matcher.hashing import ordered_map\n"
        "for _ in ordered_map(time.sleep, [30] * 8, jobs=2):\n"
        "    pass\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], cwd=ROOT)
    try:
        assert wait_until(lambda: len(children_of(parent.pid)) >= 2, 60), "no workers started"
        workers = children_of(parent.pid)
    finally:
        parent.kill()
        parent.wait()
    assert wait_until(lambda: not alive(workers), 5), f"left behind: {alive(workers)}"


def test_a_function_of_the_callers_script_is_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "own.py"
    script.write_text(
        "from matcher.hashing import ordered_map\n"
        "def double(x):\n"
        "    return 2 * x\n"
        "try:\n"
        "    list(ordered_map(double, [1, 2, 3], jobs=2))\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert "a worker cannot load the function" in out.stdout, out.stderr
