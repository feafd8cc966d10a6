"""Every benchmark's smallest case runs and prints its table (the figures themselves are read by people)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^now\s+files\s+(copied|resident)\s+(\d+) MiB\s+(\d+) MiB\s+(-?\d+) MiB\s+(\d+) of\s+(\d+) analysed\s+(\d+) MiB$")


@pytest.mark.skipif(not shutil.which("gst-launch-1.0"), reason="bench_memory encodes its clips with GStreamer")
def test_bench_memory_quick_runs_the_daemon_on_both_kv_paths_and_prints_its_table():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"), "--quick"],
                         capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {m[1]: m for m in map(ROW.match, out.stdout.splitlines()) if m}
    assert set(rows) == {"copied", "resident"}, out.stdout
    for kv, m in rows.items():
        after_load, peak, analysed, windows = int(m[2]), int(m[3]), int(m[5]), int(m[6])
        assert 0 < after_load <= peak, m[0]
        assert analysed == windows == 4, m[0]  # two 8 s clips, a 4 s window each 4 s, every one analysed
        assert int(m[7]) < 8, m[0]  # no memory of the daemon's hides in shared mappings, outside RssAnon
    assert "goal: under 300 MiB" in out.stdout
