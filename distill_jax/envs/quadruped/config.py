"""Settings of the rough-terrain quadruped: the config, its override parser and the default ranges.

Names shared by the task, its MJCF builder and the tests (legs, reward terms,
observation fields by role) live here too, so each of those modules imports
them from one place.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from distill_jax.envs import terrain as terrain_lib
from distill_jax.envs.randomization import ParamRange
from distill_jax.quadruped_mjcf import FOOT_CONTACTS, LEGS, TRUNK_SPHERES  # noqa: F401 (re-exported)

JOINTS_PER_LEG = ("abduction", "hip", "knee")
REWARD_TERMS = (
    "tracking_lin_vel",
    "tracking_ang_vel",
    "lin_vel_z",
    "ang_vel_xy",
    "orientation",
    "base_height",
    "torques",
    "action_rate",
    "feet_air_time",
    "collision",
    "termination",
)
STUDENT_FIELDS = ("joint_pos", "joint_vel", "base_ang_vel", "projected_gravity", "command", "last_action")
TEACHER_FIELDS = (
    "terrain_heights",
    "foot_contact_forces",
    "friction",
    "base_lin_vel",
    "payload",
    "motor_strength",
    "push_force",
)
CRITIC_FIELDS = ("base_height", "reward_terms")
SCAN_POINTS = 9  # 3 x 3 grid around each foot


@dataclasses.dataclass(frozen=True)
class RewardWeights:
    """Weight of each reward term (multiplied by the control dt at every step)."""

    tracking_lin_vel: float = 1.0
    tracking_ang_vel: float = 0.5
    lin_vel_z: float = -2.0
    ang_vel_xy: float = -0.05
    orientation: float = -1.0
    base_height: float = -10.0
    torques: float = -2e-4
    action_rate: float = -0.01
    feet_air_time: float = 1.0
    collision: float = -1.0
    termination: float = -10.0

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in REWARD_TERMS}


@dataclasses.dataclass(frozen=True)
class QuadrupedConfig:
    """Everything that defines the rough-terrain task (lengths m, angles rad, forces N).

    Attributes:
      n_substeps: physics steps per control step (timestep 0.004 s -> dt 0.02 s).
      solver_iterations, solver_ls_iterations: MuJoCo's ``opt.iterations`` and
        ``opt.ls_iterations`` (Newton solver); 1 and 5 follow Playground's Go1.
      trunk_collision: the trunk proxy spheres collide with the terrain and a
        touch is their contact force. Off, only the feet collide and a trunk
        touch is detected analytically, which saves the spheres' contacts
        (8 of 24 slots).
      foot_contact: how the feet meet the terrain. ``"hfield"``: MJX's
        sphere-height-field collision (4 contact slots per foot, one convex
        collision per triangular prism under the foot). ``"tangent_plane"``:
        each foot collides with its own plane, placed before every physics
        step on the terrain's tangent plane under the foot centre (1 contact
        per foot; see
        :meth:`~distill_jax.envs.quadruped.task.RoughTerrainQuadruped.place_foot_planes`).
      action_scale: radians of joint-target offset per unit action.
      default_pose: standing joint angles of one leg (abduction, hip, knee).
      command_vx, command_vy, command_yaw: uniform command ranges drawn at reset.
      spawn_half_extent: spawn xy is uniform in ``[-s, s]^2``.
      spawn_yaw: spawn heading is uniform in ``[-spawn_yaw, spawn_yaw]``.
      spawn_clearance: gap between the lowest foot (in the standing pose) and
        the terrain at spawn: the trunk is placed so that no foot is closer.
      init_joint_noise: joint angles start uniform within +-this of the pose.
      init_base_vel_noise: each trunk velocity component starts uniform within +-this.
      base_height_target: target of the ``base_height`` term.
      min_base_height: fall when the trunk is lower than this above the terrain.
      max_tilt: fall when the trunk tilts more than this from upright.
      tracking_sigma: kernel width of the tracking terms.
      air_time_target: air time (s) above which a touchdown is rewarded.
      contact_force_threshold: normal force above which a contact counts.
      knee_radius: knee-terrain distance counted as a ``collision``.
      success_threshold: xy tracking error (m/s) below which a step succeeds.
      only_positive_rewards: clip the non-termination reward sum at 0.
      push_interval_s: mean time between random pushes (0 = no pushes); each
        step is a push with probability ``dt / push_interval_s``.
      push_force_max: push magnitude is uniform in [0, this], horizontal, random
        direction, held for one control step.
      scan_spacing: spacing of the 3x3 terrain grid around each foot.
      scan_clip: terrain_heights are clipped to +-this.
      friction_range: sliding friction of the feet (absolute), for the
        ``DomainRandomization`` wrapper (see :func:`default_ranges`).
      trunk_mass_scale: factor on the trunk mass (payload) for the wrapper.
      motor_strength_range: factor on every servo's kp and kv for the wrapper.
      rewards: reward weights.
      terrain: height-field parameters (including its seed).
    """

    n_substeps: int = 5
    solver_iterations: int = 1
    solver_ls_iterations: int = 5
    trunk_collision: bool = False
    foot_contact: str = "tangent_plane"
    action_scale: float = 0.4
    default_pose: tuple[float, float, float] = (0.0, 0.8, -1.5)
    command_vx: tuple[float, float] = (-1.0, 1.0)
    command_vy: tuple[float, float] = (-0.5, 0.5)
    command_yaw: tuple[float, float] = (-1.0, 1.0)
    spawn_half_extent: float = 5.0
    spawn_yaw: float = math.pi
    spawn_clearance: float = 0.03
    init_joint_noise: float = 0.1
    init_base_vel_noise: float = 0.1
    base_height_target: float = 0.30
    min_base_height: float = 0.12
    max_tilt: float = 1.0
    tracking_sigma: float = 0.25
    air_time_target: float = 0.5
    contact_force_threshold: float = 1.0
    knee_radius: float = 0.03
    success_threshold: float = 0.25
    only_positive_rewards: bool = True
    push_interval_s: float = 8.0
    push_force_max: float = 200.0
    scan_spacing: float = 0.1
    scan_clip: float = 1.0
    friction_range: tuple[float, float] = (0.5, 1.25)
    trunk_mass_scale: tuple[float, float] = (0.85, 1.3)
    motor_strength_range: tuple[float, float] = (0.9, 1.1)
    rewards: RewardWeights = RewardWeights()
    terrain: terrain_lib.TerrainConfig = terrain_lib.TerrainConfig()

    def __post_init__(self):
        if self.n_substeps < 1:
            raise ValueError(f"n_substeps={self.n_substeps!r}: must be >= 1")
        if self.solver_iterations < 1 or self.solver_ls_iterations < 1:
            raise ValueError(f"solver_iterations={self.solver_iterations!r} and solver_ls_iterations="
                             f"{self.solver_ls_iterations!r}: both must be >= 1")
        if self.foot_contact not in FOOT_CONTACTS:
            raise ValueError(f"foot_contact={self.foot_contact!r}: must be one of {FOOT_CONTACTS}")
        if not 0 < self.action_scale <= 1.5:
            raise ValueError(f"action_scale={self.action_scale!r}: must be in (0, 1.5] rad")
        for name in ("command_vx", "command_vy", "command_yaw", "friction_range",
                     "trunk_mass_scale", "motor_strength_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}={getattr(self, name)!r}: low exceeds high")
        margin = 1.0
        limit = min(self.terrain.half_x, self.terrain.half_y) - margin
        if not 0 <= self.spawn_half_extent <= limit:
            raise ValueError(
                f"spawn_half_extent={self.spawn_half_extent!r}: must be in [0, {limit}] "
                f"(terrain half extent minus {margin} m)"
            )
        if self.push_interval_s < 0 or self.push_force_max < 0:
            raise ValueError("push_interval_s and push_force_max must be >= 0")
        if self.friction_range[0] <= 0:
            raise ValueError(f"friction_range={self.friction_range!r}: must be positive")
        if self.trunk_mass_scale[0] <= 0 or self.motor_strength_range[0] <= 0:
            raise ValueError("trunk_mass_scale and motor_strength_range must be positive factors")


def default_ranges(cfg: QuadrupedConfig) -> tuple[ParamRange, ...]:
    """The ``DomainRandomization`` ranges of the task (``dyn_params`` order).

    ``friction`` sets every geom's sliding friction (only the feet's matters:
    they have contact priority), ``trunk_mass`` scales the trunk mass and
    inertia (payload), ``motor_strength`` scales every servo's kp and kv.
    """
    return (
        ParamRange("friction", "geom_friction:*", *cfg.friction_range, mode="absolute"),
        ParamRange("trunk_mass", "body_mass:trunk", *cfg.trunk_mass_scale),
        ParamRange("motor_strength", "actuator_gain:*", *cfg.motor_strength_range),
    )


# --------------------------------------------------------------- overrides
def config_from_overrides(overrides: dict[str, Any], base: QuadrupedConfig | None = None) -> QuadrupedConfig:
    """A config with keyword overrides applied mechanically.

    Keys are ``QuadrupedConfig`` field names, ``reward_<term>`` for a reward
    weight, or ``terrain_<field>`` for a field of ``base.terrain``'s class (a
    :class:`~distill_jax.envs.terrain.TerrainConfig` by default; ``terrain_seed=3``).
    ``rewards=`` / ``terrain=`` accept whole objects.

    Raises:
      ValueError: naming each key that matches none of these.
    """
    base = QuadrupedConfig() if base is None else base
    # The fields of base's own classes, so a config subclass with another terrain parses the same way.
    top = {f.name for f in dataclasses.fields(type(base))}
    reward_fields = {f.name for f in dataclasses.fields(RewardWeights)}
    terrain_fields = {f.name for f in dataclasses.fields(type(base.terrain))}
    top_kw, reward_kw, terrain_kw, unknown = {}, {}, {}, []
    for key, value in overrides.items():
        if key in top:
            top_kw[key] = tuple(value) if isinstance(value, list) else value
        elif key.startswith("reward_") and key[len("reward_"):] in reward_fields:
            reward_kw[key[len("reward_"):]] = float(value)
        elif key.startswith("terrain_") and key[len("terrain_"):] in terrain_fields:
            terrain_kw[key[len("terrain_"):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"unknown quadruped_rough option(s) {sorted(unknown)}; expected QuadrupedConfig fields "
            f"{sorted(top)}, reward_<term> for {sorted(reward_fields)} or terrain_<field> for "
            f"{sorted(terrain_fields)}"
        )
    rewards = dataclasses.replace(top_kw.pop("rewards", base.rewards), **reward_kw)
    terrain = dataclasses.replace(top_kw.pop("terrain", base.terrain), **terrain_kw)
    return dataclasses.replace(base, **top_kw, rewards=rewards, terrain=terrain)

