"""Provenance and cost: versions, commit, devices, memory, compile time apart from run time."""

import math

import jax
import jax.numpy as jnp
import pytest

from distill_jax.run import provenance


def test_the_packages_that_decide_a_run_are_named_with_their_versions():
    versions = provenance.package_versions()
    assert versions["jax"] == jax.__version__
    assert {"mujoco", "mujoco-mjx", "brax", "flax", "optax", "orbax-checkpoint", "distill_jax"} <= set(versions)


def test_a_checkout_has_a_commit_and_a_directory_without_git_has_none(tmp_path):
    here = provenance.git_commit()
    assert here is None or (len(here["commit"]) == 40 and isinstance(here["dirty"], bool))
    assert provenance.git_commit(tmp_path) is None


def test_compile_seconds_are_counted_per_stage_and_a_cached_program_costs_none():
    clock = provenance.CompileClock()
    f = jax.jit(lambda x: jnp.sin(x) * 3.0 + jnp.cumsum(x))
    with clock.stage("first"):
        f(jnp.arange(17.0)).block_until_ready()
    with clock.stage("again"):
        f(jnp.arange(17.0)).block_until_ready()  # in jit's own cache: nothing compiles
    assert clock.seconds["first"] > 0 and "again" not in clock.seconds


def test_throughput_leaves_out_the_compiling_call_and_cost_counts_device_hours():
    rows = [{"phase": "teacher", "update": 1, "env_steps": 100, "seconds": 10.0, "env_steps_per_second": 10.0},
            {"phase": "teacher", "update": 2, "env_steps": 200, "seconds": 1.0, "env_steps_per_second": 100.0},
            {"phase": "teacher", "update": 3, "env_steps": 300, "seconds": 0.5, "env_steps_per_second": 200.0},
            {"phase": "distill", "update": 1, "env_steps": 50, "seconds": 2.0, "env_steps_per_second": 25.0}]
    phases = provenance.phase_throughput(rows)
    assert phases["teacher"] == {"env_steps": 300.0, "call_seconds": 11.5, "env_steps_per_second": 150.0}
    assert phases["distill"]["env_steps_per_second"] == 25.0  # a single call is all there is
    assert provenance.cost(7200.0, 2, 3.5) == {"device_hours": 4.0, "price_per_device_hour": 3.5, "cost": 14.0}
    assert provenance.cost(3600.0, 1, None)["cost"] is None


def test_collect_is_json_able_and_reports_peak_memory():
    import json

    out = provenance.collect(wall_seconds=12.0, compile_seconds={"teacher": 3.0}, metrics_rows=[])
    json.dumps(out)
    assert out["memory"]["peak_rss_bytes"] > 10 * 2**20
    assert out["devices"]["processes"] == 1 and out["cost"]["device_hours"] == pytest.approx(12.0 / 3600.0)
    assert not math.isnan(out["wall_seconds"])
