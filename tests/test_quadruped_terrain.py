"""The quadruped on the tile terrain (distill_jax.envs.quadruped.terrain_task) on real MJX (CPU).

One small map (2 levels x 3 types of 3 m tiles) and one compile each of ``vmap(reset)`` and
``vmap(step)`` (about a minute on 2 cores), shared by the physics tests. The scan's imperfections are
off here so the delivered scan can be checked against an independent NumPy computation; their
statistics are tested in test_height_scan.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.envs import get_env
from distill_jax.envs.quadruped.terrain_task import TerrainQuadruped, terrain_config_from_overrides
from distill_jax.heightfield import surface_plane
from distill_jax.terrain_tiles import tile_centre

B = 8
SMALL = {"terrain_num_levels": 2, "terrain_types": ["stairs_up", "gaps", "blocks"], "terrain_tile_size": 3.0,
         "terrain_resolution": 0.1, "terrain_border": 0.5}
CLEAN_SCAN = {"scan_noise_std": 0.0, "scan_offset_std": 0.0, "scan_drift_std": 0.0, "scan_dropout": 0.0,
              "scan_latency": 0}


@pytest.fixture(scope="module")
def env():
    return get_env("quadruped_terrain", noise_std=0.0, **SMALL, **CLEAN_SCAN)


@pytest.fixture(scope="module")
def rollout(env):
    """States after reset and after each of 10 zero-action steps (host copies)."""
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), B))
    step = jax.jit(jax.vmap(env.step))
    states = [state]
    for _ in range(10):
        state = step(state, jnp.zeros((B, 12)))
        states.append(state)
    return jax.device_get(states)


def task_of(env) -> TerrainQuadruped:
    inner = env
    while not isinstance(inner, TerrainQuadruped):
        inner = inner.env
    return inner


def test_schema_swaps_exact_heights_for_the_noisy_scan(env):
    schema = env.schema
    assert "terrain_heights" in schema.teacher_only and "terrain_heights" not in schema.student_obs
    assert "height_scan" in schema.student_obs and "height_scan" not in schema.teacher_only
    assert "terrain_scan" in schema.teacher_only and "terrain_scan" not in schema.student_obs
    rough = get_env("quadruped_rough", terrain_half_x=3.0, terrain_half_y=3.0, spawn_half_extent=2.0).schema
    assert set(schema.student_obs) - set(rough.student_obs) == {"height_scan"}
    assert set(schema.teacher_only) - set(rough.teacher_only) == {"terrain_scan"}


def test_reset_spawns_on_tile_platforms_with_finite_fields(env, rollout):
    task = task_of(env)
    t, s = task.config.terrain, task.config.spawn_half_extent
    state = rollout[0]
    level, kind = np.asarray(state.info["terrain_level"]), np.asarray(state.info["terrain_type"])
    cx, cy = tile_centre(t, level, kind)
    xy = np.asarray(state.physics.qpos)[:, :2]
    assert np.all(np.abs(xy - np.stack([cx, cy], -1)) <= s + 1e-6)
    np.testing.assert_allclose(np.asarray(state.info["spawn_xy"]), xy)
    assert len(set(zip(level.tolist(), kind.tolist()))) >= 3  # several tiles drawn
    for st in rollout:
        assert st.obs["height_scan"].shape == (B, *task.config.height_scan.shape)
        assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree_util.tree_leaves(st.obs))
    assert not np.any(np.asarray(rollout[-1].metrics["fall"]))  # standing still on a platform


def test_the_scan_is_the_terrain_around_the_base_in_its_yaw_frame(env, rollout):
    """Against NumPy: the surface under each point of the yaw-rotated grid, minus the trunk height."""
    task = task_of(env)
    cfg, t = task.config.height_scan, task.config.terrain
    gx = cfg.x_offset + (np.arange(cfg.nx) - (cfg.nx - 1) / 2) * cfg.spacing
    gy = (np.arange(cfg.ny) - (cfg.ny - 1) / 2) * cfg.spacing
    for st in (rollout[0], rollout[-1]):
        base = np.asarray(st.physics.xpos)[:, task._trunk_id]  # [B, 3]
        rot = np.asarray(st.physics.xmat)[:, task._trunk_id]  # [B, 3, 3]
        yaw = np.arctan2(rot[:, 1, 0], rot[:, 0, 0])
        px = base[:, 0, None, None] + np.cos(yaw)[:, None, None] * gx[:, None] - np.sin(yaw)[:, None, None] * gy
        py = base[:, 1, None, None] + np.sin(yaw)[:, None, None] * gx[:, None] + np.cos(yaw)[:, None, None] * gy
        ground, _, _ = surface_plane(task.terrain_heights_np, t.half_x, t.half_y, px, py)
        expected = np.clip(ground - base[:, 2, None, None], -cfg.clip, cfg.clip)
        np.testing.assert_allclose(st.obs["height_scan"][..., 0], expected, atol=1e-4)
        assert np.all(st.obs["height_scan"][..., 1] == 1.0)
        np.testing.assert_allclose(st.obs["terrain_scan"], expected, atol=1e-4)  # the teacher's: always exact


def test_curriculum_metrics(env, rollout):
    task = task_of(env)
    last = rollout[-1]
    xy = np.asarray(last.physics.qpos)[:, :2]
    np.testing.assert_allclose(last.metrics["distance_from_spawn"],
                               np.linalg.norm(xy - np.asarray(last.info["spawn_xy"]), axis=-1), atol=1e-5)
    np.testing.assert_allclose(last.metrics["command_speed"],
                               np.linalg.norm(np.asarray(last.info["command"])[:, :2], axis=-1), atol=1e-6)
    level = np.asarray(last.info["terrain_level"])
    np.testing.assert_array_equal(last.metrics["terrain_level"], level)
    one_hot = np.stack([last.metrics[f"terrain_level_{i}"] for i in range(task.config.terrain.num_levels)], -1)
    np.testing.assert_array_equal(one_hot, np.eye(task.config.terrain.num_levels)[level])
    np.testing.assert_array_equal(rollout[0].info["terrain_level"], level)  # kept through the episode
    kind = np.asarray(last.info["terrain_type"])
    np.testing.assert_array_equal(last.metrics["terrain_type"], kind)
    for i, name in enumerate(task.config.terrain.types):
        np.testing.assert_array_equal(last.metrics[f"terrain_type_{name}"], kind == i)
        np.testing.assert_array_equal(last.metrics[f"terrain_top_{name}"],
                                      (kind == i) & (level == task.config.terrain.num_levels - 1))
    # The evaluation's breakdown names: one per tile type and level, in the indices' order.
    assert task.panel_groups == {"terrain_type": tuple(task.config.terrain.types),
                                 "terrain_level": tuple(f"level {i}" for i in range(task.config.terrain.num_levels))}


def yaw_of(qpos: np.ndarray) -> np.ndarray:
    """Trunk yaw ``[B]`` from the free joint's quaternions via MuJoCo's own rotation matrix."""
    import mujoco

    mats = np.zeros((len(qpos), 9))
    for i, quat in enumerate(np.asarray(qpos, np.float64)[:, 3:7]):
        mujoco.mju_quat2Mat(mats[i], quat)
    return np.arctan2(mats[:, 3], mats[:, 0])


def test_heading_commands_steer_toward_the_target_heading(env, rollout):
    """The command's yaw rate is clip(0.5 * wrap(heading - yaw), [-1, 1]) after every step; xy is kept."""
    heading = np.asarray(rollout[0].info["heading"])
    assert np.all(np.abs(heading) <= np.pi) and len(np.unique(heading)) == B
    for st in rollout:
        np.testing.assert_array_equal(st.info["heading"], heading)
        error = np.angle(np.exp(1j * (heading - yaw_of(st.physics.qpos))))
        expected = np.clip(0.5 * error, -1.0, 1.0)
        np.testing.assert_allclose(st.obs["command"][:, 2], expected, atol=1e-5)
        np.testing.assert_array_equal(st.obs["command"], st.info["command"])
        np.testing.assert_array_equal(st.obs["command"][:, :2], rollout[0].obs["command"][:, :2])
    assert np.any(np.abs(rollout[0].obs["command"][:, 2]) > 0.2)  # not all spawned facing their heading


def test_the_reward_tracks_the_yaw_rate_the_previous_observation_showed(env, rollout):
    task = task_of(env)
    sigma, weight, dt = task.config.tracking_sigma, task.config.rewards.tracking_ang_vel, task.dt
    for before, after in zip(rollout[:-1], rollout[1:]):
        err = before.obs["command"][:, 2] - after.obs["base_ang_vel"][:, 2]
        np.testing.assert_allclose(after.metrics["reward_tracking_ang_vel"], weight * dt * np.exp(-err ** 2 / sigma),
                                   rtol=1e-4, atol=1e-7)


def test_steering_closed_form_and_the_switch():
    task = TerrainQuadruped(terrain_config_from_overrides(SMALL))
    qpos = np.zeros(19, np.float32)
    qpos[3:7] = [np.cos(0.15), 0.0, 0.0, np.sin(0.15)]  # yaw 0.3 rad
    command = jnp.array([0.5, -0.2, 0.7])
    # heading -2.9: the short way round is +3.083 rad (wrapped), 0.5 x 3.083 clipped to 1.
    np.testing.assert_allclose(task._steer(command, jnp.float32(-2.9), qpos), [0.5, -0.2, 1.0], atol=1e-6)
    np.testing.assert_allclose(task._steer(command, jnp.float32(0.1), qpos), [0.5, -0.2, -0.1], atol=1e-6)
    off = TerrainQuadruped(terrain_config_from_overrides({**SMALL, "heading_command": False}))
    np.testing.assert_array_equal(off._steer(command, jnp.float32(-2.9), qpos), command)
    assert "heading" in task.fingerprint()["reset_distribution"]["command"]
    assert "heading" not in off.fingerprint()["reset_distribution"]["command"]


def test_fingerprint_declares_the_map_scan_and_curriculum(env):
    fp = env.fingerprint()
    assert fp["name"] == "quadruped_terrain" and fp["terrain"]["kind"] == "tiles"
    assert fp["height_scan"]["noise_std"] == 0.0 and fp["height_scan"]["shape"] == [11, 7, 2]
    assert fp["curriculum"]["training_batching"] == "TerrainCurriculumAutoReset"
    held_out = TerrainQuadruped(terrain_config_from_overrides({**SMALL, "terrain_seed": 1}))
    assert held_out.model_hash != task_of(env).model_hash
    assert not np.array_equal(held_out.terrain_heights_np, task_of(env).terrain_heights_np)


@pytest.mark.parametrize("overrides, message", [
    ({"scan_noise_std": -0.1}, r"^HeightScanConfig\.noise_std=-0\.1: must be >= 0"),
    ({"scan_nx": 200}, r"^HeightScanConfig\.spacing=0\.1 \(nx=200.*reaches"),
    ({"curriculum_init_max_level": 5}, r"^CurriculumConfig\.init_max_level=5: outside the map's levels 0\.\.1"),
    ({"terrain_num_levels": 0}, r"^TileTerrainConfig\.num_levels=0"),
    ({"spawn_half_extent": 0.4}, r"^TerrainQuadrupedConfig\.spawn_half_extent=0\.4"),
    ({"scan_colour": 1}, r"unknown quadruped_rough option\(s\) \['scan_colour'\]"),
    ({"heading_gain": -0.5}, r"^TerrainQuadrupedConfig\.heading_gain=-0\.5: must be a finite number >= 0"),
    ({"heading_gain": float("nan")}, r"^TerrainQuadrupedConfig\.heading_gain=nan: must be a finite number >= 0"),
    ({"heading_command": "yes"}, r"^TerrainQuadrupedConfig\.heading_command='yes': must be true or false"),
])
def test_bad_options_are_refused_in_one_line(overrides, message):
    with pytest.raises(ValueError, match=message) as e:
        terrain_config_from_overrides({**SMALL, **overrides})
    assert "\n" not in str(e.value)


def test_the_config_keeps_its_class_and_the_rough_task_its_parser():
    cfg = terrain_config_from_overrides({**SMALL, "scan_nx": 5, "reward_torques": -1e-3})
    assert cfg.height_scan.nx == 5 and cfg.rewards.torques == -1e-3 and cfg.terrain.num_levels == 2
    assert dataclasses.replace(cfg, action_scale=0.3).terrain == cfg.terrain


def test_the_default_scan_is_imperfect_where_the_teachers_is_exact():
    """At reset with the default scan: the student's reading departs from the teacher's exact scan by a
    per-episode offset plus per-point noise, and some points are dropped (statistics: test_height_scan.py)."""
    env = get_env("quadruped_terrain", noise_std=0.0, **SMALL)
    cfg = task_of(env).config.height_scan
    state = jax.device_get(jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(3), B)))
    scan, exact = state.obs["height_scan"], state.obs["terrain_scan"]
    valid = scan[..., 1] == 1.0
    assert 0 < np.mean(~valid) < 0.1  # dropout 2 %: ~12 of 616 points
    np.testing.assert_array_equal(scan[..., 0][~valid], np.float32(cfg.fill_value))
    residual = np.where(valid, scan[..., 0] - exact, np.nan)
    offset = np.nanmean(residual, axis=(1, 2))  # [B]: one offset per episode
    noise = residual - offset[:, None, None]
    assert 0.5 * cfg.noise_std < np.nanstd(noise) < 1.5 * cfg.noise_std
    assert np.all(np.abs(offset) < 5 * cfg.offset_std) and np.std(offset) > 0.2 * cfg.offset_std


# ---------------------------------------------------------- the curriculum across episodes
@pytest.fixture(scope="module")
def curriculum_programs():
    from distill_jax.envs.curriculum import CurriculumConfig
    from distill_jax.envs.quadruped.terrain_curriculum import TerrainCurriculumAutoReset

    env = get_env("quadruped_terrain", noise_std=0.0, episode_length=10, **SMALL, **CLEAN_SCAN)
    batched = TerrainCurriculumAutoReset(env, B, curriculum=CurriculumConfig(init_max_level=None,
                                                                             resample_at_max=False))
    return batched, jax.jit(batched.reset), jax.jit(batched.step)


def on_tiles(task, state) -> None:
    """Every env stands on the platform of its (terrain_level, terrain_type) tile, its fields computed there."""
    t, s = task.config.terrain, task.config.spawn_half_extent
    cx, cy = tile_centre(t, np.asarray(state.info["terrain_level"]), np.asarray(state.info["terrain_type"]))
    xy = np.asarray(state.physics.qpos)[:, :2]
    assert np.all(np.abs(xy - np.stack([cx, cy], -1)) <= s + 0.05), (xy, cx, cy)
    base = np.asarray(state.physics.xpos)[:, task._trunk_id]
    ground, _, _ = surface_plane(task.terrain_heights_np, t.half_x, t.half_y, base[:, 0], base[:, 1])
    np.testing.assert_allclose(state.obs["base_height"][:, 0], base[:, 2] - ground, atol=1e-4)
    np.testing.assert_allclose(state.obs["terrain_scan"][:, 5, 3], np.clip(
        surface_plane(task.terrain_heights_np, t.half_x, t.half_y, *_scan_point(task, state, 5, 3))[0] - base[:, 2],
        -1, 1), atol=1e-4)
    np.testing.assert_allclose(state.obs["height_scan"][..., 0], state.obs["terrain_scan"], atol=1e-6)


def _scan_point(task, state, i, j):
    cfg = task.config.height_scan
    rot = np.asarray(state.physics.xmat)[:, task._trunk_id]
    base = np.asarray(state.physics.xpos)[:, task._trunk_id]
    yaw = np.arctan2(rot[:, 1, 0], rot[:, 0, 0])
    gx = cfg.x_offset + (i - (cfg.nx - 1) / 2) * cfg.spacing
    gy = (j - (cfg.ny - 1) / 2) * cfg.spacing
    return base[:, 0] + np.cos(yaw) * gx - np.sin(yaw) * gy, base[:, 1] + np.sin(yaw) * gx + np.cos(yaw) * gy


def test_curriculum_reset_assigns_columns_and_places_envs_on_their_tiles(curriculum_programs):
    batched, reset, _ = curriculum_programs
    state = jax.device_get(reset(jax.random.PRNGKey(5)))
    np.testing.assert_array_equal(state.info["terrain_type"], np.arange(B) % 3)
    assert set(np.asarray(state.info["terrain_level"]).tolist()) <= {0, 1}
    on_tiles(batched.task, state)
    # Same clearance as an unmoved reset: the robot was translated with its platform.
    plain = jax.device_get(jax.jit(jax.vmap(batched.env.reset))(jax.random.split(jax.random.PRNGKey(5), B)))
    np.testing.assert_allclose(state.obs["base_height"], plain.obs["base_height"], atol=1e-5)


def test_levels_move_at_episode_ends_and_the_next_episode_starts_on_the_new_tile(curriculum_programs):
    batched, reset, step = curriculum_programs
    state = reset(jax.random.PRNGKey(6))
    levels0 = np.asarray(state.info["terrain_level"])
    # Envs 0-3 "walked" a whole tile (their spawn point moved back by 3 m): promoted. Envs 4-7 are asked
    # for 1 m/s and stand still: under half the commanded 1 m in 1 s, demoted.
    far = np.arange(B) < 4
    spawn = np.asarray(state.info["spawn_xy"]) - np.where(far[:, None], [3.0, 0.0], 0.0)
    command = np.where(far[:, None], np.asarray(state.info["command"]), [1.0, 0.0, 0.0])
    state = state.replace(info={**state.info, "spawn_xy": jnp.asarray(spawn, jnp.float32),
                                "command": jnp.asarray(command, jnp.float32)})
    for t in range(10):
        state = step(state, jnp.zeros((B, 12)))
        if t < 9:
            assert not np.any(np.asarray(state.info["episode_completed"]))
    state = jax.device_get(state)
    assert np.all(state.info["episode_completed"] == 1.0) and not np.any(state.metrics["fall"])
    expected = np.where(far, np.minimum(levels0 + 1, 1), np.maximum(levels0 - 1, 0))
    np.testing.assert_array_equal(state.info["terrain_level"], expected)
    np.testing.assert_array_equal(state.metrics["curriculum_promoted"], far.astype(np.float32))
    np.testing.assert_array_equal(state.metrics["curriculum_demoted"], (~far).astype(np.float32))
    np.testing.assert_array_equal(state.info["terrain_type"], np.arange(B) % 3)  # columns are kept
    on_tiles(batched.task, state)
    np.testing.assert_allclose(state.info["spawn_xy"], np.asarray(state.physics.qpos)[:, :2], atol=1e-6)


def test_a_wrapper_that_transforms_relocated_fields_is_refused():
    from distill_jax.envs.quadruped.terrain_curriculum import TerrainCurriculumAutoReset

    env = get_env("quadruped_terrain", noise_std={"joint_pos": 0.01, "height_scan": 0.01}, **SMALL)
    with pytest.raises(ValueError, match=r"^SensorNoise transforms \[.height_scan.\]"):
        TerrainCurriculumAutoReset(env, B)


def test_training_phases_batch_the_terrain_task_with_the_curriculum(env):
    import types

    from distill_jax.envs.autoreset import VmapAutoReset
    from distill_jax.envs.quadruped.terrain_curriculum import TerrainCurriculumAutoReset
    from distill_jax.references import baseline_env

    config = types.SimpleNamespace(num_envs=4, reset_pool=False)
    assert type(VmapAutoReset.for_phase(env, config)) is TerrainCurriculumAutoReset
    assert type(VmapAutoReset.for_phase(baseline_env(env), config)) is TerrainCurriculumAutoReset
    rough = get_env("quadruped_rough", terrain_half_x=3.0, terrain_half_y=3.0, spawn_half_extent=2.0)
    assert type(VmapAutoReset.for_phase(rough, config)) is VmapAutoReset


def test_the_suite_pins_the_start_tile_per_terrain_type_and_level(env):
    from distill_jax.suite import SuiteError, declared, perturbed, resolve, stack

    points = resolve(env, "quadruped_terrain", ("terrain_type", "terrain_level"))
    # Every type and every level of this map by default, each a training condition.
    assert [(p.condition, p.strength) for p in points] == [("terrain_type", 0.0), ("terrain_type", 1.0),
                                                          ("terrain_type", 2.0), ("terrain_level", 0.0),
                                                          ("terrain_level", 1.0)]
    assert all(p.in_training for p in points)
    assert [p.unit for p in points[:3]] == ["(stairs_up)", "(gaps)", "(blocks)"]  # the type named in tables
    knobs = stack(points)
    keys = jax.random.split(jax.random.PRNGKey(3), B)

    @jax.jit
    def start_tiles(perturbation):
        state = jax.vmap(perturbed(env, perturbation, declared("quadruped_terrain")).reset)(keys)
        return state.info["terrain_type"], state.info["terrain_level"]

    kinds, levels = jax.device_get(jax.vmap(start_tiles)(knobs))  # [C, B]
    for c, point in enumerate(points):
        pinned = kinds[c] if point.condition == "terrain_type" else levels[c]
        np.testing.assert_array_equal(pinned, int(point.strength))
    # The other index is still drawn: the same keys give the same draws as without the condition.
    free_kinds = jax.device_get(jax.jit(jax.vmap(env.reset))(keys).info["terrain_type"])
    np.testing.assert_array_equal(kinds[3], free_kinds)  # a level condition leaves the types as drawn
    with pytest.raises(SuiteError, match=r"^suite condition 'terrain_type': strength 3 is not one of the map's 3 "):
        resolve(env, "quadruped_terrain", ("terrain_type",), (("terrain_type", (3.0,)),))
    rough = get_env("quadruped_rough", terrain_half_x=3.0, terrain_half_y=3.0, spawn_half_extent=2.0)
    with pytest.raises(SuiteError, match="does not spawn on a tile map"):
        resolve(rough, "quadruped_terrain", ("terrain_type",), (("terrain_type", (0.0,)),))
