"""Operator safety: what an operator gets wrong gives one line naming the culprit, never a
traceback, and never a second server silently on one SQLite folder. Real processes, real
sockets, real files."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from matcher.cli import main
from matcher.store import SQLiteStore
from tests.service_fixtures import Running

MATCHER = [sys.executable, "-m", "matcher.cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MATCHER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (and that it failed, without a traceback)."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    SQLiteStore(folder).close()
    return folder


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process (here: this one) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_second_serve_on_the_same_folder_is_refused(data: Path) -> None:
    first = subprocess.Popen(
        [*MATCHER, "serve", "--data", str(data), "--address", "127.0.0.1:0",
         "--metrics-address", "off"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        lock = data / "matcher.lock"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if lock.exists() and f"pid {first.pid}" in lock.read_text():
                break
            assert first.poll() is None, "the first server died"
            time.sleep(0.1)
        second = run("serve", "--data", str(data), "--address", "127.0.0.1:0",
                     "--metrics-address", "off")  # fmt: skip
        line = one_line_error(second)
        assert f"in use by matcher serve (pid {first.pid})" in line and str(data) in line
        assert first.poll() is None  # the first one is untouched
    finally:
        first.terminate()
        first.wait(30)
    # Once the first one is gone (the kernel drops its lock), a new server may start.
    from matcher.store.lock import FolderLock

    FolderLock.acquire(data, "test").release()


def test_a_busy_grpc_or_metrics_port_is_named(data: Path, held_port: int) -> None:
    grpc_busy = run("serve", "--data", str(data), "--address", f"127.0.0.1:{held_port}",
                    "--metrics-address", "off")  # fmt: skip
    assert one_line_error(grpc_busy) == (
        f"matcher: --address 127.0.0.1:{held_port}: port {held_port} is in use"
    )
    metrics_busy = run("serve", "--data", str(data), "--address", "127.0.0.1:0",
                       "--metrics-address", f"127.0.0.1:{held_port}")  # fmt: skip
    assert one_line_error(metrics_busy) == (
        f"matcher: --metrics-address 127.0.0.1:{held_port}: port {held_port} is in use"
    )
    bad = run("serve", "--data", str(data), "--address", "localhost:http")
    assert "--address 'localhost:http' is not host:port" in one_line_error(bad)


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_bad_tls_files_are_named(data: Path, tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "server")
    other_cert, other_key = _certificate(tmp_path, "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    base = ["serve", "--data", str(data), "--address", "127.0.0.1:0", "--metrics-address", "off"]
    cases = {
        (str(junk), str(key), None): f"--tls-cert {junk} is not a PEM certificate",
        (str(cert), str(junk), None): f"--tls-key {junk} is not a PEM private key",
        (str(cert), str(other_key), None): (
            f"--tls-key {other_key} does not belong to the certificate --tls-cert {cert}"
        ),
        (str(cert), str(key), str(junk)): f"--tls-client-ca {junk} is not a PEM certificate",
    }
    for (c, k, ca), expected in cases.items():
        args = [*base, "--tls-cert", c, "--tls-key", k] + (["--tls-client-ca", ca] if ca else [])
        assert expected in one_line_error(run(*args)), expected
    assert other_cert.exists()


def test_a_url_whose_fsspec_backend_is_missing_is_named(service: Running) -> None:
    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401

        pytest.skip("s3fs is installed here")
    except ImportError:
        pass
    env = {"MATCHER_SERVER": service.target, "MATCHER_API_KEY": service.keys["partner"]}
    result = CliRunner().invoke(main, ["scan", "s3://bucket/photos/"], env=env)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        "matcher: s3:// URLs need s3fs, which is not installed (pip install s3fs) (paths)"
    ], result.output


def test_bad_values_in_hashes_lines_are_named(service: Running, tmp_path: Path) -> None:
    lines = tmp_path / "h.jsonl"
    pdq = "ab" * 32
    lines.write_text(
        json.dumps({"path": "a.jpg", "pdq": pdq, "pdq_quality": "high"})
        + "\n"
        + json.dumps({"path": "b.jpg", "pdq": 7})
        + "\n"
    )
    env = {"MATCHER_SERVER": service.target, "MATCHER_API_KEY": service.keys["partner"]}
    result = CliRunner().invoke(main, ["match", "--hashes", str(lines)], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert "h.jsonl:1: must be a whole number from 0 to 100 (pdq_quality)" in result.output
    assert "h.jsonl:2: must be a hex string (pdq)" in result.output
    assert pdq not in result.output  # never the value


def test_process_metrics_are_served(service: Running) -> None:
    port = service.server.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
    ):
        assert f"\n{name} " in text, name
