"""Rough-terrain quadruped on real MJX (CPU): model, terrain, observations, physics.

Compilation dominates the cost, so the module compiles two programs once —
``vmap(reset)`` and ``scan(vmap(step))`` over a fixed ``[T, B]`` action
sequence — and every physics test reuses them with different inputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from distill_jax.envs import quadruped as quad
from distill_jax.envs import terrain as terrain_lib

B = 4  # environments
T = 100  # control steps per rollout

# Pushes are frequent but gentle here so the push path is exercised without
# knocking the standing robot over.
CONFIG = quad.QuadrupedConfig(push_interval_s=1.0, push_force_max=40.0)


@pytest.fixture(scope="module")
def env():
    return quad.RoughTerrainQuadruped(CONFIG)


@pytest.fixture(scope="module")
def programs(env):
    reset = jax.jit(jax.vmap(env.reset))

    @jax.jit
    def run(state, actions):
        """actions [T, B, 12] -> (final state, per-step obs/reward/flags/metrics [T, B, ...])."""

        def body(s, a):
            s = jax.vmap(env.step)(s, a)
            return s, {"obs": s.obs, "reward": s.reward, "terminated": s.terminated,
                       "metrics": s.metrics}

        return jax.lax.scan(body, state, actions)

    return reset, run


def _keys(seed):
    return jax.random.split(jax.random.PRNGKey(seed), B)


def _random_actions(seed):
    return jax.random.uniform(jax.random.PRNGKey(seed), (T, B, 12), minval=-1.0, maxval=1.0)


@pytest.fixture(scope="module")
def standing(programs):
    reset, run = programs
    state0 = reset(_keys(0))
    final, traj = run(state0, jnp.zeros((T, B, 12)))
    return jax.device_get((state0, final, traj))


@pytest.fixture(scope="module")
def random_rollout(programs):
    reset, run = programs
    _, traj = run(reset(_keys(1)), _random_actions(7))
    return jax.device_get(traj)


def _all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(tree))


def _colliding_pairs(m: mujoco.MjModel) -> set[tuple[str, str]]:
    """(robot geom, ground geom) name pairs whose contype/conaffinity bits match (MuJoCo's rule)."""
    ground = {"floor"} | {f"{leg}_ground" for leg in quad.LEGS}
    pairs = set()
    for i in range(m.ngeom):
        for j in range(m.ngeom):
            if i < j and ((m.geom_contype[i] & m.geom_conaffinity[j]) or (m.geom_contype[j] & m.geom_conaffinity[i])):
                a, b = (mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g) for g in (i, j))
                pairs.add((b, a) if a in ground else (a, b))
    return pairs


# ------------------------------------------------------------------ model
def test_model_structure(env):
    m = env.mj_model
    assert m.nu == 12 and m.nq == 19 and m.nv == 18
    assert 10.0 <= sum(m.body_mass) <= 15.0
    assert env.dt == pytest.approx(0.02)
    assert env.action_size == 12
    floor = m.geom("floor").id
    assert m.geom_type[floor] == mujoco.mjtGeom.mjGEOM_HFIELD
    for leg in quad.LEGS:
        assert m.geom_type[m.geom(f"{leg}_foot").id] == mujoco.mjtGeom.mjGEOM_SPHERE
    # Version 3: each foot collides with its own mocap plane and nothing else.
    assert env.config.foot_contact == "tangent_plane" and env.version == "3"
    assert _colliding_pairs(m) == {(f"{leg}_foot", f"{leg}_ground") for leg in quad.LEGS}
    for leg in quad.LEGS:
        plane = m.geom(f"{leg}_ground").id
        assert m.geom_type[plane] == mujoco.mjtGeom.mjGEOM_PLANE
        assert m.body_mocapid[m.geom_bodyid[plane]] >= 0
    # Version 2's contact: every foot against the height field.
    v2 = quad.RoughTerrainQuadruped(dataclasses.replace(CONFIG, foot_contact="hfield")).mj_model
    assert _colliding_pairs(v2) == {(f"{leg}_foot", "floor") for leg in quad.LEGS} and v2.nmocap == 0
    # With trunk contacts, the trunk spheres still collide with the height field.
    v1 = quad.RoughTerrainQuadruped(dataclasses.replace(CONFIG, trunk_collision=True)).mj_model
    assert _colliding_pairs(v1) == _colliding_pairs(m) | {(name, "floor") for name in quad.TRUNK_SPHERES}
    assert (m.opt.iterations, m.opt.ls_iterations) == (1, 5)
    # The hfield holds the generated terrain (metres = data * size[2]).
    heights = m.hfield_data.reshape(m.hfield_nrow[0], m.hfield_ncol[0]) * m.hfield_size[0, 2]
    np.testing.assert_allclose(heights, env.terrain_heights_np, atol=1e-6)


# ---------------------------------------------------------------- terrain
def test_terrain_height_matches_mujoco_ray(env):
    m = env.mj_model
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    rng = np.random.default_rng(0)
    t = env.config.terrain
    pts = rng.uniform([-t.half_x + 0.05, -t.half_y + 0.05], [t.half_x - 0.05, t.half_y - 0.05], size=(64, 2))
    top = float(env.terrain_heights_np.max()) + 1.0
    geom_id = np.array([-1], dtype=np.int32)
    ray = []
    for x, y in pts:
        dist = mujoco.mj_ray(m, d, np.array([x, y, top]), np.array([0.0, 0.0, -1.0]), None, 1, -1, geom_id)
        assert geom_id[0] == m.geom("floor").id
        ray.append(top - dist)
    ours = np.asarray(env.terrain_height(jnp.asarray(pts[:, 0]), jnp.asarray(pts[:, 1])))
    np.testing.assert_allclose(ours, np.array(ray), atol=2e-5)
    # Grid nodes return the stored heights exactly.
    r, c = 17, 42
    x = -t.half_x + c * t.resolution
    y = -t.half_y + r * t.resolution
    assert float(env.terrain_height(jnp.float32(x), jnp.float32(y))) == pytest.approx(
        float(env.terrain_heights_np[r, c]), abs=1e-5)


def test_terrain_plane_is_the_surface_and_its_slope():
    cfg = terrain_lib.TerrainConfig(half_x=2.0, half_y=1.5, seed=4)
    heights = jnp.asarray(terrain_lib.generate_heights(cfg))
    rng = np.random.default_rng(1)
    # Points strictly inside a triangle (away from cell edges and the diagonal) so that
    # central differences stay on one linear piece.
    cells = rng.integers(0, [cfg.ncol - 1, cfg.nrow - 1], size=(200, 2))
    frac = rng.uniform(0.1, 0.9, size=(200, 2))
    frac = frac[np.abs(frac[:, 0] - frac[:, 1]) > 0.1]
    cells = cells[: len(frac)]
    x = -cfg.half_x + (cells[:, 0] + frac[:, 0]) * cfg.resolution
    y = -cfg.half_y + (cells[:, 1] + frac[:, 1]) * cfg.resolution
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    h, sx, sy = terrain_lib.terrain_plane(heights, cfg.half_x, cfg.half_y, x, y)
    height = lambda xx, yy: terrain_lib.terrain_height(heights, cfg.half_x, cfg.half_y, xx, yy)  # noqa: E731
    np.testing.assert_array_equal(h, height(x, y))
    eps = 0.002  # m; well inside the 0.01 m margin kept from every edge above
    fd_x = (height(x + eps, y) - height(x - eps, y)) / (2 * eps)
    fd_y = (height(x, y + eps) - height(x, y - eps)) / (2 * eps)
    np.testing.assert_allclose(sx, fd_x, atol=2e-3)
    np.testing.assert_allclose(sy, fd_y, atol=2e-3)
    assert float(jnp.max(jnp.abs(sx))) > 0.05  # the terrain is not flat here
    # Outside the field the height is the edge's, so the slope across the edge is 0.
    _, sx_out, sy_out = terrain_lib.terrain_plane(heights, cfg.half_x, cfg.half_y, jnp.float32(5.0), jnp.float32(-4.0))
    assert float(sx_out) == 0.0 and float(sy_out) == 0.0


def test_foot_planes_lie_on_the_terrain_under_each_foot(env, standing):
    """The planes' pose against MuJoCo's own quaternion->frame conversion and the terrain's slope."""
    _, final, _ = standing
    m = env.mj_model
    for b in range(B):
        data = jax.tree.map(lambda x: jnp.asarray(x[b]), final.physics)
        placed = env.place_foot_planes(data)
        feet = np.asarray(data.geom_xpos)[env._foot_geoms]
        t = env.config.terrain
        h, sx, sy = (np.asarray(v) for v in terrain_lib.terrain_plane(
            env._heights, t.half_x, t.half_y, jnp.asarray(feet[:, 0]), jnp.asarray(feet[:, 1])))
        for i, leg in enumerate(quad.LEGS):
            slot = m.body_mocapid[m.body(f"{leg}_ground").id]
            pos, quat = np.asarray(placed.mocap_pos[slot]), np.asarray(placed.mocap_quat[slot], np.float64)
            np.testing.assert_allclose(pos, [feet[i, 0], feet[i, 1], h[i]], atol=1e-6)
            frame = np.zeros(9)
            mujoco.mju_quat2Mat(frame, quat / np.linalg.norm(quat))
            normal = frame.reshape(3, 3)[:, 2]
            expected = np.array([-sx[i], -sy[i], 1.0]) / np.sqrt(1.0 + sx[i] ** 2 + sy[i] ** 2)
            np.testing.assert_allclose(normal, expected, atol=1e-5)
        # Stepping placed them (before the last physics step, at the feet of the step before).
        np.testing.assert_allclose(np.asarray(data.mocap_pos)[:, 2], env.terrain_height(
            data.mocap_pos[:, 0], data.mocap_pos[:, 1]), atol=1e-6)
        np.testing.assert_allclose(np.asarray(data.mocap_pos)[:, :2], feet[:, :2], atol=2e-3)


def test_terrain_generation_deterministic_and_flat_option():
    cfg = terrain_lib.TerrainConfig(half_x=3.0, half_y=2.0, seed=3)
    a, b = terrain_lib.generate_heights(cfg), terrain_lib.generate_heights(cfg)
    assert a.shape == (cfg.nrow, cfg.ncol) == (41, 61) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert a.min() == 0.0 and a.max() > 0.05
    other = terrain_lib.generate_heights(dataclasses.replace(cfg, seed=4))
    assert not np.array_equal(a, other)
    flat = dataclasses.replace(cfg, noise_amplitude=0.0, step_height=0.0, slope_grade=0.0)
    assert np.all(terrain_lib.generate_heights(flat) == 0.0)
    with pytest.raises(ValueError):
        terrain_lib.TerrainConfig(step_height=-0.1)


# ----------------------------------------------------------- observations
def test_obs_match_schema_unbatched(env):
    schema = env.schema
    assert set(schema.student_obs) == set(quad.STUDENT_FIELDS)
    assert "terrain_heights" in schema.teacher_only and "base_lin_vel" in schema.teacher_only
    assert schema.mask_rule == ("falls", "timeouts", "saturated_actions", "nonfinite_teacher")
    assert schema.student_leak_report()["passed"]
    state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    nxt = jax.eval_shape(env.step, state, jax.ShapeDtypeStruct((12,), jnp.float32))
    for s in (state, nxt):
        assert set(s.obs) == set(schema.all_fields)
        for name, spec in schema.field_specs.items():
            assert s.obs[name].shape == spec.shape and str(s.obs[name].dtype) == "float32", name
        for flag in (s.reward, s.terminated, s.truncated, s.first):
            assert flag.shape == () and flag.dtype == jnp.float32
    assert schema.field_specs["terrain_heights"].shape == (4, quad.SCAN_POINTS)
    assert schema.field_specs["reward_terms"].shape == (len(quad.REWARD_TERMS),)
    assert set(nxt.metrics) == set(state.metrics)


def test_obs_match_schema_batched(env, standing):
    state0, final, traj = standing
    for role in ("student", "teacher", "critic"):
        env.schema.check_shapes(state0.obs, role)
        env.schema.check_shapes(final.obs, role)
        env.schema.check_shapes(traj["obs"], role)  # [T, B, ...]
    assert np.all(state0.first == 1.0) and np.all(final.first == 0.0)
    assert np.all(final.truncated == 0.0)  # truncation is the TimeLimit wrapper's job


# ---------------------------------------------------------------- physics
def test_standing_controller_stays_up(env, standing):
    _, _, traj = standing
    assert _all_finite(traj)
    assert np.all(traj["terminated"] == 0.0)
    height = traj["metrics"]["base_height"][T // 2:]  # [T/2, B]
    assert np.all(np.abs(height - env.config.base_height_target) < 0.06), height.min()
    # Feet rest on the height field: soles sink at most 1.5 cm while landing from
    # the spawn height (0.2 s) and 3 mm once standing (soft contacts).
    sole_clearance = traj["obs"]["terrain_heights"][..., 4]  # centre sample, [T, B, 4]
    assert sole_clearance[:10].min() > -0.015
    assert sole_clearance[10:].min() > -0.003


def test_dropped_robot_lands_on_feet(env, standing):
    state0, _, traj = standing
    assert np.all(state0.obs["foot_contact_forces"] == 0.0)  # spawned above the terrain
    forces = traj["obs"]["foot_contact_forces"][T // 2:]  # [T/2, B, 4]
    weight = float(sum(env.mj_model.body_mass)) * 9.81
    total = forces.sum(-1)
    assert np.all(total > 0.5 * weight) and np.all(total < 2.0 * weight)
    assert np.all(forces.mean(0) > 1.0)  # every foot carries load on average


def test_random_actions_finite_and_reward_terms(env, random_rollout):
    traj = random_rollout
    assert _all_finite(traj)
    metrics = traj["metrics"]
    for name in quad.REWARD_TERMS:
        assert metrics[f"reward_{name}"].shape == (T, B)
    for name in ("fall", "success", "tracking_error"):
        assert metrics[name].shape == (T, B)
    np.testing.assert_array_equal(metrics["fall"], traj["terminated"])
    assert np.all((metrics["success"] == 0) | (metrics["tracking_error"] < env.config.success_threshold))
    terms = np.stack([metrics[f"reward_{n}"] for n in quad.REWARD_TERMS], -1)
    np.testing.assert_allclose(terms, traj["obs"]["reward_terms"], rtol=1e-6)
    shaped = np.maximum(terms[..., :-1].sum(-1), 0.0) + terms[..., -1]
    np.testing.assert_allclose(traj["reward"], shaped, rtol=1e-5, atol=1e-6)
    assert np.all(metrics["reward_torques"] <= 0) and np.any(metrics["reward_action_rate"] < 0)
    assert np.any(np.abs(traj["obs"]["push_force"]).sum(-1) > 0)  # pushes happened
    assert np.all(np.abs(traj["obs"]["push_force"]) <= env.config.push_force_max + 1e-3)


def test_same_key_same_trajectory(programs):
    if jax.default_backend() == "gpu" and "xla_gpu_deterministic_ops=true" not in os.environ.get("XLA_FLAGS", ""):
        pytest.skip("GPU scatter-adds are non-deterministic without XLA_FLAGS=--xla_gpu_deterministic_ops=true")
    reset, run = programs
    actions = _random_actions(11)
    s_a, traj_a = run(reset(_keys(5)), actions)
    s_b, traj_b = run(reset(_keys(5)), actions)
    for x, y in zip(jax.tree_util.tree_leaves((s_a, traj_a)), jax.tree_util.tree_leaves((s_b, traj_b))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    s_c = reset(_keys(6))
    assert not np.array_equal(np.asarray(s_c.physics.qpos), np.asarray(s_a.physics.qpos))


def test_fall_fires_when_upside_down_or_tilted(env, programs):
    reset, run = programs
    state = reset(_keys(2))
    qpos = np.array(state.physics.qpos)
    xy = qpos[:, :2]
    ground = np.asarray(env.terrain_height(jnp.asarray(xy[:, 0]), jnp.asarray(xy[:, 1])))
    tilt = env.config.max_tilt + 0.2
    quats = [
        [0.0, 1.0, 0.0, 0.0],  # upside down (roll = pi)
        [0.0, 0.0, 1.0, 0.0],  # upside down (pitch = pi)
        [math.cos(tilt / 2), math.sin(tilt / 2), 0.0, 0.0],  # rolled past max_tilt
        [math.cos(tilt / 2), 0.0, math.sin(tilt / 2), 0.0],  # pitched past max_tilt
    ]
    qpos[:, 2] = ground + 0.4
    qpos[:, 3:7] = np.array(quats)
    state = state.replace(physics=state.physics.replace(qpos=jnp.asarray(qpos)))
    _, traj = run(state, jnp.zeros((T, B, 12)))
    assert np.all(traj["terminated"][0] == 1.0)
    assert np.all(traj["metrics"]["fall"][0] == 1.0)
    assert np.all(traj["metrics"]["success"][0] == 0.0)
    np.testing.assert_allclose(traj["metrics"]["reward_termination"][0],
                               env.config.rewards.termination * env.dt, rtol=1e-6)
    assert np.all(traj["obs"]["projected_gravity"][0][:, 2] > -math.cos(env.config.max_tilt))
    assert _all_finite(traj)


def test_trunk_clearance_closed_form_on_flat_ground():
    flat = terrain_lib.TerrainConfig(half_x=3.0, half_y=3.0, noise_amplitude=0.0, step_height=0.0, slope_grade=0.0)
    env = quad.RoughTerrainQuadruped(dataclasses.replace(CONFIG, terrain=flat, spawn_half_extent=1.0))
    data = env._data0
    qpos = np.zeros(19, np.float32)
    qpos[3] = 1.0
    clearance = jax.jit(lambda q: env.trunk_clearance(mjx.kinematics(env.mjx_model, data.replace(qpos=q))))
    # Level trunk at height h: sphere centres at h + 0.03, radius 0.08.
    for h in (0.3, 0.05, 0.02):
        qpos[2] = h
        np.testing.assert_allclose(clearance(jnp.asarray(qpos)), [h - 0.05, h - 0.05], atol=1e-6)
    # Pitched nose-down by 0.5 rad: the front sphere drops by 0.14 sin + 0.03 (1 - cos).
    qpos[2], pitch = 0.3, 0.5
    qpos[3:7] = [math.cos(pitch / 2), 0.0, math.sin(pitch / 2), 0.0]
    front = 0.3 - 0.14 * math.sin(pitch) + 0.03 * math.cos(pitch) - 0.08
    rear = 0.3 + 0.14 * math.sin(pitch) + 0.03 * math.cos(pitch) - 0.08
    np.testing.assert_allclose(clearance(jnp.asarray(qpos)), [front, rear], atol=1e-6)


def test_trunk_touch_ends_the_episode_before_height_or_tilt_would(env, programs):
    """Nose-down within max_tilt and above min_base_height, front sphere 3 cm into the terrain."""
    reset, run = programs
    state = reset(_keys(3))
    pitch = env.config.max_tilt - 0.15
    qpos = np.array(state.physics.qpos)
    qpos[:, 3:7] = [math.cos(pitch / 2), 0.0, math.sin(pitch / 2), 0.0]
    kin = jax.jit(jax.vmap(lambda d: env.trunk_clearance(mjx.kinematics(env.mjx_model, d))))
    gap = np.asarray(kin(state.physics.replace(qpos=jnp.asarray(qpos))))[:, 0]
    qpos[:, 2] -= gap + 0.03
    state = state.replace(physics=state.physics.replace(qpos=jnp.asarray(qpos)))
    _, traj = run(state, jnp.zeros((T, B, 12)))
    assert np.all(traj["terminated"][0] == 1.0)
    # Neither of the other fall rules fired.
    assert np.all(traj["metrics"]["base_height"][0] > env.config.min_base_height)
    assert np.all(traj["obs"]["projected_gravity"][0][:, 2] < -math.cos(env.config.max_tilt))


def test_privileged_params_follow_the_model(env, standing):
    from distill_jax.envs.wrappers import DomainRandomization

    state0, _, _ = standing  # nominal model
    np.testing.assert_allclose(state0.obs["friction"], 1.0)
    np.testing.assert_allclose(state0.obs["payload"], 0.0)
    np.testing.assert_allclose(state0.obs["motor_strength"], 1.0, rtol=1e-6)
    dr = DomainRandomization(env, quad.default_ranges(env.config))
    state = jax.jit(dr.reset)(jax.random.PRNGKey(3))
    p = {k: float(v) for k, v in state.params.items()}
    assert set(p) == {"friction", "trunk_mass", "motor_strength"}
    assert float(state.obs["friction"][0]) == pytest.approx(p["friction"], rel=1e-5)
    trunk = float(env.mj_model.body_mass[env.mj_model.body("trunk").id])
    assert float(state.obs["payload"][0]) == pytest.approx(trunk * (p["trunk_mass"] - 1.0), abs=1e-4)
    assert float(state.obs["motor_strength"][0]) == pytest.approx(p["motor_strength"], rel=1e-5)
    lo, hi = env.config.friction_range
    assert lo <= p["friction"] <= hi and p["trunk_mass"] != 1.0


# ------------------------------------------------------ config and factory
def test_fingerprint(env):
    fp = env.fingerprint()
    json.dumps(fp)
    assert fp["name"] == "quadruped_rough"
    assert fp["reward_terms"] == dataclasses.asdict(env.config.rewards)
    assert list(fp["reward_terms"]) == list(quad.REWARD_TERMS)
    assert fp["terrain_seed"] == env.config.terrain.seed
    assert fp["reset_distribution"]["command"]["vx"] == list(env.config.command_vx)
    assert [r["name"] for r in fp["randomization"]] == ["friction", "trunk_mass", "motor_strength"]
    assert fp["perturbations"]["push_force_max"] == CONFIG.push_force_max
    other = quad.RoughTerrainQuadruped(dataclasses.replace(
        CONFIG, terrain=dataclasses.replace(CONFIG.terrain, seed=1)))
    assert other.fingerprint()["model_hash"] != fp["model_hash"]
    assert quad.RoughTerrainQuadruped(CONFIG).fingerprint()["model_hash"] == fp["model_hash"]


def test_config_overrides():
    cfg = quad.config_from_overrides(
        {"action_scale": 0.3, "reward_torques": -1e-3, "terrain_seed": 5, "command_vx": [0.0, 0.5]})
    assert cfg.action_scale == 0.3 and cfg.rewards.torques == -1e-3
    assert cfg.terrain.seed == 5 and cfg.command_vx == (0.0, 0.5)
    assert cfg.rewards.tracking_lin_vel == quad.RewardWeights().tracking_lin_vel
    with pytest.raises(ValueError, match="no_such_option"):
        quad.config_from_overrides({"no_such_option": 1})
    with pytest.raises(ValueError, match="reward_no_such_term"):
        quad.config_from_overrides({"reward_no_such_term": 1.0})
    with pytest.raises(ValueError, match="spawn_half_extent"):
        quad.config_from_overrides({"spawn_half_extent": 50.0})


def test_factory_builds_the_wrapped_stack():
    with pytest.raises(ValueError, match="bogus"):
        quad.make_quadruped_rough(bogus=1)
    env = quad.make_quadruped_rough(terrain_seed=2, action_scale=0.35, episode_length=500)
    task = env.unwrapped
    assert isinstance(task, quad.RoughTerrainQuadruped)
    assert task.config.terrain.seed == 2 and task.config.action_scale == 0.35
    assert env.episode_length == 500 and env.action_size == 12
    schema = env.schema
    assert "dyn_params" in schema.teacher_only and "history" in schema.student_obs
    assert schema.student_leak_report()["passed"]
    fp = env.fingerprint()
    json.dumps(fp)
    assert [w["type"] for w in fp["wrappers"]] == [
        "DomainRandomization", "SensorNoise", "ObservationHistory", "TimeLimit"]
    state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    nxt = jax.eval_shape(env.step, state, jax.ShapeDtypeStruct((12,), jnp.float32))
    for s in (state, nxt):
        assert set(s.obs) == set(schema.all_fields)
        for name, spec in schema.field_specs.items():
            assert s.obs[name].shape == spec.shape, name
    plain = quad.make_quadruped_rough(randomize=False, noise_std=0.0, history_length=0)
    assert plain.env is plain.unwrapped  # only the TimeLimit remains
    assert set(plain.schema.all_fields) == set(plain.unwrapped.schema.all_fields)
