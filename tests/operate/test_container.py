"""The container image: the project's Dockerfile built with podman and run as a deployment would run it.

The image is built once per run on a Debian base made here (`BASE_IMAGE`, tests/podman.py),
then: one container on the host's network (so it reaches the test scraper on loopback)
serves, takes a user and an API key through `podman exec`, runs as uid 10001, and stops on
SIGTERM settling a running connect job; a new container on the same volumes, with a
read-only root, only a tmpfs /tmp and a network of its own (nothing but its loopback),
serves on the image's own command, passes the image's HEALTHCHECK and has the key, the
data and the settled job; two containers as two nodes on PostgreSQL, S3 (moto) and Redis
share writes and streams. On vfs storage each new container costs a copy of the image, so
the scenarios share four containers. Every container, volume and image made here is
removed at the end; only the base image is kept, for the next run.

Skipped when podman is not installed (`bash .ci/run` installs it, with mmdebstrap and runc).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from ..backends import AWS_ENV, MotoServer, throwaway_database
from ..connect_support import connect_env
from ..dataplane_support import LocalKey, Vault, decrypt
from ..money_support import post_leads
from ..podman import Container, Podman
from ..private_services import redis_url
from ..scraper_fixture import TestScraper
from ..support import FIXED_MASTER_KEY, ROOT, Api, free_port, wait_until

# The image build (pip from the registry, vfs storage) and the base's first making take minutes.
pytestmark = pytest.mark.timeout(1500)

UID = 10001
PLAN = "starter"  # 100 leads included (connect_support.PLANS): a connect job needs no prepaid balance
SLOW_JOB = {"credits": 10, "mode": "slow", "delay_ms": 400}
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    """This run's podman (this machine's flags, a store of the tests' own); removes what the run made."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (bash .ci/run installs it: apt-get install podman mmdebstrap runc)")
    runner = Podman()
    runner.sweep_stale()
    try:
        yield runner
    finally:
        runner.cleanup()


@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Dockerfile built on the Debian base (made once, then reused between runs); the image's name.

    TELENTIR_TEST_IMAGE names an image of the tests' store to use instead (kept), to work on these
    tests without building again.
    """
    given = os.environ.get("TELENTIR_TEST_IMAGE")
    if given:
        return given
    started = time.monotonic()
    base = podman.base_image(tmp_path_factory.mktemp("base"))
    TIMINGS["base"] = time.monotonic() - started
    started = time.monotonic()
    tag = podman.build(ROOT, f"localhost/{podman.name('image')}:test", {"BASE_IMAGE": base})
    TIMINGS["image"] = time.monotonic() - started
    print(
        f"\ncontainer image: base ready in {TIMINGS['base']:.0f} s, built in {TIMINGS['image']:.0f} s", file=sys.stderr
    )
    return tag


# --- one node on the host's network: serve, exec, stop, start again ---------------------------


@dataclass
class Account:
    """A user made through `podman exec`, and what the tests wrote as them."""

    email: str
    user_id: str
    key: str
    written: dict[str, Any] = field(default_factory=dict)


@dataclass
class Deployment:
    """The image run as one node with its two named volumes; each `start` is a new container on them."""

    podman: Podman
    image: str
    data: str
    keys: str
    env: dict[str, str]
    label: str = "node"
    port: int = field(default_factory=free_port)
    container: Container | None = None
    started: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Container:
        """A new container on the volumes, serving on the host's loopback (the scraper is there too)."""
        self.started += 1
        self.container = self.podman.start(
            f"{self.label}{self.started}",
            self.image,
            # The image's HEALTHCHECK asks port 8000; this node listens on a free port of the host.
            options=[
                "--network=host",
                "--no-healthcheck",
                f"--volume={self.data}:/data",
                f"--volume={self.keys}:/keys",
            ],
            env=self.env,
            command=["python", "-m", "telentir", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
        )
        _wait_healthy(self.url, self.container)
        return self.container

    def running(self) -> Container:
        """The running container, started anew on the same volumes if the last one was stopped."""
        if self.container is None or not self.container.running():
            return self.start()
        return self.container


def _wait_healthy(url: str, container: Container) -> None:
    def healthy() -> bool:
        try:
            return requests.get(url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            assert container.running(), f"the container exited:\n{container.logs()[-4000:]}"
            return False

    wait_until(healthy, timeout=90, interval=0.25, message=lambda: f"/healthz of {url}:\n{container.logs()[-3000:]}")


@pytest.fixture(scope="module")
def deployment(podman: Podman, image: str, scraper: TestScraper) -> Deployment:
    """The node, started."""
    node = Deployment(podman, image, podman.volume("data"), podman.volume("keys"), connect_env(scraper.url))
    node.start()
    return node


def _exec_ok(container: Container, *command: str) -> str:
    done = container.exec(*command)
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def account(deployment: Deployment) -> Account:
    """A verified user and an API key, made with the admin CLI through `podman exec`."""
    container = deployment.running()
    email = "ada@example.com"
    out = _exec_ok(
        container, "python", "-m", "telentir", "users", "create", email, "--phone", "+15555550123", "--verified",
        "--plan", PLAN,
    )  # fmt: skip
    user_id = out.strip().splitlines()[-1]
    out = _exec_ok(container, "python", "-m", "telentir", "api-keys", "create", email, "--name", "container-test")
    return Account(email, user_id, out.strip().splitlines()[-1])


def _master_key(container: Container) -> str:
    return _exec_ok(container, "cat", "/keys/master.key").strip()


def test_the_image_is_built_on_the_given_base(podman: Podman, image: str, deployment: Deployment) -> None:
    inspected = podman.inspect_image(image)
    config = inspected["Config"]
    assert config["User"] == "telentir"
    assert set(config["Volumes"]) == {"/data", "/keys"}
    assert config["Cmd"] == ["python", "-m", "telentir", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "TELENTIR_MASTER_KEY_FILE=/keys/master.key" in config["Env"]
    healthcheck = inspected.get("Healthcheck") or config.get("Healthcheck")  # Docker's format keeps it
    assert healthcheck is not None and healthcheck["Test"][0] == "CMD", inspected
    # The base made here: Debian's python3 (/usr) under a venv at /usr/local; the official image's is /usr/local itself.
    code = "import sys; print(sys.prefix, sys.base_prefix)"
    assert _exec_ok(deployment.running(), "python", "-c", code).split() == ["/usr/local", "/usr"], "the base made here"


def test_the_container_answers_healthz_and_runs_as_uid_10001(deployment: Deployment) -> None:
    container = deployment.running()
    resp = requests.get(deployment.url + "/healthz", timeout=10)
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
    # Every process of the container: gunicorn's master (PID 1), its workers, and this exec.
    out = _exec_ok(
        container, "python", "-c",
        "import glob, json, re\n"
        "uids = {}\n"
        "for path in glob.glob('/proc/[0-9]*/status'):\n"
        "    try: text = open(path).read()\n"
        "    except OSError: continue  # a process that just ended\n"
        "    uids[path.split('/')[2]] = sorted(set(re.search(r'^Uid:(.*)$', text, re.M).group(1).split()))\n"
        "print(json.dumps(uids))",
    )  # fmt: skip
    uids = json.loads(out)
    assert "1" in uids and len(uids) >= 3, uids  # the master and at least one worker
    assert all(ids == [str(UID)] for ids in uids.values()), uids


def test_users_and_api_keys_made_through_exec_work(deployment: Deployment, account: Account) -> None:
    api = Api(deployment.url, account.key)
    resp = api.get("/root")
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["stores"]) == 8
    assert Api(deployment.url, account.key + "x").get("/root").status_code == 401


def test_the_master_key_is_in_the_keys_volume_not_in_data(deployment: Deployment, account: Account) -> None:
    container = deployment.running()
    key = _master_key(container)
    assert len(key) == 64 and int(key, 16) >= 0
    assert _exec_ok(container, "stat", "-c", "%a %u", "/keys/master.key").split() == ["600", str(UID)]
    # No file of the data volume holds the key, in hex or in bytes.
    found = _exec_ok(
        container, "python", "-c",
        "import os, sys\n"
        "key = sys.argv[1]\n"
        "for top, _, files in os.walk('/data'):\n"
        "    for name in files:\n"
        "        path = os.path.join(top, name)\n"
        "        if not os.path.isfile(path): continue  # the workers' doorbell sockets\n"
        "        data = open(path, 'rb').read()\n"
        "        if key.encode() in data or bytes.fromhex(key) in data: print(path)",
        key,
    )  # fmt: skip
    assert found.strip() == ""
    assert "master.key" not in _exec_ok(container, "ls", "-a", "/data")


@dataclass
class StopRecord:
    """What a graceful stop during a connect job did."""

    seconds: float
    exit_code: int
    answer: requests.Response | BaseException
    sent_before_stop: int
    master_key: str
    still_running: bool
    logs: str


@pytest.fixture(scope="module")
def stopped(deployment: Deployment, account: Account, scraper: TestScraper) -> StopRecord:
    """Data written, then `podman stop` (SIGTERM) while a slow connect job runs; what happened."""
    container = deployment.running()
    vault = Vault(Api(deployment.url, account.key), {"id": account.user_id, "email": account.email})
    key = vault.new_key()
    plaintext = b"kept across a restart " * 50
    account.written = {
        "key": key,
        "id": vault.put(key, plaintext)["id"],
        "plaintext": plaintext,
        "store": vault.store(),
    }
    master_key = _master_key(container)

    answers: list[requests.Response | BaseException] = []

    def post() -> None:
        try:
            answers.append(post_leads(Api(deployment.url, account.key), SLOW_JOB, timeout=90))
        except requests.RequestException as exc:
            answers.append(exc)

    requests_before = len(scraper.snapshot()["sent"])
    client = threading.Thread(target=post, daemon=True)
    client.start()

    def records_sent() -> int:
        sent = scraper.snapshot()["sent"][requests_before:]
        return sent[0] if sent else 0

    wait_until(lambda: records_sent() >= 3, timeout=30, message="the scraper to send 3 records of the job")
    sent = records_sent()
    seconds = container.stop(grace=30)
    client.join(timeout=60)
    assert answers, "the connect request never ended"
    state = container.state()
    return StopRecord(
        seconds, int(state["ExitCode"]), answers[0], sent, master_key, bool(state["Running"]), container.logs()
    )


def test_sigterm_stops_the_container_within_10_s_with_status_0(stopped: StopRecord) -> None:
    assert not stopped.still_running
    assert stopped.seconds < 10, f"podman stop took {stopped.seconds:.1f} s"
    assert stopped.exit_code == 0, stopped.logs[-3000:]
    assert "Shutting down: Master" in stopped.logs  # gunicorn's own graceful end, not a kill
    assert stopped.sent_before_stop < SLOW_JOB["credits"], "the job must still have been running at the stop"


# --- started again: a new container on the same volumes, read-only, on the image's own command --------


@pytest.fixture(scope="module")
def restarted(podman: Podman, image: str, deployment: Deployment, stopped: StopRecord) -> Container:
    """A new container on the stopped node's volumes, as hardened as it gets: the image's CMD (port 8000)
    on a network of its own (its loopback only), the root read-only and only /tmp a tmpfs. Waits until
    the image's HEALTHCHECK passes.

    (A container made on vfs storage costs a copy of the whole image: one container serves both checks.)
    """
    container = podman.start(
        "restarted",
        image,
        options=[
            "--network=none",
            "--read-only",
            "--read-only-tmpfs=false",  # podman would add tmpfs /run and /var/tmp too; Docker does not
            "--tmpfs=/tmp",
            f"--volume={deployment.data}:/data",
            f"--volume={deployment.keys}:/keys",
        ],
    )

    # `podman healthcheck run` runs the image's HEALTHCHECK command in the container (no systemd
    # needed for that; only podman's periodic timers need it): status 0 once the server answers.
    def passes() -> bool:
        assert container.running(), container.logs()[-4000:]
        return podman("healthcheck", "run", container.name, check=False).returncode == 0

    wait_until(
        passes, timeout=90, interval=0.5, message=lambda: f"the HEALTHCHECK to pass:\n{container.logs()[-3000:]}"
    )
    if deployment.container is not None:  # the stopped one: its volumes live on in this one
        podman.discard(deployment.container)
        deployment.container = None
    return container


# In the restarted container's own network: a GET on 127.0.0.1:8000 from inside, its status and JSON.
_GET_INSIDE = """
import sys, urllib.error, urllib.request
headers = {"Authorization": "Bearer " + sys.argv[2]}
request = urllib.request.Request("http://127.0.0.1:8000" + sys.argv[1], headers=headers)
try:
    answer = urllib.request.urlopen(request, timeout=20)
except urllib.error.HTTPError as error:
    answer = error
print(answer.getcode())
print(answer.read().decode())
"""


def _get_inside(container: Container, path: str, key: str) -> tuple[int, Any]:
    status, _, body = _exec_ok(container, "python", "-c", _GET_INSIDE, path, key).partition("\n")
    return int(status), json.loads(body) if body.strip() else None


def test_a_read_only_root_with_a_tmpfs_tmp_serves_and_passes_the_healthcheck(
    podman: Podman, restarted: Container, account: Account
) -> None:
    assert podman("healthcheck", "run", restarted.name, check=False).returncode == 0
    refused = restarted.exec("touch", "/app/probe")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    status, root = _get_inside(restarted, "/api/root", account.key)
    assert status == 200 and len(root["stores"]) == 8
    assert _get_inside(restarted, "/api/root", account.key + "x")[0] == 401
    # The CLI writes through the volumes too.
    cli = ("python", "-m", "telentir")
    _exec_ok(restarted, *cli, "users", "create", "ro@example.com", "--phone", "+15555550123", "--verified")
    key = _exec_ok(restarted, *cli, "api-keys", "create", "ro@example.com").strip().splitlines()[-1]
    assert _get_inside(restarted, "/api/root", key)[0] == 200


def test_started_again_on_the_same_volumes_the_key_data_and_settled_job_are_there(
    stopped: StopRecord, restarted: Container, account: Account
) -> None:
    assert _master_key(restarted) == stopped.master_key
    written = account.written
    status, record = _get_inside(restarted, f"/api/objects/{written['id']}", account.key)
    assert status == 200, record
    key: LocalKey = written["key"]
    assert (
        decrypt(key.aes, key.iv, bytes.fromhex(record["content"]), bytes.fromhex(record["auth_tag"]))
        == (written["plaintext"])
    )
    # The job the stop cut short: answered, interrupted and settled by the stopping server.
    answer = stopped.answer
    assert isinstance(answer, requests.Response), answer
    assert answer.status_code == 204, answer.text
    status, job = _get_inside(restarted, f"/api/connect/jobs/{answer.headers['X-Connect-Job']}", account.key)
    assert status == 200, job
    assert (job["status"], job["credits"]["settlement"]) == ("interrupted", "settled"), job
    assert 1 <= job["created"] < SLOW_JOB["credits"], job
    assert job["credits"]["used"] == job["created"] and job["credits"]["charged"] == 0, job  # all in the allowance
    status, items = _get_inside(restarted, f"/api/objects/{written['store']}/related", account.key)
    assert status == 200 and len(items) == job["created"], items


# --- two containers as two nodes on PostgreSQL + S3 + Redis ----------------------------------

BUCKET = "telentir-containers"


@contextmanager
def _s3_bucket(workdir: Path) -> Iterator[MotoServer]:
    s3 = MotoServer(workdir).start()
    try:
        client = boto3.client(
            "s3",
            endpoint_url=s3.url,
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        )
        client.create_bucket(Bucket=BUCKET)
        client.close()
        yield s3
    finally:
        s3.stop()


@dataclass
class Cluster:
    """Two nodes of the image and the bucket they share."""

    a: Deployment
    b: Deployment
    s3_url: str


@pytest.fixture(scope="module")
def two_nodes(podman: Podman, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two containers of the image, each with its own data volume, on one database, bucket and Redis."""
    with _s3_bucket(tmp_path_factory.mktemp("container-s3")) as s3, throwaway_database() as database_url:
        env = {
            "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
            "TELENTIR_DATABASE_URL": database_url,
            "TELENTIR_BLOB_URL": f"s3://{BUCKET}/nodes",
            "TELENTIR_S3_ENDPOINT_URL": s3.url,
            "TELENTIR_BROKER_URL": redis_url(),
            "TELENTIR_INLINE_MAX_BYTES": "64",  # larger ciphertexts go to the bucket
            **AWS_ENV,
        }
        a, b = (
            Deployment(podman, image, podman.volume(f"{n}-data"), podman.volume(f"{n}-keys"), env, f"node-{n}")
            for n in "ab"
        )
        try:
            a.start()
            b.start()
            yield Cluster(a, b, s3.url)
        finally:
            for node in (a, b):  # before the database is dropped
                if node.container is not None:
                    if node.container.running():
                        node.container.stop(grace=15)
                    podman.discard(node.container)


def _bucket_keys(s3_url: str) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=s3_url,
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
    )
    try:
        return [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    finally:
        client.close()


def _heard(stream: requests.Response, object_id: str, within: float) -> bool:
    """Whether an event frame naming `object_id` arrives within `within` seconds (heartbeats keep the read alive)."""
    deadline = time.monotonic() + within
    for line in stream.iter_lines(decode_unicode=True):
        if line.startswith("data: ") and object_id in line:
            return True
        if time.monotonic() > deadline:
            return False
    return False


def test_two_containers_share_writes_and_streams_through_postgres_s3_and_redis(two_nodes: Cluster) -> None:
    node_a, node_b = two_nodes.a, two_nodes.b
    container_a = node_a.running()
    cli = ("python", "-m", "telentir")
    email = "grace@example.com"
    out = _exec_ok(container_a, *cli, "users", "create", email, "--phone", "+15555550199", "--verified")
    user = {"id": out.strip().splitlines()[-1], "email": email}
    api_key = _exec_ok(container_a, *cli, "api-keys", "create", email).strip().splitlines()[-1]
    on_a = Vault(Api(node_a.url, api_key), user)
    on_b = Vault(Api(node_b.url, api_key), user)
    key: LocalKey = on_a.new_key()
    plaintext = b"written on node a, read on node b " * 100
    in_bucket = set(_bucket_keys(two_nodes.s3_url))
    headers = {"Authorization": f"Bearer {api_key}"}
    with requests.get(node_b.url + "/api/events/object_created", headers=headers, stream=True, timeout=30) as stream:
        assert stream.status_code == 200, stream.text
        written = on_a.put(key, plaintext)
        heard = _heard(stream, written["id"], within=30)
    assert heard, "node b's stream must carry node a's write"
    assert on_b.read(key, written["id"]) == plaintext
    assert decrypt(key.aes, key.iv, bytes.fromhex(written["content"]), bytes.fromhex(written["auth_tag"])) == plaintext
    assert set(_bucket_keys(two_nodes.s3_url)) - in_bucket, "the ciphertext went to the shared bucket"
