"""The README documents every command and option, every command's help has an example, and
every Python example of the README runs as written (as a script, against a real server)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from PIL import Image

import matcher
from matcher.cli import main
from matcher.hashing import hash_file
from matcher.principal import Principal, Role
from tests.conftest import ROOT
from tests.service_fixtures import Running

README = (ROOT / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "matcher") -> list[tuple[str, click.Command]]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        full = f"{prefix} {name}"
        found.append((full, command))
        if isinstance(command, click.Group):
            found += _commands(command, full)
    return found


COMMANDS = _commands(main)


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_is_in_the_readme_with_an_example(name: str, command: click.Command) -> None:
    assert f"`{name}" in README or f"\n{name} " in README or f"$ {name}" in README, name
    assert "Example" in (command.help or ""), f"{name} --help has no example"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_option_is_in_the_readme(name: str, command: click.Command) -> None:
    for param in command.params:
        if isinstance(param, click.Option):
            longest = max(param.opts, key=len)
            assert longest in README, f"{name} {longest} is not documented in README.md"


def test_public_surface_is_what_was_meant() -> None:
    assert set(matcher.__all__) >= {"Hash", "SignalType", "SIGNALS", "MatcherError", "PDQ"}
    for name in matcher.__all__:
        assert hasattr(matcher, name), name


def test_make_targets_are_in_the_readme() -> None:
    for target in ("make run", "make test"):
        assert target in README


# -- every Python example of the README runs, as a plain script, against a real server

EXAMPLES = [
    textwrap.dedent(code)
    for _, code in re.findall(r"^( *)```python\n(.*?)^\1```", README, flags=re.S | re.M)
]
# Examples that need a cluster manager this machine does not have (Kubernetes, a batch
# system): skipped where their package is absent, with the reason shown.
NEEDS = {"dask_kubernetes": "a Kubernetes cluster", "dask_jobqueue": "a batch system"}


def _example_id(code: str) -> str:
    first = next(line for line in code.splitlines() if line.startswith(("from", "import")))
    return first.split()[1]


@pytest.fixture
def photo_folder(tmp_path: Path, astronaut: Image.Image, coffee: Image.Image) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    astronaut.save(folder / "upload.jpg", quality=90)
    coffee.save(folder / "other.jpg", quality=90)
    return folder


@pytest.mark.parametrize(
    "code", EXAMPLES, ids=[f"{i}-{_example_id(c)}" for i, c in enumerate(EXAMPLES)]
)
def test_every_python_example_runs_as_a_script(
    code: str, service: Running, photo_folder: Path, tmp_path: Path
) -> None:
    for module, reason in NEEDS.items():
        if f"from {module}" in code and importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} and {reason}")
    # The upload is enrolled, so the examples see a match (and report it).
    me = Principal.key(0, Role.PRACTITIONER, org_id=service.org_ids["Helpline A"])
    case = service.bank.create_case(by=me)
    item = hash_file(photo_folder / "upload.jpg").to_item()
    service.bank.enroll(case.number, [item], by=me)

    env = {**os.environ, "MATCHER_API_KEY": service.keys["partner"]}
    script = code
    for placeholder in ("matcher.example.org:50051", "matcher.internal:50051"):
        script = script.replace(placeholder, service.target)
    script = script.replace('"mk_..."', repr(service.keys["partner"]))
    script = script.replace('"upload.jpg"', repr(str(photo_folder / "upload.jpg")))
    script = script.replace('"/data/uploads"', repr(str(photo_folder)))
    script = script.replace('"s3://bucket/uploads/"', repr(f"file://{photo_folder}"))
    cluster = None
    if "tcp://10.0.0.5:8786" in script:
        distributed = pytest.importorskip("distributed", reason="Dask is an optional extra")
        # Its workers read MATCHER_API_KEY from their own environment (Service has no key).
        os.environ["MATCHER_API_KEY"] = service.keys["partner"]
        try:
            cluster = distributed.LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
            )
        finally:
            del os.environ["MATCHER_API_KEY"]
        script = script.replace("tcp://10.0.0.5:8786", cluster.scheduler_address)
    path = tmp_path / "example.py"
    path.write_text(script)
    try:
        run = subprocess.run(
            [sys.executable, str(path)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if cluster is not None:
            cluster.close()
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr
    if "client.match(" in code:
        assert "m_" in run.stdout, "the enrolled upload was not found"
