"""Cart-pole balance from a perturbed start: a fast CPU task where privileged
information matters.

A cart on a 1-D track carries a hinged pole; one motor pushes the cart
(``action[0]`` in [-1, 1] times the motor gear). Each episode starts with the
pole tilted and moving; the agent must keep it upright near the track centre.

Observation fields (unbatched shapes):

==============  =======  ==============  ===================================
field           shape    role            content
==============  =======  ==============  ===================================
``cart_pos``    ``[1]``  student_obs     cart position x (m)
``pole_angle``  ``[2]``  student_obs     (cos θ, sin θ), θ = 0 upright
``last_action`` ``[1]``  student_obs     the action applied at the last step
``velocities``  ``[2]``  teacher_only    exact (ẋ, θ̇)
``clean_pos``   ``[3]``  critic_only     noise-free (x, cos θ, sin θ)
==============  =======  ==============  ===================================

The task itself is noise-free; the registry's default stack adds sensor noise
to ``cart_pos``/``pole_angle``, per-episode randomisation of pole mass and
length, cart damping and motor gain (teacher-only ``dyn_params``) and a
deployable ``history`` (see :mod:`distill_jax.envs.registry`). Without
velocities a memoryless student cannot damp the pole; a few past positions
make velocities recoverable by finite differences.

Reward per step, in [0, 1]: ``0.7 * upright + 0.2 * centered + 0.1 * small_control``
with ``upright = (1 + cos θ) / 2``, ``centered = (1 + cos(π x / track_limit)) / 2``
and ``small_control = 1 - a²``.

Termination (``metrics["fall"]``): the cart leaves the track
(``|x| > track_limit``), the pole tilts beyond ``fall_angle``, or the state is
not finite. Truncation comes from the TimeLimit wrapper.

Success (``metrics["success"]``, read it at an episode's last step): no fall,
and the pole was upright (``|θ| < upright_angle``) during at least
``success_threshold`` of the final ``success_window`` fraction of
``episode_length`` steps. ``metrics["upright"]`` is the per-step indicator.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from mujoco import mjx

from distill_jax.envs.base import EnvState, with_inferred_specs
from distill_jax.envs.mjx_env import MjxEnv, load_asset
from distill_jax.envs.randomization import ParamRange
from distill_jax.schema import ObservationSchema

REWARD_WEIGHTS = {"upright": 0.7, "centered": 0.2, "small_control": 0.1}

# Default per-episode randomisation (used by the registry).
CARTPOLE_RANGES = (
    ParamRange("pole_mass", "body_mass:pole", 0.5, 2.0, "scale"),
    ParamRange("pole_length", "body_length:pole", 0.6, 1.4, "scale"),
    ParamRange("cart_damping", "dof_damping:slider", 0.0, 1.0, "absolute"),
    ParamRange("motor_gain", "actuator_gain:motor", 0.6, 1.4, "scale"),
)


@dataclasses.dataclass(frozen=True)
class CartpoleConfig:
    """Task settings (shapes do not depend on any of them).

    Attributes:
      episode_length: nominal episode length in control steps (the TimeLimit
        the registry applies); only used here to place the success window.
      n_substeps: physics steps (0.01 s each) per control step.
      track_limit: |x| beyond which the cart has left the track (m).
      fall_angle: |θ| beyond which the pole has fallen (rad).
      init_pos, init_angle, init_vel, init_angvel: half-widths of the uniform
        reset distribution of x, θ, ẋ, θ̇ (centred at 0).
      upright_angle: |θ| below which the pole counts as upright.
      success_window: final fraction of the episode scored for success.
      success_threshold: upright fraction within the window needed for success.
    """

    episode_length: int = 250
    n_substeps: int = 4
    track_limit: float = 1.8
    fall_angle: float = 0.8
    init_pos: float = 0.5
    init_angle: float = 0.2
    init_vel: float = 0.3
    init_angvel: float = 0.5
    upright_angle: float = 0.2
    success_window: float = 0.25
    success_threshold: float = 0.9


class Cartpole(MjxEnv):
    """Cart-pole balance (see the module docstring). Single-instance, pure."""

    name = "cartpole"
    version = "1"
    asset = "cartpole.xml"  # the MJCF in distill_jax/envs/assets (a variant may ship its own)

    def __init__(self, config: CartpoleConfig | None = None, **overrides: Any):
        config = config or CartpoleConfig()
        known = {f.name for f in dataclasses.fields(CartpoleConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown Cartpole setting(s) {unknown}; valid: {sorted(known)}")
        self.config = dataclasses.replace(config, **overrides)
        super().__init__(load_asset(self.asset), n_substeps=self.config.n_substeps)
        c = self.config
        window = max(1, int(round(c.success_window * c.episode_length)))
        self._tail_start = c.episode_length - window
        self._tail_len = window

    # ------------------------------------------------------------- contract
    @property
    def action_size(self) -> int:
        return 1

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        bare = ObservationSchema(
            student_obs=("cart_pos", "pole_angle", "last_action"),
            teacher_only=("velocities",),
            critic_only=("clean_pos",),
        )
        return with_inferred_specs(bare, self.reset)

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {
            "name": self.name,
            "version": self.version,
            "reward_terms": dict(REWARD_WEIGHTS),
            "reset_distribution": {
                "cart_pos": ["uniform", -c.init_pos, c.init_pos],
                "pole_angle": ["uniform", -c.init_angle, c.init_angle],
                "cart_vel": ["uniform", -c.init_vel, c.init_vel],
                "pole_angvel": ["uniform", -c.init_angvel, c.init_angvel],
            },
            "randomization": [],
            "model_hash": self.model_hash,
            "control_dt": self.dt,
            "config": dataclasses.asdict(c),
        }

    # -------------------------------------------------------------- physics
    def _obs(self, data: mjx.Data, action: jax.Array) -> dict[str, jax.Array]:
        x, th = data.qpos[0], data.qpos[1]
        cos, sin = jnp.cos(th), jnp.sin(th)
        return {
            "cart_pos": jnp.reshape(x, (1,)),
            "pole_angle": jnp.stack([cos, sin]),
            "last_action": jnp.reshape(action, (1,)).astype(jnp.float32),
            "velocities": data.qvel[:2],
            "clean_pos": jnp.stack([x, cos, sin]),
        }

    def _zero_metrics(self) -> dict[str, jax.Array]:
        names = ["upright", "success", "fall"] + [f"reward_{k}" for k in REWARD_WEIGHTS]
        return {n: jnp.zeros((), jnp.float32) for n in names}

    def reset_with_model(self, key: jax.Array, model: mjx.Model) -> EnvState:
        c = self.config
        rng, k_q, k_v = jax.random.split(key, 3)
        qpos = jax.random.uniform(k_q, (2,), minval=-1.0, maxval=1.0) * jnp.array([c.init_pos, c.init_angle])
        qvel = jax.random.uniform(k_v, (2,), minval=-1.0, maxval=1.0) * jnp.array([c.init_vel, c.init_angvel])
        # Derived quantities stay zero: every mjx.step recomputes them from qpos/qvel,
        # and the observation reads qpos/qvel only, so no forward pass is needed here.
        data = mjx.make_data(self.mjx_model).replace(qpos=qpos, qvel=qvel)
        zero = jnp.zeros((), jnp.float32)
        return EnvState(
            physics=data,
            obs=self._obs(data, jnp.zeros((1,), jnp.float32)),
            reward=zero,
            terminated=zero,
            truncated=zero,
            first=jnp.ones((), jnp.float32),
            rng=rng,
            info={"t": jnp.zeros((), jnp.int32), "tail_upright": zero},
            metrics=self._zero_metrics(),
        )

    def step_with_model(self, state: EnvState, action: jax.Array, model: mjx.Model) -> EnvState:
        c = self.config
        a = jnp.clip(jnp.reshape(action, (1,)).astype(jnp.float32), -1.0, 1.0)
        data = self.physics_step(model, state.physics, a)
        x, th = data.qpos[0], data.qpos[1]
        cos = jnp.cos(th)
        finite = jnp.isfinite(x) & jnp.isfinite(th) & jnp.all(jnp.isfinite(data.qvel))
        fall = (jnp.abs(x) > c.track_limit) | (cos < math.cos(c.fall_angle)) | ~finite
        upright = (cos > math.cos(c.upright_angle)).astype(jnp.float32)

        t = state.info["t"] + 1
        in_tail = (t > self._tail_start).astype(jnp.float32)
        tail_upright = state.info["tail_upright"] + upright * in_tail
        success = (tail_upright >= c.success_threshold * self._tail_len) & ~fall

        terms = {
            "upright": 0.5 * (1.0 + cos),
            "centered": 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(x / c.track_limit, -1.0, 1.0))),
            "small_control": 1.0 - a[0] ** 2,
        }
        reward = sum(REWARD_WEIGHTS[k] * v for k, v in terms.items())
        fallf = fall.astype(jnp.float32)
        metrics = {
            "upright": upright,
            "success": success.astype(jnp.float32),
            "fall": fallf,
            **{f"reward_{k}": v.astype(jnp.float32) for k, v in terms.items()},
        }
        return state.replace(
            physics=data,
            obs=self._obs(data, a),
            reward=jnp.where(finite, reward, 0.0).astype(jnp.float32),
            terminated=fallf,
            truncated=jnp.zeros((), jnp.float32),
            first=jnp.zeros((), jnp.float32),
            info={**state.info, "t": t, "tail_upright": tail_upright},
            metrics=metrics,
        )
