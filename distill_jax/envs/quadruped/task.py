"""Rough-terrain quadruped velocity tracking on MJX: the privileged-distillation workload.

A ~13 kg quadruped (``assets/quadruped.xml``: 12 position-servoed hinges, sphere
feet) walks on a procedural height field (:mod:`distill_jax.envs.terrain`) and
tracks a command ``(vx, vy, yaw_rate)`` (body frame) drawn at reset. Actions in
[-1, 1] are offsets from the standing pose: ``target = default_pose +
action_scale * action`` (radians), clipped to the servos' ``ctrlrange``.

Observations (float32; per env, no batch axis):

==========================  ========  =============  =========================================
field                       shape     role           meaning
==========================  ========  =============  =========================================
``joint_pos``               (12,)     student_obs    joint angles minus the standing pose (rad)
``joint_vel``               (12,)     student_obs    joint velocities (rad/s)
``base_ang_vel``            (3,)      student_obs    trunk angular velocity, body frame (rad/s)
``projected_gravity``       (3,)      student_obs    unit gravity in the body frame
``command``                 (3,)      student_obs    (vx, vy, yaw_rate) target
``last_action``             (12,)     student_obs    previous action
``terrain_heights``         (4, 9)    teacher_only   per foot (FL, FR, RL, RR), sole height above
                                                     the terrain at a yaw-aligned 3x3 grid around
                                                     the foot (row-major, x outer), clipped (m)
``foot_contact_forces``     (4,)      teacher_only   normal contact force per foot (N)
``friction``                (1,)      teacher_only   foot-ground friction coefficient in force
``base_lin_vel``            (3,)      teacher_only   trunk linear velocity, body frame (m/s)
``payload``                 (1,)      teacher_only   trunk mass minus the nominal trunk mass (kg)
``motor_strength``          (1,)      teacher_only   mean servo kp / nominal kp
``push_force``              (3,)      teacher_only   external force on the trunk this step, body frame (N)
``base_height``             (1,)      critic_only    trunk height above the terrain below it (m)
``reward_terms``            (11,)     critic_only    this step's weighted reward terms (REWARD_TERMS order)
==========================  ========  =============  =========================================

``friction``, ``payload`` and ``motor_strength`` are read off the ``mjx.Model``
being simulated, so a domain-randomisation wrapper that passes a per-env model
to :meth:`step_with_model` is reflected without the task knowing.

Rewards follow legged_gym (Rudin et al. 2021, "Learning to walk in minutes"):
each term is ``weight * raw_term * dt``; the sum of the non-termination terms is
clipped at 0 when ``only_positive_rewards`` (as legged_gym does) and the
termination term is added *after* clipping so a fall always costs. Raw terms:

* ``tracking_lin_vel`` ``exp(-|cmd_xy - v_xy|^2 / sigma)`` (body frame)
* ``tracking_ang_vel`` ``exp(-(cmd_yaw - w_z)^2 / sigma)``
* ``lin_vel_z`` ``v_z^2``; ``ang_vel_xy`` ``|w_xy|^2``; ``orientation`` ``|g_xy|^2``
* ``base_height`` ``(h - base_height_target)^2``, ``h`` above the terrain under the trunk
* ``torques`` ``|tau|^2``; ``action_rate`` ``|a - a_prev|^2``
* ``feet_air_time`` ``sum_feet (air_time - air_time_target) * first_contact``, zero when
  ``|cmd_xy| < 0.1``
* ``collision`` number of knees within ``knee_radius`` of the terrain (knees do not
  collide physically; this is an analytic check against the height field)
* ``termination`` 1 on a fall.

A step *terminates* (``metrics["fall"]``) when the trunk is less than
``min_base_height`` above the terrain below it, tilts more than ``max_tilt``
from upright, or touches the terrain with either trunk proxy sphere.
``metrics["success"]`` is 1 when the xy velocity tracking error
``metrics["tracking_error"] = |cmd_xy - v_xy|`` is below ``success_threshold``
and the step did not fall. Time limits belong to the ``TimeLimit`` wrapper.

Contacts (the defaults are the cheap ones; the alternatives stay as options):

* only the feet collide physically; a trunk touch is an analytic test of the
  trunk spheres against the height field (:meth:`RoughTerrainQuadruped.trunk_clearance`).
  ``trunk_collision=True`` makes the spheres collide and counts their contact
  force instead.
* ``foot_contact="tangent_plane"``: each foot collides with its own plane, placed
  on the terrain's tangent plane under the foot before every physics step
  (:meth:`RoughTerrainQuadruped.place_foot_planes`): 1 contact per foot instead
  of MJX's 4 sphere-height-field slots and per-prism convex collisions.
  ``foot_contact="hfield"`` uses MJX's height-field collision.
* one Newton iteration with 5 line-search steps per physics step (MuJoCo
  Playground's Go1).

Measurements behind these choices: ``experiments/results/quadruped_physics_cpu.md``
and ``experiments/probes/quadruped_contact_compare.py``; how the defaults got
here (``version`` 1 to 3) is in the git history of this package.

The default wrapper stack of the ``"quadruped_rough"`` registry entry is in
:mod:`distill_jax.envs.quadruped.factory`.

Example (the bare task)::

    env = RoughTerrainQuadruped(QuadrupedConfig())
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    state = jax.jit(env.step)(state, jnp.zeros(env.action_size))
"""

from __future__ import annotations

import dataclasses
import math
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from distill_jax.distributions import SATURATION_LIMIT
from distill_jax.envs import terrain as terrain_lib
from distill_jax.envs.base import EnvState, with_inferred_specs
from distill_jax.envs.mjx_env import MjxEnv
from distill_jax.quadruped_mjcf import quadruped_model_hash
from distill_jax.envs.quadruped.config import (
    CRITIC_FIELDS,
    LEGS,
    REWARD_TERMS,
    STUDENT_FIELDS,
    TEACHER_FIELDS,
    TRUNK_SPHERES,
    QuadrupedConfig,
    default_ranges,
)
from distill_jax.envs.quadruped.mjcf import build_mjcf
from distill_jax.schema import ObservationSchema


def _yaw_rotation(yaw: jax.Array) -> jax.Array:
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    return jnp.array([[c, -s], [s, c]])


class RoughTerrainQuadruped(MjxEnv):
    """Single-instance rough-terrain velocity tracking (see the module docstring)."""

    name = "quadruped_rough"
    version = "3"
    # A variant with more fields extends these (the schema's roles).
    student_fields: tuple[str, ...] = STUDENT_FIELDS
    teacher_fields: tuple[str, ...] = TEACHER_FIELDS

    def __init__(self, config: QuadrupedConfig | None = None):
        self.config = QuadrupedConfig() if config is None else config
        cfg = self.config
        heights = self._generate_terrain()
        self.terrain_heights_np = heights
        super().__init__(build_mjcf(cfg, float(heights.max())), n_substeps=cfg.n_substeps)
        m = self.mj_model
        scale = m.hfield_size[0, 2]
        m.hfield_data[:] = (heights / scale).ravel()
        self.mjx_model = mjx.put_model(m, device=jax.local_devices()[0])  # see MjxEnv.__init__
        self._heights = jnp.asarray(heights)

        def ids(kind: str, names) -> np.ndarray:
            return np.array([getattr(m, kind)(n).id for n in names], dtype=np.int32)

        self._trunk_id = int(m.body("trunk").id)
        self._foot_geoms = ids("geom", [f"{leg}_foot" for leg in LEGS])
        self._trunk_geoms = ids("geom", TRUNK_SPHERES)
        self._trunk_radius = float(m.geom_size[self._trunk_geoms[0], 0])
        self._knee_bodies = ids("body", [f"{leg}_calf" for leg in LEGS])
        self._foot_radius = float(m.geom_size[self._foot_geoms[0], 0])
        # Mocap slots of the feet's planes (foot_contact="tangent_plane"), in LEGS order.
        self._foot_plane_slots = (
            jnp.asarray(m.body_mocapid[ids("body", [f"{leg}_ground" for leg in LEGS])], jnp.int32)
            if cfg.foot_contact == "tangent_plane" else None)
        self._nominal_trunk_mass = float(m.body_mass[self._trunk_id])
        self._nominal_kp = np.asarray(m.actuator_gainprm[:, 0], dtype=np.float32)
        self._default_pose = jnp.asarray(np.tile(cfg.default_pose, len(LEGS)), jnp.float32)
        self._joint_range = jnp.asarray(m.jnt_range[1:], jnp.float32)  # skip the free joint
        self._ctrl_range = jnp.asarray(m.actuator_ctrlrange, jnp.float32)
        if m.nu != 12 or m.nq != 19:
            raise ValueError(f"quadruped.xml must have 12 actuators and a free base, got nu={m.nu} nq={m.nq}")

        self._data0 = mjx.make_data(self.mjx_model)
        # Per contact slot: the efc rows holding its (pyramidal) normal force.
        contact = self._data0._impl.contact
        adr = np.asarray(contact.efc_address)
        dim = np.asarray(contact.dim)
        n_rows = np.where(dim == 1, 1, 2 * (dim - 1))
        width = int(n_rows.max()) if n_rows.size else 1
        self._efc_rows = jnp.asarray(adr[:, None] + np.arange(width)[None], jnp.int32)
        self._efc_row_mask = jnp.asarray(np.arange(width)[None] < n_rows[:, None], jnp.float32)
        # Foot centres relative to the trunk in the standing pose (body frame).
        stand = mujoco.MjData(m)
        stand.qpos[3:7] = (1.0, 0.0, 0.0, 0.0)
        stand.qpos[7:] = np.tile(cfg.default_pose, len(LEGS))
        mujoco.mj_kinematics(m, stand)
        self._stand_feet = jnp.asarray(stand.geom_xpos[self._foot_geoms] - stand.xpos[self._trunk_id], jnp.float32)
        p = 0.03 * np.array([-1.0, 0.0, 1.0])
        self._spawn_patch = jnp.asarray(np.stack(np.meshgrid(p, p, indexing="ij"), -1).reshape(-1, 2), jnp.float32)
        r = self._trunk_radius
        self._trunk_patch = jnp.asarray([[0.0, 0.0], [r, 0.0], [-r, 0.0], [0.0, r], [0.0, -r]], jnp.float32)
        g = cfg.scan_spacing * np.array([-1.0, 0.0, 1.0])
        self._scan_offsets = jnp.asarray(np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2), jnp.float32)

    # ---------------------------------------------------------------- API
    @property
    def action_size(self) -> int:
        return int(self.mj_model.nu)

    @cached_property
    def schema(self) -> ObservationSchema:
        base = ObservationSchema(
            student_obs=self.student_fields,
            teacher_only=self.teacher_fields,
            critic_only=CRITIC_FIELDS,
            # The rule every quadruped student so far was distilled with (the config's default, which
            # overrode this declaration until the declaration became the default the config starts from).
            mask_rule=("falls", "timeouts", "saturated_actions", "nonfinite_teacher"),
            mask_thresholds=(("fall_horizon", 1.0), ("saturation", SATURATION_LIMIT)),
        )
        return with_inferred_specs(base, self.reset)

    def terrain_height(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """Terrain height (m) under world ``(x, y)``; exact on MuJoCo's collision surface."""
        t = self.config.terrain
        return terrain_lib.terrain_height(self._heights, t.half_x, t.half_y, x, y)

    @property
    def model_hash(self) -> str:
        return quadruped_model_hash(self.xml, self.terrain_heights_np)

    def fingerprint(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "name": self.name,
            "version": self.version,
            "backend": self.backend,
            "dt": self.dt,
            "timestep": float(self.mj_model.opt.timestep),
            "n_substeps": self.n_substeps,
            "action_scale": cfg.action_scale,
            "default_pose": list(cfg.default_pose),
            "reward_terms": cfg.rewards.as_dict(),
            "reward_scaling": "weight * term * dt",
            "only_positive_rewards": cfg.only_positive_rewards,
            "reset_distribution": {
                "spawn_xy": [-cfg.spawn_half_extent, cfg.spawn_half_extent],
                "spawn_yaw": [-cfg.spawn_yaw, cfg.spawn_yaw],
                "spawn_clearance": cfg.spawn_clearance,
                "init_joint_noise": cfg.init_joint_noise,
                "init_base_vel_noise": cfg.init_base_vel_noise,
                "command": {"vx": list(cfg.command_vx), "vy": list(cfg.command_vy),
                            "yaw_rate": list(cfg.command_yaw)},
            },
            # Applied by the DomainRandomization wrapper (which replaces this
            # entry with the ranges it actually uses).
            "randomization": [r.to_dict() for r in default_ranges(cfg)],
            "perturbations": {"push_interval_s": cfg.push_interval_s,
                              "push_force_max": cfg.push_force_max,
                              "push_duration_s": self.dt},
            "termination": {"min_base_height": cfg.min_base_height, "max_tilt": cfg.max_tilt,
                            "trunk_contact": "contact force" if cfg.trunk_collision else "analytic"},
            "solver": {"iterations": cfg.solver_iterations, "ls_iterations": cfg.solver_ls_iterations},
            "foot_contact": cfg.foot_contact,
            "success": {"tracking_error_below": cfg.success_threshold},
            "terrain": self._describe_terrain(),
            "terrain_seed": cfg.terrain.seed,
            "config": dataclasses.asdict(cfg),
            "model_hash": self.model_hash,
        }

    # -------------------------------------------------------------- physics
    def reset_with_model(self, key: jax.Array, model: mjx.Model) -> EnvState:
        cfg = self.config
        k_xy, k_yaw, k_joint, k_vel, k_cmd, k_rng = jax.random.split(key, 6)
        xy = self._spawn_xy(k_xy)
        yaw = jax.random.uniform(k_yaw, (), minval=-cfg.spawn_yaw, maxval=cfg.spawn_yaw)
        # Lift the trunk until the lowest standing-pose foot clears the terrain
        # (highest point within 3 cm of each foot) by spawn_clearance.
        feet = self._stand_feet[:, :2] @ _yaw_rotation(yaw).T + xy  # [4, 2]
        patch = self._spawn_patch  # [9, 2]
        ground = self.terrain_height(feet[:, None, 0] + patch[:, 0], feet[:, None, 1] + patch[:, 1])
        z = jnp.max(jnp.max(ground, axis=1) - self._stand_feet[:, 2]) + self._foot_radius + cfg.spawn_clearance
        quat = jnp.array([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)])
        joints = self._default_pose + jax.random.uniform(
            k_joint, (12,), minval=-cfg.init_joint_noise, maxval=cfg.init_joint_noise)
        joints = jnp.clip(joints, self._joint_range[:, 0], self._joint_range[:, 1])
        qpos = jnp.concatenate([xy, z[None], quat, joints])
        qvel = jnp.zeros(18).at[:6].set(jax.random.uniform(
            k_vel, (6,), minval=-cfg.init_base_vel_noise, maxval=cfg.init_base_vel_noise))
        data = self._data0.replace(qpos=qpos, qvel=qvel, ctrl=self._default_pose)
        # Kinematics suffice: the spawn height keeps every collider clear of the
        # terrain, so the first observation has no contact forces (and skipping
        # collision + the constraint solve makes reset cheap to compile).
        data = self.before_physics_step(model, mjx.kinematics(model, data))

        lo, hi = jnp.array([cfg.command_vx[0], cfg.command_vy[0], cfg.command_yaw[0]]), jnp.array(
            [cfg.command_vx[1], cfg.command_vy[1], cfg.command_yaw[1]])
        command = jax.random.uniform(k_cmd, (3,), minval=lo, maxval=hi)
        zeros4 = jnp.zeros(4, jnp.float32)
        info = {
            "command": command.astype(jnp.float32),
            "last_action": jnp.zeros(12, jnp.float32),
            "feet_air_time": zeros4,
            "last_contact": zeros4,
        }
        k = self._kinematics(model, data)
        reward_vec = jnp.zeros(len(REWARD_TERMS), jnp.float32)
        obs = self._observe(model, data, k, info, reward_vec, jnp.zeros(3))
        zero = jnp.zeros((), jnp.float32)
        metrics = {f"reward_{n}": zero for n in REWARD_TERMS}
        metrics.update(fall=zero, success=zero, tracking_error=zero, base_height=k["base_height"])
        return EnvState(
            physics=data, obs=obs, reward=zero, terminated=zero, truncated=zero,
            first=jnp.ones((), jnp.float32), rng=k_rng, params={}, info=info, metrics=metrics,
        )

    def step_with_model(self, state: EnvState, action: jax.Array, model: mjx.Model) -> EnvState:
        cfg = self.config
        dt = self.dt
        action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
        rng, k_push, k_mag, k_dir = jax.random.split(state.rng, 4)

        push_world = jnp.zeros(3)
        if cfg.push_interval_s > 0 and cfg.push_force_max > 0:
            pushed = jax.random.bernoulli(k_push, min(dt / cfg.push_interval_s, 1.0))
            angle = jax.random.uniform(k_dir, (), minval=-jnp.pi, maxval=jnp.pi)
            magnitude = jax.random.uniform(k_mag, (), maxval=cfg.push_force_max)
            push_world = jnp.where(
                pushed, magnitude * jnp.array([jnp.cos(angle), jnp.sin(angle), 0.0]), 0.0)

        data = state.physics
        data = data.replace(xfrc_applied=data.xfrc_applied.at[self._trunk_id, :3].set(push_world))
        target = self._default_pose + cfg.action_scale * action
        target = jnp.clip(target, self._ctrl_range[:, 0], self._ctrl_range[:, 1])
        data = self.physics_step(model, data, target)
        k = self._kinematics(model, data)

        # Feet air time (legged_gym): a touchdown after a swing pays (air_time - target).
        contact = (k["foot_forces"] > cfg.contact_force_threshold).astype(jnp.float32)
        contact_filt = jnp.maximum(contact, state.info["last_contact"])
        air_time = state.info["feet_air_time"] + dt
        first_contact = (state.info["feet_air_time"] > 0) * contact_filt
        command = state.info["command"]
        moving = (jnp.linalg.norm(command[:2]) > 0.1).astype(jnp.float32)
        air_reward = jnp.sum((air_time - cfg.air_time_target) * first_contact) * moving
        air_time = air_time * (1.0 - contact_filt)

        # Falls.
        tilted = k["projected_gravity"][2] > -math.cos(cfg.max_tilt)
        low = k["base_height"] < cfg.min_base_height
        terminated = (k["trunk_touch"] | tilted | low).astype(jnp.float32)

        v, w, g = k["base_lin_vel"], k["base_ang_vel"], k["projected_gravity"]
        lin_err2 = jnp.sum(jnp.square(command[:2] - v[:2]))
        knee_clear = k["knee_pos"][:, 2] - self.terrain_height(k["knee_pos"][:, 0], k["knee_pos"][:, 1])
        raw = {
            "tracking_lin_vel": jnp.exp(-lin_err2 / cfg.tracking_sigma),
            "tracking_ang_vel": jnp.exp(-jnp.square(command[2] - w[2]) / cfg.tracking_sigma),
            "lin_vel_z": jnp.square(v[2]),
            "ang_vel_xy": jnp.sum(jnp.square(w[:2])),
            "orientation": jnp.sum(jnp.square(g[:2])),
            "base_height": jnp.square(k["base_height"] - cfg.base_height_target),
            "torques": jnp.sum(jnp.square(data.actuator_force)),
            "action_rate": jnp.sum(jnp.square(action - state.info["last_action"])),
            "feet_air_time": air_reward,
            "collision": jnp.sum((knee_clear < cfg.knee_radius).astype(jnp.float32)),
            "termination": terminated,
        }
        weights = cfg.rewards.as_dict()
        terms = {n: (weights[n] * dt * raw[n]).astype(jnp.float32) for n in REWARD_TERMS}
        reward = sum(terms[n] for n in REWARD_TERMS if n != "termination")
        if cfg.only_positive_rewards:
            reward = jnp.maximum(reward, 0.0)
        reward = (reward + terms["termination"]).astype(jnp.float32)
        reward_vec = jnp.stack([terms[n] for n in REWARD_TERMS])

        info = {
            "command": command,
            "last_action": action,
            "feet_air_time": air_time.astype(jnp.float32),
            "last_contact": contact,
        }
        push_body = k["rot"].T @ push_world
        obs = self._observe(model, data, k, info, reward_vec, push_body)
        tracking_error = jnp.sqrt(lin_err2).astype(jnp.float32)
        metrics = {f"reward_{n}": terms[n] for n in REWARD_TERMS}
        metrics.update(
            fall=terminated,
            success=((tracking_error < cfg.success_threshold) & (terminated == 0)).astype(jnp.float32),
            tracking_error=tracking_error,
            base_height=k["base_height"].astype(jnp.float32),
        )
        return state.replace(
            physics=data, obs=obs, reward=reward, terminated=terminated,
            truncated=jnp.zeros((), jnp.float32), first=jnp.zeros((), jnp.float32),
            rng=rng, info=info, metrics=metrics,
        )

    def before_physics_step(self, model: mjx.Model, data: mjx.Data) -> mjx.Data:
        """Places the feet's planes (``foot_contact="tangent_plane"``); otherwise ``data`` unchanged."""
        if self._foot_plane_slots is None:
            return data
        return self.place_foot_planes(data)

    # ------------------------------------------- what a terrain variant overrides
    def _generate_terrain(self) -> np.ndarray:
        """The height field ``[nrow, ncol]`` (m) of ``config.terrain``."""
        return terrain_lib.generate_heights(self.config.terrain)

    def _describe_terrain(self) -> dict[str, Any]:
        """The fingerprint's ``terrain`` entry."""
        return terrain_lib.describe(self.config.terrain, self.terrain_heights_np)

    def _spawn_xy(self, key: jax.Array) -> jax.Array:
        """Spawn ``(x, y)`` ``[2]`` (m): uniform in ``[-spawn_half_extent, spawn_half_extent]^2``."""
        s = self.config.spawn_half_extent
        return jax.random.uniform(key, (2,), minval=-s, maxval=s)

    # -------------------------------------------------------------- helpers
    def place_foot_planes(self, data: mjx.Data) -> mjx.Data:
        """Moves each foot's plane onto the terrain's tangent plane under the foot centre.

        The plane passes through the terrain point below the foot centre with
        the normal of the terrain triangle there (:func:`terrain.terrain_plane`),
        so on that triangle the plane *is* the collision surface MuJoCo's
        height field would use. It departs from it only where the sphere
        reaches past the triangle's edges (by at most the foot radius, 22 mm,
        times the change of slope across the edge). The foot centre is the one
        of the last kinematics pass, i.e. one physics step (4 ms) old, which
        moves the plane's anchor, not its fit, by a foot's displacement in that
        step.

        Args:
          data: one env's ``mjx.Data`` (no batch axis).

        Returns:
          ``data`` with ``mocap_pos`` ``[4, 3]`` (m) and ``mocap_quat`` ``[4, 4]``
          (w, x, y, z: the rotation of +z onto the terrain normal) set.
        """
        feet = data.geom_xpos[self._foot_geoms]  # [4, 3]
        t = self.config.terrain
        h, sx, sy = terrain_lib.terrain_plane(self._heights, t.half_x, t.half_y, feet[:, 0], feet[:, 1])
        normal = jnp.stack([-sx, -sy, jnp.ones_like(sx)], axis=-1)
        normal = normal / jnp.linalg.norm(normal, axis=-1, keepdims=True)
        # The shortest rotation of z onto n: q ~ (1 + z.n, z x n); n_z > 0 keeps it well defined.
        quat = jnp.stack([1.0 + normal[:, 2], -normal[:, 1], normal[:, 0], jnp.zeros_like(sx)], axis=-1)
        quat = quat / jnp.linalg.norm(quat, axis=-1, keepdims=True)
        pos = jnp.stack([feet[:, 0], feet[:, 1], h], axis=-1)
        slots = self._foot_plane_slots
        return data.replace(mocap_pos=data.mocap_pos.at[slots].set(pos),
                            mocap_quat=data.mocap_quat.at[slots].set(quat))

    def trunk_clearance(self, data: mjx.Data) -> jax.Array:
        """Gap (m) between each trunk proxy sphere and the terrain, ``[2]``; < 0 is a touch.

        The sphere's lowest point against the highest terrain at its centre and
        at 4 points a radius away along x and y: exact on a flat patch, and a
        touch is never missed by more than the terrain's rise within a radius
        between those points.
        """
        centres = data.geom_xpos[self._trunk_geoms]  # [2, 3]
        pts = centres[:, None, :2] + self._trunk_patch[None]  # [2, 5, 2]
        ground = jnp.max(self.terrain_height(pts[..., 0], pts[..., 1]), axis=1)
        return centres[:, 2] - self._trunk_radius - ground

    def _kinematics(self, model: mjx.Model, data: mjx.Data) -> dict[str, jax.Array]:
        """Body-frame trunk state, foot/knee positions, contact forces and the trunk-touch (fall) test."""
        rot = data.xmat[self._trunk_id]
        base = data.xpos[self._trunk_id]
        impl = data._impl
        normal = jnp.sum(impl.efc_force[self._efc_rows] * self._efc_row_mask, axis=-1)  # [ncon]
        g1, g2 = impl.contact.geom1, impl.contact.geom2

        def force_on(geoms):
            hit = (g1[None] == geoms[:, None]) | (g2[None] == geoms[:, None])  # [n, ncon]
            return jnp.sum(hit * normal[None], axis=-1)

        if self.config.trunk_collision:  # the spheres collide: a touch is a contact force
            trunk_touch = jnp.sum(force_on(self._trunk_geoms)) > self.config.contact_force_threshold
        else:  # no trunk contacts in the solver: test the spheres against the terrain
            trunk_touch = jnp.any(self.trunk_clearance(data) < 0.0)
        return {
            "rot": rot,
            "base_lin_vel": rot.T @ data.qvel[:3],
            "base_ang_vel": data.qvel[3:6],
            "projected_gravity": -rot[2],
            "base_height": base[2] - self.terrain_height(base[0], base[1]),
            "foot_pos": data.geom_xpos[self._foot_geoms],
            "knee_pos": data.xpos[self._knee_bodies],
            "foot_forces": force_on(self._foot_geoms),
            "trunk_touch": trunk_touch,  # bool: a trunk sphere touches the terrain (a fall)
        }

    def _foot_terrain(self, k: dict[str, jax.Array]) -> jax.Array:
        """The ``terrain_heights`` field ``[4, 9]`` (m) from :meth:`_kinematics`' output ``k``."""
        cfg = self.config
        yaw = jnp.arctan2(k["rot"][1, 0], k["rot"][0, 0])
        offsets = self._scan_offsets @ _yaw_rotation(yaw).T  # [9, 2]
        pts = k["foot_pos"][:, None, :2] + offsets[None]  # [4, 9, 2]
        ground = self.terrain_height(pts[..., 0], pts[..., 1])
        sole = k["foot_pos"][:, 2] - self._foot_radius
        return jnp.clip(sole[:, None] - ground, -cfg.scan_clip, cfg.scan_clip)

    def _observe(self, model, data, k, info, reward_vec, push_body) -> dict[str, jax.Array]:
        scan = self._foot_terrain(k)
        # The feet have geom priority 1, so foot-ground contacts use the feet's friction.
        friction = jnp.mean(model.geom_friction[self._foot_geoms, 0])
        obs = {
            "joint_pos": data.qpos[7:] - self._default_pose,
            "joint_vel": data.qvel[6:],
            "base_ang_vel": k["base_ang_vel"],
            "projected_gravity": k["projected_gravity"],
            "command": info["command"],
            "last_action": info["last_action"],
            "terrain_heights": scan,
            "foot_contact_forces": k["foot_forces"],
            "friction": friction[None],
            "base_lin_vel": k["base_lin_vel"],
            "payload": (model.body_mass[self._trunk_id] - self._nominal_trunk_mass)[None],
            "motor_strength": jnp.mean(model.actuator_gainprm[:, 0] / self._nominal_kp)[None],
            "push_force": push_body,
            "base_height": k["base_height"][None],
            "reward_terms": reward_vec,
        }
        return {n: jnp.asarray(v, jnp.float32) for n, v in obs.items()}
