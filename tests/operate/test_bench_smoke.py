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


def _bench(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    """`python -m <args>` from the checkout, which must succeed (its output in the failure)."""
    done = subprocess.run(
        [sys.executable, "-m", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_quick_benchmark_produces_every_scenario(tmp_path):
    out = tmp_path / "results.json"
    done = _bench("bench", "--quick", "--out", str(out), "--redis-url", redis_url(), timeout=300)
    results = json.loads(out.read_text())["results"]
    assert set(results) >= EXPECTED, sorted(results)
    for name in ("1_baseline", "2_create", "3_read"):
        assert results[name]["rps"] > 0 and results[name]["errors"] == 0, results[name]
    assert results["5_fanout_one_user"]["delivered"] == results["5_fanout_one_user"]["expected"] > 0
    assert results["6_ingest"]["records"] > 0
    assert "2_create" in done.stdout  # the table is printed


def test_inprocess_json_prints_one_line_of_positive_microseconds():
    """`python -m bench.inprocess --json`: the line the "no cost added" budget is read from (issue 21)."""
    done = _bench("bench.inprocess", "--json", "--requests", "4", timeout=120)
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    figures = json.loads(lines[0])
    assert set(figures) == {"noop_us", "baseline_us", "read_us", "create_us"}
    for name, value in figures.items():
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, (name, value)


def test_inprocess_prints_the_noop_line_and_the_ratios():
    done = _bench("bench.inprocess", "--requests", "2", timeout=120)
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == ["noop", "baseline", "read", "create"], done.stdout
    assert all(line.endswith("× noop") for line in done.stdout.splitlines()), done.stdout


def test_inprocess_floor_adds_the_bare_put_and_the_create_service_lines():
    """`--floor`: the two lines a create's in-process cost is bounded by (issue 25), after the usual four."""
    done = _bench("bench.inprocess", "--floor", "--json", "--requests", "4", timeout=120)
    figures = json.loads(done.stdout)
    assert list(figures) == ["noop_us", "baseline_us", "read_us", "create_us", "bare_put_us", "create_service_us"]
    assert all(value > 0 for value in figures.values()), figures
    # The service call is part of a create, and a bare route is less than a create: neither can cost more.
    assert figures["create_service_us"] < figures["create_us"], figures
    assert figures["bare_put_us"] < figures["create_us"], figures


def test_write_amplification_json_stays_within_three_kilobytes_per_object():
    """`python -m bench.write_amplification --json`: bytes on disk per 1 KiB object, the goal of issue 25."""
    done = _bench("bench.write_amplification", "--json", "--objects", "200", timeout=120)
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    figures = json.loads(lines[0])
    assert figures["objects"] == 200 and figures["object_bytes"] == 1024
    tables = figures["tables"]
    assert tables["objects"] > 1024 and tables["events"] > 0, tables  # each object's ciphertext is on disk once
    assert abs(sum(tables.values()) - figures["bytes_per_object"]) < 1, figures
    assert figures["bytes_per_object"] <= 3 * 1024, figures  # was 5.6 KB with the ciphertext repeated as hex


def test_write_amplification_prints_the_total_and_each_table():
    done = _bench("bench.write_amplification", "--objects", "5", timeout=120)
    assert done.stdout.startswith("5 objects of 1024 B: "), done.stdout
    assert {line.split()[0] for line in done.stdout.splitlines()[2:]} >= {"events", "objects"}, done.stdout
