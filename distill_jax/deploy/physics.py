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
* :class:`CartpoleSim` — :mod:`distill_jax.envs.cartpole`.

The quadruped is not here: it trains on a per-foot tangent-plane contact approximation
(``foot_contact="tangent_plane"``, mocap planes moved before every physics step), which a
C re-implementation would have to reproduce, or else compare against MuJoCo's own
height-field contact, which differs (``experiments/probes/quadruped_contact_compare.py``).
"""

from __future__ import annotations

import hashlib
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import mujoco
import numpy as np

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "envs" / "assets"


class SimError(ValueError):
    """The run cannot be simulated here (unsupported task, changed model)."""


def asset_xml(filename: str) -> str:
    """An MJCF shipped in ``distill_jax/envs/assets`` (read by path: importing ``distill_jax.envs`` imports JAX)."""
    return (ASSETS / filename).read_text()


def xml_hash(xml: str) -> str:
    """The MJCF hash the env fingerprints record (:func:`distill_jax.envs.mjx_env.mjcf_hash`)."""
    return hashlib.sha256(xml.encode()).hexdigest()[:16]


def _obj_id(model: mujoco.MjModel, kind: str, name: str) -> int:
    obj = {"body": mujoco.mjtObj.mjOBJ_BODY, "dof": mujoco.mjtObj.mjOBJ_JOINT,
           "geom": mujoco.mjtObj.mjOBJ_GEOM, "actuator": mujoco.mjtObj.mjOBJ_ACTUATOR}[kind]
    i = mujoco.mj_name2id(model, obj, name)
    if i < 0:
        raise SimError(f"randomisation target {kind}:{name} is not in the model")
    return i


class ModelRandomizer:
    """Per-episode physical parameters, applied in place to an ``MjModel``.

    Args:
      model: the model to edit; its values at construction are the nominal ones.
      ranges: the fingerprint's ``randomization`` list (``name``, ``target``, ``low``,
        ``high``, ``mode``), in ``dyn_params`` order. Supported targets name one element:
        ``body_mass``, ``body_length`` (scale), ``dof_damping``, ``actuator_gain``.
    """

    FIELDS = ("body_mass", "body_inertia", "body_ipos", "body_pos", "geom_pos", "geom_size", "dof_damping",
              "actuator_gainprm", "actuator_biasprm", "body_subtreemass")

    def __init__(self, model: mujoco.MjModel, ranges: Sequence[Mapping[str, Any]]):
        self.model = model
        self.ranges = [dict(r) for r in ranges]
        self.nominal = {f: np.array(getattr(model, f)) for f in self.FIELDS}
        for r in self.ranges:
            kind, _, element = r["target"].partition(":")
            if kind not in ("body_mass", "body_length", "dof_damping", "actuator_gain") or element in ("", "*"):
                raise SimError(f"randomisation target {r['target']!r} is not supported by the C re-implementation")
            if kind == "body_length" and r["mode"] != "scale":
                raise SimError(f"body_length supports only mode='scale', got {r['mode']!r}")
            r["id"] = _obj_id(model, "dof" if kind == "dof_damping" else kind.split("_")[0], element)
            if kind == "dof_damping":
                r["id"] = int(model.jnt_dofadr[r["id"]])  # hinge and slide joints have one dof

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
            kind, i = r["target"].split(":")[0], r["id"]
            scale = r["mode"] == "scale"
            if kind == "body_mass":
                factor = v if scale else v / m.body_mass[i]
                m.body_mass[i] *= factor
                m.body_inertia[i] *= factor  # same shape, other density
            elif kind == "body_length":  # stretch about the body frame: thin-rod inertia ~ length²
                m.body_ipos[i] *= v
                m.body_inertia[i] *= v * v
                geoms = np.flatnonzero(m.geom_bodyid == i)
                m.geom_pos[geoms] *= v
                long = geoms[np.isin(m.geom_type[geoms], [mujoco.mjtGeom.mjGEOM_CAPSULE, mujoco.mjtGeom.mjGEOM_CYLINDER])]
                m.geom_size[long, 1] *= v
                children = np.flatnonzero(m.body_parentid == i)
                m.body_pos[children[children != 0]] *= v
            elif kind == "dof_damping":
                m.dof_damping[i] = m.dof_damping[i] * v if scale else v
            elif kind == "actuator_gain":
                factor = v if scale else v / m.actuator_gainprm[i, 0]
                m.actuator_gainprm[i, 0] *= factor
                m.actuator_biasprm[i, 1:3] *= factor
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
        if xml_hash(xml) != fingerprint["model_hash"]:
            raise SimError(f"the shipped cartpole.xml (hash {xml_hash(xml)}) is not the one this run trained on "
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


TASKS = {"cartpole": CartpoleSim}

# What a task not in TASKS would need, for the one-line refusal.
UNSUPPORTED = {
    "quadruped_rough": "its MJX training contact is a per-foot tangent-plane approximation of the height field "
                       "that a C re-implementation must reproduce (MuJoCo's own height-field contact differs), "
                       "plus the terrain, command sampling, pushes and legged_gym rewards",
}


def make_sim(fingerprint: Mapping[str, Any]):
    """The C re-implementation of the fingerprint's task.

    Raises:
      SimError: no re-implementation exists for it (saying what one would need).
    """
    name = fingerprint.get("name")
    if name not in TASKS:
        need = UNSUPPORTED.get(name, "a re-implementation in distill_jax.deploy.physics")
        raise SimError(f"sim2sim runs {sorted(TASKS)}; {name!r} is not supported yet: {need}")
    return TASKS[name](fingerprint)
