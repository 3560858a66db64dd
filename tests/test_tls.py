"""Mutual TLS: the server only talks to clients holding a certificate from its CA."""

from __future__ import annotations

import datetime
import ipaddress
import json
import urllib.request
from pathlib import Path

import pytest

from matcher.client import Client
from matcher.errors import MatcherError
from matcher.http import HttpConfig
from matcher.service import ServerConfig, TlsConfig
from matcher.signals import PDQ, Hash
from tests.service_fixtures import start_server, stop_server

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_mutual_tls(tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("matcher test CA", ca_key, _name("matcher test CA"), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _cert("localhost", server_key, ca.subject, ca_key, ca=False)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _cert("partner", client_key, ca.subject, ca_key, ca=False)
    files = {
        "ca.pem": _pem(ca),
        "server.pem": _pem(server_cert),
        "server.key": _pem(server_key),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    tls = TlsConfig(
        cert=tmp_path / "server.pem", key=tmp_path / "server.key", client_ca=tmp_path / "ca.pem"
    )
    # With the HTTP gateway on too: it reaches gRPC over its own Unix socket, not the TLS port.
    config = ServerConfig(
        address="127.0.0.1:0", metrics_address=None, tls=tls, http=HttpConfig(address="127.0.0.1:0")
    )
    running, thread = start_server(tmp_path / "data", config)
    try:
        assert running.bank.wait_ready(120)
        target = f"localhost:{running.server.port}"
        with Client(
            target,
            running.keys["partner"],
            timeout=5,
            root_certificates=_pem(ca),
            private_key=_pem(client_key),
            certificate_chain=_pem(client_cert),
        ) as client:
            assert client.healthy()
            [result] = client.match([[Hash(PDQ, bytes(32))]])
            assert result.matches == []
        # Without a client certificate the handshake fails: no call gets through.
        with Client(target, running.keys["partner"], timeout=5, root_certificates=_pem(ca)) as c:
            assert not c.healthy()
            with pytest.raises(MatcherError):
                c.stats()
        # A plaintext client cannot talk to a TLS server either.
        with Client(target, running.keys["partner"], timeout=5) as plain:
            assert not plain.healthy()
        request = urllib.request.Request(
            f"http://127.0.0.1:{running.server.http_port}/api/v1/match",
            data=json.dumps(
                {"queries": [{"hashes": [{"signal": "pdq", "hex": "00" * 32}]}]}
            ).encode(),
            headers={
                "Authorization": f"Bearer {running.keys['partner']}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert json.load(reply) == {"results": [{"query_id": "", "matches": []}]}
    finally:
        stop_server(running, thread)
