"""The service commands of the CLI against a real server: the practitioner, victim and partner
flows, and the detection profiles end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from matcher.cli import main
from tests.service_fixtures import Running


def _run(service: Running, role: str | None, args: list[str], **kwargs) -> object:
    env = {"MATCHER_SERVER": service.target, "MATCHER_API_KEY": service.keys.get(role, "")}
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False, **kwargs)


@pytest.fixture
def photos(tmp_path: Path, astronaut: Image.Image, coffee: Image.Image) -> dict[str, Path]:
    paths = {
        "astronaut": tmp_path / "astronaut.jpg",
        "coffee": tmp_path / "coffee.png",
        "mirrored": tmp_path / "mirrored.jpg",
        "cropped": tmp_path / "cropped.jpg",
    }
    astronaut.save(paths["astronaut"], quality=92)
    coffee.save(paths["coffee"])
    astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(paths["mirrored"], quality=80)
    w, h = astronaut.size
    # Off-centre crop of 15%: plain PDQ misses it, the enroll/query profiles find it.
    astronaut.crop((int(w * 0.15), int(h * 0.15), w, h)).save(paths["cropped"], quality=85)
    return paths


def test_practitioner_partner_and_victim_flows(service: Running, photos: dict[str, Path]) -> None:
    created = _run(service, "practitioner", ["case", "create"])
    assert created.exit_code == 0, created.output
    case = json.loads(created.stdout)
    enrolled = _run(service, "practitioner", ["enroll", case["case"], str(photos["astronaut"])])
    assert enrolled.exit_code == 0, enrolled.output
    assert json.loads(enrolled.stdout)["hash_count"] == 4  # PDQ, pHash, MD5, SHA-256

    matched = _run(service, "partner", ["match", str(photos["mirrored"]), str(photos["coffee"])])
    assert matched.exit_code == 0, matched.output
    mirrored, coffee = (json.loads(line) for line in matched.stdout.splitlines())
    assert [m["signal"] for m in mirrored["matches"]] == ["pdq"]  # via its dihedral variants
    assert coffee["matches"] == []

    status = _run(service, "practitioner", ["case", "status", case["case"]])
    assert json.loads(status.stdout)["state"] == "active"

    wrong = _run(service, None, ["withdraw", case["case"]], input="not-the-secret\n")
    assert wrong.exit_code == 1 and "no case with this number and secret" in wrong.stderr
    right = _run(service, None, ["withdraw", case["case"], "--secret", case["secret"]])
    assert right.exit_code == 0 and "withdrawn" in right.stdout
    after = _run(service, "partner", ["match", str(photos["astronaut"])])
    assert json.loads(after.stdout)["matches"] == []


def test_enrollment_refused_as_a_whole_when_a_file_fails(
    service: Running, photos: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    case = json.loads(_run(service, "practitioner", ["case", "create"]).stdout)["case"]
    result = _run(service, "practitioner", ["enroll", case, str(photos["astronaut"]), str(broken)])
    assert result.exit_code == 1 and "nothing was enrolled" in result.stderr
    status = _run(service, "practitioner", ["case", "status", case])
    assert json.loads(status.stdout)["hash_count"] == 0


def test_detection_profiles_end_to_end(service: Running, photos: dict[str, Path]) -> None:
    case = json.loads(_run(service, "practitioner", ["case", "create"]).stdout)["case"]
    enrolled = _run(
        service,
        "practitioner",
        ["enroll", case, "--profile", "enroll", str(photos["astronaut"])],
    )
    assert enrolled.exit_code == 0, enrolled.output
    assert json.loads(enrolled.stdout)["hash_count"] > 100  # the views are stored too
    found = _run(service, "partner", ["match", "--profile", "query", str(photos["cropped"])])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["matches"], "the profiles find the off-centre crop"
    other = _run(service, "partner", ["match", "--profile", "query", str(photos["coffee"])])
    assert json.loads(other.stdout)["matches"] == []
