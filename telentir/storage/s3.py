"""Ciphertext in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, Ceph), shared by every node.

Imported only when TELENTIR_BLOB_URL names a bucket. Credentials come the standard AWS way
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role); a non-AWS store
is reached through TELENTIR_S3_ENDPOINT_URL. The order of the file store holds: the object
is PUT (and acknowledged, which S3 does only once it is durable) before the row that
names it commits, and deleted only after the commit that forgets it. Objects are named
`<prefix><blob id>`; nothing else under the prefix is touched.

Outages: botocore retries in its standard mode (transient errors, throttling such as
`SlowDown`, 5xx) within a bounded budget of MAX_ATTEMPTS retries, each connection attempt given
CONNECT_TIMEOUT_SECONDS and each read READ_TIMEOUT_SECONDS, so a dead endpoint fails in
seconds. What still fails (unreachable, timeouts, 5xx, throttling, any refusal but a missing
key on read) is `EngineUnavailable("s3")`: 503 with Retry-After. A failed PUT leaves no row
(the object is stored before its row), so nothing is half-written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import EngineUnavailable
from .blobs import BLOB_ID, new_blob_id
from .health import EngineHealth

DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes
# One client serves every thread of the process; its connection pool is sized for them.
MAX_POOL_CONNECTIONS = 64
# botocore's standard retry mode: this many retries after the first attempt, with backoff; then 503.
MAX_ATTEMPTS = 3
CONNECT_TIMEOUT_SECONDS = 3.0
READ_TIMEOUT_SECONDS = 20.0
ENGINE = "s3"


class S3BlobStore:
    """Blobs as objects under a prefix of one bucket."""

    def __init__(
        self, make_client: Callable[[], Any], bucket: str, prefix: str = "", health: EngineHealth | None = None
    ) -> None:
        self.health = health or EngineHealth()
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._make_client = make_client
        self._client: Any = None
        self._client_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None, health: EngineHealth | None = None) -> S3BlobStore:
        """The store of `s3://bucket/prefix`; its client (standard AWS settings) is made on first use."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return cls(lambda: _new_client(endpoint_url), bucket, prefix, health)

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """botocore's failures (after its retries) as EngineUnavailable; a success ends an outage."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            cause = f"{type(exc).__name__}: {str(exc)[:300]}"
            self.health.failed(ENGINE, cause)
            raise EngineUnavailable(ENGINE, cause) from exc
        self.health.ok(ENGINE)

    @property
    def client(self) -> Any:
        """The boto3 client, made (and botocore imported) on first use.

        Not before: the gunicorn master builds a runtime before forking, and a gevent worker
        patches `ssl` after the fork; botocore loaded earlier keeps the unpatched classes and
        its first TLS context then recurses without end.
        """
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def describe(self) -> str:
        """The bucket and prefix."""
        return f"s3://{self.bucket}/{self.prefix}"

    def ping(self) -> None:
        """Raise EngineUnavailable unless the bucket answers a one-key listing of the prefix."""
        with self._reaching():
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

    def key_for(self, blob_id: str) -> str:
        """The object key of a blob id; ValueError before any key is built from a bad id."""
        if not isinstance(blob_id, str) or not BLOB_ID.fullmatch(blob_id):
            raise ValueError("invalid blob id")
        return self.prefix + blob_id

    def write(self, data: bytes) -> str:
        """Store `data` under a new id (acknowledged = durable) and return the id."""
        blob_id = new_blob_id()
        with self._reaching():
            self.client.put_object(Bucket=self.bucket, Key=self.key_for(blob_id), Body=data)
        return blob_id

    def write_many(self, items: list[bytes]) -> list[str]:
        """Store several blobs; on a failure the ones already stored are removed again."""
        written: list[str] = []
        try:
            for data in items:
                written.append(self.write(data))
        except BaseException:
            self.delete_many(written)
            raise
        return written

    def read(self, blob_id: str) -> bytes:
        """The bytes of a blob; FileNotFoundError if the bucket has no such object."""
        from botocore.exceptions import ClientError

        key = self.key_for(blob_id)
        with self._reaching():
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                    raise FileNotFoundError(blob_id) from exc
                raise
            body = response["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def delete(self, blob_id: str) -> None:
        """Remove a blob (S3 answers a delete of a missing key with success)."""
        key = self.key_for(blob_id)
        with self._reaching():
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_many(self, blob_ids: Iterable[str]) -> None:
        """Remove several blobs, a thousand per request."""
        keys = [self.key_for(blob_id) for blob_id in blob_ids]
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
            with self._reaching():
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

    def sweep(self, is_referenced: Callable[[str], bool], grace_seconds: float = 0.0) -> int:
        """Remove blobs older than `grace_seconds` that no row references; returns how many went.

        Safe while nodes serve, given a grace longer than any write takes to commit: a blob
        written a moment ago by a transaction still open is younger than that.
        """
        cutoff = time.time() - grace_seconds
        doomed = []
        for entry in self._listing():
            blob_id = entry["Key"][len(self.prefix) :]
            old = entry["LastModified"].timestamp() < cutoff
            if BLOB_ID.fullmatch(blob_id) and old and not is_referenced(blob_id):
                doomed.append(blob_id)
        self.delete_many(doomed)
        return len(doomed)

    def list_names(self) -> Iterator[str]:
        """Every object's name under the prefix."""
        return (entry["Key"][len(self.prefix) :] for entry in self._listing())

    def _listing(self) -> Iterable[dict[str, Any]]:
        pages = iter(self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix))
        while True:
            with self._reaching():  # page by page: a bucket's listing may not fit in memory
                page = next(pages, None)
            if page is None:
                return
            yield from page.get("Contents", ())


def _new_client(endpoint_url: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=MAX_POOL_CONNECTIONS,
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
