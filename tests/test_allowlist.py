"""The allowlist (negative bank), against a real server: refused enrollments, suppressed
matches, the seed, and what real photos do.

The seed pictures are hashed as a practitioner would hash them (``hash_file`` with the
shipped ``enroll`` profile) and enrolled through the gRPC API; every rule here has a test that
fails without it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import grpc
import numpy as np
import pytest

from matcher.allowlist_seed import compute_entries, patterns, seed_entries
from matcher.bank.allowlist import REFUSAL
from matcher.errors import Allowlisted
from matcher.hashing.files import hash_file
from matcher.principal import Principal
from matcher.records import NewItem
from matcher.signals import MD5, PDQ, PHASH, Hash
from tests.conftest import shared_path
from tests.service_fixtures import Running, flip_bits, service

__all__ = ["service"]

ADMIN = Principal.operator("test")


def photo() -> NewItem:
    return NewItem(
        [Hash(PDQ, os.urandom(32), 90), Hash(PHASH, os.urandom(8)), Hash(MD5, os.urandom(16))]
    )


def test_the_generated_seed_is_what_the_patterns_hash_to() -> None:
    # ``matcher.bank._seed_data`` is generated (python -m matcher.allowlist_seed): a change
    # to the patterns or to the hashers must regenerate it.
    assert [(e.hash, e.label) for e in compute_entries()] == [
        (e.hash, e.label) for e in seed_entries()
    ]


def test_a_new_bank_is_seeded_once(service: Running) -> None:
    bank = service.bank
    entries = bank.allowlist_entries(by=ADMIN)
    assert len(entries) == len(seed_entries()) == len(bank.allowlist)
    assert {e.source for e in entries} == {"seed"}
    assert {e.label for e in entries} == {"uniform", "gradient", "grid", "checkerboard", "stripes"}
    # An operator's removal sticks: loading again does not seed again.
    bank.allowlist_remove(entries[0].id, by=ADMIN)
    bank.load()
    assert len(bank.allowlist_entries(by=ADMIN)) == len(entries) - 1
    added = bank.allowlist_seed(by=ADMIN)
    assert (added.added, added.existing) == (1, len(entries) - 1)


def test_enrolling_each_seed_picture_hashed_with_the_enroll_profile_is_refused(
    service: Running, tmp_path: Path
) -> None:
    items = []
    for n, (_, picture) in enumerate(patterns()):
        path = tmp_path / f"pattern{n}.png"
        picture.save(path)
        items.append(hash_file(path, profile="enroll").to_item())
    with service.client("practitioner") as c:
        case = c.create_case()
        for item in items:
            with pytest.raises(Allowlisted) as refused:
                # A real photo first: the whole call is refused, and the field names the item.
                c.add_items(case.number, [photo(), item])
            assert refused.value.field == "items[1]"
            # The same words whatever the entry: nothing tells which one, nor how close.
            assert refused.value.reason == REFUSAL
        status = c.get_case(case.number)
    assert status.item_count == 0
    assert service.bank.allowlist.refused == len(items)
    refusals = [e for e in service.bank.audit_log(by=ADMIN) if e.action == "case.enroll_refused"]
    assert refusals and refusals[0].detail == {"item": 1, "items": 2, "reason": "allowlist"}


def test_a_refusal_is_failed_precondition_with_a_field_violation(service: Running) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    from matcher import contract
    from matcher.v1 import cases_pb2, cases_pb2_grpc

    flat = Hash(PHASH, bytes.fromhex("8000000000000000"))  # any uniform picture's pHash
    with service.client("practitioner") as c:
        case = c.create_case()
    channel = grpc.insecure_channel(service.target)
    stub = cases_pb2_grpc.CaseServiceStub(channel)
    request = cases_pb2.AddItemsRequest(
        name=contract.case_name(case.number), items=contract.items_to_pb([photo(), [flat]])
    )
    with pytest.raises(grpc.RpcError) as error:
        stub.AddItems(
            request, metadata=[("authorization", f"Bearer {service.keys['practitioner']}")]
        )
    channel.close()
    assert error.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot be enrolled" in (error.value.details() or "")
    assert flat.hex not in (error.value.details() or "")
    status = rpc_status.from_call(error.value)
    assert status is not None
    violations = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            violations += [v.field for v in bad.field_violations]
    assert violations == ["items[1]"]


def test_an_admin_entry_refuses_near_copies_and_removing_it_lets_them_in(
    service: Running, rng: np.random.Generator
) -> None:
    meme = Hash(PDQ, rng.integers(0, 256, 32, dtype=np.uint8).tobytes(), 90)
    added = service.bank.allowlist_add([meme], label="meme: cat", by=ADMIN)
    with service.client("practitioner") as c:
        case = c.create_case()
        # A re-encoded copy (20 bits away) is refused; an unrelated picture is not.
        with pytest.raises(Allowlisted):
            c.add_items(case.number, [NewItem([flip_bits(meme, 20, rng)])])
        assert c.add_items(case.number, [NewItem([flip_bits(meme, 120, rng)])]).added == 1
        service.bank.allowlist_remove(added.entries[0].id, by=ADMIN)
        assert c.add_items(case.number, [NewItem([flip_bits(meme, 20, rng)])]).added == 1


def test_real_photos_are_not_refused(service: Running) -> None:
    # A bounded sample; the full count over ../shared/data is in the README ("The allowlist").
    folders = [shared_path("photos", "bsds500", "val"), shared_path("photos", "clothing")]
    paths = [p for f in folders for p in random.Random(3).sample(sorted(f.rglob("*.jpg")), 4)]
    items = [hash_file(p, profile="enroll").to_item() for p in paths]
    with service.client("practitioner") as c:
        case = c.create_case()
        assert c.add_items(case.number, items).added == len(items)


def test_partners_and_practitioners_cannot_touch_the_allowlist(service: Running) -> None:
    from matcher.errors import PermissionDenied
    from matcher.principal import Role

    partner = Principal.key(9, Role.PARTNER)
    with pytest.raises(PermissionDenied):
        service.bank.allowlist_entries(by=partner)
    with pytest.raises(PermissionDenied):
        service.bank.allowlist_add([Hash(PHASH, bytes(8))], label="x", by=partner)


def test_a_suppressed_match_is_counted_and_not_returned_while_other_items_still_match(
    service: Running, rng: np.random.Generator
) -> None:
    import urllib.request

    meme, other_view, victim = (
        Hash(PDQ, rng.integers(0, 256, 32, dtype=np.uint8).tobytes(), 90) for _ in range(3)
    )
    # Enrolled before anyone allowlisted the meme: item 1 holds it and another view.
    service.enroll([NewItem([meme, other_view]), NewItem([victim])])
    upload = [flip_bits(meme, 6, rng), flip_bits(victim, 6, rng)]
    with service.client("partner") as partner:
        (before,) = partner.match([upload])
        assert len(before.matches) == 2
        (victim_only,) = partner.match([upload[1:]])
        service.bank.allowlist_add([meme], label="meme: cat", by=ADMIN)
        (after,) = partner.match([upload])
        # The meme's hash gives no hit; the victim's item still matches.
        assert [m.item_id for m in after.matches] == [victim_only.matches[0].item_id]
        (alone,) = partner.match([[flip_bits(meme, 6, rng)]])
        assert alone.matches == []
        # Only the hash near the entry is dropped: the item's other view still matches.
        (mixed,) = partner.match([[flip_bits(meme, 3, rng), flip_bits(other_view, 3, rng)]])
        assert len(mixed.matches) == 1 and mixed.matches[0].hits == 1
    assert service.bank.allowlist.suppressed == 3
    url = f"http://127.0.0.1:{service.server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert "matcher_allowlist_suppressed_total 3.0" in text
    assert meme.hex not in text


# -- the admin API, the SDK and the CLI


def test_admins_manage_the_allowlist_through_the_api_and_values_never_come_back(
    service: Running, rng: np.random.Generator
) -> None:
    from matcher.v1 import admin_pb2, admin_pb2_grpc

    meme = [
        Hash(PDQ, rng.integers(0, 256, 32, dtype=np.uint8).tobytes(), 90),
        Hash(PHASH, b"\1" * 8),
    ]
    with service.client("admin") as admin:
        seeded = admin.list_allowlist()
        assert len(seeded) == len(seed_entries())
        added = admin.add_allowlist([*meme, meme[0]], label="meme: cat")
        assert (len(added.entries), added.existing) == (2, 1)
        assert [(e.signal, e.label, e.source) for e in added.entries] == [
            ("pdq", "meme: cat", "admin"),
            ("phash", "meme: cat", "admin"),
        ]
        with pytest.raises(Allowlisted):
            service.enroll([NewItem([flip_bits(meme[0], 10, rng)])])
        from matcher.errors import InvalidInput

        with pytest.raises(InvalidInput) as bad:
            admin.add_allowlist(meme, label="a5" * 10)  # looks like a hash value
        assert bad.value.field == "label"
        with pytest.raises(InvalidInput):
            admin.add_allowlist(meme, label="")
        gone = admin.remove_allowlist_entry(added.entries[0].id)
        assert gone.id == added.entries[0].id
        assert service.enroll([NewItem([flip_bits(meme[0], 10, rng)])])[1].added == 1
        assert admin.seed_allowlist() == (0, len(seed_entries()))
    # The raw listing carries no value of any entry.
    channel = grpc.insecure_channel(service.target)
    raw = admin_pb2_grpc.AdminServiceStub(channel).ListAllowlist(
        admin_pb2.ListAllowlistRequest(page_size=1000),
        metadata=[("authorization", f"Bearer {service.keys['admin']}")],
    )
    channel.close()
    wire = raw.SerializeToString()
    assert len(raw.entries) == len(seed_entries()) + 1
    assert meme[1].value not in wire
    assert all(Hash.parse(e.hash).value not in wire for e in seed_entries())


def test_partners_cannot_list_the_allowlist(service: Running) -> None:
    from matcher.errors import PermissionDenied

    for role in ("partner", "practitioner"):
        with service.client(role) as c:
            with pytest.raises(PermissionDenied):
                c.list_allowlist()
            with pytest.raises(PermissionDenied):
                c.add_allowlist([Hash(PHASH, bytes(8))], label="x")
            with pytest.raises(PermissionDenied):
                c.remove_allowlist_entry(1)


def test_the_cli_adds_lists_removes_and_seeds(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from matcher.cli import main

    # Any picture will do for the CLI: a noisy one, so that it is not in the seed already.
    noisy = np.random.default_rng(5).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(noisy).save(tmp_path / "meme.png")
    data = ["--data", str(tmp_path / "data")]
    runner = CliRunner()
    out = runner.invoke(
        main, ["allowlist", "add", *data, "--label", "meme: noise", str(tmp_path / "meme.png")]
    )
    assert out.exit_code == 0, out.output
    added = json.loads(out.stdout)
    assert added["added"] > 50 and added["existing"] == 0  # its enroll views and digests
    listed = runner.invoke(main, ["allowlist", "list", *data])
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {e["source"] for e in entries} == {"admin"}  # a CLI-opened bank seeds nothing
    assert all("value" not in e for e in entries)
    removed = runner.invoke(main, ["allowlist", "remove", *data, str(entries[0]["id"])])
    assert json.loads(removed.stdout)["id"] == entries[0]["id"]
    seeded = runner.invoke(main, ["allowlist", "seed", *data])
    assert json.loads(seeded.stdout) == {"added": len(seed_entries()), "existing": 0}
    missing = runner.invoke(main, ["allowlist", "remove", *data, "999999"])
    assert missing.exit_code == 1 and "no such allowlist entry" in missing.output


def test_matcher_enroll_names_the_refused_file_and_enrolls_nothing(
    service: Running, tmp_path: Path
) -> None:
    import json

    from click.testing import CliRunner

    from matcher.cli import main

    noisy = np.random.default_rng(8).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(noisy).save(tmp_path / "photo.png")
    Image.new("RGB", (300, 200), (128, 128, 128)).save(tmp_path / "grey.png")
    env = {"MATCHER_SERVER": service.target, "MATCHER_API_KEY": service.keys["practitioner"]}
    runner = CliRunner()
    case = json.loads(runner.invoke(main, ["case", "create"], env=env).stdout)["case"]
    result = runner.invoke(
        main, ["enroll", case, str(tmp_path / "photo.png"), str(tmp_path / "grey.png")], env=env
    )
    assert result.exit_code == 1
    assert "grey.png: this picture looks like a widely shared or featureless" in result.stderr
    assert "photo.png" not in result.stderr
    status = json.loads(runner.invoke(main, ["case", "status", case], env=env).stdout)
    assert status["item_count"] == 0
