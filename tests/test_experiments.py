"""The benchmark script still runs end to end and writes what the results files are made of.

The slow test runs ``experiments/gpu_session.sh``'s ``bench`` stage (what a lent GPU machine runs)
at toy sizes with every column on (raw physics, our teacher, Brax PPO through the compatibility
shim, distillation, multi-seed) and checks the files it leaves; it says nothing about speed. The
fast tests check the script's time budget, its table and its raw-physics runner.
"""

from __future__ import annotations

import json
import math
import pathlib
import time

import pytest

ROOT = pathlib.Path(__file__).parents[1]


@pytest.mark.slow
def test_bench_writes_every_column(tmp_path, gpu_session):
    # Through the GPU session's `bench` stage: its own arguments, then these toy sizes over them.
    done = gpu_session("bench", [
        "--task", "brax_inverted_pendulum", "--num-envs", "8", "--unroll-length", "4", "--num-minibatches", "2",
        "--num-epochs", "1", "--updates-per-call", "1", "--calls", "2", "--policy-hidden", "8", "--value-hidden", "8",
        "--seeds", "1,2", "--multiseed-envs", "8", "--time-budget", "3600"], tmp_path, tmp_path / "runs",
        STAGE_SECONDS="850")  # the stage's own timeout is sized for a GPU
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "bench_gpu"
    assert (tmp_path / "bench.log").read_text().count("| 8 |") == 1

    result = json.loads(out.with_suffix(".json").read_text())
    assert [row["num_envs"] for row in result["rows"]] == [8]
    for row in result["rows"]:
        for column in ("raw", "teacher", "brax", "distill"):
            assert math.isfinite(row[column]) and row[column] > 0, (row["num_envs"], column, row[column])
        assert row["memory_bytes"] > 0
    assert [row["num_seeds"] for row in result["multiseed"]] == [1, 2]
    assert all(math.isfinite(row["teacher"]) and row["teacher"] > 0 for row in result["multiseed"])
    assert result["args"]["calls"] == 2 and result["command"].startswith("python ")
    assert result["skipped"] == {"num_envs": [], "num_seeds": []}

    table = out.with_suffix(".md").read_text()
    assert "median of calls 2-2" in table and "| 8 |" in table
    assert (tmp_path / "bench_gpu_scaling.png").stat().st_size > 0


@pytest.fixture
def bench(monkeypatch):
    """``experiments/bench.py`` as a module (it imports its sibling scripts by plain name)."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import bench

    return bench


def test_within_budget_stops_starting_items_at_the_deadline(bench):
    ticks = iter([0.0, 4.0, 9.0, 12.0])  # the clock as read before each item starts
    skipped: list[int] = []
    started = list(bench.within_budget([256, 1024, 4096, 8192], 9.0, skipped, clock=lambda: next(ticks)))
    assert started == [256, 1024] and skipped == [4096, 8192]

    skipped = []
    assert list(bench.within_budget([1, 4, 16], None, skipped, clock=lambda: 1e9)) == [1, 4, 16]
    assert skipped == []


def test_bench_table_names_the_rows_a_time_budget_left_out(bench):
    args = bench.parse_args(["--num-envs", "1024,8192", "--seeds", "1,16", "--time-budget", "170"])
    meta = {"hardware": "test host", "versions": {"jax": "0"}, "commit": "abc", "xla_flags": "", "command": "python x"}
    row = {"num_envs": 1024, "raw": 100_000.0, "teacher": 85_000.0, "brax": 50_000.0, "distill": 80_000.0,
           "memory_bytes": 2**30}
    partial = {"rows": [row], "multiseed": [], "skipped": {"num_envs": [8192], "num_seeds": [1, 16]},
               "memory_kind": "device peak"}
    table = bench.markdown(partial, meta, args)
    assert "| 1024 | 100,000 | 85,000 | 0.85 | 50,000 | 1.70 | 80,000 | 0.94 | 1,024 MiB |" in table
    assert "at the largest batch (1024): 0.85" in table
    assert "(`--time-budget 170` s) was spent before envs [8192] and seeds K [1, 16] could start" in table

    cut_off = {**partial, "rows": [row, {"num_envs": 8192, "raw": 400_000.0, "teacher": 300_000.0, "brax": None,
                                         "distill": None, "memory_bytes": None}]}
    assert "| 8192 | 400,000 | 300,000 | 0.75 | n/a | n/a | n/a | n/a | n/a |" in bench.markdown(cut_off, meta, args)

    nothing = {**partial, "rows": [], "skipped": {"num_envs": [1024, 8192], "num_seeds": [1, 16]}}
    assert "at the largest batch (no row measured): n/a" in bench.markdown(nothing, meta, args)
    assert "Multi-seed teacher" in table
    no_seeds = bench.parse_args(["--num-envs", "1024", "--seeds", ""])
    assert "Multi-seed teacher" not in bench.markdown({**partial, "skipped": {"num_envs": [], "num_seeds": []}},
                                                      meta, no_seeds)


def test_bench_refuses_a_negative_time_budget(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--time-budget", "-1"])
    assert bench.parse_args(["--seeds", ""]).seeds == []


def test_raw_physics_is_the_tasks_physics_step_hook_included(monkeypatch):
    """bench_envs' raw physics limit steps exactly as the task does, ``before_physics_step`` included.

    The quadruped places its feet's planes in that hook; a raw runner skipping it would time
    other physics. A cart-pole whose hook pushes the cart makes the hook visible.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from distill_jax.envs.cartpole import Cartpole

    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import bench_envs

    class PushedCartpole(Cartpole):
        def before_physics_step(self, model, data):
            return data.replace(qfrc_applied=data.qfrc_applied.at[0].set(5.0))

    task, batch, key = PushedCartpole(), 3, jax.random.PRNGKey(0)
    init, run = (jax.jit(f) for f in bench_envs.make_raw(task, batch, steps=1))
    start = init(key)
    raw = run(start, key)[0]
    # The runner's one control step, by hand: its random controls through the task's physics_step.
    u = jax.random.uniform(jax.random.split(key, 1)[0], (batch, task.mj_model.nu), minval=-1.0, maxval=1.0)
    lo, hi = (jnp.asarray(task.mj_model.actuator_ctrlrange[:, i]) for i in (0, 1))
    by_hand = jax.jit(jax.vmap(lambda d, c: task.physics_step(task.mjx_model, d, c)))(
        start[0], lo + (u + 1.0) * 0.5 * (hi - lo))
    assert np.all(np.asarray(start[0].qfrc_applied)[:, 0] == 0.0)
    assert np.all(np.asarray(raw.qfrc_applied)[:, 0] == 5.0)  # the hook ran
    np.testing.assert_allclose(raw.qpos, by_hand.qpos, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(raw.qvel, by_hand.qvel, rtol=1e-5, atol=1e-6)


def test_trace_summary_keeps_the_innermost_ops(monkeypatch):
    """A CPU ``while`` event contains its body's ops: only those count, and events on other lines stay."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments" / "probes"))
    from trace_summary import OpEvent, _family, _innermost

    loop = OpEvent("t0", "while.3", start=0.0, seconds=10.0)
    body = [OpEvent("t0", f"fusion.{i}", start=1.0 + 3 * i, seconds=2.0) for i in range(3)]
    after = OpEvent("t0", "copy.2", start=10.0, seconds=1.0)  # starts as the loop ends: not inside it
    assert _innermost([after, *body, loop]) == [*body, after]
    assert _innermost([loop]) == [loop]
    assert _family("loop_add_fusion_3") == _family("loop_add_fusion_17") == "loop_add_fusion"


def test_teacher_scale_probe_marks_the_window_before_each_fall(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments" / "probes"))
    import numpy as np
    from teacher_scale_spread import steps_before_falls

    terminated = np.zeros((8, 3), dtype=bool)
    terminated[5, 0] = terminated[1, 2] = True
    near = steps_before_falls(terminated, window=2)
    assert np.nonzero(near[:, 0])[0].tolist() == [3, 4, 5]
    assert not near[:, 1].any()
    assert np.nonzero(near[:, 2])[0].tolist() == [0, 1]  # clipped at the rollout's start


def test_best_seconds_times_the_fastest_call_after_an_untimed_one(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import benchlib

    durations = iter([0.4, 0.2, 0.05, 0.2])  # the first (compiling) call is the slowest and not timed
    calls = []

    def fn(x):
        calls.append(x)
        time.sleep(next(durations))
        return x

    best = benchlib.best_seconds(fn, 7, repeats=3)
    assert calls == [7, 7, 7, 7]
    assert 0.05 <= best < 0.2, best
