"""docs/nginx.conf.example, run by a real nginx in front of a real server: TLS, SSE unbuffered, WebSocket.

The documented file is the tested one: the test only swaps the example's name, ports and
certificate paths for local ones (and drops the IPv6 `listen` lines), then wraps it in the
few main-context lines nginx needs to run from a temporary folder.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import simple_websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..operate_support import ObjectWriter, verified_user
from ..sse_client import HttpConnection, must_open
from ..support import FIXED_MASTER_KEY, ROOT, ServerProcess, free_port, wait_until

EXAMPLE = ROOT / "docs" / "nginx.conf.example"
HEARTBEAT_SECONDS = 20  # a frame that arrives within a few seconds was not flushed by a heartbeat


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        pytest.fail("nginx is not installed: `apt-get install nginx` (.ci/run installs it)")
    return found


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "telentir.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def site_config(upstream_port: int, http_port: int, https_port: int, cert: Path, key: Path) -> str:
    """The documented site, pointed at local ports and files."""
    text = EXAMPLE.read_text()
    swaps = {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
        "    listen [::]:80;\n": "",
        "    listen [::]:443 ssl http2;\n": "",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "/etc/letsencrypt/live/telentir.example.com/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/telentir.example.com/privkey.pem": str(key),
    }
    for old, new in swaps.items():
        assert old in text, f"docs/nginx.conf.example no longer has {old!r}: update this test with it"
        text = text.replace(old, new)
    return text


def main_config(folder: Path, site: Path) -> str:
    """nginx's main context for a private instance in `folder` (what /etc/nginx/nginx.conf is for the site)."""
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        "user root;\n"  # only this test's instance: its files live in a folder only root may read
        "worker_processes 1;\n"
        f"pid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {folder / 'access.log'};\n"
        f"{temp}\n"
        f"    include {site};\n"
        "}\n"
    )


class Nginx:
    """A private nginx process running the documented site."""

    def __init__(self, folder: Path, upstream_port: int) -> None:
        self.folder = folder
        self.http_port, self.https_port = free_port(), free_port()
        self.cert, key = self_signed(folder)
        site = folder / "telentir.conf"
        site.write_text(site_config(upstream_port, self.http_port, self.https_port, self.cert, key))
        self.conf = folder / "nginx.conf"
        self.conf.write_text(main_config(folder, site))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        binary = nginx_binary()
        check = subprocess.run(
            [binary, "-t", "-p", str(self.folder), "-c", str(self.conf)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.folder), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self._listening, timeout=10)
        return self

    def _listening(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, (self.folder / "error.log").read_text()
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.https_port)) == 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then the master exits
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def behind_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Nginx, str]]:
    folder = tmp_path_factory.mktemp("nginx")
    env = {
        "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
        "TELENTIR_PROXY_HOPS": "1",
        "TELENTIR_COOKIE_SECURE": "true",
        "TELENTIR_SSE_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
        "TELENTIR_LOG_LEVEL": "INFO",
    }
    server = ServerProcess(folder / "data", env).start()
    proxy = Nginx(folder, server.port)
    try:
        proxy.start()
        yield server, proxy, verified_user(server.data_dir)[1]
    finally:
        proxy.stop()
        server.discard()


def test_the_deployment_guide_shows_the_tested_file():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert "```nginx\n" + EXAMPLE.read_text() + "```" in guide


def test_http_redirects_to_https_and_https_reaches_the_server(behind_nginx):
    server, proxy, _ = behind_nginx
    plain = requests.get(f"http://127.0.0.1:{proxy.http_port}/healthz", allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
    resp = requests.get(proxy.url + "/healthz", verify=proxy.cert, timeout=10)
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
    # nginx's $request_id, trusted because TELENTIR_PROXY_HOPS=1, comes back to the client.
    assert len(resp.headers["X-Request-ID"]) == 32

    def logged() -> list[dict[str, object]]:  # the line is written once the response has ended
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("request_id") == resp.headers["X-Request-ID"]]

    assert wait_until(logged)[0]["route"] == "/healthz"


def tls_connection(proxy: Nginx) -> HttpConnection:
    """A raw HTTP/1.1 connection to nginx over TLS (the SSE test client, on a wrapped socket)."""
    conn = HttpConnection(proxy.url)
    context = ssl.create_default_context(cafile=str(proxy.cert))
    context.set_alpn_protocols(["http/1.1"])
    conn.sock = context.wrap_socket(conn.sock, server_hostname="127.0.0.1")
    return conn


def writer_through(proxy: Nginx, api_key: str) -> ObjectWriter:
    return ObjectWriter(proxy.url, api_key, verify=str(proxy.cert))


def test_an_event_arrives_through_nginx_at_once(behind_nginx):
    _, proxy, api_key = behind_nginx
    with must_open(proxy.url, "object_created", api_key, conn=tls_connection(proxy)) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.next_frame(timeout=10).retry is not None  # the stream is open end to end
        writer = writer_through(proxy, api_key)
        written = time.monotonic()
        created = writer.create(32)
        writer.close()
        frame = stream.next_event(timeout=HEARTBEAT_SECONDS / 2)
        assert frame.json()["id"] == created.id
        assert frame.received_at - written < 3.0, "the frame waited in a buffer"


def test_the_websocket_mirror_works_through_nginx(behind_nginx):
    _, proxy, api_key = behind_nginx
    context = ssl.create_default_context(cafile=str(proxy.cert))
    ws = simple_websocket.Client.connect(
        proxy.url.replace("https://", "wss://") + "/api/ws/events/object_created",
        headers={"Authorization": f"Bearer {api_key}"},
        ssl_context=context,
    )
    try:
        writer = writer_through(proxy, api_key)
        created = writer.create(16)
        writer.close()
        message = json.loads(ws.receive(timeout=10))
        assert message["event"] == "object_created" and message["data"]["id"] == created.id
    finally:
        ws.close()
