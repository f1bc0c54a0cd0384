"""The benchmark harness runs end to end (`python -m bench --quick`), so it cannot rot."""

import json
import subprocess
import sys

from ..private_services import redis_url
from ..support import ROOT

EXPECTED = {
    "1_baseline",
    "2_create",
    "3_read",
    "4_listing",
    "5_fanout_one_user",
    "5_fanout_many_users",
    "6_ingest",
    "2_create_redis_w1",
    "3_read_redis_w2",
}


def test_quick_benchmark_produces_every_scenario(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--redis-url", redis_url()],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())["results"]
    assert set(results) >= EXPECTED, sorted(results)
    for name in ("1_baseline", "2_create", "3_read"):
        assert results[name]["rps"] > 0 and results[name]["errors"] == 0, results[name]
    assert results["5_fanout_one_user"]["delivered"] == results["5_fanout_one_user"]["expected"] > 0
    assert results["6_ingest"]["records"] > 0
    assert "2_create" in done.stdout  # the table is printed
