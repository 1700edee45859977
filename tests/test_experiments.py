"""The benchmark script still runs end to end and writes what the results files are made of.

``experiments/bench.py`` is what the GPU runbook calls with device time that cannot be spent
twice, so it must not rot between GPU sessions. This runs it at toy sizes with every column on
(raw physics, our teacher, Brax PPO through the compatibility shim, distillation, multi-seed)
and checks the files it writes. It says nothing about speed.
"""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]


@pytest.mark.slow
def test_bench_writes_every_column(tmp_path):
    out = tmp_path / "bench"
    command = [sys.executable, str(ROOT / "experiments" / "bench.py"), "--task", "brax_inverted_pendulum",
               "--num-envs", "8", "--unroll-length", "4", "--num-minibatches", "2", "--num-epochs", "1",
               "--updates-per-call", "1", "--calls", "2", "--policy-hidden", "8", "--value-hidden", "8",
               "--seeds", "1,2", "--multiseed-envs", "8", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    result = json.loads(out.with_suffix(".json").read_text())
    assert [row["num_envs"] for row in result["rows"]] == [8]
    for row in result["rows"]:
        for column in ("raw", "teacher", "brax", "distill"):
            assert math.isfinite(row[column]) and row[column] > 0, (row["num_envs"], column, row[column])
        assert row["memory_bytes"] > 0
    assert [row["num_seeds"] for row in result["multiseed"]] == [1, 2]
    assert all(math.isfinite(row["teacher"]) and row["teacher"] > 0 for row in result["multiseed"])
    assert result["args"]["calls"] == 2 and result["command"].startswith("python ")

    table = out.with_suffix(".md").read_text()
    assert "median of calls 2-2" in table and "| 8 |" in table
    assert (tmp_path / "bench_scaling.png").stat().st_size > 0
