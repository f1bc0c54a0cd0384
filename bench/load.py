"""Load generation: wrk (C, from Debian's packages) when installed, else a keep-alive Python client.

Both report the same figures: requests/s, p50 and p99 latency, error count, and the exact
command that produced them.
"""

from __future__ import annotations

import http.client
import json
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_DONE = """
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration,
    summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class LoadResult:
    """What one load run measured."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    tool: str
    command: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass
class Load:
    """A request mix: method, paths (one picked at random per request), headers, body."""

    method: str
    paths: list[str]
    headers: dict[str, str]
    body: str | None = None


def warm_up(base_url: str, load: Load, connections: int, seconds: float) -> None:
    """The same load, unrecorded: each measurement starts with warm caches and threads."""
    if seconds > 0:
        run(base_url, load, connections, seconds)


def run(base_url: str, load: Load, connections: int, seconds: float, threads: int = 2) -> LoadResult:
    """Drive `load` against the server with wrk if present, else with Python."""
    if shutil.which("wrk"):
        return _run_wrk(base_url, load, connections, seconds, threads)
    return _run_python(base_url, load, connections, seconds)


def _lua(load: Load, ids_file: Path | None) -> str:
    lines = [f'wrk.method = "{load.method}"']
    for name, value in load.headers.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if load.body is not None:
        lines.append(f"wrk.body = {json.dumps(load.body)}")
    if ids_file is not None:
        lines += [
            "local paths = {}",
            f'for line in io.lines("{ids_file}") do paths[#paths + 1] = line end',
            "math.randomseed(os.time())",
            "request = function() return wrk.format(nil, paths[math.random(#paths)]) end",
        ]
    return "\n".join(lines) + _DONE


def _run_wrk(base_url: str, load: Load, connections: int, seconds: float, threads: int) -> LoadResult:
    with tempfile.TemporaryDirectory() as tmp:
        ids_file = None
        if len(load.paths) > 1:
            ids_file = Path(tmp) / "paths.txt"
            ids_file.write_text("\n".join(load.paths) + "\n")
        script = Path(tmp) / "load.lua"
        script.write_text(_lua(load, ids_file))
        url = base_url + load.paths[0]
        cmd = [
            "wrk",
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, int(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    data = json.loads(next(line for line in out.splitlines() if line.startswith("WRKJSON"))[8:])
    return LoadResult(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=data["requests"],
        errors=data["errors"],
        tool="wrk",
        command=" ".join([*cmd[:-3], "<script: " + load.method + " with auth>", url]),
    )


def _run_python(base_url: str, load: Load, connections: int, seconds: float) -> LoadResult:
    host = urlsplit(base_url)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        mine: list[float] = []
        bad = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            conn.request(load.method, random.choice(load.paths), body=load.body, headers=load.headers)
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            bad += response.status >= 400
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    started = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return LoadResult(
        rps=len(latencies) / elapsed,
        p50_ms=quantiles[49] * 1000,
        p99_ms=quantiles[98] * 1000,
        requests=len(latencies),
        errors=errors[0],
        tool="python",
        command=f"python keep-alive client: {connections} connections, {seconds}s, {load.method} {load.paths[0]}",
    )
