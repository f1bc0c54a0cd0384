"""Fast set-up of benchmark data, straight through the service layer (not part of what is measured)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telentir.config import load_config
from telentir.runtime import Runtime
from telentir.services import accounts, credentials, keyring, objects, roots
from telentir.wiring import build_runtime

from .server import MASTER_KEY


@dataclass
class BenchUser:
    """A verified user with an API key, a minted key and its contacts store."""

    user_id: str
    api_key: str
    key_id: str
    store_id: str


def open_runtime(data_dir: Path, **overrides: Any) -> Runtime:
    """A runtime over the benchmark's data folder (or the engines `overrides` name)."""
    return build_runtime(load_config({"data_dir": data_dir, "master_key": MASTER_KEY, **overrides}, environ={}))


def make_user(rt: Runtime, label: str) -> BenchUser:
    """Create a verified user with its root, an API key and one minted key."""
    user = accounts.create_user(rt, f"{label}-{secrets.token_hex(4)}@bench.example", "+15555550199", verified=True)
    roots.ensure_root(rt, user["id"])
    key = keyring.create_key(rt, user["id"], "default", None, None, "{}")
    return BenchUser(
        user["id"],
        credentials.create_api_key(rt, user["id"], "bench")["key"],
        key["id"],
        roots.store_object_ids(rt, user["id"])["contacts"],
    )


def seed_objects(rt: Runtime, user: BenchUser, count: int, size: int = 1024, batch: int = 2000) -> list[str]:
    """Insert `count` objects under the user's contacts store, in big transactions."""
    durable = getattr(rt.blobs, "durable", None)
    if durable is not None:
        rt.blobs.durable = False  # type: ignore[attr-defined]  # seeding only: the API's writes are measured
    ids: list[str] = []
    for start in range(0, count, batch):
        n = min(batch, count - start)
        contents = [os.urandom(size) for _ in range(n)]
        # The same placement the API makes: small ciphertexts in the row, large ones in files.
        inline = size <= rt.config.inline_max_bytes
        blob_ids = [None] * n if inline else rt.blobs.write_many(contents)
        with rt.db.atomic() as tx:
            for content, blob_id in zip(contents, blob_ids, strict=True):
                ids.append(
                    objects.insert_object(
                        rt, tx, user.user_id, user.key_id, blob_id, content, os.urandom(16), user.store_id, "{}"
                    )
                )
    if durable is not None:
        rt.blobs.durable = durable  # type: ignore[attr-defined]
    return ids
