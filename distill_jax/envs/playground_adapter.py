"""Adapter from a MuJoCo Playground environment to the distill_jax env contract.

Optional: ``mujoco_playground`` is imported when an adapter is built and is not
a dependency of distill_jax (install it with ``pip install playground``, the
``playground`` extra). Not exercised by the test suite.

Mapping: a dict observation keeps its keys, with ``"state"`` renamed to
``"proprio"`` (deployable) and ``"privileged_state"`` to ``"privileged"``
(teacher-only); other keys are teacher-only. An array observation becomes
``{"proprio": obs}``. Playground ``done`` -> ``terminated``; use
:class:`~distill_jax.envs.wrappers.TimeLimit` for truncation. Domain
randomisation works by swapping the env's ``_mjx_model`` during tracing.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import jax
import jax.numpy as jnp

from distill_jax.envs.base import Env, EnvState, with_inferred_specs
from distill_jax.schema import ObservationSchema

_RENAME = {"state": "proprio", "privileged_state": "privileged"}
_INSTALL_HINT = (
    "PlaygroundEnvAdapter needs the optional package 'mujoco_playground' "
    "(the 'playground' extra: `pip install playground`)."
)


def _import_registry():
    try:
        from mujoco_playground import registry
    except ImportError as e:
        raise ImportError(f"{_INSTALL_HINT} Import failed with: {e}") from e
    return registry


class PlaygroundEnvAdapter(Env):
    """A Playground env as a single-instance distill_jax env.

    Args:
      env_name: a name accepted by ``mujoco_playground.registry.load``.
      config_overrides: passed to ``registry.load``.
    """

    def __init__(self, env_name: str, config_overrides: dict[str, Any] | None = None):
        registry = _import_registry()
        self.env_name = env_name
        self.config_overrides = dict(config_overrides or {})
        self.pg_env = registry.load(env_name, config_overrides=self.config_overrides or None)
        self.name = f"playground_{env_name}"
        self.version = "playground"

    @property
    def mjx_model(self):
        return self.pg_env.mjx_model

    @property
    def mj_model(self):
        return self.pg_env.mj_model

    @contextlib.contextmanager
    def _using(self, model):
        env = self.pg_env
        old = env._mjx_model
        env._mjx_model = model
        try:
            yield env
        finally:
            env._mjx_model = old

    @property
    def action_size(self) -> int:
        return int(self.pg_env.action_size)

    def _obs(self, obs) -> dict[str, jax.Array]:
        if isinstance(obs, dict):
            return {_RENAME.get(k, k): jnp.asarray(v, jnp.float32) for k, v in obs.items()}
        return {"proprio": jnp.asarray(obs, jnp.float32)}

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        names = list(jax.eval_shape(self.reset, jax.random.PRNGKey(0)).obs)
        student = tuple(n for n in names if n == "proprio")
        teacher = tuple(n for n in names if n != "proprio")
        return with_inferred_specs(ObservationSchema(student_obs=student, teacher_only=teacher), self.reset)

    def fingerprint(self) -> dict[str, Any]:
        from distill_jax.envs.brax_adapter import model_hash

        return {
            "name": self.name,
            "version": self.version,
            "reward_terms": {f"playground_{self.env_name}_reward": 1.0},
            "reset_distribution": f"mujoco_playground.{self.env_name}.reset",
            "randomization": [],
            "model_hash": model_hash(self.mj_model),
            "config_overrides": self.config_overrides,
        }

    def _wrap(self, pstate, rng, first) -> EnvState:
        done = jnp.asarray(pstate.done, jnp.float32)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in pstate.metrics.items()}
        metrics["fall"] = done
        metrics["success"] = 1.0 - done
        return EnvState(
            physics=pstate,
            obs=self._obs(pstate.obs),
            reward=jnp.asarray(pstate.reward, jnp.float32),
            terminated=done,
            truncated=jnp.zeros((), jnp.float32),
            first=jnp.asarray(first, jnp.float32),
            rng=rng,
            metrics=metrics,
        )

    def reset_with_model(self, key: jax.Array, model) -> EnvState:
        rng, k_env = jax.random.split(key)
        with self._using(model) as env:
            pstate = env.reset(k_env)
        return self._wrap(pstate, rng, 1.0)

    def step_with_model(self, state: EnvState, action: jax.Array, model) -> EnvState:
        with self._using(model) as env:
            pstate = env.step(state.physics, jnp.clip(action, -1.0, 1.0))
        return self._wrap(pstate, state.rng, 0.0).replace(params=state.params, info=state.info)

    def reset(self, key: jax.Array) -> EnvState:
        return self.reset_with_model(key, self.mjx_model)

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        return self.step_with_model(state, action, self.mjx_model)
