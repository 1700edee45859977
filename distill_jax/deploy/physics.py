"""Tasks re-implemented on MuJoCo's C engine (``mujoco.mj_step``) from a run's env fingerprint, without JAX.

The MJX tasks in :mod:`distill_jax.envs` are the reference; this module re-states their
physics-facing parts for sim-to-sim transfer: the same MJCF (shipped in
``distill_jax/envs/assets``, checked against the fingerprint's ``model_hash``), the same reset
distribution, per-episode randomisation, reward terms and termination, read from
``env_fingerprint.json`` wherever the fingerprint records them. MuJoCo C integrates in float64
where MJX uses float32, and the draws come from NumPy's generator, not JAX's, so episodes
match the MJX panel in distribution, not one by one.

* :class:`ModelRandomizer` — :mod:`distill_jax.envs.randomization`'s ``ParamRange`` rules
  applied in place to an ``MjModel``;
* :class:`CartpoleSim` — :mod:`distill_jax.envs.cartpole`;
* ``quadruped_rough`` — :class:`distill_jax.deploy.quadruped_sim.QuadrupedSim`, on MuJoCo's own
  height-field contact by default (training's per-foot tangent planes on request).

:func:`make_sim` picks the one a fingerprint names (:data:`TASKS`).
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import mujoco
import numpy as np

from distill_jax.hashing import mjcf_hash

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "envs" / "assets"


class SimError(ValueError):
    """The run cannot be simulated here (unsupported task, changed model)."""


def asset_xml(filename: str) -> str:
    """An MJCF shipped in ``distill_jax/envs/assets`` (read by path: importing ``distill_jax.envs`` imports JAX)."""
    return (ASSETS / filename).read_text()


def _element_ids(model: mujoco.MjModel, kind: str, element: str) -> np.ndarray:
    """The model elements a randomisation target names (``"*"``: every one; bodies from 1, never the
    world), as :mod:`distill_jax.envs.randomization` resolves them; joints become their dofs."""
    obj, count = {"body_mass": (mujoco.mjtObj.mjOBJ_BODY, model.nbody),
                  "body_length": (mujoco.mjtObj.mjOBJ_BODY, model.nbody),
                  "dof_damping": (mujoco.mjtObj.mjOBJ_JOINT, model.njnt),
                  "geom_friction": (mujoco.mjtObj.mjOBJ_GEOM, model.ngeom),
                  "actuator_gain": (mujoco.mjtObj.mjOBJ_ACTUATOR, model.nu)}[kind]
    if element == "*":
        ids = np.arange(1 if obj == mujoco.mjtObj.mjOBJ_BODY else 0, count)
    else:
        i = mujoco.mj_name2id(model, obj, element)
        if i < 0:
            raise SimError(f"randomisation target {kind}:{element} is not in the model")
        ids = np.array([i])
    if kind == "dof_damping":  # joints -> their dofs (free 6, ball 3, slide/hinge 1)
        ndof = {0: 6, 1: 3, 2: 1, 3: 1}
        ids = np.concatenate([model.jnt_dofadr[j] + np.arange(ndof[int(model.jnt_type[j])]) for j in ids])
    return ids.astype(np.int64)


class ModelRandomizer:
    """Per-episode physical parameters, applied in place to an ``MjModel``.

    Args:
      model: the model to edit; its values at construction are the nominal ones.
      ranges: the fingerprint's ``randomization`` list (``name``, ``target``, ``low``,
        ``high``, ``mode``), in ``dyn_params`` order. Every kind of
        :mod:`distill_jax.envs.randomization` is supported (``body_mass``, ``body_length``
        (scale), ``dof_damping``, ``geom_friction``, ``actuator_gain``), on one named element or
        ``*`` (all of them).
    """

    FIELDS = ("body_mass", "body_inertia", "body_ipos", "body_pos", "geom_pos", "geom_size", "geom_friction",
              "dof_damping", "actuator_gainprm", "actuator_biasprm", "body_subtreemass")
    KINDS = ("body_mass", "body_length", "dof_damping", "geom_friction", "actuator_gain")

    def __init__(self, model: mujoco.MjModel, ranges: Sequence[Mapping[str, Any]]):
        self.model = model
        self.ranges = [dict(r) for r in ranges]
        self.nominal = {f: np.array(getattr(model, f)) for f in self.FIELDS}
        for r in self.ranges:
            kind, _, element = r["target"].partition(":")
            if kind not in self.KINDS:
                raise SimError(f"randomisation target {r['target']!r} is not supported by the C re-implementation")
            if kind == "body_length" and r["mode"] != "scale":
                raise SimError(f"body_length supports only mode='scale', got {r['mode']!r}")
            r["ids"] = _element_ids(model, kind, element or "*")

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Uniform values ``[len(ranges)]`` within each range."""
        low = np.array([r["low"] for r in self.ranges])
        high = np.array([r["high"] for r in self.ranges])
        return low + rng.uniform(size=len(self.ranges)) * (high - low)

    def apply(self, values: Sequence[float]) -> None:
        """Restores the nominal model, then applies ``values`` (scale factors compose in order)."""
        m = self.model
        for field, nominal in self.nominal.items():
            getattr(m, field)[:] = nominal
        for r, v in zip(self.ranges, values):
            kind, ids = r["target"].split(":")[0], r["ids"]
            scale = r["mode"] == "scale"
            if kind == "body_mass":
                for i in ids:
                    factor = v if scale else (v / m.body_mass[i] if m.body_mass[i] else 1.0)
                    m.body_mass[i] *= factor
                    m.body_inertia[i] *= factor  # same shape, other density
            elif kind == "body_length":  # stretch about the body frame: thin-rod inertia ~ length²
                for i in ids:
                    m.body_ipos[i] *= v
                    m.body_inertia[i] *= v * v
                    geoms = np.flatnonzero(m.geom_bodyid == i)
                    m.geom_pos[geoms] *= v
                    long = geoms[np.isin(m.geom_type[geoms], [mujoco.mjtGeom.mjGEOM_CAPSULE, mujoco.mjtGeom.mjGEOM_CYLINDER])]
                    m.geom_size[long, 1] *= v
                    children = np.flatnonzero(m.body_parentid == i)
                    m.body_pos[children[children != 0]] *= v
            elif kind == "dof_damping":
                m.dof_damping[ids] = m.dof_damping[ids] * v if scale else v
            elif kind == "geom_friction":
                m.geom_friction[ids, 0] = m.geom_friction[ids, 0] * v if scale else v
            elif kind == "actuator_gain":
                gain = m.actuator_gainprm[ids, 0]
                factor = v if scale else v / np.where(gain == 0, 1.0, gain)
                m.actuator_gainprm[ids, 0] *= factor
                m.actuator_biasprm[ids, 1:3] *= np.reshape(factor, (-1, 1)) if np.ndim(factor) else factor
        subtree = np.array(m.body_mass)
        for body in range(m.nbody - 1, 0, -1):  # a child's id exceeds its parent's: accumulate upwards
            subtree[m.body_parentid[body]] += subtree[body]
        m.body_subtreemass[:] = subtree

    def normalized(self, values: Sequence[float]) -> np.ndarray:
        """``values`` mapped to [-1, 1] over each range (the teacher-only ``dyn_params``)."""
        low = np.array([r["low"] for r in self.ranges])
        span = np.array([r["high"] for r in self.ranges]) - low
        return np.where(span > 0, 2.0 * (np.asarray(values) - low) / np.where(span > 0, span, 1.0) - 1.0, 0.0)


class CartpoleSim:
    """The cart-pole task (:mod:`distill_jax.envs.cartpole`) on MuJoCo C, as a run's fingerprint describes it.

    ``reset(rng)`` and ``step(action)`` return the task's observation fields (noise-free:
    noise, history and latency are the deployment side's, see
    :mod:`distill_jax.deploy.observations`). ``step`` also returns the reward and whether
    the pole fell or the cart left the track, and keeps ``success`` for the episode's end.

    Args:
      fingerprint: the run's ``env_fingerprint.json`` (or the panel's ``env_fingerprint``).

    Raises:
      SimError: the shipped ``cartpole.xml`` differs from the one the run trained on.
    """

    name = "cartpole"

    def __init__(self, fingerprint: Mapping[str, Any]):
        xml = asset_xml("cartpole.xml")
        if mjcf_hash(xml) != fingerprint["model_hash"]:
            raise SimError(f"the shipped cartpole.xml (hash {mjcf_hash(xml)}) is not the one this run trained on "
                           f"({fingerprint['model_hash']})")
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self.config = dict(fingerprint["config"])
        self.weights = dict(fingerprint["reward_terms"])
        self.reset_ranges = {k: (lo, hi) for k, (_, lo, hi) in fingerprint["reset_distribution"].items()}
        self.randomizer = ModelRandomizer(self.model, fingerprint.get("randomization", []))
        self.n_substeps = int(self.config["n_substeps"])
        episode = int(self.config["episode_length"])
        window = max(1, int(round(self.config["success_window"] * episode)))
        self.tail_start, self.tail_len = episode - window, window
        self.t, self.tail_upright, self.values = 0, 0.0, np.zeros(0)

    @property
    def dt(self) -> float:
        """Control period (s)."""
        return float(self.model.opt.timestep) * self.n_substeps

    def _obs(self, action: float) -> dict[str, np.ndarray]:
        x, th = self.data.qpos[0], self.data.qpos[1]
        return {"cart_pos": np.array([x]), "pole_angle": np.array([math.cos(th), math.sin(th)]),
                "last_action": np.array([action]), "velocities": np.array(self.data.qvel[:2]),
                "clean_pos": np.array([x, math.cos(th), math.sin(th)]),
                "dyn_params": self.randomizer.normalized(self.values)}

    def reset(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A new episode: randomised model, ``x, θ, ẋ, θ̇`` uniform in the fingerprint's ranges."""
        self.values = self.randomizer.sample(rng)
        self.randomizer.apply(self.values)
        mujoco.mj_resetData(self.model, self.data)
        r = self.reset_ranges
        self.data.qpos[:] = [rng.uniform(*r["cart_pos"]), rng.uniform(*r["pole_angle"])]
        self.data.qvel[:] = [rng.uniform(*r["cart_vel"]), rng.uniform(*r["pole_angvel"])]
        self.t, self.tail_upright = 0, 0.0
        return self._obs(0.0)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, dict[str, float]]:
        """One control step: ``(obs, reward, fall, metrics)``; ``metrics["success"]`` as the task defines it."""
        c = self.config
        a = float(np.clip(np.reshape(action, -1)[0], -1.0, 1.0))
        self.data.ctrl[0] = a
        for _ in range(self.n_substeps):
            mujoco.mj_step(self.model, self.data)
        x, cos = self.data.qpos[0], math.cos(self.data.qpos[1])
        finite = bool(np.isfinite(self.data.qpos).all() and np.isfinite(self.data.qvel).all())
        fall = abs(x) > c["track_limit"] or cos < math.cos(c["fall_angle"]) or not finite
        upright = float(cos > math.cos(c["upright_angle"]))
        self.t += 1
        self.tail_upright += upright * (self.t > self.tail_start)
        success = self.tail_upright >= c["success_threshold"] * self.tail_len and not fall
        terms = {"upright": 0.5 * (1.0 + cos),
                 "centered": 0.5 * (1.0 + math.cos(math.pi * min(max(x / c["track_limit"], -1.0), 1.0))),
                 "small_control": 1.0 - a * a}
        reward = sum(self.weights[k] * v for k, v in terms.items()) if finite else 0.0
        return self._obs(a), float(reward), bool(fall), {"success": float(success), "upright": upright}


def quadruped_sim(fingerprint: Mapping[str, Any], contact: str = "hfield"):
    """:class:`distill_jax.deploy.quadruped_sim.QuadrupedSim` (imported here: that module imports this one)."""
    from distill_jax.deploy.quadruped_sim import QuadrupedSim

    return QuadrupedSim(fingerprint, contact=contact)


TASKS = {"cartpole": CartpoleSim, "quadruped_rough": quadruped_sim}
# Tasks that simulate contact with terrain take ``contact`` ("hfield": MuJoCo's own height-field
# contact; "tangent_plane": training's per-foot plane approximation, reproduced in C).
CONTACT_TASKS = ("quadruped_rough",)


def make_sim(fingerprint: Mapping[str, Any], contact: str | None = None):
    """The C re-implementation of the fingerprint's task.

    Args:
      fingerprint: the run's env fingerprint.
      contact: for a terrain task, its foot contact model (default ``"hfield"``); must be ``None`` otherwise.

    Raises:
      SimError: no re-implementation exists for it, or ``contact`` does not apply to it.
    """
    name = fingerprint.get("name")
    if name not in TASKS:
        raise SimError(f"sim2sim runs {sorted(TASKS)}; {name!r} is not supported yet: it needs a "
                       "re-implementation in distill_jax.deploy.physics")
    if name in CONTACT_TASKS:
        return TASKS[name](fingerprint, contact=contact or "hfield")
    if contact is not None:
        raise SimError(f"--contact applies to {list(CONTACT_TASKS)}, not to {name!r}")
    return TASKS[name](fingerprint)
