"""Crash tests' child processes: a writer that announces its work line by line, run and SIGKILLed.

The child (its source a test's string, started with `python <script> <data dir> <args…>`)
prints one JSON line per step, flushed; `run_and_kill` kills it `delay` seconds after its
`"ready"` line and returns the lines it got out, the last one possibly cut by the kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from .support import ROOT, wait_for_output

# The start of a data-plane child: a runtime over the data folder, a verified user with a
# root, its contacts store and that store's key, and `say(**line)`, which prints one line whole.
CHILD_PRELUDE = textwrap.dedent("""
    import json, os, random, sys, threading

    from telentir.services import accounts, objects, roots
    from tests.support import runtime_over

    rt = runtime_over(sys.argv[1], inline_max_bytes=int(sys.argv[3]))
    user = accounts.create_user(rt, "crash@example.com", "+15555550100", verified=True)
    roots.ensure_root(rt, user["id"])
    store = roots.store_object_ids(rt, user["id"])["contacts"]
    key = rt.db.query_one("SELECT default_key FROM stores WHERE user_id = ? AND name = 'contacts'",
                          (user["id"],))[0]
    _lines = threading.Lock()

    def say(**line):
        with _lines:  # whole lines, one thread at a time
            print(json.dumps(line), flush=True)
""")


def run_and_kill(tmp_path: Path, source: str, args: list[str], delay: float) -> list[dict[str, Any]]:
    """Run the child over `tmp_path / "data"` with `args`, SIGKILL it `delay` s after it said ready; its lines."""
    script = tmp_path / "child.py"
    script.write_text(source)
    out_path = tmp_path / "child.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELENTIR_")} | {"PYTHONPATH": str(ROOT)}
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "data"), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_output(proc, out_path, b'"ready"', timeout=30, interval=0.01)
            time.sleep(delay)  # the point: the kill lands at a different moment for each delay
            assert proc.poll() is None, out_path.read_text()[-2000:]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    lines = out_path.read_text().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            assert line is lines[-1], line  # only the last line may have been cut by the kill
    return parsed
