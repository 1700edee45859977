"""The quadruped on MuJoCo C (distill_jax.deploy.quadruped_sim) against the MJX task it re-states.

A small terrain (6 m x 6 m) keeps the MJX model cheap to build; the checks do not depend on its size.
"""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from distill_jax.deploy.physics import SimError, make_sim
from distill_jax.deploy.quadruped_sim import REWARD_TERMS, QuadrupedSim
from distill_jax.envs import get_env
from distill_jax.envs import terrain as terrain_lib
from distill_jax.envs.quadruped import REWARD_TERMS as MJX_REWARD_TERMS
from distill_jax.heightfield import TerrainConfig, generate_heights, surface_plane

SMALL = {"terrain_half_x": 3.0, "terrain_half_y": 3.0, "spawn_half_extent": 2.0}
FLAT = {**SMALL, "terrain_noise_amplitude": 0.0, "terrain_step_height": 0.0, "terrain_slope_grade": 0.0,
        "push_interval_s": 0.0}
TASK_FIELDS = ("joint_pos", "joint_vel", "base_ang_vel", "projected_gravity", "command", "last_action",
               "terrain_heights", "foot_contact_forces", "friction", "base_lin_vel", "payload", "motor_strength",
               "push_force", "base_height", "reward_terms", "dyn_params")


def quiet_env(**overrides):
    """The wrapped MJX env without sensor noise (so its fields are the task's)."""
    return get_env("quadruped_rough", noise_std=0.0, **overrides)


def start_like(sim: QuadrupedSim, state) -> dict:
    """Puts ``sim`` in the MJX ``state``: its randomised parameters, qpos, qvel and command."""
    sim.values = np.array([float(state.params[r["name"]]) for r in sim.randomizer.ranges])
    sim.randomizer.apply(sim.values)
    return sim.set_state(np.asarray(state.physics.qpos, np.float64), np.asarray(state.physics.qvel, np.float64),
                         np.asarray(state.info["command"], np.float64))


def test_the_task_constants_are_the_mjx_tasks():
    assert REWARD_TERMS == MJX_REWARD_TERMS


def test_the_numpy_surface_equals_the_jax_one_and_the_hfield_built_from_it():
    cfg = TerrainConfig(half_x=3.0, half_y=2.0, seed=4)
    heights = generate_heights(cfg)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-3.2, 3.2, 500), rng.uniform(-2.2, 2.2, 500)  # a few beyond the edge: clamped
    ours = surface_plane(heights, cfg.half_x, cfg.half_y, x, y)
    theirs = terrain_lib.terrain_plane(jnp.asarray(heights), cfg.half_x, cfg.half_y, jnp.asarray(x), jnp.asarray(y))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, np.asarray(b), atol=1e-5)


def test_the_hfield_heights_are_the_generators_at_random_points():
    env = quiet_env(**SMALL)
    sim = QuadrupedSim(env.fingerprint())
    m, d = sim.model, sim.data
    mujoco.mj_forward(m, d)
    floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    stored = m.hfield_data.reshape(m.hfield_nrow[0], m.hfield_ncol[0]) * m.hfield_size[0, 2]
    np.testing.assert_allclose(stored, generate_heights(TerrainConfig(**env.fingerprint()["config"]["terrain"])),
                               atol=1e-6)
    rng = np.random.default_rng(1)
    geomid = np.zeros(1, np.int32)
    for x, y in rng.uniform(-2.9, 2.9, size=(200, 2)):
        # MuJoCo's own surface, probed with a ray straight down onto the height field only.
        dist = mujoco.mj_ray(m, d, np.array([x, y, 5.0]), np.array([0.0, 0.0, -1.0]), None, 1, -1, geomid)
        assert geomid[0] == floor
        assert 5.0 - dist == pytest.approx(float(sim.terrain_height(x, y)), abs=2e-5), (x, y)


def test_the_fingerprint_is_checked():
    fingerprint = quiet_env(**SMALL).fingerprint()
    with pytest.raises(SimError, match="terrain generated here"):
        QuadrupedSim({**fingerprint, "config": {**fingerprint["config"],
                                                "terrain": {**fingerprint["config"]["terrain"], "seed": 9}}})
    with pytest.raises(SimError, match="not the one this run trained on"):
        QuadrupedSim({**fingerprint, "model_hash": "0" * 16})
    with pytest.raises(SimError, match="contact="):
        make_sim(fingerprint, "mesh")
    assert make_sim(fingerprint).contact == "hfield"


@pytest.mark.parametrize("contact", ["hfield", "tangent_plane"])
def test_the_observation_fields_equal_the_mjx_tasks_at_reset(contact):
    env = quiet_env(**SMALL)
    sim = QuadrupedSim(env.fingerprint(), contact=contact)
    reset = jax.jit(env.reset)
    for seed in range(4):
        state = reset(jax.random.PRNGKey(seed))
        ours = start_like(sim, state)
        for name in TASK_FIELDS:
            np.testing.assert_allclose(ours[name], np.asarray(state.obs[name]), atol=2e-5, err_msg=name)


@pytest.mark.slow
def test_flat_ground_steps_agree_with_mjx():
    """On flat ground training's tangent planes and MuJoCo's height field are the same surface.

    From the same state and actions, 25 control steps (0.5 s: the feet land from the spawn
    clearance and carry the trunk): C with the tangent planes reproduces MJX to float32
    rounding (measured 8e-6 m, 1.1e-4 rad, reward 3e-6; asserted < 1e-4 m, 1e-3 rad, 1e-4);
    C with MuJoCo's height-field contact stays within 3 cm and 0.2 rad of it, and its reward
    within 0.01 a step: the same surface, but another contact set
    (MuJoCo's sphere-hfield collider returns one contact per triangular prism the sphere
    overlaps, several per foot where a plane gives one), which the one-iteration Newton solver
    settles differently. Measured on this draw: 14.8 mm (trunk x), 0.105 rad (one joint), 0.0045 (see
    experiments/results/deploy_cpu.md).
    """
    env = quiet_env(**FLAT)
    state = jax.jit(env.reset)(jax.random.PRNGKey(5))
    step = jax.jit(env.step)
    actions = 0.3 * np.sin(np.arange(25)[:, None] * 0.4 + np.arange(12)[None])
    mjx_qpos, mjx_reward = [], []
    for a in actions:
        state = step(state, jnp.asarray(a, jnp.float32))
        mjx_qpos.append(np.asarray(state.physics.qpos))
        mjx_reward.append(float(state.reward))
    mjx_qpos = np.stack(mjx_qpos)
    state0 = jax.jit(env.reset)(jax.random.PRNGKey(5))
    gaps = {}
    for contact in ("tangent_plane", "hfield"):
        sim = QuadrupedSim(env.fingerprint(), contact=contact)
        start_like(sim, state0)
        qpos, rewards = [], []
        for a in actions:
            _, reward, fall, _ = sim.step(a, push=np.zeros(3))
            assert not fall
            qpos.append(np.array(sim.data.qpos))
            rewards.append(reward)
        gaps[contact] = (np.abs(np.stack(qpos) - mjx_qpos).max(axis=0), np.abs(np.array(rewards) - mjx_reward).max())
    plane, hfield = gaps["tangent_plane"], gaps["hfield"]
    print({contact: {"trunk_m": float(q[:3].max()), "quat_joints": float(q[3:].max()), "reward": float(r)}
           for contact, (q, r) in gaps.items()})
    assert plane[0][:3].max() < 1e-4 and plane[0][3:].max() < 1e-3 and plane[1] < 1e-4, gaps
    assert hfield[0][:3].max() < 3e-2 and hfield[0][3:].max() < 0.2 and hfield[1] < 0.01, gaps


@pytest.mark.slow
def test_sim2sim_runs_a_quadruped_run_without_jax(tmp_path):
    from distill_jax.train import main as train

    out = tmp_path / "run"
    assert train(["--preset", "smoke", "--env", "quadruped_rough", "--out", str(out), "--quiet",
                  "--set", "eval_episodes=2", "--set", "suite.enabled=false"]) == 0
    script = ("import sys; from distill_jax.sim2sim import main; rc = main([sys.argv[1], '--episodes', '2']); "
              "assert 'jax' not in sys.modules, 'sim2sim imported jax'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "sim2sim.json").read_text())
    assert report["env"] == "quadruped_rough"
    assert report["contact"] == {"sim2sim": "hfield", "training": "tangent_plane"}
    assert "tracking_error_mean" in report["mujoco_c"] and len(report["per_episode"]) == 2
    assert "tracking error" in result.stdout
    assert pathlib.Path(out / "sim2sim.json").is_file()
