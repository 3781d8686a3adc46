"""A throwaway CA and server certificate made with the ``openssl`` CLI (no Python dependency)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate (what the collector's tls_ca names)
    cert: Path  # server certificate, signed by ca, for 127.0.0.1 / localhost
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=60)


def make_pki(root: Path, name: str = "ca") -> Pki:
    """A self-signed CA and a server certificate (SAN IP:127.0.0.1, DNS:localhost, DNS:pbx.test)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    root.mkdir(parents=True, exist_ok=True)
    ca_key, ca = root / f"{name}.key", root / f"{name}.pem"
    key, csr, cert = root / f"{name}-server.key", root / f"{name}-server.csr", root / f"{name}-server.pem"
    ext = root / f"{name}-ext.cnf"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:pbx.test\n"
                   "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n"
                   "extendedKeyUsage = serverAuth\n")
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", f"/CN=collector test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    _run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext)
    return Pki(ca, cert, key)
