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


# ---------------------------------------------------------------- wired into the run directory
def test_a_new_run_records_its_provenance_in_config_json_and_keeps_it_through_resume_changes(tmp_path):
    import json

    from distill_jax.config import to_dict
    from distill_jax.run import pipeline
    from distill_jax.run.presets import preset

    run = pipeline.create_run(tmp_path / "run", preset("smoke"))
    recorded = json.loads((run.path / "config.json").read_text())["provenance"]
    assert recorded["devices"]["processes"] == jax.process_count() == 1
    assert recorded["devices"]["devices"] == jax.device_count() and recorded["packages"]["jax"] == jax.__version__
    assert "memory" not in recorded  # nothing has run when the directory is created; eval.json has the peak

    opened = pipeline.open_run(run.path)  # the section is not a setting
    assert to_dict(opened.config) == to_dict(run.config) and opened.provenance == recorded
    changed = pipeline.change_on_resume(opened, {"distill": {"total_env_steps": 16 * 8 * 4}})
    after = json.loads((run.path / "config.json").read_text())
    assert after["distill"]["total_env_steps"] == 16 * 8 * 4 and after["provenance"] == recorded
    assert changed.provenance == recorded


def test_the_run_readme_names_versions_devices_throughput_and_cost():
    from distill_jax.run import pipeline

    section = provenance.collect(wall_seconds=7200.0, compile_seconds={"teacher": 12.5},
                                 metrics_rows=[{"phase": "teacher", "env_steps": 1000, "seconds": 3.0,
                                                "env_steps_per_second": 100.0},
                                               {"phase": "teacher", "env_steps": 2000, "seconds": 1.0,
                                                "env_steps_per_second": 1000.0}],
                                 price_per_device_hour=2.0)
    text = "\n".join(pipeline.provenance_lines(section))
    devices = jax.device_count()
    assert f"jax {jax.__version__}" in text and f"{devices} x " in text
    assert "- teacher: 1,000 env-steps/s after the first call, 4.0 s in compiled calls, 12.5 s compiling" in text
    assert f"{2.0 * devices:.4g} device-hours; cost {4.0 * devices:.4g} at 2 per device-hour" in text
