"""The benchmark: every hot path against the real server, side by side, as ratios within one run.

    python -m bench            # the full run (several minutes)
    python -m bench --quick    # a few-second smoke run (part of `make test`)

Prints one table and writes a JSON file of results (`--out`, default bench/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from . import fanout, load
from .seed import BenchUser, make_user, open_runtime, seed_objects
from .server import MemoryWatch, Server, free_port

OBJECT_BYTES = 1024
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is."""

    seconds: float
    warmup_seconds: float  # unrecorded load before each HTTP measurement (fills caches, spawns threads)
    connections: int
    read_objects: int
    list_objects: int
    subscribers: int
    write_rate: float
    fanout_seconds: float
    ingest_records: int
    scaling_workers: tuple[int, ...]


FULL = Sizes(10, 3, 32, 100_000, 100_000, 1000, 50, 10, 20_000, (1, 2, 4))
QUICK = Sizes(1, 0, 4, 200, 500, 10, 10, 1, 200, (1, 2))


class Bench:
    """Holds the run's folder, results and table rows."""

    def __init__(
        self,
        sizes: Sizes,
        workdir: Path,
        worker_class: str = "gthread",
        workers: int | None = None,
        redis_url: str = DEFAULT_REDIS_URL,
    ) -> None:
        self.sizes, self.workdir, self.worker_class, self.workers = sizes, workdir, worker_class, workers
        self.redis_url = redis_url
        self.results: dict[str, Any] = {}
        self.baseline_rps: float | None = None
        self.baseline_cpu_us: float | None = None

    def server(self, data: Path, env: dict[str, str] | None = None, **options: Any) -> Server:
        """The real server over `data`, with this run's worker class (and worker count unless given), started."""
        options.setdefault("workers", self.workers)
        return Server(data, env, worker_class=self.worker_class, **options).start()

    def data_dir(self, name: str) -> Path:
        """A fresh data folder for one server."""
        path = self.workdir / name / "data"
        path.mkdir(parents=True)
        return path

    def http(
        self, server: Server, user: BenchUser, name: str, spec: load.Load, connections: int | None = None
    ) -> dict[str, Any]:
        """Run one HTTP load after a warm-up, with memory watched, and record it (ratio to the baseline)."""
        load.warm_up(server.url, spec, connections or self.sizes.connections, self.sizes.warmup_seconds)
        cpu_before = server.cpu_seconds()
        with MemoryWatch(server) as memory:
            result = load.run(server.url, spec, connections or self.sizes.connections, self.sizes.seconds)
        # The workers' CPU per request: steadier than req/s on a shared box, whose other load
        # slows every request alike (wrk's own CPU is not in it).
        cpu_us = (server.cpu_seconds() - cpu_before) * 1e6 / max(result.requests, 1)
        entry = {**result.as_dict(), "peak_rss_mib": round(memory.peak_mib, 1), "cpu_us_per_request": round(cpu_us)}
        if self.baseline_rps:
            entry["ratio_to_baseline"] = round(result.rps / self.baseline_rps, 2)
        if self.baseline_cpu_us:
            entry["cpu_ratio_to_baseline"] = round(cpu_us / self.baseline_cpu_us, 2)
        self.results[name] = entry
        return entry


def _auth(user: BenchUser) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.api_key}"}


def _create_load(user: BenchUser) -> load.Load:
    body = json.dumps(
        {
            "keyId": user.key_id,
            "content": os.urandom(OBJECT_BYTES).hex(),
            "authTag": "ab" * 16,
            "relatedId": user.store_id,
        }
    )
    return load.Load("PUT", ["/api/objects"], {**_auth(user), "Content-Type": "application/json"}, body)


def scenario_http(
    bench: Bench, workers: int | None = None, env: dict[str, str] | None = None, suffix: str = ""
) -> None:
    """Baseline, create and read (random ids over the seeded objects)."""
    data = bench.data_dir(f"http{suffix}")
    rt = open_runtime(data)
    user = make_user(rt, "http")
    ids = seed_objects(rt, user, bench.sizes.read_objects, OBJECT_BYTES)
    rt.close()
    server = bench.server(data, env, workers=workers if workers is not None else bench.workers)
    try:
        if not suffix:
            base = bench.http(server, user, "1_baseline", load.Load("GET", ["/api/server"], _auth(user)))
            bench.baseline_rps, bench.baseline_cpu_us = base["rps"], base["cpu_us_per_request"]
        bench.http(server, user, f"2_create{suffix}", _create_load(user))
        bench.http(server, user, f"3_read{suffix}", load.Load("GET", [f"/api/objects/{i}" for i in ids], _auth(user)))
    finally:
        server.stop()


def scenario_listing(bench: Bench) -> None:
    """Time to last byte and server memory growth for a store of many items."""
    data = bench.data_dir("listing")
    rt = open_runtime(data)
    user = make_user(rt, "list")
    seed_objects(rt, user, bench.sizes.list_objects, OBJECT_BYTES)
    rt.close()
    server = bench.server(data)
    try:
        with (
            MemoryWatch(server) as memory,
            requests.get(
                f"{server.url}/api/objects/{user.store_id}/related", headers=_auth(user), stream=True, timeout=600
            ) as resp,
        ):
            started, size = time.monotonic(), 0
            for chunk in resp.iter_content(65536):
                size += len(chunk)
            elapsed = time.monotonic() - started
        bench.results["4_listing"] = {
            "items": bench.sizes.list_objects,
            "seconds_to_last_byte": round(elapsed, 2),
            "bytes": size,
            "rss_growth_mib": round(memory.growth_mib, 1),
            "peak_rss_mib": round(memory.peak_mib, 1),
        }
    finally:
        server.stop()


def scenario_fanout(bench: Bench, users: int, label: str, name: str = "") -> None:
    """N subscribers spread over `users` users; writes at a fixed rate; delivery latency."""
    n = bench.sizes.subscribers
    data = bench.data_dir(f"fanout-{label}")
    rt = open_runtime(data)
    people = [make_user(rt, f"fan{i}") for i in range(users)]
    rt.close()
    env = {
        "TELENTIR_SSE_MAX_STREAMS": str(n + 50),
        "TELENTIR_SSE_MAX_STREAMS_PER_USER": str(n + 50),
        "TELENTIR_SSE_FAIR_SHARE_USERS": "1",  # one user may hold every stream here: this measures fan-out
    }
    server = bench.server(data, env, threads=n + 64)
    try:
        before = server.rss_bytes()
        sockets = [fanout.open_stream(server.port, people[i % users].api_key) for i in range(n)]
        per_stream = (server.rss_bytes() - before) / n / 1024
        receiver = fanout.Receiver(sockets)
        receiver.thread.start()
        with MemoryWatch(server) as memory:
            sent = fanout.write_at_rate(
                server.url, [(p.api_key, p.key_id) for p in people], bench.sizes.write_rate, bench.sizes.fanout_seconds
            )
            time.sleep(2)
        receiver.stop()
        expected = sent * n // users
        bench.results[name or f"5_fanout_{label}"] = {
            "subscribers": n,
            "users": users,
            "writes": sent,
            "writes_per_s": bench.sizes.write_rate,
            **fanout.summarize(receiver.latencies, expected),
            "rss_per_stream_kib": round(per_stream, 1),
            "peak_rss_mib": round(memory.peak_mib, 1),
        }
    finally:
        server.stop()


def scenario_ingest(bench: Bench, jobs: int = 1, name: str = "6_ingest") -> None:
    """POST /api/connect against the demo scraper, `jobs` at once (each its own user): records per second."""
    data = bench.data_dir(f"ingest-{name}")
    rt = open_runtime(data)
    users = [make_user(rt, f"ingest{i}") for i in range(jobs)]
    rt.close()
    port = free_port()
    scraper = subprocess.Popen(
        [sys.executable, "-m", "telentir", "demo-scraper", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {"SCRAPER_HOSTNAME": f"http://127.0.0.1:{port}"}
    server = bench.server(data, env)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        with MemoryWatch(server) as memory:
            started = time.monotonic()
            created = _ingest_at_once(server.url, users, bench.sizes.ingest_records)
            elapsed = time.monotonic() - started
        entry = {
            "jobs": jobs,
            "records": created,
            "seconds": round(elapsed, 2),
            "records_per_s": round(created / elapsed),
            "peak_rss_mib": round(memory.peak_mib, 1),
        }
        create = bench.results.get("2_create", {}).get("rps")
        if create and jobs == 1:
            entry["ratio_to_http_create"] = round(entry["records_per_s"] / create, 2)
        bench.results[name] = entry
    finally:
        server.stop()
        scraper.terminate()
        scraper.wait(10)


def _ingest_at_once(base_url: str, users: list[BenchUser], count: int) -> int:
    """One /records job of `count` records per user, all started together; the records written."""
    created: list[int] = []

    def run(user: BenchUser) -> None:
        resp = requests.post(
            f"{base_url}/api/connect",
            headers=_auth(user),
            timeout=3600,
            json={"repository": "contacts", "path": "/records", "params": {"count": count}},
        )
        resp.raise_for_status()
        job = requests.get(
            f"{base_url}/api/connect/jobs/{resp.headers['X-Connect-Job']}", headers=_auth(user), timeout=30
        ).json()
        created.append(job["created"])

    threads = [threading.Thread(target=run, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(created) != len(users):
        raise RuntimeError("an ingestion job failed")
    return sum(created)


def _wait_http(url: str) -> None:
    for _ in range(100):
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def scenario_scaling(bench: Bench) -> None:
    """Create and read with 1, 2, 4 workers on the Redis broker."""
    for workers in bench.sizes.scaling_workers:
        scenario_http(bench, workers, {"TELENTIR_BROKER_URL": bench.redis_url}, suffix=f"_redis_w{workers}")


def scenario_scale_out(bench: Bench) -> None:
    """One node against two (two workers each) on PostgreSQL + S3 + Redis: create and read."""
    from . import scale_out

    scale_out.run(bench, _create_load, _auth, OBJECT_BYTES)


def scenario_cores(bench: Bench) -> None:
    """The default (a worker per core, in-process broker, no Redis) against one worker, then the budget lines."""
    chosen = bench.workers  # --workers does not apply here: this scenario compares the two counts
    try:
        for label, workers in (("one_worker", 1), ("default", None)):
            bench.workers = workers
            _http_lines(bench, f"8_{label}")
            scenario_fanout(bench, 1, f"cores-{label}", name=f"8_{label}_fanout")
            scenario_ingest(bench, jobs=2, name=f"8_{label}_ingest")
    finally:
        bench.workers = chosen
    bench.results["8_budget"] = cores_budget(bench.results)


def _http_lines(bench: Bench, prefix: str) -> None:
    """Baseline, create and read on a server of this run's worker count."""
    data = bench.data_dir(prefix)
    rt = open_runtime(data)
    user = make_user(rt, "cores")
    ids = seed_objects(rt, user, bench.sizes.read_objects, OBJECT_BYTES)
    rt.close()
    server = bench.server(data)
    try:
        bench.http(server, user, f"{prefix}_baseline", load.Load("GET", ["/api/server"], _auth(user)))
        bench.http(server, user, f"{prefix}_create", _create_load(user))
        bench.http(server, user, f"{prefix}_read", load.Load("GET", [f"/api/objects/{i}" for i in ids], _auth(user)))
    finally:
        server.stop()


# Issue 16's budget: the default against one worker, as ratios within one run.
CORES_BUDGET = {"baseline": 1.8, "create": 1.2, "read": 2.0}
P99_BUDGET, FANOUT_P99_MS = 1.5, 250.0


def cores_budget(results: dict[str, Any]) -> dict[str, Any]:
    """Each budget line: the figure measured and whether it is met."""
    lines: dict[str, Any] = {}
    for line, wanted in CORES_BUDGET.items():
        one, default = results[f"8_one_worker_{line}"], results[f"8_default_{line}"]
        ratio = round(default["rps"] / one["rps"], 2) if one["rps"] else None
        p99 = round(default["p99_ms"] / one["p99_ms"], 2) if one["p99_ms"] else None
        lines[f"{line}_rps_ratio"] = {
            "measured": ratio,
            "budget": f">= {wanted}",
            "met": bool(ratio and ratio >= wanted),
        }
        lines[f"{line}_p99_ratio"] = {
            "measured": p99,
            "budget": f"<= {P99_BUDGET}",
            "met": p99 is not None and p99 <= P99_BUDGET,
        }
    fan_one, fan = results["8_one_worker_fanout"], results["8_default_fanout"]
    lines["fanout_p99_ms"] = {
        "measured": fan["p99_ms"],
        "budget": f"< {FANOUT_P99_MS}",
        "met": fan["p99_ms"] is not None and fan["p99_ms"] < FANOUT_P99_MS and fan["delivered"] == fan["expected"],
    }
    lines["rss_per_idle_stream_kib"] = {
        "measured": fan["rss_per_stream_kib"],
        "budget": f"<= one worker's ({fan_one['rss_per_stream_kib']})",
        "met": fan["rss_per_stream_kib"] <= fan_one["rss_per_stream_kib"] * 1.1,  # within noise
    }
    ingest_one, ingest = results["8_one_worker_ingest"], results["8_default_ingest"]
    lines["ingest_ratio"] = {"measured": round(ingest["records_per_s"] / ingest_one["records_per_s"], 2)}
    return lines


def scenario_durability(bench: Bench) -> None:
    """Create under TELENTIR_SYNCHRONOUS=FULL (survives power loss) beside the default NORMAL run."""
    data = bench.data_dir("durability")
    rt = open_runtime(data)
    user = make_user(rt, "durable")
    rt.close()
    server = bench.server(data, {"TELENTIR_SYNCHRONOUS": "FULL"})
    try:
        bench.http(server, user, "2_create_sync_full", _create_load(user))
        big = load.Load(
            "PUT",
            ["/api/objects"],
            {**_auth(user), "Content-Type": "application/json"},
            json.dumps({"keyId": user.key_id, "content": os.urandom(64 * 1024).hex(), "authTag": "ab" * 16}),
        )
        bench.http(server, user, "2_create_64KiB_files_sync_full", big)
    finally:
        server.stop()


def scenario_peer(bench: Bench) -> None:
    """Kinto on PostgreSQL with the same load tool and record size, when bench/kinto.py can run it."""
    from . import kinto

    bench.results["7_peer_kinto"] = kinto.run(bench.workdir, bench.sizes, OBJECT_BYTES, bench.results)


SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "http": scenario_http,
    "listing": scenario_listing,
    "fanout": lambda b: (
        scenario_fanout(b, 1, "one_user"),
        scenario_fanout(b, max(1, b.sizes.subscribers // 10), "many_users"),
    ),
    "ingest": scenario_ingest,
    "durability": scenario_durability,
    "peer": scenario_peer,
    "scaling": scenario_scaling,
    "scale_out": scenario_scale_out,
    "cores": scenario_cores,
}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_tool": "wrk" if shutil.which("wrk") else "python",
    }


def print_table(results: dict[str, Any]) -> None:
    """One line per scenario."""
    print(f"{'scenario':28} figures")
    for name, entry in sorted(results.items()):
        if isinstance(entry, dict):
            figures = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "command")
            print(f"{name:28} {figures}")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes of every scenario's server (default: serve's default, one per core)",
    )
    parser.add_argument(
        "--worker-class",
        choices=["gthread", "gevent"],
        default="gthread",
        help="the gunicorn worker every scenario's server runs (serve --worker-class)",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"the Redis of the Redis scenarios (scaling, scale_out); default {DEFAULT_REDIS_URL}",
    )
    args = parser.parse_args(argv)
    # The quick run leaves out the peer and scale-out scenarios: they need the local PostgreSQL.
    chosen = args.only or [s for s in SCENARIOS if not (args.quick and s in ("peer", "scale_out"))]
    workdir = Path(tempfile.mkdtemp(prefix="telentir-bench-"))
    bench = Bench(QUICK if args.quick else FULL, workdir, args.worker_class, args.workers, args.redis_url)
    failed = []
    try:
        for name in ["http"] + [s for s in chosen if s != "http"] if "http" in chosen else chosen:
            started = time.monotonic()
            try:
                SCENARIOS[name](bench)
            except Exception as exc:  # one broken scenario must not cost the figures of the others
                failed.append(name)
                bench.results[f"error_{name}"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"[{name}] {time.monotonic() - started:.1f}s", file=sys.stderr)
            report = {
                "machine": machine(),
                "quick": args.quick,
                "worker_class": args.worker_class,
                "workers": args.workers or "default (one per core)",
                "results": bench.results,
            }
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    print_table(bench.results)
    return 1 if failed else 0
