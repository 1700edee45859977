"""The ``"quadruped_terrain"`` task: the quadruped on the tiled curriculum terrain, with a deployable height scan.

:class:`TerrainQuadruped` is :class:`~distill_jax.envs.quadruped.task.RoughTerrainQuadruped`
(same robot, rewards, terminations, contacts, teacher fields) on the tile map of
:mod:`distill_jax.terrain_tiles` (levels x types: rough, slopes and stairs up/down,
stepping blocks, gaps), with four additions:

* **spawn on a tile**: each episode starts on the flat platform at the centre of
  a tile, ``(level, type)`` drawn at reset (type uniform; level uniform in
  ``[0, curriculum.init_max_level]``, every level for ``None``), plus a uniform
  offset of up to ``spawn_half_extent`` m on the platform;
* **``height_scan``** ``[nx, ny, 2]`` (student_obs): the noisy, delayed, holed
  elevation scan of :mod:`distill_jax.envs.height_scan`, its state carried in
  ``info["height_scan_state"]``. The teacher keeps the exact per-foot
  ``terrain_heights`` and gets ``terrain_scan`` ``[nx, ny]`` (teacher_only): the
  same grid exact, now and without holes (m, clipped to the scan's ``clip``), the
  look-ahead a teacher needs for stairs and gaps (Rudin's teacher reads the exact
  scan). The schema diff shows the exact fields out and the noisy scan in;
* **curriculum metrics** per step: ``terrain_level``, ``terrain_type`` (the tile's indices;
  the evaluation breaks the panel down by them, :attr:`TerrainQuadruped.panel_groups`),
  ``terrain_type_<name>`` and ``terrain_top_<name>`` (on a tile of that type; and at its
  hardest level: their batch means' ratio is the share of that type's envs at the top), ``terrain_level_<i>``
  (one-hot: their batch means are the level distribution), ``distance_from_spawn``
  (m, horizontal) and ``command_speed`` (``|cmd_xy|``, m/s), which is what
  :func:`distill_jax.envs.curriculum.update_levels` needs at an episode's end.

* **heading commands** (``heading_command``, on by default; legged_gym's rough-terrain
  setting): the command's third entry is not a yaw rate drawn once per episode but
  ``clip(heading_gain * wrap(heading - yaw), command_yaw)``, recomputed after every step
  from a target heading drawn at reset (uniform in [-pi, pi], world frame), so the robot
  turns to that heading and then walks straight. The Rudin curriculum needs this: it
  promotes an env that ends its episode half a tile from its spawn and demotes one that
  covered under half of ``|cmd_xy| * duration``, and a robot that tracks a constant yaw
  rate walks a circle (radius ``|cmd_xy| / |yaw_rate|``, 0.6 m at 0.6 m/s and 1 rad/s),
  ending near its spawn however well it tracks. The observed ``command`` is the one the
  step's reward tracks.

A single env draws its tile at every reset (evaluation batches it that way: a
uniform panel over tiles). Training phases batch it with
:class:`~distill_jax.envs.quadruped.terrain_curriculum.TerrainCurriculumAutoReset`
(named by :attr:`TerrainQuadruped.phase_batching`), which keeps each env's tile
column and moves its level between episodes by the Rudin rule, moving each new
episode onto its tile with :meth:`TerrainQuadruped.relocate`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from mujoco import mjx

from distill_jax.envs.base import EnvState
from distill_jax.envs.curriculum import CurriculumConfig, init_level_bound
from distill_jax.envs.height_scan import HeightScanConfig, exact_scan, scan_reset, scan_step
from distill_jax.envs.quadruped.config import STUDENT_FIELDS, TEACHER_FIELDS, QuadrupedConfig, config_from_overrides
from distill_jax.envs.quadruped.factory import make_with_stack
from distill_jax.envs.quadruped.task import RoughTerrainQuadruped
from distill_jax.terrain_tiles import TileTerrainConfig, describe_tiles, generate_tile_heights, tile_centre, tile_of

TERRAIN_STUDENT_FIELDS = (*STUDENT_FIELDS, "height_scan")
TERRAIN_TEACHER_FIELDS = (*TEACHER_FIELDS, "terrain_scan")
# Task info carried from step to step (the parent task rebuilds its own info each step).
TERRAIN_INFO = ("height_scan_state", "terrain_level", "terrain_type", "spawn_xy", "heading")


@dataclasses.dataclass(frozen=True)
class TerrainQuadrupedConfig(QuadrupedConfig):
    """:class:`QuadrupedConfig` on the tile map, with the scan and the curriculum's settings.

    Attributes (besides the parent's):
      terrain: the tile map (its ``seed`` picks the map; another seed is a held-out map).
      spawn_half_extent: the spawn point is the tile centre plus a uniform offset in
        ``[-s, s]^2`` (m); at most half the platform minus the robot's half footprint.
      height_scan: the deployable scan's grid and imperfections.
      curriculum: the level settings (``init_max_level`` bounds the levels drawn at reset).
      heading_command: the command's yaw rate steers toward a heading drawn at reset (see the
        module docstring); off, it is the parent's yaw rate drawn once per episode.
      heading_gain: yaw-rate command (rad/s) per radian of heading error, before the clip to
        ``command_yaw``.
    """

    terrain: TileTerrainConfig = TileTerrainConfig()
    spawn_half_extent: float = 0.25
    height_scan: HeightScanConfig = HeightScanConfig()
    curriculum: CurriculumConfig = CurriculumConfig(init_max_level=None)
    heading_command: bool = True
    heading_gain: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.heading_command, bool):
            raise ValueError(f"TerrainQuadrupedConfig.heading_command={self.heading_command!r}: must be true or false")
        gain = self.heading_gain
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) or gain < 0:
            raise ValueError(f"TerrainQuadrupedConfig.heading_gain={gain!r}: must be a finite number >= 0 "
                             "(rad/s per rad)")
        if not isinstance(self.terrain, TileTerrainConfig):
            raise ValueError(f"TerrainQuadrupedConfig.terrain: a TileTerrainConfig, got {type(self.terrain).__name__}")
        # The feet stand up to ~0.24 m from the base centre: keep them on the flat platform.
        limit = 0.5 * self.terrain.platform_size - 0.25
        if not 0 <= self.spawn_half_extent <= max(limit, 0.0):
            raise ValueError(f"TerrainQuadrupedConfig.spawn_half_extent={self.spawn_half_extent!r}: must be in "
                             f"[0, {max(limit, 0.0):.3g}] m (half the {self.terrain.platform_size} m platform "
                             f"minus 0.25 m of footprint)")
        self.height_scan.check_fits(self.terrain.half_x, self.terrain.half_y)
        self.curriculum.check_levels(self.terrain.num_levels)


def terrain_config_from_overrides(overrides: dict[str, Any],
                                  base: TerrainQuadrupedConfig | None = None) -> TerrainQuadrupedConfig:
    """A :class:`TerrainQuadrupedConfig` with keyword overrides applied mechanically.

    Keys as for :func:`~distill_jax.envs.quadruped.config.config_from_overrides` (``terrain_<field>``
    names a :class:`TileTerrainConfig` field), plus ``scan_<field>`` for a :class:`HeightScanConfig`
    field and ``curriculum_<field>`` for a :class:`CurriculumConfig` field.

    Raises:
      ValueError: naming each unknown key, or the first invalid value.
    """
    base = TerrainQuadrupedConfig() if base is None else base
    nested = {"scan_": ("height_scan", HeightScanConfig), "curriculum_": ("curriculum", CurriculumConfig)}
    rest, parts = {}, {attr: {} for attr, _ in nested.values()}
    for key, value in overrides.items():
        for prefix, (attr, cls) in nested.items():
            fields = {f.name for f in dataclasses.fields(cls)}
            if key.startswith(prefix) and key[len(prefix):] in fields:
                parts[attr][key[len(prefix):]] = tuple(value) if isinstance(value, list) else value
                break
        else:
            rest[key] = value
    for attr, kw in parts.items():
        if kw:  # whole objects go through the one replace below, so cross-field checks see the final config
            rest[attr] = dataclasses.replace(rest.get(attr, getattr(base, attr)), **kw)
    return config_from_overrides(rest, base)


class TerrainQuadruped(RoughTerrainQuadruped):
    """The quadruped on the tile map with a deployable height scan (see the module docstring)."""

    name = "quadruped_terrain"
    # 2: slopes, stairs and moats begin a seeded offset past the platform (feature_offset);
    # 3: heading commands (heading_command), the reset's keys split three ways.
    version = "3"
    student_fields = TERRAIN_STUDENT_FIELDS
    teacher_fields = TERRAIN_TEACHER_FIELDS

    def __init__(self, config: TerrainQuadrupedConfig | None = None):
        config = TerrainQuadrupedConfig() if config is None else config
        if not isinstance(config, TerrainQuadrupedConfig):
            raise TypeError(f"TerrainQuadruped needs a TerrainQuadrupedConfig, got {type(config).__name__}")
        super().__init__(config)

    # ------------------------------------------------- the parent's terrain hooks
    def _generate_terrain(self) -> np.ndarray:
        return generate_tile_heights(self.config.terrain)

    def _describe_terrain(self) -> dict[str, Any]:
        return describe_tiles(self.config.terrain, self.terrain_heights_np)

    def _spawn_xy(self, key: jax.Array) -> jax.Array:
        """A tile's centre plus a uniform offset on its platform, ``[2]`` (m)."""
        t, cfg = self.config.terrain, self.config
        k_level, k_type, k_off = jax.random.split(key, 3)
        level = jax.random.randint(k_level, (), 0, init_level_bound(cfg.curriculum, t.num_levels))
        kind = jax.random.randint(k_type, (), 0, len(t.types))
        if self._pinned_tile is not None:  # the suite's terrain conditions: (type, level), -1 = drawn
            pinned = jnp.asarray(self._pinned_tile, jnp.int32)
            kind = jnp.where(pinned[0] >= 0, jnp.minimum(pinned[0], len(t.types) - 1), kind)
            level = jnp.where(pinned[1] >= 0, jnp.minimum(pinned[1], t.max_level), level)
        cx, cy = tile_centre(t, level, kind)
        s = cfg.spawn_half_extent
        return jnp.stack([cx, cy]) + jax.random.uniform(k_off, (2,), minval=-s, maxval=s)

    # ---------------------------------------------------------------- the API
    _pinned_tile: Any = None  # with_tile's (type, level), possibly traced; None: drawn at reset

    def with_tile(self, tile: Any) -> "TerrainQuadruped":
        """This task with every episode starting on tile ``tile = (type index, level)`` (``[2]`` int,
        may be traced; -1 in either keeps that one drawn as in training): the evaluation suite's
        ``terrain_type`` and ``terrain_level`` conditions (:mod:`distill_jax.suite`)."""
        pinned = copy.copy(self)
        pinned._pinned_tile = tile
        return pinned

    @property
    def phase_batching(self) -> type:
        """How training phases batch this task (``VmapAutoReset.for_phase``): with the curriculum."""
        # Imported here: terrain_curriculum builds on this module.
        from distill_jax.envs.quadruped.terrain_curriculum import TerrainCurriculumAutoReset

        return TerrainCurriculumAutoReset

    @property
    def panel_groups(self) -> dict[str, tuple[str, ...]]:
        """The evaluation's breakdown of the panel: by the tile type and the level an episode started on
        (the per-step metrics ``terrain_type`` and ``terrain_level`` index these names)."""
        t = self.config.terrain
        return {"terrain_type": tuple(t.types), "terrain_level": tuple(f"level {i}" for i in range(t.num_levels))}

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        cfg = self.config
        bound = init_level_bound(cfg.curriculum, cfg.terrain.num_levels)
        fp["reset_distribution"] = {
            **fp["reset_distribution"],
            "spawn_xy": {"tile_centre_offset": [-cfg.spawn_half_extent, cfg.spawn_half_extent],
                         "level": [0, bound - 1], "type": "uniform"},
        }
        if cfg.heading_command:
            fp["reset_distribution"]["command"] = {
                "vx": list(cfg.command_vx), "vy": list(cfg.command_vy), "heading": [-math.pi, math.pi],
                "yaw_rate": f"clip({cfg.heading_gain} * wrap(heading - yaw), {list(cfg.command_yaw)}) every step"}
        fp["height_scan"] = cfg.height_scan.describe()
        # Training phases carry levels across episodes (TerrainCurriculumAutoReset); a single env and
        # evaluation draw a tile per episode.
        fp["curriculum"] = {**dataclasses.asdict(cfg.curriculum), "training_batching": "TerrainCurriculumAutoReset"}
        return fp

    def reset_with_model(self, key: jax.Array, model: mjx.Model) -> EnvState:
        k_task, k_scan, k_heading = jax.random.split(key, 3)
        state = super().reset_with_model(k_task, model)
        xy = state.physics.qpos[:2]
        level, kind = tile_of(self.config.terrain, xy[0], xy[1], xp=jnp)
        exact = self._exact_scan(state.physics)
        scan_state, scan = scan_reset(self.config.height_scan, k_scan, exact)
        heading = jax.random.uniform(k_heading, (), minval=-jnp.pi, maxval=jnp.pi)
        command = self._steer(state.info["command"], heading, state.physics.qpos)
        info = {**state.info, "height_scan_state": scan_state, "terrain_level": level, "terrain_type": kind,
                "spawn_xy": xy, "heading": heading, "command": command}
        metrics = {**state.metrics, **self._terrain_metrics(info, state.physics)}
        obs = {**state.obs, **self._scan_fields(scan, exact), "command": command}
        return state.replace(obs=obs, info=info, metrics=metrics)

    def step_with_model(self, state: EnvState, action: jax.Array, model: mjx.Model) -> EnvState:
        rng, k_scan = jax.random.split(state.rng)
        carried = {k: state.info[k] for k in TERRAIN_INFO}
        # The parent's reward tracks state.info["command"], the command this step's observation showed.
        nxt = super().step_with_model(state.replace(rng=rng), action, model)
        exact = self._exact_scan(nxt.physics)
        scan_state, scan = scan_step(self.config.height_scan, carried["height_scan_state"], k_scan, exact)
        command = self._steer(nxt.info["command"], carried["heading"], nxt.physics.qpos)
        info = {**nxt.info, **carried, "height_scan_state": scan_state, "command": command}
        metrics = {**nxt.metrics, **self._terrain_metrics(info, nxt.physics)}
        obs = {**nxt.obs, **self._scan_fields(scan, exact), "command": command}
        return nxt.replace(obs=obs, info=info, metrics=metrics)

    def _steer(self, command: jax.Array, heading: jax.Array, qpos: jax.Array) -> jax.Array:
        """``command`` ``[3]`` with its yaw rate turning the trunk toward ``heading`` (rad, world frame).

        ``clip(heading_gain * wrap(heading - yaw), command_yaw)`` with the trunk's yaw from its
        quaternion ``qpos[3:7]``; ``command`` unchanged when ``heading_command`` is off.
        """
        cfg = self.config
        if not cfg.heading_command:
            return command
        w, x, y, z = qpos[3], qpos[4], qpos[5], qpos[6]
        yaw = jnp.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
        error = jnp.arctan2(jnp.sin(heading - yaw), jnp.cos(heading - yaw))  # wrapped to (-pi, pi]
        rate = jnp.clip(cfg.heading_gain * error, cfg.command_yaw[0], cfg.command_yaw[1])
        return command.at[2].set(rate).astype(jnp.float32)

    # Observation fields that depend on where the robot stands: what relocate rewrites.
    RELOCATED_FIELDS = ("terrain_heights", "base_height", "height_scan", "terrain_scan")

    def relocate(self, state: EnvState, level: jax.Array, type_index: jax.Array, key: jax.Array) -> EnvState:
        """A freshly reset episode moved to tile ``(level, type_index)``: the same start, on another platform.

        The reset spawned the robot at some tile's centre plus an offset, lifted to clear the flat
        platform; here it is translated by the difference of the two tile centres and of their
        platform heights, which is exactly where a reset on the new tile with the same draws would
        put it (the feet stand on the flat platform either way). Kinematics and the feet's planes
        are recomputed on the nominal model (the domain randomisation changes no geometry), and so
        are the observation fields that depend on the position (:data:`RELOCATED_FIELDS`, with a
        new scan episode drawn from ``key``); the others (proprioception, command, the model's
        parameters, wrapper fields) are translation invariant and kept.

        Args:
          state: one env's state right after reset (wrapped or not: only the task's physics,
            fields and info are touched).
          level, type_index: ``[]`` int, the target tile (clamped into the grid).
          key: PRNG key for the new scan episode (offset, first reading).

        Returns:
          The state on the new tile, its ``terrain_level``, ``terrain_type`` and ``spawn_xy`` set.
        """
        t = self.config.terrain
        level = jnp.clip(jnp.asarray(level, jnp.int32), 0, t.max_level)
        type_index = jnp.clip(jnp.asarray(type_index, jnp.int32), 0, len(t.types) - 1)
        old = jnp.stack(tile_centre(t, state.info["terrain_level"], state.info["terrain_type"]))
        new = jnp.stack(tile_centre(t, level, type_index))
        dz = self.terrain_height(new[0], new[1]) - self.terrain_height(old[0], old[1])
        data = state.physics
        qpos = data.qpos.at[:3].add(jnp.concatenate([new - old, dz[None]]))
        model = self.mjx_model
        data = self.before_physics_step(model, mjx.kinematics(model, data.replace(qpos=qpos)))
        k = self._kinematics(model, data)
        exact = self._exact_scan(data)
        scan_state, scan = scan_reset(self.config.height_scan, key, exact)
        obs = {**state.obs, "terrain_heights": self._foot_terrain(k).astype(jnp.float32),
               "base_height": k["base_height"][None].astype(jnp.float32), **self._scan_fields(scan, exact)}
        info = {**state.info, "height_scan_state": scan_state, "terrain_level": level, "terrain_type": type_index,
                "spawn_xy": qpos[:2]}
        return state.replace(physics=data, obs=obs, info=info)

    # ---------------------------------------------------------------- helpers
    def _exact_scan(self, data: mjx.Data) -> jax.Array:
        """The exact scan ``[nx, ny]`` (m) around the trunk, in its yaw frame."""
        rot = data.xmat[self._trunk_id]
        yaw = jnp.arctan2(rot[1, 0], rot[0, 0])
        t = self.config.terrain
        return exact_scan(self.config.height_scan, self._heights, t.half_x, t.half_y, data.xpos[self._trunk_id], yaw)

    def _scan_fields(self, scan: jax.Array, exact: jax.Array) -> dict[str, jax.Array]:
        """The student's delivered scan and the teacher's exact one (same grid, clipped alike)."""
        clip = self.config.height_scan.clip
        return {"height_scan": scan, "terrain_scan": jnp.clip(exact, -clip, clip).astype(jnp.float32)}

    def _terrain_metrics(self, info: dict[str, jax.Array], data: mjx.Data) -> dict[str, jax.Array]:
        t = self.config.terrain
        level, kind = info["terrain_level"], info["terrain_type"]
        one_hot = jax.nn.one_hot(level, t.num_levels, dtype=jnp.float32)
        on_type = jax.nn.one_hot(kind, len(t.types), dtype=jnp.float32)
        at_top = (level == t.max_level).astype(jnp.float32)
        # qpos, not xpos: the spawn point is a qpos, and xpos is one physics step old after a step.
        distance = jnp.linalg.norm(data.qpos[:2] - info["spawn_xy"])
        return {
            "terrain_level": level.astype(jnp.float32),
            "terrain_type": kind.astype(jnp.float32),
            **{f"terrain_level_{i}": one_hot[i] for i in range(t.num_levels)},
            # Per tile type: its share of the envs and the share at its hardest level; their ratio
            # is the fraction of that type's envs the curriculum has taken to the top.
            **{f"terrain_type_{name}": on_type[i] for i, name in enumerate(t.types)},
            **{f"terrain_top_{name}": on_type[i] * at_top for i, name in enumerate(t.types)},
            "distance_from_spawn": distance.astype(jnp.float32),
            "command_speed": jnp.linalg.norm(info["command"][:2]).astype(jnp.float32),
        }


def make_quadruped_terrain(**overrides: Any):
    """The terrain quadruped with the quadruped's default wrapper stack (the ``"quadruped_terrain"`` entry).

    Task options: :func:`terrain_config_from_overrides`; stack options as for
    :func:`~distill_jax.envs.quadruped.factory.make_quadruped_rough`.

    Raises:
      ValueError: naming any unknown option.
    """
    return make_with_stack(TerrainQuadruped, terrain_config_from_overrides, overrides)
