"""The GPU session's ``quadruped`` stage runs end to end at toy sizes and leaves every figure it promises.

Session C of ``experiments/gpu_runbook.md`` is one prepared call of about ten minutes of device
time: ``bench.py`` on ``quadruped_rough`` (raw physics, teacher, distillation), then the physics
step's parts for three terrain models and the teacher update's parts with a profile. Here the
same stage runs on the CPU at 8 envs and toy PPO sizes (its arguments override its own sizes;
``PROBE_ENVS`` and ``PROBE_SECONDS`` size the probes), so a broken script is found here and not
on a lent GPU. About 11 minutes alone on 2 cores, 13 beside one other test and over 15 in CI's
slow suite, mostly compiling the quadruped's programs. A fast test checks that the stage's exit
status reports a probe that failed after ``bench.py`` succeeded.
"""

from __future__ import annotations

import json
import math
import re

import pytest


@pytest.mark.slow
def test_gpu_session_quadruped_measures_throughput_physics_parts_and_update_parts(
        tmp_path, gpu_session, update_part_timings):
    toy = ["--num-envs", "8", "--unroll-length", "4", "--num-minibatches", "2", "--num-epochs", "1",
           "--updates-per-call", "1", "--calls", "2", "--policy-hidden", "8", "--value-hidden", "8",
           "--time-budget", "3600"]
    # The stage's own cuts are a GPU's; here its three commands take 11 minutes alone and over 15
    # beside the other slow tests (CI, 2026-11-30: cut at 900 s), so the whole stage gets 30.
    done = gpu_session("quadruped", toy, tmp_path, tmp_path / "runs", timeout=1800,
                       STAGE_SECONDS="850", PROBE_ENVS="8", PROBE_SECONDS="850")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    result = json.loads((tmp_path / "bench_quadruped_gpu.json").read_text())
    assert [row["num_envs"] for row in result["rows"]] == [8]
    row = result["rows"][0]
    for column in ("raw", "teacher", "distill"):
        assert math.isfinite(row[column]) and row[column] > 0, (column, row[column])
    assert row["brax"] is None  # the stage runs no Brax column: Brax has no rough-terrain quadruped

    log = (tmp_path / "quadruped_profile.log").read_text()
    # The physics probe: one line per terrain model, each a positive step time.
    physics = dict(re.findall(r"^B=\s+8 (hfield|tangent planes|plane), feet only.*?mjx\.step\s+([\d.]+) ms",
                              log, re.MULTILINE))
    assert set(physics) == {"hfield", "tangent planes", "plane"}, log[-3000:]
    assert all(float(ms) > 0 for ms in physics.values()), physics
    # The update probe ran on the quadruped (its privileged terrain heights among the fields) at the toy sizes.
    assert "'terrain_heights': (32, 4, 9)" in log and "B 8 T 4 samples 32" in log, log[-3000:]
    timings = update_part_timings(log)
    assert set(timings) == {"rollout", "collect", "sgd epochs", "one grad step", "train_step", "env steps",
                            "train_step vmap K=1"}, log[-3000:]
    assert all(math.isfinite(ms) and ms > 0 for ms in timings.values()), timings
    assert re.search(r"^profile train_step: [1-9]\d* ops on ", log, re.MULTILINE), log[-3000:]


def test_gpu_session_quadruped_fails_when_a_probe_is_cut_off(tmp_path, gpu_session):
    # bench.py with no time for a row exits 0 at once; the probes get 1 s, which cannot even
    # import JAX. A lent GPU's call must then say the stage failed (timeout's 124), not 0.
    done = gpu_session("quadruped", ["--num-envs", "8", "--time-budget", "0"], tmp_path, tmp_path / "runs",
                       timeout=300, PROBE_SECONDS="1")
    assert "Not measured: the time budget" in (tmp_path / "bench_quadruped_gpu.md").read_text()
    assert done.returncode == 124, done.stdout[-3000:] + done.stderr[-3000:]
    assert "stage quadruped exited with status 124" in done.stdout, done.stdout[-3000:]
