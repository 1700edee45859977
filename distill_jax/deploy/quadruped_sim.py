"""The rough-terrain quadruped on MuJoCo's C engine, from a run's env fingerprint, without JAX.

:class:`QuadrupedSim` re-states :class:`distill_jax.envs.quadruped.task.RoughTerrainQuadruped`
for sim-to-sim transfer. From ``env_fingerprint.json`` it rebuilds

* the terrain (:func:`distill_jax.heightfield.generate_heights` on the fingerprint's
  ``config.terrain``, checked against the recorded ``heights_hash``);
* the MJCF the run trained on (:func:`distill_jax.quadruped_mjcf.edit_quadruped_mjcf`,
  checked against the recorded ``model_hash``), and then the one it simulates: the same
  robot, solver and timestep, with the feet colliding with MuJoCo's own height field
  (``contact="hfield"``, the default) instead of training's per-foot tangent planes;
* the reset distribution (spawn pose and clearance, joint and trunk-velocity noise,
  command), the per-episode randomisation (foot friction, trunk mass, motor strength),
  the random pushes, the legged_gym reward terms and the termination tests.

``contact="tangent_plane"`` reproduces training's approximation in C instead (one mocap
plane per foot, moved onto the terrain's tangent plane under the foot before every physics
step), for a like-for-like check that separates the contact model from the rest.

The observation fields are computed from ``MjData`` exactly as the MJX task computes them
(noise-free; noise, history and latency are :mod:`distill_jax.deploy.observations`'s).
Random draws come from NumPy's generator, so episodes match the MJX panel in
distribution, not one by one; MuJoCo C integrates in float64 where MJX uses float32.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np

from distill_jax.deploy.physics import ModelRandomizer, SimError, asset_xml
from distill_jax.heightfield import TerrainConfig, generate_heights, heights_hash, surface_plane
from distill_jax.quadruped_mjcf import LEGS, TRUNK_SPHERES, edit_quadruped_mjcf, quadruped_model_hash

# The MJX task's REWARD_TERMS order (the critic's ``reward_terms`` field).
REWARD_TERMS = ("tracking_lin_vel", "tracking_ang_vel", "lin_vel_z", "ang_vel_xy", "orientation", "base_height",
                "torques", "action_rate", "feet_air_time", "collision", "termination")
CONTACTS = ("hfield", "tangent_plane")


def _yaw_rotation(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s], [s, c]])


class QuadrupedSim:
    """The ``quadruped_rough`` task on MuJoCo C (see the module docstring).

    ``reset(rng)`` and ``step(action)`` return the task's observation fields, ``{name: float64
    [*shape]}`` with the MJX task's names and shapes (student, teacher-only and critic-only).
    ``step`` also returns the reward, whether the step fell, and the metrics
    ``success`` and ``tracking_error`` (m/s).

    Args:
      fingerprint: the run's ``env_fingerprint.json`` (or the panel's ``env_fingerprint``).
      contact: ``"hfield"`` (MuJoCo's height-field contact) or ``"tangent_plane"`` (training's
        approximation, reproduced in C).

    Raises:
      SimError: the terrain or MJCF rebuilt here differs from the run's, or ``contact`` is unknown.
    """

    name = "quadruped_rough"

    def __init__(self, fingerprint: Mapping[str, Any], contact: str = "hfield"):
        if contact not in CONTACTS:
            raise SimError(f"contact={contact!r}: must be one of {CONTACTS}")
        c = self.config = json.loads(json.dumps(fingerprint["config"]))  # a private copy
        self.contact, self.training_contact = contact, c["foot_contact"]
        terrain = TerrainConfig(**c["terrain"])
        heights = generate_heights(terrain)
        recorded = fingerprint.get("terrain", {}).get("heights_hash")
        if heights_hash(heights) != recorded:
            raise SimError(f"the terrain generated here (hash {heights_hash(heights)}) is not the run's ({recorded})")
        self.heights, self.half = heights.astype(np.float64), (terrain.half_x, terrain.half_y)
        base = asset_xml("quadruped.xml")

        def xml(foot_contact: str) -> str:
            return edit_quadruped_mjcf(base, solver_iterations=c["solver_iterations"],
                                       solver_ls_iterations=c["solver_ls_iterations"],
                                       trunk_collision=c["trunk_collision"], foot_contact=foot_contact,
                                       nrow=terrain.nrow, ncol=terrain.ncol, half_x=terrain.half_x,
                                       half_y=terrain.half_y, max_height=float(heights.max()))

        trained = quadruped_model_hash(xml(self.training_contact), heights)
        if trained != fingerprint["model_hash"]:
            raise SimError(f"the quadruped model rebuilt here (hash {trained}) is not the one this run trained on "
                           f"({fingerprint['model_hash']}): the shipped quadruped.xml or its edit changed")
        self.xml = xml(contact)
        m = self.model = mujoco.MjModel.from_xml_string(self.xml)
        m.hfield_data[:] = (heights / m.hfield_size[0, 2]).ravel()
        self.data = mujoco.MjData(m)
        self.weights = {k: float(v) for k, v in fingerprint["reward_terms"].items()}
        self.randomizer = ModelRandomizer(m, fingerprint.get("randomization", []))
        self.n_substeps = int(c["n_substeps"])

        def ids(kind: mujoco.mjtObj, names) -> np.ndarray:
            return np.array([mujoco.mj_name2id(m, kind, n) for n in names])

        self.trunk = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "trunk")
        self.foot_geoms = ids(mujoco.mjtObj.mjOBJ_GEOM, [f"{leg}_foot" for leg in LEGS])
        self.trunk_geoms = ids(mujoco.mjtObj.mjOBJ_GEOM, TRUNK_SPHERES)
        self.knees = ids(mujoco.mjtObj.mjOBJ_BODY, [f"{leg}_calf" for leg in LEGS])
        self.foot_radius = float(m.geom_size[self.foot_geoms[0], 0])
        self.trunk_radius = float(m.geom_size[self.trunk_geoms[0], 0])
        self.plane_slots = (m.body_mocapid[ids(mujoco.mjtObj.mjOBJ_BODY, [f"{leg}_ground" for leg in LEGS])]
                            if contact == "tangent_plane" else None)
        self.nominal_trunk_mass = float(m.body_mass[self.trunk])
        self.nominal_kp = np.array(m.actuator_gainprm[:, 0])
        self.default_pose = np.tile(np.asarray(c["default_pose"], np.float64), len(LEGS))
        self.joint_range = np.array(m.jnt_range[1:])  # skip the free joint
        self.ctrl_range = np.array(m.actuator_ctrlrange)
        stand = mujoco.MjData(m)
        stand.qpos[3:7] = (1.0, 0.0, 0.0, 0.0)
        stand.qpos[7:] = self.default_pose
        mujoco.mj_kinematics(m, stand)
        self.stand_feet = stand.geom_xpos[self.foot_geoms] - stand.xpos[self.trunk]  # [4, 3] body frame (yaw 0)
        p = 0.03 * np.array([-1.0, 0.0, 1.0])
        self.spawn_patch = np.stack(np.meshgrid(p, p, indexing="ij"), -1).reshape(-1, 2)  # [9, 2]
        r = self.trunk_radius
        self.trunk_patch = np.array([[0.0, 0.0], [r, 0.0], [-r, 0.0], [0.0, r], [0.0, -r]])
        g = c["scan_spacing"] * np.array([-1.0, 0.0, 1.0])
        self.scan_offsets = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # [9, 2]
        self.values = np.array([r_["low"] for r_ in self.randomizer.ranges])  # until the first reset
        self._rng = np.random.default_rng(0)  # the pushes' generator: the last reset's
        self.command = np.zeros(3)
        self.last_action = np.zeros(12)
        self.air_time, self.last_contact = np.zeros(4), np.zeros(4)
        self.push_world = np.zeros(3)

    # ------------------------------------------------------------------ basics
    @property
    def dt(self) -> float:
        """Control period (s)."""
        return float(self.model.opt.timestep) * self.n_substeps

    def terrain_height(self, x: Any, y: Any) -> np.ndarray:
        """Height (m) of the collision surface under world ``(x, y)`` (any equal shapes)."""
        return surface_plane(self.heights, *self.half, x, y)[0]

    def place_foot_planes(self) -> None:
        """``contact="tangent_plane"``: each foot's plane onto the terrain's tangent plane under the foot
        centre (the MJX task's ``place_foot_planes``, from the last kinematics pass)."""
        feet = self.data.geom_xpos[self.foot_geoms]
        h, sx, sy = surface_plane(self.heights, *self.half, feet[:, 0], feet[:, 1])
        normal = np.stack([-sx, -sy, np.ones_like(sx)], axis=-1)
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        quat = np.stack([1.0 + normal[:, 2], -normal[:, 1], normal[:, 0], np.zeros_like(sx)], axis=-1)
        self.data.mocap_quat[self.plane_slots] = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
        self.data.mocap_pos[self.plane_slots] = np.stack([feet[:, 0], feet[:, 1], h], axis=-1)

    # ------------------------------------------------------------------ episode
    def reset(self, rng: np.random.Generator, values: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """A new episode: randomised model, spawn pose, command (the MJX ``reset_with_model``).

        Args:
          rng: the episode's generator.
          values: the randomised parameters (``randomization`` order); drawn from ``rng`` when omitted.
        """
        c = self.config
        self._rng = rng
        self.values = self.randomizer.sample(rng) if values is None else np.asarray(values, np.float64)
        self.randomizer.apply(self.values)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        s = c["spawn_half_extent"]
        xy = rng.uniform(-s, s, size=2)
        yaw = rng.uniform(-c["spawn_yaw"], c["spawn_yaw"])
        # Lift the trunk until the lowest standing-pose foot clears the terrain (highest point within
        # 3 cm of each foot) by spawn_clearance.
        feet = self.stand_feet[:, :2] @ _yaw_rotation(yaw).T + xy  # [4, 2]
        ground = self.terrain_height(feet[:, None, 0] + self.spawn_patch[:, 0], feet[:, None, 1] + self.spawn_patch[:, 1])
        z = np.max(ground.max(axis=1) - self.stand_feet[:, 2]) + self.foot_radius + c["spawn_clearance"]
        joints = self.default_pose + rng.uniform(-c["init_joint_noise"], c["init_joint_noise"], size=12)
        joints = np.clip(joints, self.joint_range[:, 0], self.joint_range[:, 1])
        qvel = np.zeros(18)
        qvel[:6] = rng.uniform(-c["init_base_vel_noise"], c["init_base_vel_noise"], size=6)
        lo = np.array([c["command_vx"][0], c["command_vy"][0], c["command_yaw"][0]])
        hi = np.array([c["command_vx"][1], c["command_vy"][1], c["command_yaw"][1]])
        command = rng.uniform(lo, hi)
        return self.set_state(np.concatenate([xy, [z, math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)], joints]),
                              qvel, command)

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray, command: np.ndarray) -> dict[str, np.ndarray]:
        """Starts an episode from ``qpos [19]``, ``qvel [18]`` and ``command [3]`` (the reset's last part; tests
        use it to start the C and MJX tasks from one state). Returns the reset observation."""
        m, d = self.model, self.data
        d.qpos[:], d.qvel[:], d.ctrl[:] = qpos, qvel, self.default_pose
        d.xfrc_applied[:] = 0.0
        # Kinematics only, as the MJX reset: the spawn keeps every collider clear, so no contact forces yet.
        mujoco.mj_kinematics(m, d)
        if self.plane_slots is not None:
            self.place_foot_planes()
        self.command = np.asarray(command, np.float64)
        self.last_action = np.zeros(12)
        self.air_time, self.last_contact = np.zeros(4), np.zeros(4)
        self.push_world = np.zeros(3)
        return self._observe(self._kinematics(contacts=False), np.zeros(len(REWARD_TERMS)), np.zeros(3))

    def step(self, action: np.ndarray, push: np.ndarray | None = None,
             rng: np.random.Generator | None = None) -> tuple[dict[str, np.ndarray], float, bool, dict[str, float]]:
        """One control step: ``(obs, reward, fall, metrics)`` (the MJX ``step_with_model``).

        Args:
          action: ``[12]`` in [-1, 1] (clipped): offsets from the standing pose, times ``action_scale`` (rad).
          push: the horizontal force on the trunk this step (world frame, N, ``[3]``); drawn as the
            task draws it (probability ``dt / push_interval_s``) from ``rng`` when omitted.
          rng: the generator for the push (the one of the last :meth:`reset` when omitted).
        """
        c, m, d, dt = self.config, self.model, self.data, self.dt
        action = np.clip(np.asarray(action, np.float64).reshape(12), -1.0, 1.0)
        if push is None:
            push = self._draw_push(rng if rng is not None else self._rng)
        self.push_world = np.asarray(push, np.float64)
        d.xfrc_applied[self.trunk, :3] = self.push_world
        d.ctrl[:] = np.clip(self.default_pose + c["action_scale"] * action, self.ctrl_range[:, 0], self.ctrl_range[:, 1])
        for _ in range(self.n_substeps):
            if self.plane_slots is not None:
                self.place_foot_planes()
            mujoco.mj_step(m, d)
        k = self._kinematics(contacts=True)

        # Feet air time (legged_gym): a touchdown after a swing pays (air_time - target).
        contact = (k["foot_forces"] > c["contact_force_threshold"]).astype(np.float64)
        contact_filt = np.maximum(contact, self.last_contact)
        air_time = self.air_time + dt
        first_contact = (self.air_time > 0) * contact_filt
        moving = float(np.linalg.norm(self.command[:2]) > 0.1)
        air_reward = float(np.sum((air_time - c["air_time_target"]) * first_contact)) * moving
        self.air_time, self.last_contact = air_time * (1.0 - contact_filt), contact

        tilted = k["projected_gravity"][2] > -math.cos(c["max_tilt"])
        fall = bool(k["trunk_touch"] or tilted or k["base_height"] < c["min_base_height"])
        v, w, g = k["base_lin_vel"], k["base_ang_vel"], k["projected_gravity"]
        lin_err2 = float(np.sum(np.square(self.command[:2] - v[:2])))
        knee_clear = k["knee_clearance"]
        raw = {
            "tracking_lin_vel": math.exp(-lin_err2 / c["tracking_sigma"]),
            "tracking_ang_vel": math.exp(-(self.command[2] - w[2]) ** 2 / c["tracking_sigma"]),
            "lin_vel_z": v[2] ** 2,
            "ang_vel_xy": float(np.sum(np.square(w[:2]))),
            "orientation": float(np.sum(np.square(g[:2]))),
            "base_height": (k["base_height"] - c["base_height_target"]) ** 2,
            "torques": float(np.sum(np.square(d.actuator_force))),
            "action_rate": float(np.sum(np.square(action - self.last_action))),
            "feet_air_time": air_reward,
            "collision": float(np.sum(knee_clear < c["knee_radius"])),
            "termination": float(fall),
        }
        terms = np.array([self.weights[n] * dt * raw[n] for n in REWARD_TERMS])
        reward = float(np.sum(terms[:-1]))  # every term but termination (the last)
        if c["only_positive_rewards"]:
            reward = max(reward, 0.0)
        reward += float(terms[-1])
        self.last_action = action
        tracking_error = math.sqrt(lin_err2)
        obs = self._observe(k, terms, k["rot"].T @ self.push_world)
        return obs, reward, fall, {"success": float(tracking_error < c["success_threshold"] and not fall),
                                   "tracking_error": tracking_error, "base_height": float(k["base_height"])}

    # ------------------------------------------------------------------ parts
    def _draw_push(self, rng: np.random.Generator) -> np.ndarray:
        """The task's push: with probability ``dt / push_interval_s`` a horizontal force of uniform
        magnitude in [0, push_force_max] and uniform direction (N, world frame), else zero."""
        c = self.config
        if not (c["push_interval_s"] > 0 and c["push_force_max"] > 0):
            return np.zeros(3)
        pushed = rng.uniform() < min(self.dt / c["push_interval_s"], 1.0)
        angle = rng.uniform(-math.pi, math.pi)
        magnitude = rng.uniform(0.0, c["push_force_max"])
        return magnitude * np.array([math.cos(angle), math.sin(angle), 0.0]) if pushed else np.zeros(3)

    def _contact_forces(self, geoms: np.ndarray) -> np.ndarray:
        """Normal contact force (N) on each of ``geoms`` ``[n]``, summed over its contacts (the MJX task sums
        each contact's pyramid rows of ``efc_force``, which is the normal force ``mj_contactForce`` gives)."""
        out, force = np.zeros(len(geoms)), np.zeros(6)
        d = self.data
        contact = d.contact
        # Excluded contacts have no constraint rows (efc_address -1) and no force.
        hits = (np.isin(contact.geom1, geoms) | np.isin(contact.geom2, geoms)) & (contact.efc_address >= 0)
        for i in np.flatnonzero(hits):
            mujoco.mj_contactForce(self.model, d, int(i), force)
            out[(geoms == contact.geom1[i]) | (geoms == contact.geom2[i])] += force[0]
        return out

    def _kinematics(self, contacts: bool) -> dict[str, Any]:
        """Body-frame trunk state, foot positions and forces, trunk touch, knee clearance and the feet's
        terrain scan (the MJX task's ``_kinematics`` and the terrain part of its ``_observe``).

        Every terrain lookup of a step is one :func:`surface_plane` call (small NumPy calls cost more
        in overhead than in arithmetic): trunk centre [1], trunk patches [2 x 5], knees [4], scan [4 x 9].
        """
        c, d = self.config, self.data
        rot = d.xmat[self.trunk].reshape(3, 3)
        base = d.xpos[self.trunk]
        feet = d.geom_xpos[self.foot_geoms]
        spheres = d.geom_xpos[self.trunk_geoms]
        knees = d.xpos[self.knees]
        yaw = math.atan2(rot[1, 0], rot[0, 0])
        scan_pts = feet[:, None, :2] + (self.scan_offsets @ _yaw_rotation(yaw).T)[None]  # [4, 9, 2]
        pts = np.concatenate([base[None, :2], (spheres[:, None, :2] + self.trunk_patch[None]).reshape(-1, 2),
                              knees[:, :2], scan_pts.reshape(-1, 2)])
        ground = self.terrain_height(pts[:, 0], pts[:, 1])
        trunk_ground = ground[1:11].reshape(2, 5).max(axis=1)
        sole = feet[:, 2] - self.foot_radius
        foot_forces = self._contact_forces(self.foot_geoms) if contacts else np.zeros(4)
        if c["trunk_collision"]:
            touch = contacts and float(np.sum(self._contact_forces(self.trunk_geoms))) > c["contact_force_threshold"]
        else:  # the analytic test: each sphere's lowest point against the highest terrain around it
            touch = bool(np.any(spheres[:, 2] - self.trunk_radius - trunk_ground < 0.0))
        return {"rot": rot, "base_lin_vel": rot.T @ d.qvel[:3], "base_ang_vel": np.array(d.qvel[3:6]),
                "projected_gravity": -rot[2], "base_height": float(base[2] - ground[0]),
                "foot_forces": foot_forces, "trunk_touch": touch, "knee_clearance": knees[:, 2] - ground[11:15],
                "scan": np.clip(sole[:, None] - ground[15:].reshape(4, 9), -c["scan_clip"], c["scan_clip"])}

    def _observe(self, k: Mapping[str, Any], reward_terms: np.ndarray, push_body: np.ndarray) -> dict[str, np.ndarray]:
        m, d = self.model, self.data
        return {
            "joint_pos": d.qpos[7:] - self.default_pose,
            "joint_vel": np.array(d.qvel[6:]),
            "base_ang_vel": k["base_ang_vel"],
            "projected_gravity": k["projected_gravity"],
            "command": self.command.copy(),
            "last_action": self.last_action.copy(),
            "terrain_heights": k["scan"],
            "foot_contact_forces": k["foot_forces"],
            # The feet have geom priority 1, so foot-ground contacts use the feet's friction.
            "friction": np.array([np.mean(m.geom_friction[self.foot_geoms, 0])]),
            "base_lin_vel": k["base_lin_vel"],
            "payload": np.array([m.body_mass[self.trunk] - self.nominal_trunk_mass]),
            "motor_strength": np.array([np.mean(m.actuator_gainprm[:, 0] / self.nominal_kp)]),
            "push_force": push_body,
            "base_height": np.array([k["base_height"]]),
            "reward_terms": np.asarray(reward_terms, np.float64),
            "dyn_params": self.randomizer.normalized(self.values),
        }
