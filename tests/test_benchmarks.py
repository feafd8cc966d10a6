"""Every benchmark's smallest case runs, from the venv the tests use, so that none breaks silently.

The figures are the benchmarks' business; here each must exit 0 and print its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

# script, the smallest arguments, a line its table prints
CASES = {
    "bench_board": (["--steps", "2"], "cameras one NPU sustains"),
    "bench_capacity": (["--smoke"], "cameras per board"),
    "bench_capture": (["--seconds", "4", "--repeat", "1"], "CPU seconds per minute of stream"),
    "bench_engine": (["--steps", "2"], "decode"),
    "bench_json_decoding": (["--tokens", "20", "--runs", "1", "--only", "llguidance"], "median ms"),
    "bench_events": (["--quick"], "MQTT messages per hour of activity"),
    "bench_gate": (["--resolutions", "320x240", "--noises", "0", "--codecs", "raw", "--static-windows", "2",
                    "--hour-windows", "2"], "gate ms/window"),
    "bench_memory": (["--seconds", "6", "--only", "files"], "peak"),
    "bench_ort_threads": (["--windows", "1", "--repeat", "1"], "CPU vs default"),
    "bench_search": (["--quick", "--repeat", "2"], "slowest:"),
    "bench_window": ([], "modelled AX650N seconds"),
}

KNOWN = {  # benchmark: (the failure seen on main, why) -- only that failure is expected; remove once fixed
    "bench_memory": ("'FakeGraph' object has no attribute 'resident'",
                     "bench_memory's FakeGraph lacks `resident` (kv: auto); issue 18 owns the fix"),
}


def test_every_benchmark_has_a_case():
    scripts = {p.stem for p in BENCHMARKS.glob("bench_*.py")}
    assert scripts == set(CASES), "add the new benchmark's smallest case to CASES"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(CASES))
def test_smallest_case_runs(name, tmp_path):
    args, expected = CASES[name]
    run = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=280, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if name in KNOWN and run.returncode != 0 and KNOWN[name][0] in run.stderr:
        pytest.xfail(KNOWN[name][1])
    assert run.returncode == 0, f"{name} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    assert expected.lower() in run.stdout.lower(), run.stdout[-2000:]
