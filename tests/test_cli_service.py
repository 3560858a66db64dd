"""The service commands of the CLI against a real server: the practitioner, victim and partner
flows with items (one per image), and the detection profiles end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from matcher.cli import main
from matcher.hashing import hash_file
from tests.service_fixtures import Running


def _run(service: Running, role: str | None, args: list[str], **kwargs) -> Result:
    env = {"MATCHER_SERVER": service.target, "MATCHER_API_KEY": service.keys.get(role, "")}
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False, **kwargs)


def _ok(result: Result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def photos(tmp_path: Path, astronaut: Image.Image, coffee: Image.Image) -> dict[str, Path]:
    paths = {
        "astronaut": tmp_path / "astronaut.jpg",
        "coffee": tmp_path / "coffee.png",
        "mirrored": tmp_path / "mirrored.jpg",
        "cropped": tmp_path / "cropped.jpg",
        "flat": tmp_path / "flat.png",
    }
    astronaut.save(paths["astronaut"], quality=92)
    coffee.save(paths["coffee"])
    astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(paths["mirrored"], quality=80)
    w, h = astronaut.size
    # Off-centre crop of 15%: plain PDQ misses it, the enroll/query profiles find it.
    astronaut.crop((int(w * 0.15), int(h * 0.15), w, h)).save(paths["cropped"], quality=85)
    # Soft low-contrast blotches: PDQ quality below the floor of 50. (Not a plain gradient:
    # that one is on the allowlist's seed, and refused: tests/test_allowlist.py.)
    blotches = np.random.default_rng(0).integers(110, 146, (6, 6)).astype(np.uint8)
    small = Image.fromarray(blotches).resize((256, 256), Image.Resampling.BICUBIC)
    small.convert("RGB").save(paths["flat"])
    return paths


def _matches(service: Running, *paths: Path, profile: str = "plain") -> list[list[dict]]:
    found = _run(service, "partner", ["match", "--profile", profile, *map(str, paths)])
    assert found.exit_code == 0, found.output
    return [json.loads(line)["matches"] for line in found.stdout.splitlines()]


def test_practitioner_partner_and_victim_flows(service: Running, photos: dict[str, Path]) -> None:
    case = _ok(_run(service, "practitioner", ["case", "create"]))
    enrolled = _ok(
        _run(
            service,
            "practitioner",
            [
                "enroll",
                case["case"],
                "--label",
                "photo A",
                str(photos["astronaut"]),
                str(photos["coffee"]),
            ],
        )
    )
    assert [i["item"] for i in enrolled["items"]] == [1, 2]
    assert [i["hash_count"] for i in enrolled["items"]] == [4, 4]  # PDQ, pHash, MD5, SHA-256
    assert (enrolled["added"], enrolled["item_count"], enrolled["hash_count"]) == (2, 2, 8)

    # One match per matched image: the mirror finds item 1 (through its dihedral variants).
    mirrored, other = _matches(service, photos["mirrored"], photos["cropped"])
    assert len(mirrored) == 1 and mirrored[0]["signal"] == "pdq" and mirrored[0]["hits"] >= 1
    assert mirrored[0]["item_id"].startswith("m_") and other == []

    status = _ok(_run(service, "practitioner", ["case", "status", case["case"]]))
    assert status["state"] == "active" and [i["number"] for i in status["items"]] == [1, 2]
    assert {i["label"] for i in status["items"]} == {"photo A"}
    assert "astronaut" not in json.dumps(status)  # no file name ever reaches the service
    assert hash_file(photos["astronaut"]).hashes["pdq"].hex not in json.dumps(status)

    # The victim: status and withdrawal of one photo, then of the case, with the secret.
    wrong = _run(service, None, ["status", case["case"]], input="not-the-secret\n")
    assert wrong.exit_code == 1 and "no case with this number and secret" in wrong.stderr
    seen = _run(service, None, ["status", case["case"], "--secret", case["secret"]])
    assert seen.exit_code == 0 and "2 photos" in seen.stdout and "photo 1 (photo A)" in seen.stdout
    one = _run(service, None, ["withdraw", case["case"], "--item", "1"], input=case["secret"])
    assert one.exit_code == 0 and "photo 1" in one.stdout and "withdrawn" in one.stdout
    astronaut, coffee = _matches(service, photos["astronaut"], photos["coffee"])
    assert astronaut == [] and len(coffee) == 1  # the other photo still matches
    right = _run(service, None, ["withdraw", case["case"], "--secret", case["secret"]])
    assert right.exit_code == 0 and "withdrawn" in right.stdout
    assert _matches(service, photos["coffee"]) == [[]]


def test_practitioner_withdraws_one_item(service: Running, photos: dict[str, Path]) -> None:
    case = _ok(_run(service, "practitioner", ["case", "create"]))["case"]
    _ok(
        _run(
            service,
            "practitioner",
            ["enroll", case, str(photos["astronaut"]), str(photos["coffee"])],
        )
    )
    done = _ok(_run(service, "practitioner", ["case", "withdraw", case, "--item", "2"]))
    assert (done["number"], done["state"]) == (2, "withdrawn")
    astronaut, coffee = _matches(service, photos["astronaut"], photos["coffee"])
    assert len(astronaut) == 1 and coffee == []
    items = _ok(_run(service, "practitioner", ["case", "status", case]))["items"]
    assert [(i["state"], i["hash_count"]) for i in items] == [("active", 4), ("withdrawn", 0)]


def test_a_flat_image_is_enrolled_by_its_other_hashes_and_fails_nothing(
    service: Running, photos: dict[str, Path]
) -> None:
    assert hash_file(photos["flat"]).flat
    case = _ok(_run(service, "practitioner", ["case", "create"]))["case"]
    result = _run(
        service,
        "practitioner",
        ["enroll", case, "--profile", "enroll", str(photos["flat"]), str(photos["astronaut"])],
    )
    enrolled = _ok(result)
    assert "flat.png: too flat for PDQ" in result.stderr
    flat, astronaut = enrolled["items"]
    assert flat["hash_count"] == 3  # pHash, MD5, SHA-256: no PDQ, no view
    assert astronaut["hash_count"] > 100
    items = _ok(_run(service, "practitioner", ["case", "status", case]))["items"]
    assert "pdq" not in items[0]["hashes_by_signal"]


def test_enrollment_refused_as_a_whole_when_a_file_fails(
    service: Running, photos: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    case = _ok(_run(service, "practitioner", ["case", "create"]))["case"]
    result = _run(service, "practitioner", ["enroll", case, str(photos["astronaut"]), str(broken)])
    assert result.exit_code == 1 and "nothing was enrolled" in result.stderr
    status = _ok(_run(service, "practitioner", ["case", "status", case]))
    assert status["hash_count"] == 0 and status["items"] == []


def test_hash_lines_enroll_the_same_items_and_a_resend_adds_nothing(
    service: Running, photos: dict[str, Path], tmp_path: Path
) -> None:
    case = _ok(_run(service, "practitioner", ["case", "create"]))["case"]
    paths = [str(photos["astronaut"]), str(photos["flat"])]
    first = _ok(_run(service, "practitioner", ["enroll", case, "--profile", "enroll", *paths]))
    lines = tmp_path / "h.jsonl"
    lines.write_text(_run(service, None, ["hash", "--profile", "enroll", *paths]).stdout)
    again = _ok(_run(service, "practitioner", ["enroll", case, "--hashes", str(lines)]))
    assert (again["added"], again["existing"]) == (0, 2)
    assert [i["item"] for i in again["items"]] == [i["item"] for i in first["items"]]
    assert again["hash_count"] == first["hash_count"]


def test_bad_input_is_one_line_and_exit_1(service: Running) -> None:
    result = _run(service, "practitioner", ["case", "status", "NOT-A-CASE"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("matcher: ")


def test_detection_profiles_end_to_end(service: Running, photos: dict[str, Path]) -> None:
    case = _ok(_run(service, "practitioner", ["case", "create"]))["case"]
    enrolled = _ok(
        _run(
            service,
            "practitioner",
            ["enroll", case, "--profile", "enroll", str(photos["astronaut"])],
        )
    )
    assert enrolled["hash_count"] > 100  # the views are stored too, in one item
    [found] = _matches(service, photos["cropped"], profile="query")
    assert len(found) == 1, "one result for the image, however many of its views were hit"
    assert found[0]["hits"] >= 1
    assert _matches(service, photos["coffee"], profile="query") == [[]]


def test_every_serve_option_also_reads_an_environment_variable_shown_in_its_help() -> None:
    """Issue 12: a container is configured through its environment only, so every option of
    ``matcher serve`` has a ``MATCHER_*`` variable, and ``--help`` names it."""
    import click

    from matcher.cli.serve import serve_command

    options = [p for p in serve_command.params if isinstance(p, click.Option)]
    missing = [o.name for o in options if not o.envvar]
    assert missing == []
    shown = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200).output
    for option in options:
        assert isinstance(option.envvar, str) and option.envvar.startswith("MATCHER_")
        assert option.envvar in shown, option.name
