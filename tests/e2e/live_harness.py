"""This module provides the Live e2e harness: the fake Live upstream as a child process, a self-signed
certificate, and relay served over TLS (google-genai always dials ``wss://`` for Live).

relay's TLS comes from gunicorn's own ``--certfile/--keyfile``, given here through ``GUNICORN_CMD_ARGS``
(gunicorn.conf.py is not changed); the SDK trusts the certificate through ``SSL_CERT_FILE``, which it
reads for both its REST client and its WebSocket.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import requests

from .harness import REPO_ROOT, RelayServer, _stop, _tail, clean_env, http, wait_until


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class FakeLiveUpstream:
    """`python -m tests.fakeupstream.live` as a child process, with its control API as methods."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.session = http()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "FakeLiveUpstream":
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.workdir / "fake-live.port"
        stderr_path = self.workdir / "fake-live.stderr"
        with open(self.workdir / "fake-live.stdout", "wb") as stdout, open(stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.fakeupstream.live", "--port", "0", "--port-file", str(port_file)],
                cwd=REPO_ROOT, env=clean_env(), stdout=stdout, stderr=stderr, start_new_session=True,
            )
        if not wait_until(lambda: port_file.exists() or self.process.poll() is not None, timeout) \
                or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"fake Live upstream did not start:\n{_tail(stderr_path)}")
        self.port = int(port_file.read_text())
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, timeout=5)
        self.session.close()

    def _get(self, action: str, **query) -> object:
        suffix = "&".join(f"{name}={quote(value)}" for name, value in query.items())
        response = self.session.get(f"{self.url}/_fake/live/{action}?{suffix}", timeout=30)
        response.raise_for_status()
        return response.json()

    def sessions(self) -> list[dict]:
        return self._get("sessions")

    def script(self, rule: dict) -> None:
        self._get("script", rule=json.dumps(rule))

    def reset(self) -> None:
        self._get("reset")

    def wait_for_sessions(self, count: int, closed: bool = False, timeout: float = 10.0) -> list[dict]:
        def enough():
            sessions = self.sessions()
            done = [session for session in sessions if session["closed_at"]] if closed else sessions
            return sessions if len(done) >= count else None
        return wait_until(enough, timeout) or self.sessions()


class TlsRelayServer(RelayServer):
    """relay under gunicorn with TLS from gunicorn's --certfile/--keyfile."""

    def __init__(self, workdir: Path, upstream_url: str, cert: Path, key: Path, env: dict | None = None,
                 workers: int = 2, name: str = "relay-tls"):
        env = {"GUNICORN_CMD_ARGS": f"--certfile {cert} --keyfile {key}", **(env or {})}
        super().__init__(workdir, upstream_url, env=env, workers=workers, name=name)
        self.cert = cert

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float) -> bool:
        session = http()
        session.verify = str(self.cert)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if session.get(self.url + "/healthz", timeout=1, headers={"Connection": "close"}).status_code == 200:
                        return True
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            return False
        finally:
            session.close()
