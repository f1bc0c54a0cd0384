"""Creates per second on PostgreSQL by several users at once: one global write lock vs per-user locks.

    python -m bench.user_locks --database-url postgresql://…/empty_db [--nodes 2] [--users 4]

Each user writes from a thread of its own, spread over `--nodes` `PostgresDatabase` objects
(each one a node: its own pool and in-process queues). A write is what a create does to the
database: the users row's byte count moved, an event of 2 KiB of payload (1 KiB of ciphertext
as hex), a commit. `global` runs it as an unmarked transaction (the global lock exclusively,
as every write did before issue 25), `per-user` as `atomic(user_id=…)`. The rounds alternate
the two, so the box's other load falls on both alike; the best round of each is printed.
`--hold-ms` keeps each transaction open that much longer (a sleep before COMMIT): the time
a write holds its locks in a real deployment, where every statement crosses the network.
The database must hold the current schema and be disposable (rows are added).
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from telentir.storage.postgres import PostgresDatabase

PAYLOAD = json.dumps({"content": "ab" * 1024})
ROUNDS = 3


def main(argv: list[str] | None = None) -> int:
    """Print one JSON line: creates/s with the global lock and with per-user locks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="per round and mode")
    parser.add_argument("--hold-ms", type=float, default=0.0, help="extra time each transaction stays open")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.database_url, args.nodes, args.users, args.seconds, args.hold_ms / 1000)))
    return 0


def measure(url: str, nodes: int, users: int, seconds: float, hold: float = 0.0) -> dict[str, float]:
    """Best creates/s of ROUNDS rounds per mode (`global`, `per_user`)."""
    dbs = [PostgresDatabase(url, pool_size=max(4, 2 * users)) for _ in range(nodes)]
    try:
        dbs[0].open_schema()
        user_ids = [f"usr_bench{n}" for n in range(users)]
        with dbs[0].atomic() as tx:
            for user_id in user_ids:
                tx.execute(
                    "INSERT INTO users (id, email, phone, plan, created_at, password_hash) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO NOTHING",
                    (user_id, f"{user_id}@example.com", "+15555550100", "free", "now", "x"),
                )
        best = {"global": 0.0, "per_user": 0.0}
        for _ in range(ROUNDS):
            for mode in best:
                best[mode] = max(best[mode], _round(dbs, user_ids, mode == "per_user", seconds, hold))
        return {f"{mode}_creates_per_s": round(rate) for mode, rate in best.items()}
    finally:
        for db in dbs:
            db.close()


def _round(dbs: list[PostgresDatabase], user_ids: list[str], per_user: bool, seconds: float, hold: float) -> float:
    counts = [0] * len(user_ids)
    deadline = time.monotonic() + seconds

    def writer(n: int) -> None:
        db, user_id = dbs[n % len(dbs)], user_ids[n]
        while time.monotonic() < deadline:
            with db.atomic(user_id=user_id if per_user else None) as tx:
                tx.execute("UPDATE users SET stored_bytes = stored_bytes + ? WHERE id = ?", (1024, user_id))
                tx.insert(
                    "INSERT INTO events (user_id, type, channel, payload, created_at) VALUES (?, ?, ?, ?, ?)",
                    (user_id, "object_created", f"object_created:{user_id}::", PAYLOAD, "now"),
                )
                if hold:
                    time.sleep(hold)
            counts[n] += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(len(user_ids))]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - started)


if __name__ == "__main__":
    raise SystemExit(main())
