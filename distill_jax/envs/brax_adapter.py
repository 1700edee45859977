"""Adapter from a Brax environment (MJX backend) to the distill_jax env contract.

``BraxEnvAdapter("inverted_pendulum")`` wraps ``brax.envs.get_environment(name,
backend="mjx")``:

* ``obs = {obs_field: brax_obs}`` (default ``"proprio"``, deployable); privileged
  fields come from wrapping the adapter in
  :class:`~distill_jax.envs.wrappers.DomainRandomization`, which works because
  the adapter offers ``reset_with_model``/``step_with_model`` over Brax's
  ``sys`` (a subclass of ``mjx.Model``, so ``sys.replace(...)`` works);
* Brax ``done`` -> ``terminated`` (Brax envs here carry no time limit: use
  :class:`~distill_jax.envs.wrappers.TimeLimit`); ``truncated`` is always 0;
* Brax metrics are passed through, plus ``metrics["fall"] = done`` and
  ``metrics["success"] = 1 - done`` (read at an episode's last step: the
  episode survived).

Brax is imported when an adapter is built, not when this module is imported.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from distill_jax.envs.base import Env, EnvState, with_inferred_specs
from distill_jax.schema import ObservationSchema


def model_hash(mj_model: mujoco.MjModel) -> str:
    """Hash of the compiled MuJoCo model (its binary MJB serialisation)."""
    buf = np.zeros(mujoco.mj_sizeModel(mj_model), np.uint8)
    mujoco.mj_saveModel(mj_model, None, buf)
    return hashlib.sha256(buf.tobytes()).hexdigest()[:16]


class BraxEnvAdapter(Env):
    """A Brax env as a single-instance distill_jax env (see the module docstring).

    Args:
      env_name: a name accepted by ``brax.envs.get_environment``.
      obs_field: name of the deployable observation field holding Brax's obs.
      **brax_kwargs: passed to ``get_environment`` (``backend`` defaults to "mjx").
    """

    def __init__(self, env_name: str, obs_field: str = "proprio", **brax_kwargs: Any):
        from brax import envs as brax_envs  # deferred: importing brax costs ~2 s

        brax_kwargs.setdefault("backend", "mjx")
        if brax_kwargs["backend"] != "mjx":
            raise ValueError("BraxEnvAdapter supports only backend='mjx' (domain randomisation edits an mjx.Model)")
        self.env_name = env_name
        self.obs_field = obs_field
        self.brax_kwargs = dict(brax_kwargs)
        self.brax_env = brax_envs.get_environment(env_name, **brax_kwargs)
        self._sys = self.brax_env.sys
        self.name = f"brax_{env_name}"
        import brax

        self.version = f"brax-{getattr(brax, '__version__', 'unknown')}"
        self._metric_names: tuple[str, ...] | None = None

    # ------------------------------------------------------------ model access
    @property
    def mjx_model(self):
        """The nominal Brax ``System`` (an ``mjx.Model`` subclass)."""
        return self._sys

    @property
    def mj_model(self) -> mujoco.MjModel:
        return self._sys.mj_model

    @property
    def n_substeps(self) -> int:
        return int(self.brax_env._n_frames)

    @property
    def dt(self) -> float:
        return float(self.mj_model.opt.timestep) * self.n_substeps

    @contextlib.contextmanager
    def _using(self, sys):
        # Brax envs read ``self.sys`` while being traced; swapping it for the
        # duration of the trace is how Brax's own randomisation wrapper works.
        env = self.brax_env.unwrapped
        old = env.sys
        env.sys = sys
        try:
            yield env
        finally:
            env.sys = old

    # ------------------------------------------------------------- contract
    @property
    def action_size(self) -> int:
        return int(self.brax_env.action_size)

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        return with_inferred_specs(ObservationSchema(student_obs=(self.obs_field,)), self.reset)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "reward_terms": {f"brax_{self.env_name}_reward": 1.0},
            "reset_distribution": f"brax.envs.{self.env_name}.reset",
            "randomization": [],
            "model_hash": model_hash(self.mj_model),
            "control_dt": self.dt,
            "brax_kwargs": {k: v for k, v in sorted(self.brax_kwargs.items())},
        }

    def observe(self, bstate) -> dict[str, jax.Array]:
        """The named observation fields of a Brax state (float32, no batch axis).

        The default is Brax's flat ``obs`` under ``obs_field``. Override it (with
        ``schema``) to split Brax's vector into named fields that the schema can
        assign to roles; ``bstate.metrics`` is there for critic-only terms.
        """
        return {self.obs_field: jnp.asarray(bstate.obs, jnp.float32)}

    def _wrap(self, bstate, rng, first) -> EnvState:
        done = jnp.asarray(bstate.done, jnp.float32)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in bstate.metrics.items()}
        metrics["fall"] = done
        metrics["success"] = 1.0 - done
        return EnvState(
            physics=bstate,
            obs=self.observe(bstate),
            reward=jnp.asarray(bstate.reward, jnp.float32),
            terminated=done,
            truncated=jnp.zeros((), jnp.float32),
            first=jnp.asarray(first, jnp.float32),
            rng=rng,
            info={},
            metrics=metrics,
        )

    def reset_with_model(self, key: jax.Array, model) -> EnvState:
        rng, k_env = jax.random.split(key)
        with self._using(model) as env:
            bstate = env.reset(k_env)
        return self._wrap(bstate, rng, 1.0)

    def step_with_model(self, state: EnvState, action: jax.Array, model) -> EnvState:
        with self._using(model) as env:
            bstate = env.step(state.physics, jnp.clip(action, -1.0, 1.0))
        new = self._wrap(bstate, state.rng, 0.0)
        return new.replace(params=state.params, info=state.info)

    def reset(self, key: jax.Array) -> EnvState:
        return self.reset_with_model(key, self._sys)

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        return self.step_with_model(state, action, self._sys)
